"""Objects of a pool the caller may not use answer exactly as objects that do not exist,
and the refusal is audited (probe 21).

The access check answered 404 "not found" for a UID of another pool, while the routes said
"instance <uid> not found" / "no matching instances" / QIDO 200 [] for an unknown UID (and
403 to an account without grants), so the wording told which UIDs are archived; the
refused read left no audit record; ``?pool=default`` was 200 [] where ``?pool=DEFAULT`` was
403. A retrieve into another pool's study stays refused (a write), now audited.
In-process app with two pools; the remote node listens nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from server.index.account_models import AuditRecord
from server.index.models import Instance
from tests.integration.test_accounts_support import AppUnderTest, ct_bytes, make_app
from tests.support.peers import free_port

POOLS = [
    {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
    {"name": "ONCO", "ae_title": "LUCENT_ONCO", "port": 0},
]
DEF_STUDY, DEF_SERIES = "1.2.826.0.1.3680043.8.498.21.1", "1.2.826.0.1.3680043.8.498.21.1.1"
ONC_STUDY, ONC_SERIES = "1.2.826.0.1.3680043.8.498.21.2", "1.2.826.0.1.3680043.8.498.21.2.1"
NO_STUDY, NO_SERIES = "1.2.826.0.1.3680043.8.498.21.9", "1.2.826.0.1.3680043.8.498.21.9.1"
NO_SOP = "1.2.826.0.1.3680043.8.498.21.9.1.1"

ROUTES = [
    "/api/v1/studies/{study}/series",
    "/api/v1/series/{series}/instances",
    "/api/v1/instances/{sop}",
    "/api/v1/instances/{sop}/file",
    "/api/v1/instances/{sop}/frames/1",
    "/api/v1/series/{series}/geometry",
    "/api/v1/series/{series}/volume",
    "/api/v1/perfusion/examine/{series}",
    "/dicom-web/studies/{study}",
    "/dicom-web/studies/{study}/metadata",
    "/dicom-web/studies/{study}/series",
    "/dicom-web/studies/{study}/instances",
    "/dicom-web/studies/{study}/series/{series}",
    "/dicom-web/studies/{study}/series/{series}/instances",
    "/dicom-web/studies/{study}/series/{series}/metadata",
    "/dicom-web/studies/{study}/series/{series}/instances/{sop}",
    "/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata",
    "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1",
    "/dicom-web/studies/{study}/rendered",
    "/dicom-web/studies/{study}/thumbnail",
    "/dicom-web/studies/{study}/bulkdata",
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppUnderTest]:
    tmp = tmp_path_factory.mktemp("pool-oracle")
    with make_app(tmp, pools=POOLS) as app:
        assert app.store(ct_bytes(tmp, study_uid=DEF_STUDY, series_uid=DEF_SERIES)) == 0
        onco = ct_bytes(tmp, study_uid=ONC_STUDY, series_uid=ONC_SERIES, patient_id="ONC")
        assert app.store(onco, pool="ONCO") == 0
        app.add_user("rad-onco", "radiologist", {"ONCO": ["read", "import"]})
        app.add_user("nogrant", "radiologist")
        yield app


def _sop(app: AppUnderTest, series: str) -> str:
    from server.index.models import Series

    with app.ctx.Session() as db:
        return str(
            db.scalars(
                select(Instance.sop_instance_uid)
                .join(Series, Instance.series_pk == Series.id)
                .where(Series.series_uid == series)
            ).one()
        )


def _refusals(app: AppUnderTest, user: str, after: int) -> list[AuditRecord]:
    with app.ctx.Session() as db:
        return list(
            db.scalars(
                select(AuditRecord).where(
                    AuditRecord.user == user, AuditRecord.id > after, AuditRecord.outcome == 4
                )
            )
        )


def _last_audit_id(app: AppUnderTest) -> int:
    with app.ctx.Session() as db:
        return max(db.scalars(select(AuditRecord.id)), default=0)


@pytest.mark.parametrize("user", ["rad-onco", "nogrant"])
def test_another_pools_object_reads_like_an_unknown_one(app: AppUnderTest, user: str) -> None:
    h = app.token(user)
    hidden = {"study": DEF_STUDY, "series": DEF_SERIES, "sop": _sop(app, DEF_SERIES)}
    unknown = {"study": NO_STUDY, "series": NO_SERIES, "sop": NO_SOP}
    differ = []
    for route in ROUTES:
        a = app.http.get(route.format(**hidden), headers=h)
        b = app.http.get(route.format(**unknown), headers=h)
        if (a.status_code, a.content) != (b.status_code, b.content):
            differ.append(f"{route}: {a.status_code} {a.text[:60]} | {b.status_code} {b.text[:60]}")
        assert a.status_code == 404, (route, a.status_code, a.text)
    assert differ == [], "\n".join(differ)
    # a perfusion run of a series of another pool starts like one of an unknown series
    a = app.http.post("/api/v1/perfusion/runs", json={"series_uid": DEF_SERIES}, headers=h)
    b = app.http.post("/api/v1/perfusion/runs", json={"series_uid": NO_SERIES}, headers=h)
    if user == "rad-onco":
        assert (a.status_code, a.content) == (b.status_code, b.content)
    # the caller's own pool still answers
    if user == "rad-onco":
        own = app.http.get(f"/api/v1/studies/{ONC_STUDY}/series", headers=h)
        assert own.status_code == 200 and own.json()[0]["series_uid"] == ONC_SERIES


def test_refused_reads_of_another_pool_are_audited(app: AppUnderTest) -> None:
    h = app.token("rad-onco")
    sop = _sop(app, DEF_SERIES)
    before = _last_audit_id(app)
    assert app.http.get(f"/api/v1/instances/{sop}/file", headers=h).status_code == 404
    assert app.http.get(f"/dicom-web/studies/{DEF_STUDY}", headers=h).status_code == 404
    records = _refusals(app, "rad-onco", before)
    named = [r for r in records if {"type": "study", "id": DEF_STUDY} in r.objects]
    assert len(named) == 2, [(r.detail, r.objects) for r in records]
    assert any({"type": "instance", "id": sop} in r.objects for r in named)
    assert all(r.event_id == "110113" and "read" in r.detail for r in named)
    # an unknown UID is no refusal: nothing to record
    before = _last_audit_id(app)
    assert app.http.get(f"/api/v1/instances/{NO_SOP}/file", headers=h).status_code == 404
    assert _refusals(app, "rad-onco", before) == []


def test_retrieve_into_another_pools_study_is_refused_and_audited(app: AppUnderTest) -> None:
    """A retrieve of a study archived in a pool the caller may not import into would add
    to that pool (arrivals join their study's pool): refused, unlike an unknown study, and
    the refusal is in the audit trail. The one answer that tells that a study exists, for
    a UID the caller already has from the PACS, rather than a write into a hidden pool."""
    node = app.http.post(
        "/api/v1/nodes",
        json={"name": "sink", "ae_title": "SINK", "host": "127.0.0.1", "port": free_port(),
              "timeout": 2.0},
        headers=app.admin(),
    ).json()["id"]  # fmt: skip
    h = app.token("rad-onco")
    before = _last_audit_id(app)
    codes = []
    for study in (DEF_STUDY, NO_STUDY):
        body = {"node_id": node, "study_uid": study, "pool": "ONCO"}
        codes.append(app.http.post("/api/v1/pacs/retrieve", json=body, headers=h).status_code)
    assert codes == [403, 202], codes
    assert any(
        {"type": "study", "id": DEF_STUDY} in r.objects for r in _refusals(app, "rad-onco", before)
    )


def test_a_pool_filter_is_matched_as_configured_whatever_its_case(app: AppUnderTest) -> None:
    h = app.token("rad-onco")
    answers = {
        asked: app.http.get("/api/v1/studies", params={"pool": asked}, headers=h)
        for asked in ("DEFAULT", "default", "Default", "DEF*")
    }
    for asked, r in answers.items():
        assert r.status_code == 403, (asked, r.status_code, r.text)
        assert r.json() == answers["DEFAULT"].json()
    for asked in ("ONCO", "onco", "on*"):
        r = app.http.get("/api/v1/studies", params={"pool": asked}, headers=h)
        assert [s["study_uid"] for s in r.json()["items"]] == [ONC_STUDY], asked
    r = app.http.get("/api/v1/placeholders", params={"pool": "default"}, headers=h)
    assert r.status_code == 403
    r = app.http.get("/api/v1/studies", params={"pool": "nonesuch"}, headers=h)
    assert r.status_code == 422 and "DEFAULT, ONCO" in r.json()["detail"]
    # the administrator's filter is matched the same way
    r = app.http.get("/api/v1/studies", params={"pool": "default"}, headers=app.admin())
    assert [s["study_uid"] for s in r.json()["items"]] == [DEF_STUDY]
