"""A send's progress while it waits for and runs its retry, and a C-MOVE retry's message
(Conformance 4.2.4, 4.2.2.6; outside tester, issue 3).

A send of 200 instances to DCMTK ``storescp`` that is killed (SIGKILL) after ~50 arrived
and started again on its port: the job read progress 1.0 and 149 failed while those 149
only waited for the retry that stored them, and its message ("149 instance(s) to retry in
2 s") was not updated while the retry ran. ``storescp`` runs with Nagle on (about 45 ms per
instance) so the send is slow enough to cut and to watch. The retrieve is cut the same way
(DCMTK ``dcmqrscp`` killed and started again on its port): its attempt-2 message kept
saying what had arrived when the attempt began ("67 so far" with 173 completed).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.integration.test_pacs_send_resume import _archive, _node, _scp, _server
from tests.support.dcmqrscp import ct_files, lucent_with_dcmqrscp
from tests.support.peers import DcmQrScp, StoreScp, free_port

COUNT = 200
Snapshot = tuple[str, float, int, int, int, str]


def _snapshot(job: schemas.JobOut) -> Snapshot:
    return (job.state, job.progress, job.completed, job.failed, job.attempts, job.message)


def _watch(api: LucentClient, job_id: int, timeout: float) -> tuple[list[Snapshot], Snapshot]:
    """Every state the job shows while it runs (polled), and its final one."""
    seen: list[Snapshot] = []
    deadline = time.monotonic() + timeout
    job = api.job(job_id)
    while not job.finished:
        assert time.monotonic() < deadline, seen[-5:]
        seen.append(_snapshot(job))
        time.sleep(0.05)
        job = api.job(job_id)
    return seen, _snapshot(job)


def _received_uids(scp: StoreScp) -> set[str]:
    """SOP Instance UIDs of the files the peer wrote (one cut by the kill may not parse)."""
    uids: set[str] = set()
    for f in scp.files():
        try:
            uids.add(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID))
        except Exception:  # noqa: BLE001 - a file half written when storescp was killed
            continue
    return uids


def _kill(proc_pid: int | None) -> None:
    assert proc_pid is not None
    os.killpg(proc_pid, signal.SIGKILL)  # the peer and anything it forked: it dies


def test_progress_follows_what_is_settled_while_a_send_is_retried(tmp_path: Path) -> None:
    port = free_port()
    server = _server(tmp_path, store_retries=2, retry_backoff_seconds=2.0).start()
    scp = _scp(tmp_path, port)
    scp.nodelay = False  # about 45 ms per instance: slow enough to cut after ~50
    scp.start()
    try:
        api = server.client()
        node_id = _node(api, port)
        series, uids = _archive(server, tmp_path, COUNT, "progress")
        job_id = api.send(node_id, series_uid=series, commit=False).id
        server.wait_until(lambda: len(scp.files()) >= 50, 60, "50 instances on the peer")
        _kill(scp.pid)
        assert len(scp.files()) < COUNT, "the send finished before the kill"
        time.sleep(1.0)
        scp.start()  # on the node's port again, before the retry (2 s)
        seen, final = _watch(api, job_id, 120)

        # the end is as before: every instance stored once the retry ran
        state, progress, completed, failed, attempts, message = final
        assert (state, progress, completed, failed) == ("done", 1.0, COUNT, 0), final
        assert attempts == 2 and message == f"{COUNT} of {COUNT} instance(s) stored on resume-scp"
        assert all(r.status == 0 for r in api.job_instances(job_id))
        assert _received_uids(scp) == set(uids)

        running = [s for s in seen if s[0] == "running"]
        # nothing failed for good: the instances cut off waited for their retry
        assert all(s[3] == 0 for s in running), [s for s in running if s[3]][:3]
        # the bar shows what is stored: 1.0 (or 0.5) while 150 waited is gone
        for _state, progress, completed, failed, _n, _m in running:
            assert progress == round((completed + failed) / COUNT, 4), running
        for earlier, later in zip(running, running[1:], strict=False):
            assert later[1] >= earlier[1] and later[2] >= earlier[2], (earlier, later)
        waiting = [s for s in running if "to retry" in s[5]]
        assert waiting, [s[5] for s in running][-20:]
        assert all(s[1] < 0.5 for s in waiting), waiting[:3]
        retried = [s for s in running if "being retried" in s[5]]
        assert retried, [s[5] for s in running][-20:]
        # the message says how many wait or are being retried, and stays current
        for _state, _p, completed, failed, _n, message in waiting + retried:
            found = re.search(
                r"attempt \d of 3: (\d+) instance\(s\) (?:to retry in 2 s|being retried), "
                rf"(\d+) of {COUNT} stored",
                message,
            )
            assert found, message
            left, stored = int(found[1]), int(found[2])
            assert (stored, left) == (completed, COUNT - completed - failed), message
        assert retried[0][5].startswith("attempt 2 of 3: ")
        assert len({s[5] for s in retried}) >= 3, retried
        assert retried[-1][2] > retried[0][2] + 50, (retried[0], retried[-1])
    finally:
        server.stop()
        scp.stop()


class _SamePortQr(DcmQrScp):
    """The killed ``dcmqrscp`` started again on its port and storage area (its index and
    files stay): the job's node names that port."""

    def __init__(self, old: DcmQrScp) -> None:
        super().__init__(peers=old.peers, workdir=old.workdir, nodelay=old.nodelay)
        self.old_port = old.port

    def _choose_ports(self) -> None:
        self.port = self.old_port


def test_a_retrieve_retry_message_follows_what_arrived(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    count = 120
    files = ct_files(tmp_path, count, patient_id="PAT-RE", study_uid=study, series_uid=series)
    with lucent_with_dcmqrscp(
        tmp_path, files, node_name="restarted", nodelay=False,
        settings={"pacs": {"retry_backoff_seconds": 3}},
    ) as up:  # fmt: skip
        api, node, qr = up.api, up.node, up.qr
        api.set_node_options(node.id, retries=1)
        job_id = api.retrieve(node.id, study).id
        up.server.wait_until(lambda: api.job(job_id).completed >= 20, 60, "20 arrived")
        _kill(qr.pid)
        again = _SamePortQr(qr)
        again.start()
        try:
            seen, final = _watch(api, job_id, 120)
        finally:
            again.stop()
        assert final[0] == "done" and final[2] == count, final
        second = [s for s in seen if s[0] == "running" and s[5].startswith("attempt 2 of 2")]
        assert second, [s[5] for s in seen][-20:]
        # the attempt's message follows what arrived, as the count does
        for _state, _p, completed, _f, _n, message in second:
            found = re.search(r"C-MOVE to LUCENT; (\d+) instance\(s\) arrived so far$", message)
            assert found and int(found[1]) == completed, (completed, message)
        assert second[-1][2] > second[0][2] + 20, (second[0], second[-1])
