"""Pool rights on the routes whose access rule asks only for "the right in some pool":
send, storage commitment, retrieve and perfusion runs act on one pool's data, and a user
with rights on another pool only must not reach it (outside probe: a DEFAULT-only user
sent an ONCO study to a remote node, read ONCO perfusion results, retrieved into ONCO).

In-process app on a real SQLite index with two pools; the remote node listens nowhere,
so the jobs that are allowed start and fail on their own without touching anyone.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from server.index.account_models import AuditRecord
from server.index.models import Instance
from server.index.perfusion_models import PerfusionRun
from server.jobs.queue import now
from tests.integration.test_accounts_support import AppUnderTest, ct_bytes, make_app
from tests.support.peers import free_port

POOLS = [
    {"name": "DEFAULT", "ae_title": "LUCENT", "port": 0},
    {"name": "ONCO", "ae_title": "LUCENT_ONCO", "port": 0},
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppUnderTest]:
    tmp = tmp_path_factory.mktemp("pool-rights")
    with make_app(tmp, pools=POOLS) as app:
        assert app.store(ct_bytes(tmp, study_uid="1.2.3.7.1", series_uid="1.2.3.7.1.1")) == 0
        onco = ct_bytes(tmp, study_uid="1.2.3.7.2", series_uid="1.2.3.7.2.1", patient_id="ONC")
        assert app.store(onco, pool="ONCO") == 0
        app.add_user("rad-def", "radiologist", {"DEFAULT": ["read", "import", "send"]})
        yield app


@pytest.fixture(scope="module")
def node(app: AppUnderTest) -> int:
    r = app.http.post(
        "/api/v1/nodes",
        json={"name": "sink", "ae_title": "SINK", "host": "127.0.0.1", "port": free_port(),
              "storage_commitment": True, "timeout": 2.0},
        headers=app.admin(),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _sop(app: AppUnderTest, study: str) -> str:
    from server.index.models import Series, Study

    with app.ctx.Session() as db:
        return str(
            db.scalars(
                select(Instance.sop_instance_uid)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .where(Study.study_uid == study)
            ).one()
        )


def _audit(app: AppUnderTest, user: str) -> list[tuple[str, str]]:
    with app.ctx.Session() as db:
        rows = db.scalars(select(AuditRecord).where(AuditRecord.user == user))
        return [(r.event_id, r.detail) for r in rows]


@pytest.mark.parametrize(
    "what",
    [{"study_uid": "1.2.3.7.2"}, {"series_uid": "1.2.3.7.2.1"}, {"sop_instance_uids": ["ONCO"]}],
)
def test_send_of_another_pools_data_is_not_found(
    app: AppUnderTest, node: int, what: dict[str, Any]
) -> None:
    if what.get("sop_instance_uids"):
        what = {"sop_instance_uids": [_sop(app, "1.2.3.7.2")]}
    h = app.token("rad-def")
    r = app.http.post("/api/v1/pacs/send", json={"node_id": node, **what}, headers=h)
    assert r.status_code == 404, r.text
    r = app.http.post(
        "/api/v1/pacs/send", json={"node_id": node, "study_uid": "1.2.3.7.1"}, headers=h
    )
    assert r.status_code == 202, r.text
    # the export is in the audit trail with the user and the study (PS3.15 A.5.3.2)
    assert any(
        event == "110104" and f"send job {r.json()['id']}" in detail
        for event, detail in _audit(app, "rad-def")
    )


def test_commitment_of_another_pools_instance_is_not_found(app: AppUnderTest, node: int) -> None:
    h = app.token("rad-def")
    body = {"node_id": node, "sop_instance_uids": [_sop(app, "1.2.3.7.2")]}
    assert app.http.post("/api/v1/pacs/commit", json=body, headers=h).status_code == 404
    body = {"node_id": node, "sop_instance_uids": [_sop(app, "1.2.3.7.1")]}
    assert app.http.post("/api/v1/pacs/commit", json=body, headers=h).status_code == 202


def test_retrieve_needs_the_import_right_in_the_target_pool(app: AppUnderTest, node: int) -> None:
    h = app.token("rad-def")
    body = {"node_id": node, "study_uid": "1.2.3.9", "pool": "ONCO"}
    r = app.http.post("/api/v1/pacs/retrieve", json=body, headers=h)
    assert r.status_code == 403 and "ONCO" in r.text
    r = app.http.post("/api/v1/pacs/retrieve", json=body | {"pool": "DEFAULT"}, headers=h)
    assert r.status_code == 202, r.text
    assert any(
        event == "110107" and "into pool DEFAULT" in detail
        for event, detail in _audit(app, "rad-def")
    )


def test_perfusion_runs_of_another_pool_are_invisible(app: AppUnderTest) -> None:
    with app.ctx.WriteSession() as db, db.begin():
        run = PerfusionRun(
            series_uid="1.2.3.7.2.1", study_uid="1.2.3.7.2", pool="ONCO", state="done",
            trigger="manual", result={"summary": {"core_ml": 11.2}}, created_at=now(),
        )  # fmt: skip
        db.add(run)
        db.flush()
        run_id = run.id
    h = app.token("rad-def")
    listed = app.http.get("/api/v1/perfusion/runs", headers=h)
    assert listed.status_code == 200 and run_id not in [r["id"] for r in listed.json()]
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/result"):
        assert app.http.get(f"/api/v1/perfusion{path}", headers=h).status_code == 404
    r = app.http.post(f"/api/v1/perfusion/runs/{run_id}/cancel", headers=h)
    assert r.status_code == 404
    r = app.http.post("/api/v1/perfusion/runs", json={"series_uid": "1.2.3.7.2.1"}, headers=h)
    assert r.status_code == 404
    # refused reads are not audited as reads (they were: "Instances Accessed", outcome 0)
    assert not [d for e, d in _audit(app, "rad-def") if e == "110103" and "perfusion" in d]
    # the administrator still sees it, and that read is audited
    admin = app.admin()
    assert app.http.get(f"/api/v1/perfusion/runs/{run_id}/result", headers=admin).json() == {
        "summary": {"core_ml": 11.2}
    }
    assert [d for e, d in _audit(app, "admin") if e == "110103" and "perfusion" in d]


def test_node_changes_are_audited_and_names_unique_regardless_of_case(
    app: AppUnderTest, tmp_path: Path
) -> None:
    admin = app.admin()
    body = {"name": "Archive", "ae_title": "ARCH", "host": "127.0.0.1", "port": 4242}
    r = app.http.post("/api/v1/nodes", json=body, headers=admin)
    assert r.status_code == 201
    clash = app.http.post("/api/v1/nodes", json=body | {"name": "ARCHIVE"}, headers=admin)
    assert clash.status_code == 409
    node_id = r.json()["id"]
    assert app.http.delete(f"/api/v1/nodes/{node_id}", headers=admin).status_code == 204
    details = [d for e, d in _audit(app, "admin") if e == "110113"]
    assert any(f"remote node {node_id} added" in d and "ae_title=ARCH" in d for d in details)
    assert any(f"remote node {node_id} removed" in d for d in details)


def test_status_counts_only_what_the_caller_may_read(app: AppUnderTest) -> None:
    """A user without any pool right saw the patient, study and instance counts of every
    pool; the people who run the system (administrator, clinic IT) see the totals."""
    app.add_user("rad-nothing", "radiologist")
    app.add_user("it-ops", "clinic-it")
    counts = ("patients", "studies", "instances")

    def status(user: str) -> tuple[int, ...]:
        r = app.http.get("/api/v1/status", headers=app.token(user))
        assert r.status_code == 200, r.text
        return tuple(r.json()[k] for k in counts)

    assert status("rad-nothing") == (0, 0, 0)
    assert status("rad-def") == (1, 1, 1)
    assert status("it-ops") == (2, 2, 2)
    admin = app.http.get("/api/v1/status", headers=app.admin()).json()
    assert tuple(admin[k] for k in counts) == (2, 2, 2)


def _stow(app: AppUnderTest, data: bytes, headers: dict[str, str]) -> Any:
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--XX--\r\n"
    ctype = 'multipart/related; type="application/dicom"; boundary=XX'
    return app.http.post(
        "/dicom-web/studies", content=body, headers=headers | {"content-type": ctype}
    )


def test_stow_into_a_study_of_another_pool_needs_import_there(
    app: AppUnderTest, tmp_path: Path
) -> None:
    """STOW-RS stored into the first pool whatever the study: a DEFAULT-only user added a
    series of another patient to an ONCO study. Now an instance goes into its study's pool,
    refused (0124) when the caller may not import there."""
    intruder = ct_bytes(tmp_path, study_uid="1.2.3.7.2", patient_id="ONC")
    r = _stow(app, intruder, app.token("rad-def"))
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0124]
    r = _stow(app, intruder, app.admin())
    assert r.status_code == 200, r.text
    sop = r.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
    with app.ctx.Session() as db:
        pool = db.scalars(select(Instance.pool).where(Instance.sop_instance_uid == sop)).one()
    assert pool == "ONCO"


def test_retrieve_of_an_archived_study_goes_into_its_pool(app: AppUnderTest, node: int) -> None:
    """A study lives in one pool: a retrieve of more of it "into DEFAULT" put the instances
    into the study's ONCO pool, job saying DEFAULT, by a user who may not see ONCO. Such a
    write into a pool the caller may not import into is refused (and audited)."""
    body = {"node_id": node, "study_uid": "1.2.3.7.2", "pool": "DEFAULT"}
    r = app.http.post("/api/v1/pacs/retrieve", json=body, headers=app.token("rad-def"))
    assert r.status_code == 403, r.text
    r = app.http.post("/api/v1/pacs/retrieve", json=body, headers=app.admin())
    assert r.status_code == 202, r.text
    assert r.json()["pool"] == "ONCO"


def test_an_instance_received_for_another_pool_joins_its_study_there(
    app: AppUnderTest, tmp_path: Path
) -> None:
    """C-STORE to the DEFAULT AE of an instance of the ONCO study: filed under DEFAULT, a
    DEFAULT-only user could read it (/instances/{sop}) while its study was hidden."""
    data = ct_bytes(tmp_path, study_uid="1.2.3.7.2", series_uid="1.2.3.7.2.9", patient_id="ONC")
    assert app.store(data) == 0  # received for DEFAULT
    assert app.store(data) == 0  # again: the known-series path must keep the study's pool
    sop = str(dcmread(io.BytesIO(data)).SOPInstanceUID)
    with app.ctx.Session() as db:
        pool = db.scalars(select(Instance.pool).where(Instance.sop_instance_uid == sop)).one()
    assert pool == "ONCO"
    h = app.token("rad-def")
    assert app.http.get(f"/api/v1/instances/{sop}", headers=h).status_code == 404
    assert app.http.get(f"/api/v1/instances/{sop}", headers=app.admin()).status_code == 200
