"""Storage commitment jobs follow their records (Conformance 4.2.5, 5): a job is not "done"
while its report is outstanding, counts what partial reports committed, and ends failed or
partial naming the instances never confirmed when the request expires.

An outside probe found commit jobs "done 0/0" with no report at all, after a report that
left instances out, after a report with an unknown Transaction UID, and still "done" after
the request expired (clinic IT may delete local copies on a "done" commitment). Runs the
PACS service in-process on a real SQLite index against the scripted pynetdicom SCP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from sqlalchemy import select

from lucent.api import schemas
from lucent.net import commitment
from server.index.pacs_models import CommitmentRequest, Job
from server.pacs import records
from server.pacs import service as service_module
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_pacs_commitment_retry import (
    RETRY_SECONDS,
    CountingPeer,
    _service_with,
)


class ReportingPeer(CountingPeer):
    """The counting SCP; its report can leave instances out or name another transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.omit_uids: set[str] = set()
        self.wrong_transaction = False
        self.requested: list[int] = []  # instances named per N-ACTION

    def _action(self, event: Any) -> tuple[int, None]:
        self.requested.append(len(event.action_information.ReferencedSOPSequence))
        return super()._action(event)

    def _report(self, info: Dataset) -> Dataset:
        out = super()._report(info)
        out.ReferencedSOPSequence = [
            i for i in out.ReferencedSOPSequence if i.ReferencedSOPInstanceUID not in self.omit_uids
        ]
        if self.wrong_transaction:
            out.TransactionUID = "1.2.826.0.1.3680043.8.498.99"  # not ours
        return out


@pytest.fixture()
def peer() -> Iterator[ReportingPeer]:
    p = ReportingPeer().start()
    yield p
    p.stop()


@pytest.fixture()
def setup(tmp_path: Path, peer: ReportingPeer) -> Iterator[tuple[PacsService, int, list[str]]]:
    """The service (2 attempts per request), its commitment node and 5 archived CT UIDs."""
    with _service_with(tmp_path, peer, 2) as (svc, node_id):
        files = samples.write_ct_series(tmp_path / "ct", n=5, rows=8, cols=8)
        for f in files:
            assert svc.ctx.store(f.read_bytes(), pool="DEFAULT", source="TEST").ok
        uids = sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
        yield svc, node_id, uids


def _job(svc: PacsService, job_id: int) -> Job:
    with svc.ctx.Session() as db:
        job = db.get(Job, job_id)
        assert job is not None
        db.expunge(job)
        return job


