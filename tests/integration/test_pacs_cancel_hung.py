"""A cancel ends the job within seconds when the PACS hangs (Conformance 4.2.2, 4.2.1.4).

A PACS that took the association and the C-MOVE, then stopped answering altogether (no more
pending responses, no final response to our C-CANCEL) kept the cancelled retrieve "running"
until the node's DIMSE timeout (~30 s) ran out; a radiologist who clicks Cancel expects it
to end at once. Now the association is aborted ``scu.CANCEL_GRACE_S`` after the C-CANCEL and
the job ends "cancelled", saying the PACS did not confirm it and what arrived so far. The
same for the C-CANCEL a query sends at its result limit. No real PACS hangs on demand, so
the PACS here is a scripted pynetdicom peer; the server is a real Lucent subprocess. The
node's DIMSE timeout is far above the bounded waits below, so without the abort the job is
still running (the query still waiting) when they end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from lucent.api import schemas
from lucent.api.client import LucentClient
from lucent.net import scu
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import free_port

#: The node's DIMSE timeout: what the job waited before; far above the waits below.
DIMSE_TIMEOUT = 60.0
#: How long the test waits for the cancelled job to end: well above the grace after the
#: C-CANCEL (``scu.CANCEL_GRACE_S``, 5 s), well below the DIMSE timeout.
DEADLINE = 20.0


class HungPeer:
    """Accepts a C-MOVE (or C-FIND), answers once, then never again: C-CANCEL unanswered.

    The C-MOVE sends one real sub-operation (a CT into Lucent) and its pending response
    before it hangs, so the job has something that arrived; the C-FIND sends ``matches``.
    ``release`` ends the hang when the test is over."""

    def __init__(self, destination: tuple[str, int], study_uid: str) -> None:
        self.aet = "HUNG"
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.destination = destination
        self.study_uid = study_uid
        self.series_uid = generate_uid()
        self.matches = 3
        self.release = threading.Event()
        self.hanging = threading.Event()  # the last answer is out: silence from here on
        self.cancels = 0  # C-CANCEL-RQs received
        self.aborts = 0  # A-ABORT PDUs received
        self._server: Any = None

    def _move(self, event: Any) -> Iterator[Any]:
        yield (*self.destination, {"contexts": [build_context(CTImageStorage)]})
        yield 3
        yield 0xFF00, samples.make_instance(
            CTImageStorage, patient_id="PAT-HUNG", study_uid=self.study_uid,
            series_uid=self.series_uid,
        )  # fmt: skip
        self.hanging.set()  # pynetdicom sent the sub-operation and its pending response
        self.release.wait(2 * DIMSE_TIMEOUT)  # hung: the C-CANCEL is never looked at
        yield 0xFE00, None

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(self.matches):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.PatientName = f"HUNG^{i}"
            match.StudyInstanceUID = generate_uid()
            yield 0xFF00, match
        self.hanging.set()
        self.release.wait(2 * DIMSE_TIMEOUT)
        yield 0xFE00, None

    def _received(self, event: Any) -> None:
        if type(event.message).__name__ == "C_CANCEL_RQ":
            self.cancels += 1

    def _pdu(self, event: Any) -> None:
        """Counted on the DUL thread: EVT_ABORTED would wait for the hung handler."""
        if type(event.pdu).__name__ == "A_ABORT_RQ":
            self.aborts += 1

    def start(self) -> HungPeer:
        ae = AE(self.aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, scu.UNCOMPRESSED)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove, scu.UNCOMPRESSED)
        handlers = [
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_DIMSE_RECV, self._received),
            (evt.EVT_PDU_RECV, self._pdu),
        ]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            with contextlib.suppress(ValueError):  # pynetdicom: an association already gone
                self._server.shutdown()


@pytest.fixture()
def hung(tmp_path: Path) -> Iterator[tuple[LucentServer, LucentClient, HungPeer, int]]:
    port = free_port()
    server = LucentServer(
        tmp_path / "lucent", pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}]
    )
    peer = HungPeer(("127.0.0.1", port), generate_uid()).start()
    try:
        with server:
            api = server.client()
            try:
                node = api.add_node(
                    schemas.RemoteNodeIn(
                        name="hung", ae_title=peer.aet, host=peer.host, port=peer.port, timeout=10
                    )
                )
                api.set_node_options(node.id, dimse_timeout=DIMSE_TIMEOUT, retries=0)
                yield server, api, peer, node.id
            finally:
                peer.release.set()  # a job still waiting on it ends before the server stops
                api.close()
    finally:
        peer.stop()


def _poll(
    api: LucentClient, job_id: int, until: Callable[[schemas.JobOut], object], seconds: float
) -> schemas.JobOut:
    """The job once ``until(job)`` holds, or as it is when ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    job = api.job(job_id)
    while not until(job) and time.monotonic() < deadline:
        time.sleep(0.1)
        job = api.job(job_id)
    return job


