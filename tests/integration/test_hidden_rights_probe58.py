"""Hiding a study or series of a pool the caller may not read (probe 58): POST /hidden
answered 204 for it and 404 "no study X to hide" for an unknown UID, which told a user
with rights on RESEARCH only which UIDs of DEFAULT are archived; nothing was audited.
Now both answer alike, the refusal is audited, and the list shows no such object."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_accounts_support import ct_bytes, make_app

POOLS = [
    {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
    {"name": "RESEARCH", "ae_title": "LUCENTR", "port": 0},
]
OTHER_STUDY, OTHER_SERIES = "1.2.826.58.1", "1.2.826.58.1.1"
OWN_STUDY, OWN_SERIES = "1.2.826.58.2", "1.2.826.58.2.1"
UNKNOWN = "1.2.826.0.1.3680043.8.498.4242424242"


def test_hiding_an_object_of_a_pool_without_rights_answers_as_an_unknown_uid(
    tmp_path: Path,
) -> None:
    with make_app(tmp_path, pools=POOLS) as app:
        other = ct_bytes(tmp_path, study_uid=OTHER_STUDY, series_uid=OTHER_SERIES)
        own = ct_bytes(tmp_path, study_uid=OWN_STUDY, series_uid=OWN_SERIES)
        assert app.store(other, pool="DEFAULT") == 0
        assert app.store(own, pool="RESEARCH") == 0
        app.add_user("rad1", "radiologist", {"RESEARCH": ["read"]})
        rad = app.token("rad1")
        admin = app.admin()

        def hide(level: str, uid: str) -> tuple[int, dict[str, str]]:
            r = app.http.post("/api/v1/hidden", headers=rad, json={"level": level, "uid": uid})
            return r.status_code, (r.json() if r.content else {})

        for level, uid in (("study", OTHER_STUDY), ("series", OTHER_SERIES)):
            unknown = hide(level, UNKNOWN)
            assert unknown == (404, {"detail": f"no {level} {UNKNOWN} to hide"})
            assert hide(level, uid) == (404, {"detail": f"no {level} {uid} to hide"})
        assert app.http.get("/api/v1/hidden", headers=rad).json() == []

        refusals = app.http.get(
            "/api/v1/audit", headers=admin, params={"user": "rad1", "limit": 500}
        ).json()
        refused = {
            (o["type"], o["id"])
            for e in refusals
            if e["outcome"] != 0 and "/api/v1/hidden" in e["detail"]
            for o in e["objects"]
        }
        assert refused == {("study", OTHER_STUDY), ("series", OTHER_SERIES)}, refusals

        # what the user may read is still hidden and listed, as before
        assert hide("study", OWN_STUDY) == (204, {})
        assert hide("series", OWN_SERIES) == (204, {})
        listed = app.http.get("/api/v1/hidden", headers=rad).json()
        assert {(x["level"], x["uid"]) for x in listed} == {
            ("study", OWN_STUDY),
            ("series", OWN_SERIES),
        }
        # the administrator (every pool) hides anything that exists
        r = app.http.post(
            "/api/v1/hidden", headers=admin, json={"level": "study", "uid": OTHER_STUDY}
        )
        assert r.status_code == 204


def test_hidden_items_of_a_pool_no_longer_readable_are_not_listed(tmp_path: Path) -> None:
    """An item hidden while the grant held stays stored, but is not listed once the grant is
    gone: the list would otherwise say whether that study still exists."""
    with make_app(tmp_path, pools=POOLS) as app:
        assert app.store(ct_bytes(tmp_path, study_uid=OTHER_STUDY), pool="DEFAULT") == 0
        app.add_user("rad2", "radiologist", {"DEFAULT": ["read"], "RESEARCH": ["read"]})
        rad = app.token("rad2")
        body = {"level": "study", "uid": OTHER_STUDY}
        assert app.http.post("/api/v1/hidden", headers=rad, json=body).status_code == 204
        assert [x["uid"] for x in app.http.get("/api/v1/hidden", headers=rad).json()] == [
            OTHER_STUDY
        ]
        grants = {"RESEARCH": ["read"]}
        r = app.http.put("/api/v1/users/rad2/grants", headers=app.admin(), json=grants)
        assert r.status_code == 200, r.text
        assert app.http.get("/api/v1/hidden", headers=rad).json() == []
