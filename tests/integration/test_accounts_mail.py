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

from lucent.api.client import ApiError, SessionExpired
from server import config
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
        api = app.client()
        first = api.login_device("ines", PASSWORD, "ines-phone", "Ines' phone")
        assert first.pin_required and first.token == "" and first.challenge
        assert api.token is None  # no session before the PIN
        pin = _pin(inbox, "ines@clinic.example")
        wrong = "000000" if pin != "000000" else "111111"
        with pytest.raises(ApiError) as refused:
            api.confirm_pin(first.challenge, wrong)
        assert refused.value.status == 401 and "2 attempt(s) left" in refused.value.detail
        assert api.confirm_pin(first.challenge, pin).token
        assert api.me().username == "ines"
        [session] = api.my_sessions()
        assert session.current and session.device == "Ines' phone"
        # single use
        r = app.http.post("/api/v1/auth/pin", json={"challenge": first.challenge, "pin": pin})
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
        events = app.admin_client().audit(user="ines", event_id="110114")
        assert any(e.detail == "PIN accepted" for e in events)
        assert any(e.detail == "PIN expired; log in again" for e in events)


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
        old = app.client("jon")
        api = app.client()
        same = app.http.post("/api/v1/auth/password-reset", json={"username": "nobody"})
        r = app.http.post("/api/v1/auth/password-reset", json={"username": "JON"})
        assert r.status_code == same.status_code == 202 and r.json() == same.json()
        token = re.search(r"Reset token: (\S+)", inbox.last_body("jon@clinic.example"))
        assert token and len(inbox.mails) == 1
        api.confirm_password_reset(token.group(1), "brand-new-password")
        with pytest.raises(ApiError) as used:
            api.confirm_password_reset(token.group(1), "brand-new-password")
        assert used.value.status == 400
        assert app.login("jon", PASSWORD).status_code == 401
        assert app.login("jon", "brand-new-password").status_code == 200
        with pytest.raises(SessionExpired):
            old.me()
        # expiry
        clock.advance(121)  # one reset mail per account every reset_mail_seconds
        accepted = api.request_password_reset("jon")
        assert accepted.detail == api.request_password_reset("nobody").detail
        token = re.search(r"Reset token: (\S+)", inbox.last_body("jon@clinic.example"))
        assert token
        clock.advance(31 * 60)
        r = app.http.post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": token.group(1), "new_password": "yet-another-password"},
        )
        assert r.status_code == 400 and "expired" in r.json()["detail"]


def _link(inbox: Inbox, to: str) -> str:
    found = re.search(r"Link: (\S+)", inbox.last_body(to))
    assert found
    return found.group(1)


