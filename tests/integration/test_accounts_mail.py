"""PIN login and password reset against a real SMTP listener (aiosmtpd) on a free port.

FAQ: "PINs for the clinic login will be sent by mail to your clinic mail address".
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from server.accounts import clock
from tests.integration.test_accounts_support import PASSWORD, make_app


class Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append(message_from_bytes(envelope.content))
        return "250 OK"

    def last_body(self, to: str) -> str:
        mine = [m for m in self.mails if m["To"] == to]
        assert mine, f"no mail to {to}"
        return str(mine[-1].get_payload(decode=True).decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _pin(inbox: Inbox, to: str) -> str:
    found = re.search(r"PIN is (\d{6})", inbox.last_body(to))
    assert found
    return found.group(1)


def test_pin_login_by_mail(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    sections = {"smtp": {"host": "127.0.0.1", "port": port}, "accounts": {"pin_attempts": 3}}
    with make_app(tmp_path, sections) as app:
        app.add_user("ines", "radiologist", email="ines@clinic.example", pin_login=True)
        first = app.login("ines")
        assert first.status_code == 200
        body = first.json()
        assert body["pin_required"] and body["token"] == "" and body["challenge"]
        pin = _pin(inbox, "ines@clinic.example")
        wrong = "000000" if pin != "000000" else "111111"
        r = app.http.post("/api/v1/auth/pin", json={"challenge": body["challenge"], "pin": wrong})
        assert r.status_code == 401 and "2 attempt(s) left" in r.json()["detail"]
        r = app.http.post("/api/v1/auth/pin", json={"challenge": body["challenge"], "pin": pin})
        assert r.status_code == 200 and r.json()["token"]
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        assert app.http.get("/api/v1/auth/me", headers=h).json()["username"] == "ines"
        # single use
        r = app.http.post("/api/v1/auth/pin", json={"challenge": body["challenge"], "pin": pin})
        assert r.status_code == 401
        # attempt limit: three wrong PINs void it, even the right one afterwards
        challenge = app.login("ines").json()["challenge"]
        pin = _pin(inbox, "ines@clinic.example")
        for _ in range(3):
            app.http.post("/api/v1/auth/pin", json={"challenge": challenge, "pin": wrong})
        r = app.http.post("/api/v1/auth/pin", json={"challenge": challenge, "pin": pin})
        assert r.status_code == 401
        # expiry
        challenge = app.login("ines").json()["challenge"]
        pin = _pin(inbox, "ines@clinic.example")
        clock.advance(11 * 60)
        r = app.http.post("/api/v1/auth/pin", json={"challenge": challenge, "pin": pin})
        assert r.status_code == 401 and r.json()["detail"] == "PIN expired; log in again"
        # a wrong password never sends a PIN
        count = len(inbox.mails)
        assert app.login("ines", "wrong-password").status_code == 401
        assert len(inbox.mails) == count
        events = app.http.get(
            "/api/v1/audit", headers=app.admin(), params={"user": "ines", "event_id": "110114"}
        ).json()
        assert any(e["detail"] == "PIN accepted" for e in events)
        assert any(e["detail"] == "PIN expired; log in again" for e in events)


def test_pin_for_everyone_from_settings(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    sections = {"smtp": {"host": "127.0.0.1", "port": port}, "accounts": {"pin_login": True}}
    with make_app(tmp_path, sections) as app:
        with app.ctx.WriteSession() as db, db.begin():
            from server.accounts import users

            users.find(db, "admin").email = "it@clinic.example"  # type: ignore[union-attr]
        r = app.login("admin", "correct-horse-battery")
        assert r.json()["pin_required"]
        pin = _pin(inbox, "it@clinic.example")
        r = app.http.post("/api/v1/auth/pin", json={"challenge": r.json()["challenge"], "pin": pin})
        assert r.status_code == 200


def test_password_reset_by_mailed_single_use_link(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    with make_app(tmp_path, {"smtp": {"host": "127.0.0.1", "port": port}}) as app:
        app.add_user("jon", "guest", email="jon@clinic.example")
        old = app.token("jon")
        same = app.http.post("/api/v1/auth/password-reset", json={"username": "nobody"})
        r = app.http.post("/api/v1/auth/password-reset", json={"username": "JON"})
        assert r.status_code == same.status_code == 202 and r.json() == same.json()
        token = re.search(r"Reset token: (\S+)", inbox.last_body("jon@clinic.example"))
        assert token and len(inbox.mails) == 1
        confirm = {"token": token.group(1), "new_password": "brand-new-password"}
        assert app.http.post("/api/v1/auth/password-reset/confirm", json=confirm).status_code == 204
        assert app.http.post("/api/v1/auth/password-reset/confirm", json=confirm).status_code == 400
        assert app.login("jon", PASSWORD).status_code == 401
        assert app.login("jon", "brand-new-password").status_code == 200
        assert app.http.get("/api/v1/auth/me", headers=old).status_code == 401
        # expiry
        app.http.post("/api/v1/auth/password-reset", json={"username": "jon"})
        token = re.search(r"Reset token: (\S+)", inbox.last_body("jon@clinic.example"))
        assert token
        clock.advance(31 * 60)
        r = app.http.post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": token.group(1), "new_password": "yet-another-password"},
        )
        assert r.status_code == 400 and "expired" in r.json()["detail"]
