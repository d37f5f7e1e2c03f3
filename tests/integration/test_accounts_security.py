"""Account management against an outside security tester's findings (probe 7): who may
make whom an administrator, address lockouts, grants and quotas for things that do not
exist, the password policy, and share links that outlive their creator's rights.

Each test drives the real app in-process over HTTP (ASGI) and failed before its fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from lucent.api.client import ApiError
from tests.integration.test_accounts_support import PASSWORD, ct_bytes, make_app

IT_PASSWORD = "it-has-a-long-password"


def test_clinic_it_cannot_make_or_touch_administrators(tmp_path: Path) -> None:
    """Clinic IT "runs the system but reads no patient data": it must not promote itself,
    create administrators, or take over, disable or unlock an administrator account."""
    with make_app(tmp_path) as app:
        admin = app.admin()
        for name, role in (("it1", "clinic-it"), ("admin2", "administrator"), ("rad", "guest")):
            body = {"username": name, "password": IT_PASSWORD, "role": role}
            assert app.http.post("/api/v1/users", headers=admin, json=body).status_code == 201
        it = app.token("it1", IT_PASSWORD)

        def patch(name: str, body: dict[str, object]) -> int:
            return app.http.patch(f"/api/v1/users/{name}", headers=it, json=body).status_code

        assert patch("it1", {"role": "administrator"}) == 403
        assert patch("rad", {"role": "administrator"}) == 403
        made = {"username": "it-admin", "password": IT_PASSWORD, "role": "administrator"}
        r = app.http.post("/api/v1/users", headers=it, json=made)
        assert r.status_code == 403 and "administrator" in r.json()["detail"]
        for change in ({"password": "taken-over-by-it"}, {"enabled": False}, {"email": "x@y.z"}):
            assert patch("admin2", change) == 403
        assert patch("admin2", {"role": "guest"}) == 403
        for route in ("unlock", "sessions/revoke"):
            assert app.http.post(f"/api/v1/users/admin2/{route}", headers=it).status_code == 403
        r = app.http.put("/api/v1/users/admin2/grants", headers=it, json={})
        assert r.status_code == 403
        # nothing of it happened: admin2 logs in with its own password, it1 is still clinic IT
        assert app.login("admin2", IT_PASSWORD).status_code == 200
        assert (
            app.http.get("/api/v1/auth/me", headers=app.token("it1", IT_PASSWORD)).json()["role"]
            == "clinic-it"
        )
        assert app.http.get("/api/v1/studies", headers=it).status_code == 403
        # what clinic IT is for still works: non-administrator accounts
        assert patch("rad", {"role": "radiologist", "password": "new-" + PASSWORD}) == 200
        body = {"username": "ref", "password": IT_PASSWORD, "role": "referring-physician"}
        assert app.http.post("/api/v1/users", headers=it, json=body).status_code == 201
        # nobody changes their own role, administrators neither; another administrator may
        assert patch("it1", {"role": "guest"}) == 403
        r = app.http.patch("/api/v1/users/admin", headers=admin, json={"role": "guest"})
        assert r.status_code == 403 and "own role" in r.json()["detail"]
        r = app.http.patch("/api/v1/users/it1", headers=admin, json={"role": "administrator"})
        assert r.status_code == 200
        refusals = app.admin_client().audit(event_id="110113", user="it1", outcome=4)
        assert any("administrator" in e.detail for e in refusals)


def _without_countdown(response: httpx.Response) -> str:
    return re.sub(r"in \d+ seconds", "in N seconds", response.json()["detail"])


def test_address_lockout_lets_known_users_in_and_can_be_cleared(tmp_path: Path) -> None:
    """Probe 7: after 20 failures with random names from one address, every correct login
    from it got 429 (administrators' too) and nothing could clear the address lock."""
    settings = {"accounts": {"max_failures": 100, "address_max_failures": 4}}
    with make_app(tmp_path, settings) as app:
        app.add_user("alice", "radiologist")
        app.add_user("bob", "radiologist")
        assert app.login("alice").status_code == 200  # alice works from this address
        for i in range(4):
            assert app.login(f"nobody-{i}", "wrong-password").status_code == 401
        stranger = app.login("bob")  # right password, never logged in from here
        assert stranger.status_code == 429 and int(stranger.headers["retry-after"]) > 0
        guess = app.login("alice", "wrong-password")
        # the same answer for everyone but the countdown, which may tick between requests
        assert guess.status_code == 429 and _without_countdown(guess) == _without_countdown(
            stranger
        )
        assert _without_countdown(app.login("nobody-9", "wrong-password")) == _without_countdown(
            stranger
        )
        assert app.login("alice").status_code == 200
        admin = app.admin_client()  # the administrator added the users from here
        [lock] = [x for x in admin.lockouts() if x.kind == "address"]
        assert lock.subject == "testclient" and lock.failures == 4
        admin.clear_address_lockout("testclient")
        assert app.login("bob").status_code == 200
        with pytest.raises(ApiError) as gone:
            admin.clear_address_lockout("testclient")
        assert gone.value.status == 404
        assert admin.lockouts() == []
        cleared = app.admin_client().audit(event_id="110113", user="admin")
        assert any(e.detail == "address lockout cleared: testclient" for e in cleared)


def test_quota_limits_are_checked(tmp_path: Path) -> None:
    """Probe 7: limit_mb 1e300 answered 500 (OverflowError), a negative one was stored."""
    with make_app(tmp_path) as app:
        admin = app.admin()
        for limit in (1e300, -5, 2.0**44):
            body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": limit}
            r = app.http.put("/api/v1/quotas", headers=admin, json=body)
            assert r.status_code == 422 and "limit_mb" in r.json()["detail"], limit
        nan = b'{"kind": "pool", "subject": "DEFAULT", "limit_mb": NaN}'
        headers = {**admin, "Content-Type": "application/json"}
        assert app.http.put("/api/v1/quotas", headers=headers, content=nan).status_code == 422
        assert app.http.get("/api/v1/quotas", headers=admin).json() == []
        body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": 0}
        [quota] = app.http.put("/api/v1/quotas", headers=admin, json=body).json()
        assert quota["limit_bytes"] == 0


def test_share_links_end_with_their_creators_rights(tmp_path: Path) -> None:
    """Probe 7: a link and its PIN still opened the study after its creator was disabled or
    lost the share right, for up to share_max_days; clinic IT saw no links to revoke."""
    study = "1.2.826.0.1.3680043.8.498.99.1"
    with make_app(tmp_path) as app:
        assert app.store(ct_bytes(tmp_path, study_uid=study)) == 0
        app.add_user("rita", "radiologist", {"DEFAULT": ["read", "share"]})
        app.add_user("it2", "clinic-it")
        admin = app.admin()
        body = {"study_uid": study, "expires_hours": 24, "note": "for Dr. Lee"}
        created = app.http.post("/api/v1/shares", headers=app.token("rita"), json=body).json()
        path = "/share/" + created["url"].rsplit("/", 1)[1]

        def opens() -> int:
            """PIN, then the content, in a browser of its own (its own cookie)."""
            with TestClient(app.app) as browser:
                r = browser.post(f"{path}/pin", json={"pin": created["pin"]})
                if r.status_code == 200:
                    r = browser.get(f"{path}/content")
                return r.status_code

        assert opens() == 200
        viewer = app.http  # a viewer that stays open while the creator loses the right
        assert viewer.post(f"{path}/pin", json={"pin": created["pin"]}).status_code == 200

        def user(change: dict[str, object], grants: dict[str, list[str]] | None = None) -> None:
            if grants is None:
                r = app.http.patch("/api/v1/users/rita", headers=admin, json=change)
            else:
                r = app.http.put("/api/v1/users/rita/grants", headers=admin, json=grants)
            assert r.status_code == 200

        user({"enabled": False})
        assert opens() == 410
        assert viewer.get(f"{path}/content").status_code == 401  # an open viewer too
        assert app.http.get(path).status_code == 410
        user({"enabled": True})
        assert opens() == 200
        for lost in ({"DEFAULT": ["read"]}, {"DEFAULT": ["share"]}, {}):
            user({}, lost)
            assert opens() == 410, lost
        user({}, {"DEFAULT": ["read", "share"]})
        user({"role": "guest"})  # a guest may not share at all
        assert opens() == 410
        user({"role": "radiologist"})
        assert opens() == 200
        # clinic IT lists and revokes every link, without the study it shows
        it = app.token("it2", PASSWORD)
        [listed] = app.http.get("/api/v1/shares", headers=it).json()
        assert listed["creator"] == "rita" and listed["pool"] == "DEFAULT"
        assert listed["study_uid"] == listed["note"] == "" and study not in str(listed)
        [full] = app.http.get("/api/v1/shares", headers=admin).json()
        assert full["study_uid"] == study and full["note"] == "for Dr. Lee"
        assert app.http.delete(f"/api/v1/shares/{listed['id']}", headers=it).status_code == 204
        assert opens() == 410


WEAK = ["short", "        ", "password", "12345678", "PassWord", "aaaaaaaa", "Qwertyuiop"]


def test_one_password_policy_on_every_route(tmp_path: Path) -> None:
    """Probe 7: creation took the user name, eight spaces, "password" and "12345678",
    though a change refused the user name."""
    from datetime import timedelta

    from server.accounts import clock, login, users
    from server.index.account_models import PasswordReset

    with make_app(tmp_path) as app:
        admin = app.admin()
        for password in [*WEAK, "LongUserName", " longusername "]:
            body = {"username": "LongUserName", "password": password, "role": "guest"}
            r = app.http.post("/api/v1/users", headers=admin, json=body)
            assert r.status_code == 422 and "password" in r.json()["detail"], password
        app.add_user("longusername", "guest")
        own = app.token("longusername")
        with app.ctx.WriteSession() as db, db.begin():  # as a mailed reset link leaves it
            user = users.find(db, "longusername")
            assert user is not None
            db.add(
                PasswordReset(
                    token_hash=login.digest("mailed-token"),
                    user_pk=user.id,
                    expires_at=clock.now() + timedelta(minutes=30),
                    used=False,
                )
            )
        for password in [*WEAK, "LONGUSERNAME"]:
            body = {"old_password": PASSWORD, "new_password": password}
            r = app.http.post("/api/v1/auth/password", headers=own, json=body)
            assert r.status_code == 400, password
            r = app.http.patch(
                "/api/v1/users/longusername", headers=admin, json={"password": password}
            )
            assert r.status_code == 422, password
            body = {"token": "mailed-token", "new_password": password}
            r = app.http.post("/api/v1/auth/password-reset/confirm", json=body)
            assert r.status_code == 400 and "password" in r.json()["detail"], password
        body = {"token": "mailed-token", "new_password": "a sound passphrase"}
        r = app.http.post("/api/v1/auth/password-reset/confirm", json=body)
        assert r.status_code == 204
        assert app.login("longusername", "a sound passphrase").status_code == 200


def test_grants_and_quotas_name_things_that_exist(tmp_path: Path) -> None:
    """Probe 7: grants on pool "NOPOOL" and quotas for unknown users, groups and pools were
    accepted and stored, where a typo looks like a right or a limit that is set."""
    with make_app(tmp_path) as app:
        admin = app.admin()
        body = {
            "username": "x2",
            "password": PASSWORD,
            "role": "guest",
            "grants": {"NOPOOL": ["read"]},
        }
        r = app.http.post("/api/v1/users", headers=admin, json=body)
        assert r.status_code == 422 and "NOPOOL" in r.json()["detail"]
        assert app.http.get("/api/v1/users/x2", headers=admin).status_code == 404
        app.add_user("x3", "guest", {"*": ["read"], "DEFAULT": ["read"]})
        r = app.http.put("/api/v1/users/x3/grants", headers=admin, json={"Default": ["read"]})
        assert r.status_code == 422 and "Default" in r.json()["detail"]
        assert app.http.post("/api/v1/groups", headers=admin, json={"name": "g"}).status_code == 201
        r = app.http.put("/api/v1/groups/g/grants", headers=admin, json={"NOPOOL": ["read"]})
        assert r.status_code == 422 and "NOPOOL" in r.json()["detail"]
        for kind, subject in (("user", "nosuchuser"), ("group", "nogroup"), ("pool", "NOPOOL")):
            body = {"kind": kind, "subject": subject, "limit_mb": 10}
            r = app.http.put("/api/v1/quotas", headers=admin, json=body)
            assert r.status_code == 422 and subject in r.json()["detail"], kind
            body["limit_mb"] = None  # removing what is not there stays harmless
            assert app.http.put("/api/v1/quotas", headers=admin, json=body).status_code == 200
        for kind, subject in (("user", "X3"), ("group", "g"), ("pool", "DEFAULT")):
            body = {"kind": kind, "subject": subject, "limit_mb": 10}
            assert app.http.put("/api/v1/quotas", headers=admin, json=body).status_code == 200
        assert len(app.http.get("/api/v1/quotas", headers=admin).json()) == 3


def test_basic_logins_follow_the_login_rules_and_are_audited(tmp_path: Path) -> None:
    """HTTP Basic (DICOMweb clients): the lockout was not audited, and a locked address
    refused a known user with the right password that /auth/login lets in (probe 7)."""
    import base64

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    settings = {"accounts": {"max_failures": 3, "address_max_failures": 6}}
    with make_app(tmp_path, settings) as app:
        app.add_user("carol", "radiologist", {"DEFAULT": ["read"]})
        assert app.login("carol").status_code == 200  # carol works from this address
        for _ in range(3):
            r = app.http.get("/dicom-web/studies", headers=basic("carol", "wrong-password"))
            assert r.status_code == 401
        r = app.http.get("/dicom-web/studies", headers=basic("carol", PASSWORD))
        assert r.status_code == 429  # the account is locked now
        locks = app.admin_client().audit(event_id="110113", user="carol")
        assert any(e.detail == "Basic" for e in locks), [e.detail for e in locks]
        app.http.post("/api/v1/users/carol/unlock", headers=app.admin())
        for i in range(6):  # guessing other names locks the address
            app.http.get("/dicom-web/studies", headers=basic(f"x{i}", "wrong-password"))
        r = app.http.get("/dicom-web/studies", headers=basic("carol", PASSWORD))
        assert r.status_code == 200, r.text  # a familiar user with the right password
        r = app.http.get("/dicom-web/studies", headers=basic("nobody", "wrong-password"))
        assert r.status_code == 429


def test_user_names_that_cannot_travel_in_a_path_are_refused(tmp_path: Path) -> None:
    """create-admin (the same users.create_user) took "ops/night"; GET/PATCH/unlock
    /users/ops%2Fnight were then 404, so the account could not be managed (outside probe)."""
    with make_app(tmp_path) as app:
        for name in ("ops/night", "a\\b", "who?", "x#y", "p%20q", "tab\there"):
            r = app.http.post(
                "/api/v1/users",
                headers=app.admin(),
                json={"username": name, "password": "a-long-enough-password", "role": "guest"},
            )
            assert r.status_code == 422 and "user name" in r.text, (name, r.text)