def _ran(svc: PacsService, job_id: int, timeout: float = 20.0) -> Job:
    """The job once its runner ended (waiting or final)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(svc, job_id)
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job.state}")


def _retry(svc: PacsService) -> None:
    time.sleep(RETRY_SECONDS + 0.2)
    svc.retry_commitments()


def _requests(svc: PacsService) -> list[tuple[int, str]]:
    with svc.ctx.Session() as db:
        rows = db.scalars(select(CommitmentRequest).order_by(CommitmentRequest.id))
        return [(r.attempt, r.state) for r in rows]


def test_a_job_without_report_waits_and_fails_on_expiry(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    peer.commit_mode = "incoming"  # accepts the N-ACTION, never reports
    job = _ran(svc, svc.commit(node_id, uids[:1]))
    assert job.state == "waiting", job.message  # was "done 0/0", not a word of a report
    assert (job.total, job.completed, job.failed) == (1, 0, 0)
    assert "waiting for the commitment report of 1 of 1" in job.message
    assert job.finished_at is None
    assert not schemas.JobOut.model_validate(job, from_attributes=True).finished
    _retry(svc)
    job = _job(svc, job.id)
    assert job.state == "waiting" and "request 2" in job.message, job.message
    _retry(svc)
    assert _requests(svc) == [(1, "superseded"), (2, "expired")]
    job = _job(svc, job.id)
    assert job.state == "failed", job.message  # stayed "done" after the expiry
    assert (job.completed, job.failed) == (0, 1)
    assert "1 of 1 instance(s) never confirmed" in job.message
    assert "no commitment report after 2 request(s)" in job.message
    assert job.finished_at is not None


def test_a_partial_report_is_counted_and_the_rest_expires(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    peer.omit_uids = set(uids[3:])  # the report names 3 of the 5
    job = _ran(svc, svc.commit(node_id, uids))
    assert job.state == "waiting", job.message  # was "done 0/0", "report received"
    assert (job.total, job.completed, job.failed) == (5, 3, 0)
    assert "2 of 5 instance(s)" in job.message
    _retry(svc)
    assert peer.requested == [5, 2]  # the retry asks for the 2 not reported only
    assert _job(svc, job.id).state == "waiting"
    _retry(svc)
    job = _job(svc, job.id)
    assert job.state == "partial", job.message
    assert (job.completed, job.failed) == (3, 2)
    assert "2 of 5 instance(s) never confirmed" in job.message
    assert "3 committed, 0 failed" in job.message


def test_a_late_report_completes_a_waiting_job(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    peer.omit_uids = set(uids[3:])
    job = _ran(svc, svc.commit(node_id, uids))
    assert (job.state, job.completed) == ("waiting", 3)
    peer.omit_uids = set()
    peer.failed_uids = {uids[4]}  # Failure Reason 0112 for one of them
    _retry(svc)
    job = _job(svc, job.id)
    assert job.state == "partial", job.message
    assert (job.completed, job.failed) == (4, 1)
    assert job.message.endswith("storage commitment report: 4 committed, 1 failed")
    assert job.finished_at is not None


def test_a_report_for_another_transaction_commits_nothing(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    peer.wrong_transaction = True
    job = _ran(svc, svc.commit(node_id, uids[:2]))
    assert job.state == "waiting", job.message  # was "done 0/0"
    assert (job.completed, job.failed) == (0, 0)


def test_a_complete_report_in_time_ends_the_job(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    job = _ran(svc, svc.commit(node_id, uids))
    assert job.state == "done", job.message
    assert (job.completed, job.failed, job.progress) == (5, 0, 1.0)
    assert "storage commitment report: 5 committed, 0 failed" in job.message


def test_a_send_job_names_what_its_commitment_became(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    svc, node_id, uids = setup
    peer.commit_mode = "incoming"
    job = _ran(svc, svc.send(node_id, sop_instance_uids=uids[:2], commit=True))
    assert job.state == "waiting", job.message  # the C-STOREs went well, the report is due
    assert "2 of 2 instance(s) stored" in job.message
    assert "storage commitment: " in job.message and "waiting" in job.message
    _retry(svc)
    _retry(svc)
    job = _job(svc, job.id)
    # kept "no report within 0.3 s" for good
    assert "2 of 2 instance(s) never confirmed" in job.message, job.message
    assert job.message.startswith("2 of 2 instance(s) stored")


def test_waiting_is_a_state_the_api_knows() -> None:
    TypeAdapter(schemas.JobState).validate_python("waiting")
    assert "waiting" not in schemas.JOB_FINAL_STATES


def test_a_waiting_job_can_be_cancelled(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    """A waiting job holds no thread: cancel answered 409 "not running in this server
    process" and the request went on being retried."""
    svc, node_id, uids = setup
    peer.commit_mode = "incoming"
    job = _ran(svc, svc.commit(node_id, uids[:2]))
    assert job.state == "waiting"
    assert svc.stop_waiting(job.id, "alice")
    job = _job(svc, job.id)
    assert job.state == "cancelled" and job.finished_at is not None
    assert job.message.startswith("cancelled by alice while waiting")
    assert (job.completed, job.failed) == (0, 2)
    assert _requests(svc) == [(1, "expired")]
    _retry(svc)
    assert _requests(svc) == [(1, "expired")]  # nothing sent again
    assert not svc.stop_waiting(job.id, "alice")


def _cancelled_waiting(svc: PacsService, node_id: int, uids: list[str], peer: ReportingPeer) -> Job:
    peer.commit_mode = "incoming"  # accepts the N-ACTION, never reports
    job = _ran(svc, svc.commit(node_id, uids[:2]))
    assert job.state == "waiting", job.message
    return job


def _assert_cancelled_by_alice(job: Job) -> None:
    assert job.state == "cancelled", job.message
    assert job.message.startswith("cancelled by alice while waiting"), job.message