def test_mailed_and_shared_links_never_take_the_request_host(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """Probe 7: an anonymous reset request with ``Host: evil.example`` had a valid token
    mailed as http://evil.example/reset?token=...; share URLs were built the same way."""
    from tests.integration.test_accounts_support import ct_bytes

    inbox, port = smtp
    sections = {"smtp": {"host": "127.0.0.1", "port": port}, "api": {"port": 18750}}
    with make_app(tmp_path / "a", sections) as app:
        app.add_user("kim", "radiologist", {"*": ["read", "share"]}, email="kim@clinic.example")
        evil = {"Host": "evil.example"}
        r = app.http.post("/api/v1/auth/password-reset", json={"username": "kim"}, headers=evil)
        assert r.status_code == 202
        assert _link(inbox, "kim@clinic.example").startswith("http://127.0.0.1:18750/reset?token=")
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.99.1")) == 0
        headers = {**app.token("kim"), **evil}
        body = {"study_uid": "1.2.826.99.1", "expires_hours": 1}
        r = app.http.post("/api/v1/shares", json=body, headers=headers)
        assert r.status_code == 201 and r.json()["url"].startswith("http://127.0.0.1:18750/share/")
    sections["accounts"] = {"public_url": "https://lucent.clinic.example/"}
    with make_app(tmp_path / "b", sections) as app:
        app.add_user("kim", "radiologist", email="kim@clinic.example")
        app.http.post("/api/v1/auth/password-reset", json={"username": "kim"}, headers=evil)
        link = _link(inbox, "kim@clinic.example")
        assert link.startswith("https://lucent.clinic.example/reset?token=")
    with pytest.raises(config.ConfigError, match="public_url"):
        config.parse({"accounts": {"public_url": "lucent.clinic.example"}})


def _reset_token(app, inbox: Inbox, name: str) -> str:  # type: ignore[no-untyped-def]
    clock.advance(121)  # past the per-account pause between reset mails (120 s)
    r = app.http.post("/api/v1/auth/password-reset", json={"username": name})
    assert r.status_code == 202
    found = re.search(r"Reset token: (\S+)", inbox.last_body(f"{name}@clinic.example"))
    assert found
    return found.group(1)


def test_every_reset_token_dies_when_the_password_changes(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """Probe 7: after the newest of several mailed tokens was used, an older one still reset
    the password; so did one mailed before the owner changed it, or before an administrator
    set it or disabled the account."""
    inbox, port = smtp
    with make_app(tmp_path, {"smtp": {"host": "127.0.0.1", "port": port}}) as app:
        app.add_user("lou", "guest", email="lou@clinic.example")

        def confirm(token: str, password: str) -> int:
            body = {"token": token, "new_password": password}
            return app.http.post("/api/v1/auth/password-reset/confirm", json=body).status_code

        older, newer = _reset_token(app, inbox, "lou"), _reset_token(app, inbox, "lou")
        assert confirm(newer, "from-the-newer-mail") == 204
        assert confirm(older, "from-the-older-mail") == 400
        assert confirm(newer, "from-the-newer-mail-again") == 400  # single use

        mailed = _reset_token(app, inbox, "lou")
        app.client("lou", "from-the-newer-mail").change_password(
            "from-the-newer-mail", "changed-by-the-owner"
        )
        assert confirm(mailed, "attacker-chosen-one") == 400

        admin = app.admin()
        mailed = _reset_token(app, inbox, "lou")
        body = {"password": "set-by-the-admin-1"}
        assert app.http.patch("/api/v1/users/lou", headers=admin, json=body).status_code == 200
        assert confirm(mailed, "attacker-chosen-two") == 400

        mailed = _reset_token(app, inbox, "lou")
        for enabled in (False, True):
            body = {"enabled": enabled}
            r = app.http.patch("/api/v1/users/lou", headers=admin, json=body)
            assert r.status_code == 200
        assert confirm(mailed, "attacker-chosen-three") == 400
        assert app.login("lou", "set-by-the-admin-1").status_code == 200


def test_mail_addresses_are_checked_and_a_failed_mail_reads_like_an_unknown_user(
    tmp_path: Path, smtp: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Probe 7: "not-an-email\\r\\nBcc: evil@x" was stored (201); a reset for that user
    then answered 500 while unknown users got 202, and its token was kept unmailed."""
    import sqlite3

    inbox, port = smtp
    with make_app(tmp_path, {"smtp": {"host": "127.0.0.1", "port": port}}) as app:
        admin = app.admin()
        bad = "not-an-email\r\nBcc: evil@x"
        body = {"username": "mo", "password": PASSWORD, "role": "guest", "email": bad}
        r = app.http.post("/api/v1/users", headers=admin, json=body)
        assert r.status_code == 422 and "e-mail" in r.json()["detail"]
        body["email"] = " mo@clinic.example "
        r = app.http.post("/api/v1/users", headers=admin, json=body)
        assert r.status_code == 201 and r.json()["email"] == "mo@clinic.example"
        for address in (bad, "Mo <mo@clinic.example>", "mo@", "mo@clinic..example"):
            r = app.http.patch("/api/v1/users/mo", headers=admin, json={"email": address})
            assert r.status_code == 422, address
        # an address stored before addresses were checked: no mail can carry it
        db = sqlite3.connect(tmp_path / "data" / "index.sqlite3")
        db.execute("UPDATE users SET email = ? WHERE username = 'mo'", (bad,))
        db.commit()
        unknown = app.http.post("/api/v1/auth/password-reset", json={"username": "nobody"})
        failed = app.http.post("/api/v1/auth/password-reset", json={"username": "mo"})
        assert failed.status_code == unknown.status_code == 202
        assert failed.json() == unknown.json()
        assert inbox.mails == []
        assert "password-reset mail for 'mo' not sent" in caplog.text
        assert db.execute("SELECT COUNT(*) FROM password_resets").fetchone() == (0,)
        db.close()


def test_reset_mails_are_throttled_per_account_and_per_address(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    """Probe 7: six anonymous reset requests in one second sent seven mails."""
    inbox, port = smtp
    sections = {
        "smtp": {"host": "127.0.0.1", "port": port},
        "accounts": {"reset_mail_seconds": 120.0, "reset_address_per_hour": 10},
    }
    with make_app(tmp_path, sections) as app:
        for name in ("nia", "ola"):
            app.add_user(name, "guest", email=f"{name}@clinic.example")

        def ask(name: str) -> dict[str, str]:
            r = app.http.post("/api/v1/auth/password-reset", json={"username": name})
            assert r.status_code == 202
            return dict(r.json())

        answers = [ask("nia") for _ in range(6)]
        assert len(inbox.mails) == 1 and answers == [answers[0]] * 6
        clock.advance(121)
        ask("nia")
        assert len(inbox.mails) == 2
        # per address: 10 requests an hour for any names (7 used above), then nothing
        ask("ola")
        assert len(inbox.mails) == 3
        clock.advance(121)
        for _ in range(2):
            ask("nobody")
        assert ask("ola") == answers[0]
        assert len(inbox.mails) == 3
        clock.advance(3600)
        ask("ola")
        assert [m["To"] for m in inbox.mails][-1] == "ola@clinic.example"
        assert len(inbox.mails) == 4
        events = app.admin_client().audit(event_id="110113", outcome=4)
        assert any(e.detail == "password reset: too many requests" for e in events)
