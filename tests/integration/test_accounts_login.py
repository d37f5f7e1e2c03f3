"""Login, lockout/back-off, sessions (expiry, idle, revocation), password change, devices
(the three IT-FAQ approval policies) and the tamper-evident audit chain (issue 4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lucent.api.client import ApiError, SessionExpired
from server.accounts import clock
from tests.integration.test_accounts_support import ADMIN, PASSWORD, make_app


def _events(app, **params):  # type: ignore[no-untyped-def]
    return app.admin_client().audit(**params)


def test_names_are_case_insensitive_and_refusals_do_not_reveal_users(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.add_user("Dr.Weiss", "radiologist")
        assert app.login("DR.WEISS").status_code == 200
        unknown = app.login("nobody-here")
        wrong = app.login("dr.weiss", "not-the-password")
        assert unknown.status_code == wrong.status_code == 401
        assert unknown.json() == wrong.json() == {"detail": "wrong user name or password"}


def test_lockout_with_back_off_for_real_and_unknown_names(tmp_path: Path) -> None:
    settings = {"accounts": {"max_failures": 3, "lockout_seconds": 60.0}}
    with make_app(tmp_path, settings) as app:
        app.add_user("alice", "radiologist")
        for name in ("alice", "ghost"):
            codes = [app.login(name, "wrong-password").status_code for _ in range(3)]
            assert codes == [401, 401, 401]
            locked = app.login(name, PASSWORD)
            assert locked.status_code == 429 and "try again" in locked.json()["detail"]
            assert int(locked.headers["retry-after"]) > 0
        clock.advance(61)
        assert app.login("alice").status_code == 200
        # back-off: failures go on after a lockout ends → locked again at once, for longer
        for _ in range(3):
            app.login("alice", "wrong-password")
        clock.advance(61)
        assert app.login("alice", "wrong-password").status_code == 401
        r = app.login("alice")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 60
        alerts = _events(app, event_id="110113")
        assert any(e.detail == "login locked" and e.user == "alice" for e in alerts)
        failures = _events(app, event_id="110114", outcome=4)
        assert {e.user for e in failures} >= {"alice", "ghost"}


def test_lockout_per_client_address(tmp_path: Path) -> None:
    settings = {"accounts": {"max_failures": 100, "address_max_failures": 4}}
    with make_app(tmp_path, settings) as app:
        app.add_user("bob", "radiologist")
        for i in range(4):
            assert app.login(f"user-{i}", "wrong-password").status_code == 401
        assert app.login("bob").status_code == 429  # bob never logged in from this address


def test_session_expiry_idle_logoff_logout_and_admin_kill(tmp_path: Path) -> None:
    settings = {"accounts": {"idle_minutes": 10.0}, "api": {"session_minutes": 60}}
    with make_app(tmp_path, settings) as app:
        app.add_user("carol", "radiologist")
        h = app.token("carol")
        assert app.http.get("/api/v1/auth/me", headers=h).status_code == 200
        clock.advance(9 * 60)
        assert app.http.get("/api/v1/auth/me", headers=h).status_code == 200
        clock.advance(11 * 60)  # idle for 11 minutes
        r = app.http.get("/api/v1/auth/me", headers=h)
        assert r.status_code == 401 and "inactivity" in r.json()["detail"]
        h = app.token("carol")
        for _ in range(7):  # active every 9 minutes, but the session lives 60 minutes
            clock.advance(9 * 60)
            app.http.get("/api/v1/auth/me", headers=h)
        r = app.http.get("/api/v1/auth/me", headers=h)
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        h = app.token("carol")
        assert app.http.post("/api/v1/auth/logout", headers=h).status_code == 204
        assert app.http.get("/api/v1/auth/me", headers=h).status_code == 401
        c1, c2 = app.client("carol"), app.client("carol")
        sessions = c1.my_sessions()
        assert len(sessions) == 2 and sum(s.current for s in sessions) == 1
        assert app.admin_client().revoke_user_sessions("carol") == 2
        for c in (c1, c2):
            with pytest.raises(SessionExpired):
                c.me()


def test_tokens_are_long_and_stored_only_as_hashes(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        token = app.login(*ADMIN).json()["token"]
        assert len(token) >= 43  # 256 bits, URL-safe base64
        db = sqlite3.connect(tmp_path / "data" / "index.sqlite3")
        stored = [r[0] for r in db.execute("SELECT token_hash FROM login_sessions")]
        db.close()
        assert token not in stored and len(stored[0]) == 64


def test_password_change_ends_other_sessions(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.add_user("dave", "guest")
        c1, c2 = app.client("dave"), app.client("dave")
        with pytest.raises(ApiError) as refused:
            c1.change_password("wrong", "another-long-one")
        assert refused.value.status == 400 and "current password" in refused.value.detail
        c1.change_password(PASSWORD, "another-long-one")
        assert c1.me().username == "dave"
        with pytest.raises(SessionExpired):
            c2.me()
        assert app.login("dave").status_code == 401
        assert app.login("dave", "another-long-one").status_code == 200


def _device_login(app, user: str, device: str):  # type: ignore[no-untyped-def]
    return app.login(user, device_id=device, device_name=f"{user}'s {device}")


def test_device_policy_automatic(tmp_path: Path) -> None:
    with make_app(tmp_path, {"accounts": {"device_approval": "automatic"}}) as app:
        app.add_user("erin", "radiologist")
        assert _device_login(app, "erin", "phone").status_code == 200
        assert _device_login(app, "erin", "tablet").status_code == 200
        assert app.login("erin").status_code == 200  # no device identity needed


def test_device_policy_first_device_then_approval_and_revocation(tmp_path: Path) -> None:
    with make_app(tmp_path, {"accounts": {"device_approval": "first-device"}}) as app:
        app.add_user("frank", "radiologist")
        admin = app.admin_client()
        assert app.login("frank").status_code == 403  # identity required
        first = _device_login(app, "frank", "phone")
        assert first.status_code == 200
        second = _device_login(app, "frank", "tablet")
        assert second.status_code == 403 and "not approved" in second.json()["detail"]
        [device] = admin.devices(status="pending")
        assert device.username == "frank" and device.name == "frank's tablet"
        assert admin.approve_device(device.id).status == "approved"
        assert admin.rename_device(device.id, "ward tablet").name == "ward tablet"
        tablet = app.client()
        assert tablet.login_device("frank", PASSWORD, "tablet").token
        assert tablet.me().username == "frank"
        assert admin.revoke_device(device.id).status == "revoked"
        with pytest.raises(SessionExpired) as ended:
            tablet.me()
        assert "device" in ended.value.detail
        assert _device_login(app, "frank", "tablet").status_code == 403
        # a wrong password on a pending device says "wrong password", not "device"
        r = app.login("frank", "bad-password", device_id="laptop")
        assert r.status_code == 401
        decisions = _events(app, event_id="110113")
        assert any(e.detail == "device revoked" for e in decisions)
        assert any(e.detail == "device renamed" for e in decisions)


def test_device_policy_manual(tmp_path: Path) -> None:
    with make_app(tmp_path, {"accounts": {"device_approval": "manual"}}) as app:
        app.add_user("gina", "radiologist")
        r = _device_login(app, "gina", "phone")
        assert r.status_code == 403 and "not approved" in r.json()["detail"]
        admin = app.admin_client()
        [device] = admin.devices()[-1:]
        assert device.status == "pending"
        admin.approve_device(device.id)
        assert _device_login(app, "gina", "phone").status_code == 200


def test_audit_chain_detects_an_altered_record(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        app.add_user("hank", "radiologist")
        app.login("hank", "wrong-password")
        admin = app.admin_client()
        assert admin.audit_verify().intact is True
        path = tmp_path / "data" / "index.sqlite3"
        db = sqlite3.connect(path)
        try:
            db.execute("UPDATE audit_records SET user = 'someone' WHERE id = 2")
            raise AssertionError("the database accepted an UPDATE of the audit trail")
        except sqlite3.DatabaseError as exc:
            assert "append-only" in str(exc)
        # an attacker with file access drops the trigger and edits one record
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit_records SET user = 'someone' WHERE id = 2")
        db.commit()
        db.close()
        result = admin.audit_verify()
        assert result.intact is False and result.broken_at == 2


def test_audit_export_is_dicom_audit_xml(tmp_path: Path) -> None:
    from xml.etree import ElementTree as ET

    with make_app(tmp_path) as app:
        app.login("nobody", "wrong-password")
        root = ET.fromstring(app.admin_client().audit_export(event_id="110114"))
        messages = root.findall("AuditMessage")
        assert len(messages) >= 2
        failed = messages[0]
        ident = failed.find("EventIdentification")
        assert ident is not None and ident.get("EventOutcomeIndicator") == "4"
        assert ident.find("EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
        assert ident.find("EventTypeCode").get("csd-code") == "110122"  # type: ignore[union-attr]
        assert failed.find("ActiveParticipant").get("UserID") == "nobody"  # type: ignore[union-attr]
        assert failed.find("AuditSourceIdentification").get("AuditSourceID") == "LUCENT"  # type: ignore[union-attr]
