"""Aborted, stopped and crashed perfusion evaluations (issue 6, "Server integration";
outside probe 19), driven in-process on a real index and archive so the abort lands
exactly where it landed for the tester.

The analysis process is replaced by a stand-in that writes a few small result objects
(two series in the source study) or waits until it is cancelled; the PACS send job is a
real job of a real job queue that either "sends" at once or waits until it is cancelled.

- New images arriving while the results are stored or sent (FAQ: abort and restart): the
  aborted run stored and SENT a full second set of results and its row said stored 0,
  result_series_uids [], send_job_ids []. Now it stores and sends nothing after the abort,
  what it stored is removed (tombstones, no blob left), its send jobs are cancelled (a send
  that had completed is named), and its row lists what it stored and sent.
- A server stop said "cancelled" (as if a user cancelled) and, like a kill -9's
  "interrupted", was never redone. Now both are "interrupted" and redone at start-up when
  the series is within ``lookback_minutes``; a user's cancel is not redone.
- A kill -9 left ``<data_dir>/perfusion/run-N/input`` (plain patient DICOM) forever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from server import config
from server.context import ServerContext
from server.index.models import ArchiveTombstone, Instance, RemoteNode, Series
from server.index.pacs_models import Job
from server.index.perfusion_models import PerfusionRun
from server.index.records import now
from server.jobs.queue import JobControl, JobQueue, Outcome
from server.perfusion.service import SOURCE_AE, PerfusionService, wait_until
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
RESULTS_PER_SERIES = 3


class FakeSender:
    """The PACS service's send job without a network: a real job in a real queue that
    delivers at once (``deliver``: done, 4 objects sent) or waits until cancelled."""

    def __init__(self, ctx: ServerContext, deliver: bool = False) -> None:
        self.ctx = ctx
        self.jobs = JobQueue(ctx, 2)
        self.deliver = deliver
        self.calls: list[str] = []
        self.on_send: Callable[[], None] | None = None

    def send(self, node_id: int, *, series_uid: str = "", created_by: str = "") -> int:
        self.calls.append(series_uid)
        if self.on_send is not None:
            self.on_send()

        def run(control: JobControl) -> Outcome:
            if self.deliver:
                control.update(force=True, completed=4)
                return Outcome("done", "4 sent")
            control.cancel.wait(30)
            return Outcome("cancelled", "cancelled")

        job_id = self.jobs.submit("send", run, node_id=node_id, node_name="PACS")
        if self.deliver:
            assert self.jobs.wait_idle(10)
        return job_id


@dataclass
class Harness:
    ctx: ServerContext
    sender: FakeSender
    series_pk: int
    series_uid: str
    study_uid: str
    tmp: Path
    services: list[PerfusionService] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)

    def service(self, *, block: bool = False) -> PerfusionService:
        """A service (as made at a server start) whose analysis writes results at once,
        or (``block``) waits until the run is cancelled or the server stops."""
        svc = PerfusionService(self.ctx, self.sender, start_scanner=False)
        self.services.append(svc)
        harness = self

        def analyse(
            control: JobControl, in_dir: Path, out_dir: Path, config_path: Path
        ) -> tuple[int | None, list[str]]:
            harness.entered.set()
            if block:
                control.cancel.wait(30)
                return None, []
            (out_dir / "dicom").mkdir(parents=True)
            k = 0
            for number in (101, 102):
                series_uid = generate_uid()
                for i in range(RESULTS_PER_SERIES):
                    ds = samples.make_instance(
                        SC,
                        study_uid=harness.study_uid,
                        series_uid=series_uid,
                        series_number=number,
                        instance_number=i + 1,
                    )
                    samples.write(ds, out_dir / "dicom" / f"R{k:05d}.dcm")
                    k += 1
            volumes = {"core_ml": 1.0, "hypoperfusion_ml": 5.0, "mismatch_ratio": 5.0}
            (out_dir / "result.json").write_text(json.dumps({"status": "ok", "volumes": volumes}))
            return 0, []

        svc._analyse_in_process = analyse  # type: ignore[method-assign]
        return svc

    def submit(self, svc: PerfusionService) -> int:
        return svc._submit(self.series_pk, svc.examine_series(self.series_pk), "auto", "")

    def run(self, run_id: int) -> PerfusionRun:
        with self.ctx.Session() as db:
            run = db.get(PerfusionRun, run_id)
            assert run is not None
            return run

    def job(self, job_id: int) -> Job:
        with self.ctx.Session() as db:
            job = db.get(Job, job_id)
            assert job is not None
            return job

    def results_in_archive(self) -> int:
        with self.ctx.Session() as db:
            return int(
                db.scalar(select(func.count(Instance.id)).where(Instance.source_ae == SOURCE_AE))
                or 0
            )

    def assert_no_trace(self, series_uids: list[str]) -> None:
        """The results are gone: no rows, no blob, no tombstone left behind."""
        assert series_uids
        assert self.results_in_archive() == 0
        with self.ctx.Session() as db:
            assert not db.scalars(select(Series).where(Series.series_uid.in_(series_uids))).all()
            referenced = {k for k in db.scalars(select(Instance.meta_key))}
            referenced |= {k for k in db.scalars(select(Instance.pixel_key)) if k}
            assert not db.scalars(select(ArchiveTombstone)).all()
        assert set(self.ctx.storage.keys()) == referenced


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "perfusion": {"send_to_node": "PACS"},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    study_uid, series_uid = str(generate_uid()), str(generate_uid())
    for i in range(4):
        ds = samples.make_instance(CT, study_uid=study_uid, series_uid=series_uid,
                                   instance_number=i + 1)  # fmt: skip
        assert ctx.store(samples.write(ds, tmp_path / f"ct{i}.dcm").read_bytes(), pool="DEFAULT").ok
    with ctx.WriteSession() as db, db.begin():
        db.add(RemoteNode(name="PACS", ae_title="PACS", host="127.0.0.1", port=104,
                          store_target=True))  # fmt: skip
        series_pk = db.scalars(select(Series.id).where(Series.series_uid == series_uid)).one()
    h = Harness(ctx, FakeSender(ctx), series_pk, series_uid, study_uid, tmp_path)
    try:
        yield h
    finally:
        for svc in h.services:
            svc.close()
        h.sender.jobs.shutdown()
        ctx.close()


def _store_hook(h: Harness, after: int, action: Callable[[], None]) -> None:
    """Run ``action`` once, right after the ``after``-th result object is stored."""
    real = h.ctx.store
    count = [0]

    def store(data: bytes, **kw: Any) -> Any:
        res = real(data, **kw)
        if kw.get("source") == SOURCE_AE:
            count[0] += 1
            if count[0] == after:
                action()
        return res

    h.ctx.store = store  # type: ignore[method-assign]


def _supersede(h: Harness, svc: PerfusionService) -> Callable[[], None]:
    """What the scanner does when new images of the series arrive."""

    def act() -> None:
        run_id, job_id = svc._active[h.series_pk]
        svc._supersede(h.series_pk, run_id, job_id)

    return act


def test_abort_while_storing_keeps_nothing(harness: Harness) -> None:
    h = harness
    svc = h.service()
    _store_hook(h, 2, _supersede(h, svc))
    run_id = h.submit(svc)
    assert svc.jobs.wait_idle(30)
    run = h.run(run_id)
    assert run.state == "superseded", run.message
    # the row lists what it stored, and says it is gone again
    assert run.stored == 2 and len(run.result_series_uids) == 1, (run.stored, run.message)
    assert "2 result object(s) it had stored removed from the archive" in run.message
    assert run.send_job_ids == [] and h.sender.calls == []
    assert run.result is None
    h.assert_no_trace(run.result_series_uids)


@pytest.mark.parametrize("deliver", [False, True], ids=["send-cancelled", "send-completed"])
def test_abort_while_sending_cancels_the_send_and_removes_the_results(
    harness: Harness, deliver: bool
) -> None:
    h = harness
    h.sender.deliver = deliver
    svc = h.service()
    h.sender.on_send = _supersede(h, svc)  # lands after the last store, at the first send
    run_id = h.submit(svc)
    assert svc.jobs.wait_idle(30) and h.sender.jobs.wait_idle(30)
    run = h.run(run_id)
    assert run.state == "superseded", run.message
    assert run.stored == 2 * RESULTS_PER_SERIES and len(run.result_series_uids) == 2
    # the second result series was not sent; the first send job is in the row
    assert len(h.sender.calls) == 1
    [job_id] = run.send_job_ids
    job = h.job(job_id)
    if deliver:  # too late to stop: the row says what reached the PACS, for IT
        assert job.state == "done"
        assert f"ALREADY SENT: job {job_id} sent 4 object(s) to PACS" in run.message
        assert run.result_series_uids[0] in run.message
    else:
        assert job.state == "cancelled" and job.completed == 0
        assert f"send job(s) {job_id} cancelled before sending" in run.message
    h.assert_no_trace(run.result_series_uids)


def test_a_user_cancel_after_storing_also_removes_the_results(harness: Harness) -> None:
    h = harness
    svc = h.service()

    def cancel() -> None:  # as the API does (it needs the job id in the run's row)
        run_id = svc._active[h.series_pk][0]
        assert wait_until(lambda: svc.cancel(run_id), 10)

    _store_hook(h, 2 * RESULTS_PER_SERIES, cancel)  # after the last store, before sending
    run_id = h.submit(svc)
    assert svc.jobs.wait_idle(30)
    run = h.run(run_id)
    assert run.state == "cancelled" and run.stored == 2 * RESULTS_PER_SERIES, run.message
    assert h.sender.calls == [] and run.send_job_ids == []
    h.assert_no_trace(run.result_series_uids)
    # a run a user cancelled is not redone at the next start
    again = h.service()
    assert again.scan_once(now() + timedelta(minutes=5)) == []


def test_a_server_stop_interrupts_and_the_next_start_redoes_it(harness: Harness) -> None:
    h = harness
    svc = h.service(block=True)
    run_id = h.submit(svc)
    assert h.entered.wait(30)
    svc.close()  # what SIGTERM does
    run = h.run(run_id)
    assert run.state == "interrupted", (run.state, run.message)  # not "cancelled"
    assert "server stopped" in run.message and run.finished_at is not None
    assert run.job_id is not None and h.job(run.job_id).state == "interrupted"
    # the next start finds the series within lookback_minutes and redoes the evaluation
    again = h.service()
    [new_id] = again.scan_once(now() + timedelta(minutes=5))
    assert again.jobs.wait_idle(30)
    redo = h.run(new_id)
    assert redo.trigger == "restart" and redo.state == "done", redo.message
    assert redo.stored == 2 * RESULTS_PER_SERIES and h.results_in_archive() == redo.stored


def test_after_a_kill_the_start_removes_scratch_and_partial_results_and_redoes_the_run(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 while storing: the row said "running" and listed one result series; its
    scratch folder with the exported input is still there."""
    h = harness
    svc = h.service()
    crash = threading.Event()

    def kill() -> None:  # stop this run's thread where a kill -9 would have stopped it
        crash.set()
        raise SystemExit

    _store_hook(h, 2, kill)
    run_id = h.submit(svc)
    work = h.ctx.settings.data_dir / "perfusion"
    # the thread unwinds (its scratch folder goes on the way out; a real kill leaves it)
    assert crash.wait(30) and wait_until(lambda: not (work / f"run-{run_id}").exists(), 30)
    time.sleep(0.3)
    del h.ctx.store  # type: ignore[method-assign]
    with h.ctx.WriteSession() as db, db.begin():  # what the kill left in the index
        run = db.get(PerfusionRun, run_id)
        assert run is not None
        run.state, run.finished_at = "running", None
        assert run.job_id is not None
        job = db.get(Job, run.job_id)
        assert job is not None
        job.state = "running"
    assert h.results_in_archive() == 2
    scratch = work / f"run-{run_id}" / "input"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "000000.dcm").write_bytes(b"patient data")
    (work / "notes.txt").write_text("not ours")
    listed = h.run(run_id).result_series_uids
    assert len(listed) == 1

    with caplog.at_level(logging.WARNING, logger="lucent.perfusion"):
        again = h.service()
    assert not (work / f"run-{run_id}").exists() and (work / "notes.txt").exists()
    assert f"run-{run_id}" in caplog.text and "scratch folder" in caplog.text
    run = h.run(run_id)
    assert run.state == "interrupted" and run.finished_at is not None
    assert "2 result object(s) it had stored removed" in run.message, run.message
    h.assert_no_trace(listed)
    [new_id] = again.scan_once(now() + timedelta(minutes=5))
    assert again.jobs.wait_idle(30)
    assert h.run(new_id).trigger == "restart" and h.run(new_id).state == "done"


def test_keep_work_files_keeps_leftover_scratch(tmp_path: Path) -> None:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "perfusion": {"keep_work_files": True},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    try:
        scratch = settings.data_dir / "perfusion" / "run-7" / "input"
        scratch.mkdir(parents=True)
        svc = PerfusionService(ctx, None, start_scanner=False)
        svc.close()
        assert scratch.is_dir()
    finally:
        ctx.close()
