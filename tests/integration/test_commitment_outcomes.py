"""What a job says about its storage commitment (Conformance 4.2.5, 5; outside probe 38).

An N-ACTION the SCP refused (0x0110) or could not take (no presentation context accepted)
ended "no commitment report after 3 request(s)", as if the PACS had been asked and stayed
silent; a send with commit=true to a node that is no commitment SCP was accepted (POST
/pacs/commit refuses it); a send whose commitment reported "4 committed, 1 failed" ended
"done" with failed=0, where a commit job with that report is "partial".

Runs the PACS service in-process on a real SQLite index against pynetdicom peers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from server.index.models import RemoteNode
from server.index.pacs_models import Job
from server.pacs.service import PacsError, PacsService
from tests.data import samples
from tests.integration.test_pacs_commitment_retry import (
    RETRY_SECONDS,
    CountingPeer,
    RefusingPeer,
    _service_with,
)
from tests.support.peers import free_port


class NoCommitmentPeer:
    """A DICOM peer that knows only Verification: the N-ACTION's presentation context is
    rejected, so no N-ACTION is ever sent."""

    def __init__(self) -> None:
        self.aet, self.host, self.port = "ECHOONLY", "127.0.0.1", free_port()
        self._server = None

    def start(self) -> NoCommitmentPeer:
        ae = AE(self.aet)
        ae.add_supported_context(Verification)
        self._server = ae.start_server((self.host, self.port), block=False)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def _archived(svc: PacsService, tmp_path: Path, n: int) -> list[str]:
    files = samples.write_ct_series(tmp_path / "ct", n=n, rows=8, cols=8)
    for f in files:
        assert svc.ctx.store(f.read_bytes(), pool="DEFAULT", source="TEST").ok
    return sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)


def _job(svc: PacsService, job_id: int) -> Job:
    with svc.ctx.Session() as db:
        job = db.get(Job, job_id)
        assert job is not None
        db.expunge(job)
        return job


def _ended(svc: PacsService, job_id: int, timeout: float = 30.0) -> Job:
    """The job in a final state, the retry watcher's work done here meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(svc, job_id)
        if job.state not in ("queued", "running", "waiting"):
            return job
        time.sleep(0.2)
        svc.retry_commitments()
    raise AssertionError(f"job {job_id} still {job.state}: {job.message}")


def test_a_refused_n_action_is_named_when_the_request_ends(tmp_path: Path) -> None:
    peer = RefusingPeer()
    peer.code = 0x0110  # Processing failure: asked again, refused again
    peer.start()
    try:
        with _service_with(tmp_path, peer, 2) as (svc, node_id):
            uids = _archived(svc, tmp_path, 1)
            job = _ended(svc, svc.commit(node_id, uids), timeout=RETRY_SECONDS * 6 + 20)
            assert peer.actions == 2
            assert job.state == "failed", job.message
            assert "not accepted after 2 request(s)" in job.message, job.message
            assert "N-ACTION refused with 0x0110" in job.message
            assert "no commitment report" not in job.message
    finally:
        peer.stop()


def test_no_presentation_context_is_named_when_the_request_ends(tmp_path: Path) -> None:
    peer = NoCommitmentPeer().start()
    try:
        with _service_with(tmp_path, peer, 2) as (svc, node_id):  # type: ignore[arg-type]
            uids = _archived(svc, tmp_path, 1)
            job = _ended(svc, svc.commit(node_id, uids), timeout=RETRY_SECONDS * 6 + 20)
            assert job.state == "failed", job.message
            assert "accepted none of the proposed presentation contexts" in job.message
            assert "no commitment report" not in job.message, job.message
    finally:
        peer.stop()


@pytest.fixture()
def counting(tmp_path: Path) -> Iterator[tuple[PacsService, int, CountingPeer]]:
    peer = CountingPeer().start()
    try:
        with _service_with(tmp_path, peer, 2) as (svc, node_id):
            svc.set_options(node_id, commitment_mode="same", commitment_wait=10.0)
            yield svc, node_id, peer
    finally:
        peer.stop()


def test_send_with_commitment_to_a_node_that_is_no_commitment_scp_is_refused(
    tmp_path: Path, counting: tuple[PacsService, int, CountingPeer]
) -> None:
    svc, node_id, peer = counting
    uids = _archived(svc, tmp_path, 1)
    with svc.ctx.WriteSession() as db, db.begin():
        node = db.get(RemoteNode, node_id)
        assert node is not None
        node.storage_commitment = False
    with pytest.raises(PacsError, match="not a storage commitment SCP") as refused:
        svc.send(node_id, sop_instance_uids=uids, commit=True)
    assert refused.value.http == 409  # as POST /pacs/commit answers
    job = _ended(svc, svc.send(node_id, sop_instance_uids=uids))  # the node's default
    assert job.state == "done" and peer.actions == 0, job.message


def test_a_send_whose_commitment_reports_a_failure_is_partial(
    tmp_path: Path, counting: tuple[PacsService, int, CountingPeer]
) -> None:
    svc, node_id, peer = counting
    uids = _archived(svc, tmp_path, 5)
    peer.failed_uids = {uids[4]}  # Failure Reason 0x0112
    job = _ended(svc, svc.send(node_id, sop_instance_uids=uids, commit=True))
    assert "5 of 5 instance(s) stored" in job.message
    assert "storage commitment report: 4 committed, 1 failed" in job.message, job.message
    assert job.state == "partial", job.message  # was "done" with failed=0
    assert (job.total, job.completed, job.failed) == (5, 4, 1)
