"""Probe 56: two PACS connectivity defects (issue 3; Conformance 4.2.1.4 and 4.2.5.3).

1. Modalities in Study: DCMTK dcmqrscp does not support (0008,0061); it ignores the key and
   answers every study without it, CT ones included for "MR", and Lucent presented them as
   matches. Now the modalities of such answers come from a SERIES level C-FIND on the same
   association, and what does not match is left out; what could not be checked stays, with
   a warning in the node's message. Against a real dcmqrscp holding a CT and an MR study.
2. Storage commitment to a node nothing listens on: the job read "waiting for the
   commitment report" for the whole retry interval. Now it says the N-ACTION was not
   delivered, why, and when the next attempt is due; GET /pacs/commitments tells "retry"
   from "report". In-process API on a real SQLite index; the accepted case against the
   scripted pynetdicom commitment SCP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from server.index.models import RemoteNode
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_accounts_support import AppUnderTest, make_app
from tests.integration.test_pacs_commitment_retry import RETRY_SECONDS, CountingPeer
from tests.integration.test_pacs_scripted import REFS
from tests.support.dcmqrscp import LucentWithQr, lucent_with_dcmqrscp
from tests.support.peers import free_port

# ---------------------------------------------------------------- 1. Modalities in Study


@dataclass
class QrEnv(LucentWithQr):
    ct_study: str
    mr_study: str


def _study(folder: Path, sop_class: str, patient: str, name: str) -> tuple[str, list[Path]]:
    """A study of two series, two instances each, as Part-10 files for dcmqridx."""
    study = generate_uid()
    files = []
    for s in range(2):
        series = generate_uid()
        for i in range(2):
            ds = samples.make_instance(
                sop_class, patient_id=patient, patient_name=name, study_uid=study,
                series_uid=series, series_number=s + 1, instance_number=i + 1,
            )  # fmt: skip
            files.append(samples.write(ds, folder / f"{patient}-{s}-{i}.dcm"))
    return study, files


@pytest.fixture(scope="module")
def qr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QrEnv]:
    work = tmp_path_factory.mktemp("probe56-qr")
    ct, ct_files = _study(work, CTImageStorage, "P56-CT", "Probe^Ct")
    mr, mr_files = _study(work, MRImageStorage, "P56-MR", "Probe^Mr")
    with lucent_with_dcmqrscp(work, [*ct_files, *mr_files]) as up:
        yield QrEnv(up.server, up.api, up.qr, up.node, ct, mr)


def _studies(out: schemas.PacsQueryOut) -> dict[str, dict[str, str]]:
    return {s.attrs["StudyInstanceUID"]: s.attrs for p in out.patients for s in p.studies}


def test_dcmqrscp_ignores_the_key_itself(qr: QrEnv) -> None:
    """The premise: dcmqrscp answers both studies for "MR" and no (0008,0061) in them (a
    direct C-FIND, not through our follow-up: the universal '*' asks for no filtering)."""
    out = qr.api.pacs_query([qr.node.id], "STUDY", ModalitiesInStudy="*")
    found = _studies(out)
    assert set(found) == {qr.ct_study, qr.mr_study}
    assert not any(a.get("ModalitiesInStudy") for a in found.values())
    assert out.nodes[0].message == ""


def test_modalities_in_study_filter_applied_for_a_pacs_that_ignores_it(qr: QrEnv) -> None:
    out = qr.api.pacs_query([qr.node.id], "STUDY", ModalitiesInStudy="MR")
    [node] = out.nodes
    assert node.outcome == "success", node.message
    found = _studies(out)
    assert set(found) == {qr.mr_study}, found  # the CT study was presented as a match
    assert found[qr.mr_study]["ModalitiesInStudy"] == "MR"
    assert node.count == 1
    assert "read from their series" in node.message and "left out" in node.message
    assert "WARNING" not in node.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("CT\\MR", {"ct", "mr"}), ("M?", {"mr"}), ("C*", {"ct"}), ("US", set())],
)
def test_modalities_matching_follows_ps3_4(qr: QrEnv, value: str, expected: set[str]) -> None:
    """PS3.4 C.2.2.2: a value list matches any of its values; wildcards as usual."""
    out = qr.api.pacs_query([qr.node.id], "STUDY", ModalitiesInStudy=value)
    names = {qr.ct_study: "ct", qr.mr_study: "mr"}
    assert {names[uid] for uid in _studies(out)} == expected
    assert out.nodes[0].outcome == "success"


def test_studies_left_unchecked_are_kept_with_a_warning(qr: QrEnv) -> None:
    """The follow-up reads at most the node's result limit of series: with a limit of 2 the
    first study's two series use it up; the other study stays, and the node's message says
    that this PACS did not apply the filter to it."""
    out = qr.api.pacs_query([qr.node.id], "STUDY", limit=2, ModalitiesInStudy="MR")
    [node] = out.nodes
    assert node.outcome == "success", node.message
    found = _studies(out)
    assert qr.mr_study in found or qr.ct_study in found
    assert "did not apply the Modalities in Study filter to 1 study" in node.message
    assert "limit of 2" in node.message


# ---------------------------------------------------------------- 2. storage commitment


def _archived(app: AppUnderTest, tmp_path: Path, n: int) -> list[str]:
    files = samples.write_ct_series(tmp_path / "ct", n=n, rows=8, cols=8)
    for f in files:
        assert app.ctx.store(f.read_bytes(), pool="DEFAULT", source="TEST").ok
    return sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)


@dataclass
class CommitEnv:
    app: AppUnderTest
    svc: PacsService
    api: LucentClient
    node_id: int


def _commit_env(
    tmp_path: Path, host: str, port: int, aet: str, attempts: int
) -> Iterator[CommitEnv]:
    pacs = {"commitment_retry_seconds": RETRY_SECONDS, "commitment_max_attempts": attempts}
    with make_app(tmp_path, {"pacs": pacs}) as app:
        svc = PacsService(app.ctx, start_watcher=False)
        app.app.state.pacs = svc  # the routes use this one
        try:
            with app.ctx.WriteSession() as db, db.begin():
                node = RemoteNode(
                    name="closed", ae_title=aet, host=host, port=port, store_target=True,
                    storage_commitment=True, timeout=3.0,
                )  # fmt: skip
                db.add(node)
                db.flush()
                node_id = node.id
            yield CommitEnv(app, svc, app.admin_client(), node_id)
        finally:
            svc.close()


@pytest.fixture()
def closed(tmp_path: Path) -> Iterator[CommitEnv]:
    yield from _commit_env(tmp_path, "127.0.0.1", free_port(), "X", 3)


def _settled(api: LucentClient, job_id: int, timeout: float = 20.0) -> schemas.JobOut:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.state}")


def test_undelivered_n_action_is_named_with_its_next_attempt(
    tmp_path: Path, closed: CommitEnv
) -> None:
    uids = _archived(closed.app, tmp_path, 3)
    job = _settled(closed.api, closed.api.request_commitment(closed.node_id, uids).id)
    assert job.state == "waiting"  # a new attempt is due: the job is not over
    message = job.message
    assert "waiting for the commitment report" not in message, message
    assert message.startswith("N-ACTION not delivered: "), message
    assert "127.0.0.1" in message  # why: the connection failure as the echo words it
    assert "next attempt (2 of 3) due at " in message and " UTC, in " in message, message
    assert "3 of 3 instance(s) not committed yet" in message, message
    rows = closed.api.commitments(job_id=job.id)
    assert len(rows) == 3
    assert {(r.request_state, r.awaiting, r.state) for r in rows} == {
        ("pending", "retry", "pending")
    }
    assert all(r.retry_at is not None for r in rows)
    assert all(r.request_message.startswith("N-ACTION not delivered") for r in rows)


def test_last_undelivered_attempt_ends_the_request_at_once(tmp_path: Path) -> None:
    """Nothing can report on a request that never reached the PACS: after the last attempt
    the job ends now, naming why, instead of waiting out another retry interval."""
    for env in _commit_env(tmp_path, "127.0.0.1", free_port(), "X", 2):
        uids = _archived(env.app, tmp_path, 2)
        job = _settled(env.api, env.api.request_commitment(env.node_id, uids).id)
        assert job.state == "waiting" and "next attempt (2 of 2)" in job.message
        time.sleep(RETRY_SECONDS + 0.2)
        assert env.svc.retry_commitments() == 1
        job = env.api.job(job.id)
        assert job.state == "failed", job.message
        assert "not accepted after 2 request(s): N-ACTION not delivered: " in job.message
        assert "next attempt" not in job.message
        rows = env.api.commitments(job_id=job.id)
        latest = [r for r in rows if r.attempt == 2]
        assert {(r.request_state, r.awaiting, r.state) for r in latest} == {
            ("expired", None, "unconfirmed")
        }


def test_accepted_request_awaits_its_report(tmp_path: Path) -> None:
    """The other side of the distinction: an N-ACTION the SCP accepted waits for a report."""
    peer = CountingPeer().start()
    peer.commit_mode = "incoming"  # the SCP keeps its report: it stays outstanding
    try:
        for env in _commit_env(tmp_path, peer.host, peer.port, peer.aet, 3):
            env.svc.set_options(env.node_id, commitment_mode="same", commitment_wait=0.3)
            res = env.svc.request_commitment(env.svc.node(env.node_id), REFS)
            assert res.ok and res.delivered
            rows = env.api.commitments(transaction_uid=res.transaction_uid)
            assert {(r.request_state, r.awaiting) for r in rows} == {("pending", "report")}
            assert all(r.request_message.startswith("N-ACTION accepted") for r in rows)
    finally:
        peer.stop()
