"""Only administrators give or change rights to patient data; a password set by someone
else is one-time (probe 21).

Clinic IT "runs the system but reads no patient data" (server/accounts/rights.py), yet it
created a radiologist with ``{"*": ["read"]}`` and read every pool through it, set a
radiologist's password and logged in as them, and widened grants. Each test drives the
real app in-process over HTTP (ASGI) and failed before the fix.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lucent.api.client import PasswordChangeRequired
from tests.integration.test_accounts_support import AppUnderTest, ct_bytes, make_app

IT_PASSWORD = "it-has-a-long-password"
POOLS = [
    {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
    {"name": "ONCO", "ae_title": "LUCONCO", "port": 0},
]


def _clinic_it(app: AppUnderTest) -> dict[str, str]:
    body = {"username": "it1", "password": IT_PASSWORD, "role": "clinic-it"}
    assert app.http.post("/api/v1/users", headers=app.admin(), json=body).status_code == 201
    return app.token("it1", IT_PASSWORD)


def _one_time(r: object) -> bool:
    return (
        getattr(r, "status_code", 0) == 403
        and getattr(r, "headers", {}).get("x-lucent-error") == "password-change-required"
    )


def test_clinic_it_gives_no_data_rights(tmp_path: Path) -> None:
    with make_app(tmp_path, pools=POOLS) as app:
        assert app.store(ct_bytes(tmp_path, patient_id="DEF-1")) == 0
        it = _clinic_it(app)
        admin = app.admin()
        app.add_user("rad_def", "radiologist", {"DEFAULT": ["read"]})
        app.add_user("guest1", "guest")
        app.http.post("/api/v1/groups", headers=admin, json={"name": "granted"})
        app.http.put("/api/v1/groups/granted/grants", headers=admin, json={"*": ["read"]})
        app.http.post("/api/v1/groups", headers=admin, json={"name": "plain"})

        # a proxy account with rights to every pool
        proxy = {"username": "proxy", "password": IT_PASSWORD, "role": "radiologist"}
        r = app.http.post("/api/v1/users", headers=it, json={**proxy, "grants": {"*": ["read"]}})
        assert r.status_code == 403 and "administrator" in r.json()["detail"]
        assert app.login("proxy", IT_PASSWORD).status_code == 401  # not created
        # grants, groups with grants, the role of an account with grants: administrators only
        refused = [
            app.http.put("/api/v1/users/rad_def/grants", headers=it, json={"*": ["read"]}),
            app.http.put("/api/v1/users/guest1/grants", headers=it, json={"ONCO": ["read"]}),
            app.http.put("/api/v1/groups/plain/grants", headers=it, json={"*": ["read"]}),
            app.http.put("/api/v1/groups/granted/members", headers=it, json=["guest1"]),
            app.http.put("/api/v1/groups/plain/members", headers=it, json=["admin"]),
            app.http.patch("/api/v1/users/rad_def", headers=it, json={"role": "guest"}),
            app.http.delete("/api/v1/groups/granted", headers=it),
        ]
        assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
        groups = {g["name"]: g for g in app.http.get("/api/v1/groups", headers=admin).json()}
        assert groups["granted"]["members"] == [] and groups["plain"]["grants"] == {}
        user = app.http.get("/api/v1/users/rad_def", headers=admin).json()
        assert user["grants"] == {"DEFAULT": ["read"]} and user["role"] == "radiologist"
        assert app.http.get("/api/v1/users/guest1", headers=admin).json()["grants"] == {}
        # what clinic IT is for still works: accounts without data rights, plain groups
        r = app.http.post("/api/v1/users", headers=it, json=proxy)
        assert r.status_code == 201 and r.json()["grants"] == {}
        assert app.http.put("/api/v1/groups/plain/members", headers=it, json=["proxy"]).is_success
        assert app.http.patch("/api/v1/users/guest1", headers=it, json={"role": "radiologist"})
        # the administrator keeps every power
        r = app.http.put("/api/v1/users/guest1/grants", headers=admin, json={"ONCO": ["read"]})
        assert r.status_code == 200
        r = app.http.put("/api/v1/groups/granted/members", headers=admin, json=["guest1"])
        assert r.json()["members"] == ["guest1"]
        # every refusal is in the audit trail, naming the reason
        audit = app.admin_client().audit(event_id="110113", user="it1", outcome=4)
        assert sum("patient data" in e.detail for e in audit) >= len(refused) - 1


def test_a_password_set_by_another_is_one_time(tmp_path: Path) -> None:
    with make_app(tmp_path, pools=POOLS) as app:
        assert app.store(ct_bytes(tmp_path, patient_id="DEF-1")) == 0
        it = _clinic_it(app)
        app.add_user("rad_def", "radiologist", {"DEFAULT": ["read"]})
        owner = app.token("rad_def")
        assert app.http.get("/api/v1/studies", headers=owner).status_code == 200

        # clinic IT may not set the password of an account with data rights: whoever sets
        # it can log in, and "changing" a one-time password proves nothing (review)
        body = {"password": "taken-over-by-it"}
        r = app.http.patch("/api/v1/users/rad_def", headers=it, json=body)
        assert r.status_code == 403 and "holds grants" in r.text, r.text
        assert app.login("rad_def", "taken-over-by-it").status_code == 401
        group = {"name": "readers", "description": ""}
        assert app.http.post("/api/v1/groups", headers=app.admin(), json=group).is_success
        app.add_user("in_group", "radiologist")
        members = ["in_group"]
        assert app.http.put(
            "/api/v1/groups/readers/members", headers=app.admin(), json=members
        ).is_success
        grants = {"DEFAULT": ["read"]}
        assert app.http.put(
            "/api/v1/groups/readers/grants", headers=app.admin(), json=grants
        ).is_success
        r = app.http.patch("/api/v1/users/in_group", headers=it, json=body)
        assert r.status_code == 403, r.text  # rights through a group count too
        # an administrator's reset is one-time: the owner sets their own at first login
        body = {"password": "taken-over-by-it"}
        assert app.http.patch("/api/v1/users/rad_def", headers=app.admin(), json=body).is_success
        r = app.login("rad_def", "taken-over-by-it")
        assert r.status_code == 200 and r.json()["password_change_required"] is True
        taken = {"Authorization": f"Bearer {r.json()['token']}"}
        for path in ("/api/v1/studies", "/api/v1/auth/me", "/dicom-web/studies", "/api/v1/jobs"):
            got = app.http.get(path, headers=taken)
            assert _one_time(got), (path, got.status_code, got.text)
            assert "password change required" in got.json()["detail"]
        basic = base64.b64encode(b"rad_def:taken-over-by-it").decode()
        assert _one_time(
            app.http.get("/dicom-web/studies", headers={"Authorization": f"Basic {basic}"})
        )
        # the typed client the apps use raises a recognisable error
        client = app.client("rad_def", "taken-over-by-it")
        with pytest.raises(PasswordChangeRequired):
            client.studies()
        # setting one's own password opens the account again
        client.change_password("taken-over-by-it", "the-owners-own-choice")
        assert client.studies() is not None
        again = app.login("rad_def", "the-owners-own-choice").json()
        assert again["password_change_required"] is False

        # an account clinic IT creates starts with a one-time password too
        made = {"username": "newbie", "password": IT_PASSWORD, "role": "guest"}
        assert app.http.post("/api/v1/users", headers=it, json=made).status_code == 201
        assert app.login("newbie", IT_PASSWORD).json()["password_change_required"] is True
        # clinic IT's reset of an account without data rights is one-time too
        body = {"password": "set-by-it-for-newbie"}
        assert app.http.patch("/api/v1/users/newbie", headers=it, json=body).is_success
        assert app.login("newbie", "set-by-it-for-newbie").json()["password_change_required"]
        # accounts an administrator creates are not one-time
        app.add_user("by-admin", "guest")
        assert app.login("by-admin").json()["password_change_required"] is False

        changes = app.admin_client().audit(user="it1", outcome=0)
        assert any("password (one-time)" in e.detail for e in changes)
        assert any("one-time password" in e.detail for e in changes)  # the created account
        refusals = app.admin_client().audit(event_id="110113", user="rad_def", outcome=4)
        assert any("one-time password" in e.detail for e in refusals)
