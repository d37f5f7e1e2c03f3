"""The mailed password-reset link, end to end: real server subprocess, real SMTP listener,
headless Chromium on the link from the mail (FAQ: "you will receive an email with a link
to reset your password"). Probe 7: the link ``/reset?token=...`` was a 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.integration.test_accounts_mail import Inbox, _free_port
from tests.integration.test_share_chromium import CHROMIUM, Browser
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def test_reset_link_from_the_mail_sets_a_new_password_in_a_browser(
    tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    box, smtp_port = inbox
    settings = {"smtp": {"host": "127.0.0.1", "port": smtp_port}}
    with LucentServer(tmp_path / "srv", settings=settings) as server:
        base = server.api_url
        admin = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD}
        ).json()["token"]
        user = {"username": "lena", "password": "the-old-password", "role": "guest"}
        r = httpx.post(
            f"{base}/api/v1/users",
            json={**user, "email": "lena@clinic.example"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        r = httpx.post(f"{base}/api/v1/auth/password-reset", json={"username": "lena"})
        assert r.status_code == 202
        found = re.search(r"Link: (\S+)", box.last_body("lena@clinic.example"))
        assert found
        link = found.group(1)
        # no public_url: the link names the API's own address, which a browser can open
        assert link.startswith(f"{base}/reset?token=")
        page = httpx.get(link)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script src" not in page.text and "http" not in page.text.split("<script>")[0]

        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(link)
            assert "token" not in browser.eval("location.href")  # out of the address bar
            browser.eval("document.getElementById('password').value = 'new-password-12'")
            browser.eval("document.getElementById('again').value = 'new-password-12'")
            browser.eval("document.getElementById('save').click()")
            browser.wait_for("document.body.dataset.state === 'done'")
            # a second use of the same link is refused, with the server's reason shown
            browser.goto(link)
            browser.eval("document.getElementById('password').value = 'third-password-1'")
            browser.eval("document.getElementById('again').value = 'third-password-1'")
            browser.eval("document.getElementById('save').click()")
            browser.wait_for("document.body.dataset.state === 'refused'")
            assert "used" in browser.eval("document.getElementById('message').textContent")
        finally:
            browser.close()

        def login(password: str) -> int:
            body = {"username": "lena", "password": password}
            return httpx.post(f"{base}/api/v1/auth/login", json=body).status_code

        assert login("the-old-password") == 401
        assert login("new-password-12") == 200
        assert login("third-password-1") == 401
