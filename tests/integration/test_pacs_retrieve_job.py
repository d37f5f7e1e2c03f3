"""A retrieve job's end state and message follow what the C-MOVE did (Conformance 4.2.2).

An outside probe found a cancelled C-MOVE that the PACS finished anyway reported as
``cancelled``, status 0000, "Sub-operations complete - no failures", and a final 0000 with
NumberOfFailedSuboperations=1 (a non-conformant PACS) as "done", "no failures", while
the job's own failed counter said 1. Runs the PACS service in-process on a real SQLite
index against the scripted pynetdicom peer (it stores the sub-operations into itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import build_context

from server import config
from server.context import ServerContext
from server.index.models import RemoteNode
from server.pacs.service import PacsService
from tests.integration.test_pacs_commitment_job import _job, _ran
from tests.integration.test_pacs_scripted import FAIL_STORE, ScriptedPeer, _tiny

STUDY = "1.2.826.0.1.3680043.8.498.4242"


class FinishingPeer(ScriptedPeer):
    """Takes the C-CANCEL and finishes every sub-operation anyway, ending with 0000."""

    def _move(self, event: Any) -> Iterator[Any]:
        script = self.move_scripts[0]
        yield self.host, self.port, {"contexts": [build_context(CTImageStorage)]}
        yield len(script)
        for _ in script:
            time.sleep(self.move_delay)
            if event.is_cancelled:
                self.cancelled.set()  # seen, and ignored
            yield 0xFF00, _tiny()


class NoFailuresPeer(ScriptedPeer):
    """Ends with 0000 "no failures" although a sub-operation failed (non-conformant: PS3.4
    C.4.2.1.6 wants B000); pynetdicom would send B000, so its final response is rewritten."""

    def _move(self, event: Any) -> Iterator[Any]:
        dimse = event.assoc.dimse
        send = dimse.send_msg

        def rewritten(msg: Any, context_id: int) -> None:
            if getattr(msg, "Status", None) == 0xB000:
                msg.Status = 0x0000
                msg.Identifier = None
            send(msg, context_id)

        dimse.send_msg = rewritten
        yield from super()._move(event)


def _service(tmp_path: Path, peer: ScriptedPeer) -> Iterator[tuple[PacsService, int]]:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": {"retry_backoff_seconds": 0.1},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        with ctx.Session() as db, db.begin():
            node = RemoteNode(
                name="scripted", ae_title=peer.aet, host=peer.host, port=peer.port,
                query_retrieve=True, timeout=10.0,
            )  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        svc.set_options(node_id, retries=0)
        yield svc, node_id
    finally:
        svc.close()
        ctx.close()


def _running(tmp_path: Path, peer: ScriptedPeer) -> Iterator[tuple[PacsService, int, ScriptedPeer]]:
    peer.start()
    try:
        for svc, node_id in _service(tmp_path, peer):
            yield svc, node_id, peer
    finally:
        peer.stop()


@pytest.fixture()
def finishing(tmp_path: Path) -> Iterator[tuple[PacsService, int, ScriptedPeer]]:
    yield from _running(tmp_path, FinishingPeer())


@pytest.fixture()
def stopping(tmp_path: Path) -> Iterator[tuple[PacsService, int, ScriptedPeer]]:
    yield from _running(tmp_path, ScriptedPeer())  # answers a C-CANCEL with FE00


@pytest.fixture()
def no_failures(tmp_path: Path) -> Iterator[tuple[PacsService, int, ScriptedPeer]]:
    yield from _running(tmp_path, NoFailuresPeer())


def _cancel_after_first(svc: PacsService, job_id: int) -> None:
    """Cancel once the job counted a completed sub-operation."""
    deadline = time.monotonic() + 20
    while _job(svc, job_id).completed < 1:
        assert time.monotonic() < deadline, "no sub-operation completed"
        time.sleep(0.02)
    assert svc.jobs.cancel(job_id)


def test_cancelled_retrieve_the_pacs_finished_says_so(
    finishing: tuple[PacsService, int, ScriptedPeer],
) -> None:
    svc, node_id, peer = finishing
    peer.move_scripts = [[0xFF00] * 4]
    peer.move_delay = 0.3
    job_id = svc.retrieve(node_id, study_uid=STUDY)
    _cancel_after_first(svc, job_id)
    job = _ran(svc, job_id)
    assert job.state == "cancelled" and job.status == 0x0000
    # was "Sub-operations complete - no failures (0x0000)": not what happened
    assert "cancel requested" in job.message, job.message
    assert "completed the retrieve anyway" in job.message
    assert "4 of 4 sub-operation(s) completed" in job.message
    assert job.completed == 4


def test_cancelled_retrieve_the_pacs_stopped_says_so(
    stopping: tuple[PacsService, int, ScriptedPeer],
) -> None:
    svc, node_id, peer = stopping
    peer.move_scripts = [[0xFF00] * 6]
    peer.move_delay = 0.3
    job_id = svc.retrieve(node_id, study_uid=STUDY)
    _cancel_after_first(svc, job_id)
    job = _ran(svc, job_id)
    assert job.state == "cancelled" and job.status == 0xFE00, job.message
    assert "cancel requested" in job.message and "stopped" in job.message
    assert f"{job.completed} of 6 sub-operation(s) completed" in job.message


def test_success_status_with_failed_suboperations_is_partial(
    no_failures: tuple[PacsService, int, ScriptedPeer],
) -> None:
    svc, node_id, peer = no_failures
    peer.move_scripts = [[0xFF00, FAIL_STORE, 0xFF00]]
    job = _ran(svc, svc.retrieve(node_id, study_uid=STUDY))
    assert (job.status, job.completed, job.failed) == (0x0000, 2, 1)
    # was "done", "Sub-operations complete - no failures" with failed=1
    assert job.state == "partial", job.message
    assert "1 failed" in job.message and "no failures" not in job.message.split("(")[0]