def test_cancelled_retrieve_from_a_hung_pacs_ends_cancelled(
    hung: tuple[LucentServer, LucentClient, HungPeer, int],
) -> None:
    server, api, peer, node_id = hung
    job = api.retrieve(node_id, peer.study_uid)
    assert peer.hanging.wait(30), "the scripted PACS never got the C-MOVE"
    assert api.job(job.id).state == "running"

    api.cancel_job(job.id)
    ended = _poll(api, job.id, lambda j: j.state not in ("queued", "running"), DEADLINE)
    # was still "running" here: it ended only at the DIMSE timeout
    assert ended.state == "cancelled", f"{ended}\n{server.log_tail()}"
    assert "did not confirm the cancel" in ended.message, ended.message
    assert "A-ABORT" in ended.message
    assert "1 of 3 sub-operation(s) completed" in ended.message
    assert "1 instance(s) arrived and are archived" in ended.message
    assert ended.completed == 1
    assert len(api.instances(peer.series_uid)) == 1
    assert peer.cancels == 1
    server.wait_until(lambda: peer.aborts, 10, "the A-ABORT at the hung PACS")


def test_query_stopped_at_its_limit_by_a_hung_pacs_keeps_its_matches(
    hung: tuple[LucentServer, LucentClient, HungPeer, int],
) -> None:
    server, api, peer, node_id = hung
    api.set_node_options(node_id, dimse_timeout=30)  # the API client waits 60 s at most
    answer = api.pacs_query([node_id], "STUDY", limit=2, PatientName="HUNG*")
    (node,) = answer.nodes
    # was "failed" after 30 s ("no answer within 30 s"): the C-CANCEL at the limit went unanswered
    assert node.outcome == "truncated", node
    assert "did not confirm the cancel" in node.message, node.message
    assert node.count == 2 and len(answer.patients) == 2
    assert peer.cancels == 1
    server.wait_until(lambda: peer.aborts, 10, "the A-ABORT at the hung PACS")


def test_progress_before_the_pacs_went_quiet_is_shown(
    hung: tuple[LucentServer, LucentClient, HungPeer, int],
) -> None:
    """The job's last progress is written even when no update follows it: the updates are
    throttled, and the pending response that counted the one instance waited for a next
    update that never came (completed 0 for the whole DIMSE timeout, the instance archived)."""
    server, api, peer, node_id = hung
    job = api.retrieve(node_id, peer.study_uid)
    assert peer.hanging.wait(30), "the scripted PACS never got the C-MOVE"
    shown = _poll(api, job.id, lambda j: j.completed == 1, DEADLINE)
    assert shown.state == "running" and shown.completed == 1, shown
    assert shown.total == 3 and 0 < shown.progress < 1, shown
    api.cancel_job(job.id)
    ended = _poll(api, job.id, lambda j: j.state not in ("queued", "running"), DEADLINE)
    assert ended.state == "cancelled" and ended.completed == 1, ended
