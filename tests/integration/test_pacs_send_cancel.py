"""A send cancelled mid-way (4.2.4): instances never sent are "not sent", not "failed" (a
cancelled send of 600 reported 483 failed while the per-instance list held 117: outside
probe). The PACS service runs in-process on a real index against the scripted SCP."""

from __future__ import annotations

import time
from pathlib import Path

from server import config
from server.context import ServerContext
from server.index.models import RemoteNode
from server.index.pacs_models import Job
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_pacs_scripted import ScriptedPeer

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_cancelled_send_counts_what_was_not_sent_apart(tmp_path: Path) -> None:
    peer = ScriptedPeer(aet="SLOWSCP").start()
    peer.store_delay = 0.1
    settings = config.parse(
        {"server": {"data_dir": str(tmp_path / "data")}, "archive": {"min_free_mb": 1}}
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        series = samples.make_instance(CT).SeriesInstanceUID
        for i in range(30):
            ds = samples.make_instance(CT, series_uid=series, instance_number=i + 1)
            data = samples.write(ds, tmp_path / f"{i}.dcm").read_bytes()
            assert ctx.store(data, pool="DEFAULT").ok
        with ctx.WriteSession() as db, db.begin():
            node = RemoteNode(name="slow", ae_title=peer.aet, host=peer.host, port=peer.port,
                              store_target=True, timeout=10.0)  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        job_id = svc.send(node_id, series_uid=str(series), commit=False)
        time.sleep(0.8)
        assert svc.jobs.cancel(job_id)
        assert svc.jobs.wait_idle(30)
        with ctx.Session() as db:
            job = db.get(Job, job_id)
            assert job is not None
            assert job.state == "cancelled" and job.failed == 0, (job.failed, job.message)
            assert 0 < job.completed < 30 and "not sent" in job.message
    finally:
        svc.close()
        ctx.close()
        peer.stop()


def test_a_class_the_peer_does_not_take_is_not_retried(tmp_path: Path) -> None:
    """No presentation context for a class is an answer that will not change: the send was
    retried twice (2 s + 4 s of backoff) as if it were a lost connection (outside probe)."""
    peer = ScriptedPeer(aet="CTONLY").start()  # accepts CT, not MR
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": {"store_retries": 2, "retry_backoff_seconds": 2.0},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        mr = samples.make_instance("1.2.840.10008.5.1.4.1.1.4")
        assert ctx.store(samples.write(mr, tmp_path / "mr.dcm").read_bytes(), pool="DEFAULT").ok
        with ctx.WriteSession() as db, db.begin():
            node = RemoteNode(name="ct-only", ae_title=peer.aet, host=peer.host, port=peer.port,
                              store_target=True, timeout=10.0)  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        started = time.monotonic()
        job_id = svc.send(node_id, study_uid=str(mr.StudyInstanceUID), commit=False)
        assert svc.jobs.wait_idle(30)
        with ctx.Session() as db:
            job = db.get(Job, job_id)
            assert job is not None and job.state == "failed"
            assert job.attempts <= 1 and "MR Image Storage" in job.message, job.message
        assert time.monotonic() - started < 2.0  # no backoff waited
    finally:
        svc.close()
        ctx.close()
        peer.stop()


def test_a_failed_retrieve_with_nothing_received_says_where_to_look(tmp_path: Path) -> None:
    """Orthanc answers C000 both for a UID it lacks and for a destination it cannot reach:
    "Failed: Unable to process (0xC000) after 1 attempt(s)" named neither (outside probe)."""
    peer = ScriptedPeer(aet="EMPTYPACS").start()
    peer.move_scripts = [[0xC000]]
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": {"move_retries": 0},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        with ctx.WriteSession() as db, db.begin():
            node = RemoteNode(name="empty", ae_title=peer.aet, host=peer.host, port=peer.port,
                              query_retrieve=True, timeout=10.0)  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        job_id = svc.retrieve(node_id, study_uid="1.2.3.4.5.6.7")
        assert svc.jobs.wait_idle(30)
        with ctx.Session() as db:
            job = db.get(Job, job_id)
            assert job is not None and job.state == "failed"
            assert "0xC000" in job.message and "may not hold this study" in job.message
            assert f"port {settings.pools[0].port}" in job.message
    finally:
        svc.close()
        ctx.close()
        peer.stop()
