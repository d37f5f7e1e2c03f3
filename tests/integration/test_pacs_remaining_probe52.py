"""A retrieve job shows the PACS's Number of Remaining Sub-operations (0000,1020; issue 3:
"a job exposing progress (remaining/completed/failed/warning)", PS3.4 C.4.2.1.6).

Outside probe 52: JobOut had total/completed/failed/warning but no remaining, so a cancelled
retrieve did not say how many sub-operations the PACS left unsent. The in-process API and
PACS service on a real index; the PACS is the scripted pynetdicom peer (no real PACS stops
a C-MOVE with FE00 on demand), which records the remaining count of every response it sends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lucent.api import schemas
from lucent.api.client import LucentClient
from server.index.models import RemoteNode
from server.pacs.service import PacsService
from tests.integration.test_accounts_support import make_app
from tests.integration.test_pacs_scripted import ScriptedPeer

STUDY = "1.2.826.0.1.3680043.8.498.5252"


class RecordingPeer(ScriptedPeer):
    """The scripted Q/R SCP; ``sent`` holds (status, remaining) of each C-MOVE response."""

    def __init__(self) -> None:
        super().__init__(aet="MOVESCP")
        self.sent: list[tuple[int, int | None]] = []

    def _move(self, event: Any) -> Iterator[Any]:
        dimse = event.assoc.dimse
        send = dimse.send_msg

        def recorded(msg: Any, context_id: int) -> None:
            if type(msg).__name__ == "C_MOVE":  # the response primitive
                left = getattr(msg, "NumberOfRemainingSuboperations", None)
                self.sent.append((int(msg.Status), None if left is None else int(left)))
            send(msg, context_id)

        dimse.send_msg = recorded
        yield from super()._move(event)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LucentClient, int, Any]]:
    peer = RecordingPeer().start()
    work = tmp_path_factory.mktemp("remaining")
    try:
        with make_app(work, {"pacs": {"retry_backoff_seconds": 0.1}}) as app:
            svc = PacsService(app.ctx, start_watcher=False)
            app.app.state.pacs = svc  # the routes use this one
            try:
                with app.ctx.WriteSession() as db, db.begin():
                    node = RemoteNode(
                        name="move-scp", ae_title=peer.aet, host=peer.host, port=peer.port,
                        query_retrieve=True, timeout=10.0,
                    )  # fmt: skip
                    db.add(node)
                    db.flush()
                    node_id = node.id
                svc.set_options(node_id, retries=0)
                yield app.admin_client(), node_id, peer
            finally:
                svc.close()
    finally:
        peer.stop()


def _until(api: LucentClient, job_id: int, ok: Any, what: str) -> schemas.JobOut:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if ok(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id}: no {what}: {job}")


def test_a_cancelled_retrieve_shows_what_the_pacs_left_remaining(
    env: tuple[LucentClient, int, RecordingPeer],
) -> None:
    api, node_id, peer = env
    peer.sent.clear()
    peer.move_calls = 0
    peer.move_scripts = [[0xFF00] * 6]
    peer.move_delay = 0.25
    job = api.retrieve(node_id, STUDY)
    running = _until(api, job.id, lambda j: j.completed >= 1, "completed sub-operation")
    # while it runs, the pending responses' count (the PACS counts down from 6)
    assert running.remaining is not None and 0 < running.remaining < 6, running
    api.cancel_job(job.id)
    ended = _until(api, job.id, lambda j: j.finished, "end")
    assert ended.state == "cancelled" and ended.status == 0xFE00, ended.message
    status, left = peer.sent[-1]
    assert status == 0xFE00 and left is not None and left > 0, peer.sent
    assert ended.remaining == left  # what the PACS said it did not send
    assert ended.completed + ended.remaining == 6, ended
    assert f"{left} remaining (not sent)" in ended.message, ended.message
    assert "remaining" not in ended.params  # its own field, not a request parameter


def test_a_finished_retrieve_has_none_remaining(
    env: tuple[LucentClient, int, RecordingPeer],
) -> None:
    api, node_id, peer = env
    peer.sent.clear()
    peer.move_calls = 0
    peer.move_scripts = [[0xFF00] * 2]
    peer.move_delay = 0.0
    queued = api.retrieve(node_id, STUDY)
    assert queued.remaining is None  # nothing reported yet: unknown, not 0
    job = api.wait_job(queued.id, timeout=20)
    assert job.state == "done", job.message
    assert [status for status, _ in peer.sent] == [0xFF00, 0xFF00, 0x0000]
    assert [left for _, left in peer.sent][:2] == [1, 0]
    assert (job.remaining, job.completed) == (0, 2)  # a final response: nothing remains
