"""The PACS service in-process on a real index against the scripted SCP (4.2.2, 4.2.4):
what a send or retrieve job reports when it is cancelled, meets a class the peer does not
take, or fails with nothing received (outside probes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server import config
from server.context import ServerContext
from server.index.models import RemoteNode
from server.index.pacs_models import Job
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_pacs_scripted import ScriptedPeer

CT = "1.2.840.10008.5.1.4.1.1.2"


@contextmanager
def _service(
    tmp_path: Path, peer: ScriptedPeer, pacs: dict[str, Any] | None = None
) -> Iterator[tuple[PacsService, int]]:
    """The service on a fresh data directory, ``peer`` registered as a node (its id)."""
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": pacs or {},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    peer.start()
    try:
        with ctx.WriteSession() as db, db.begin():
            node = RemoteNode(name=peer.aet.lower(), ae_title=peer.aet, host=peer.host,
                              port=peer.port, store_target=True, query_retrieve=True,
                              timeout=10.0)  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        yield svc, node_id
    finally:
        svc.close()
        ctx.close()
        peer.stop()


def _job(svc: PacsService, job_id: int) -> Job:
    assert svc.jobs.wait_idle(30)
    with svc.ctx.Session() as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def test_cancelled_send_counts_what_was_not_sent_apart(tmp_path: Path) -> None:
    """A cancelled send of 600 reported 483 failed while the per-instance list held 117:
    instances never sent are "not sent", not "failed"."""
    peer = ScriptedPeer(aet="SLOWSCP")
    peer.store_delay = 0.1
    with _service(tmp_path, peer) as (svc, node_id):
        series = samples.make_instance(CT).SeriesInstanceUID
        for i in range(30):
            ds = samples.make_instance(CT, series_uid=series, instance_number=i + 1)
            data = samples.write(ds, tmp_path / f"{i}.dcm").read_bytes()
            assert svc.ctx.store(data, pool="DEFAULT").ok
        job_id = svc.send(node_id, series_uid=str(series), commit=False)
        time.sleep(0.8)
        assert svc.jobs.cancel(job_id)
        job = _job(svc, job_id)
        assert job.state == "cancelled" and job.failed == 0, (job.failed, job.message)
        assert 0 < job.completed < 30 and "not sent" in job.message


def test_a_class_the_peer_does_not_take_is_not_retried(tmp_path: Path) -> None:
    """No presentation context for a class is an answer that will not change: the send was
    retried twice (2 s + 4 s of backoff) as if it were a lost connection."""
    pacs = {"store_retries": 2, "retry_backoff_seconds": 2.0}
    with _service(tmp_path, ScriptedPeer(aet="CTONLY"), pacs) as (svc, node_id):  # CT, not MR
        mr = samples.make_instance("1.2.840.10008.5.1.4.1.1.4")
        data = samples.write(mr, tmp_path / "mr.dcm").read_bytes()
        assert svc.ctx.store(data, pool="DEFAULT").ok
        started = time.monotonic()
        job = _job(svc, svc.send(node_id, study_uid=str(mr.StudyInstanceUID), commit=False))
        assert job.state == "failed"
        assert job.attempts <= 1 and "MR Image Storage" in job.message, job.message
        assert time.monotonic() - started < 2.0  # no backoff waited


def test_a_failed_retrieve_with_nothing_received_says_where_to_look(tmp_path: Path) -> None:
    """Orthanc answers C000 both for a UID it lacks and for a destination it cannot reach:
    "Failed: Unable to process (0xC000) after 1 attempt(s)" named neither."""
    peer = ScriptedPeer(aet="EMPTYPACS")
    peer.move_scripts = [[0xC000]]
    with _service(tmp_path, peer, {"move_retries": 0}) as (svc, node_id):
        job = _job(svc, svc.retrieve(node_id, study_uid="1.2.3.4.5.6.7"))
        assert job.state == "failed"
        assert "0xC000" in job.message and "may not hold this study" in job.message
        assert f"port {svc.ctx.settings.pools[0].port}" in job.message