def test_a_late_report_leaves_a_cancelled_job_cancelled(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer
) -> None:
    """A report for the expired transaction after the cancel turned the job "partial" and
    dropped "cancelled by alice" from its message."""
    svc, node_id, uids = setup
    job = _cancelled_waiting(svc, node_id, uids, peer)
    assert svc.stop_waiting(job.id, "alice")
    cancelled = _job(svc, job.id)
    with svc.ctx.Session() as db:
        req = db.scalars(select(CommitmentRequest)).one()
        tuid = req.transaction_uid
        refs = [commitment.Reference(i.sop_class_uid, i.sop_instance_uid) for i in req.items]
    assert records.record_report(svc.ctx, commitment.Report(tuid, committed=refs[:1])) == 1
    job = _job(svc, job.id)
    _assert_cancelled_by_alice(job)
    assert (job.completed, job.failed) == (1, 1)
    assert job.message.endswith("reported after the cancel: 1 committed, 1 failed or unconfirmed")
    assert job.finished_at == cancelled.finished_at
    # the rest reported too: the note is rewritten, not appended again
    assert records.record_report(svc.ctx, commitment.Report(tuid, committed=refs[1:])) == 1
    job = _job(svc, job.id)
    assert job.state == "cancelled" and (job.completed, job.failed) == (2, 0), job.message
    assert job.message.count("reported after the cancel") == 1, job.message
    assert job.message.endswith("2 committed, 0 failed or unconfirmed"), job.message
    _retry(svc)
    assert _requests(svc) == [(1, "answered")]  # nothing sent again


def test_a_cancel_as_the_retry_begins_stays_cancelled(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer, monkeypatch: Any
) -> None:
    """The cancel came after the retry watcher marked the request superseded and before it
    recorded the new one: the cancel found nothing pending to expire, then the new request
    brought the job back to "waiting" and the retries went on."""
    svc, node_id, uids = setup
    job = _cancelled_waiting(svc, node_id, uids, peer)
    node = svc.node
    cancels: list[bool] = []

    def cancel_then_node(nid: int) -> Any:
        cancels.append(svc.stop_waiting(job.id, "alice"))
        return node(nid)

    monkeypatch.setattr(svc, "node", cancel_then_node)
    _retry(svc)
    assert cancels == [True]
    job = _job(svc, job.id)
    _assert_cancelled_by_alice(job)
    assert (job.completed, job.failed) == (0, 2)
    assert _requests(svc) == [(1, "expired")]
    assert peer.requested == [2]  # no N-ACTION for the cancelled job
    # and none is recorded or sent for it on any other way
    refs = [commitment.Reference(str(CTImageStorage), u) for u in uids[:2]]
    res = svc.request_commitment(node(node_id), refs, job_pk=job.id, attempt=2)
    assert not res.ok
    assert _requests(svc) == [(1, "expired")] and peer.requested == [2]
    assert _job(svc, job.id).state == "cancelled"


def test_a_cancel_while_the_retry_is_out_stays_cancelled(
    setup: tuple[PacsService, int, list[str]], peer: ReportingPeer, monkeypatch: Any
) -> None:
    """The cancel came while the retry's N-ACTION was out: the job ended "failed, 2 of 2
    never confirmed" instead of cancelled."""
    svc, node_id, uids = setup
    job = _cancelled_waiting(svc, node_id, uids, peer)
    request = commitment.request
    cancels: list[bool] = []

    def cancel_then_request(*args: Any, **kwargs: Any) -> commitment.RequestResult:
        cancels.append(svc.stop_waiting(job.id, "alice"))
        return request(*args, **kwargs)

    monkeypatch.setattr(service_module.commitment, "request", cancel_then_request)
    _retry(svc)
    assert cancels == [True]
    job = _job(svc, job.id)
    _assert_cancelled_by_alice(job)
    assert (job.completed, job.failed) == (0, 2)
    assert job.finished_at is not None
    assert _requests(svc) == [(1, "superseded"), (2, "expired")]
    _retry(svc)
    assert _requests(svc) == [(1, "superseded"), (2, "expired")]  # nothing sent again
    assert _job(svc, job.id).state == "cancelled"
