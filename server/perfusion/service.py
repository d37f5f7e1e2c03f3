"""Perfusion evaluations as jobs: recognise complete series, run, store, send.

Issue 6, "Server integration"; ARCHITECTURE "Data flow" (jobs: perfusion when a series
completes). Where things run:

- DICOM listener processes only store. Completeness is read from the index by a scanner
  thread of the main (API) process: it follows new ``instances`` rows by their primary key
  (a watermark, no full scans) and calls a series complete when its newest instance is older
  than ``[perfusion] quiet_seconds`` (like Orthanc's "stable series").
- Evaluations are jobs of the server's job queue (:class:`server.jobs.queue.JobQueue`, kind
  "perfusion", ``max_concurrent`` at a time). The job thread only exports, waits and
  stores; the CPU-heavy analysis runs in a worker *process* (``lucent-perfusion analyse``),
  never on a listener thread or the API event loop. Cancel terminates the process.
- New images of a series under evaluation abort it (state "superseded") and a new
  evaluation starts when the series is quiet again (seed FAQ, VEOcore). An aborted run
  (superseded, cancelled by a user, interrupted by a server stop) stores and sends nothing
  after the abort; what it had stored is removed from the archive (tombstones, so recovery
  does not bring it back), its send jobs are cancelled, and its row lists what it stored
  and sent (a send that had completed is named, for IT to act on): two full result sets
  with the same descriptions, one of them stale, reached the PACS (outside probe 19).
- A server stop is "interrupted", not "cancelled" (no user asked). At start-up, runs the
  stop interrupted are redone (trigger "restart") when their series arrived within
  ``lookback_minutes``, and leftover scratch folders (plain patient DICOM) are removed.
- Results (every object the engine writes: SC pages, Parametric Maps and the Enhanced SR
  summary) go into the archive through ``ServerContext.store()`` (the one ingest path) with
  UIDs under ``[server] uid_root``, and optionally to a PACS through the PACS service's send
  job (its C-STORE SCU).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pydicom
from sqlalchemy import func, or_, select, update

from lucent.perfusion.config import PerfusionConfig
from server.accounts.retention import delete_study
from server.context import ServerContext
from server.index.models import Instance, RemoteNode, Series, Study
from server.index.outage_log import OutageLog
from server.index.pacs_models import Job
from server.index.perfusion_models import PerfusionRun
from server.index.records import now
from server.jobs.queue import FINAL_STATES, JobControl, JobQueue, Outcome
from server.perfusion import analysis_worker
from server.perfusion.cleanup import remove_leftover_work, remove_series
from server.perfusion.recognise import Examination, InstanceInfo, continuing, examine, extent

log = logging.getLogger("lucent.perfusion")

KIND = "perfusion"
SOURCE_AE = "LUCENT-PERFUSION"
_PROGRESS = re.compile(r"^\[\s*(\d+)%\]\s+(\S+)")
# job progress: export 0-10 %, analysis 10-85 %, storing 85-100 %
_EXPORT, _ANALYSE = 0.10, 0.75


class PerfusionError(Exception):
    """A request the service cannot start; ``http`` is the status the API answers with."""

    def __init__(self, http: int, message: str) -> None:
        super().__init__(message)
        self.http = http
        self.message = message


class Sender(Protocol):
    """What the service needs of the PACS service: its send job (C-STORE SCU) and its job
    queue (to cancel the send jobs of an aborted run)."""

    jobs: JobQueue

    def send(self, node_id: int, *, series_uid: str = "", created_by: str = "") -> int: ...


class PerfusionJobs(JobQueue):
    """The server's job queue, with its own worker threads (``max_concurrent``).

    Only jobs of kind "perfusion" (and their runs) are marked interrupted at start: the
    PACS queue owns the others. Those runs keep ``finished_at`` empty: the service's
    start-up removes what they stored and then sets it (see ``_after_crash``).
    """

    def _mark_interrupted(self) -> list[tuple[int, str]]:
        """Nothing to resume here: an evaluation is redone by the service's start-up."""
        with self.ctx.WriteSession() as db, db.begin():
            db.execute(
                update(Job)
                .where(Job.kind == KIND, Job.state.in_(("queued", "running")))
                .values(state="interrupted", message="the server stopped while this job ran")
            )
            db.execute(
                update(PerfusionRun)
                .where(PerfusionRun.state.in_(("queued", "running")))
                .values(state="interrupted", message=STOPPED, finished_at=None)
            )
        return []


@dataclass
class _Watched:
    last_received: datetime
    max_pk: int


RESCAN_OVERLAP = timedelta(seconds=60)
"""How far back each scan looks again at series updated before the previous scan: an
instance committed late, or one whose id SQLite reused (no AUTOINCREMENT: after the newest
rows were deleted, new rows take their ids, below the id watermark), is still found."""


@dataclass
class _Made:
    """What a run put into the world so far: archived result objects and send jobs."""

    stored: int = 0
    series_uids: list[str] = field(default_factory=list)
    send_ids: list[int] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "result_series_uids": list(self.series_uids),
            "send_job_ids": list(self.send_ids),
        }


STOPPED = (
    "interrupted: the server stopped during the evaluation; it is redone at the next start "
    "when the series arrived within [perfusion] lookback_minutes"
)
SOURCE_DELETED = (
    "cancelled: the source series was deleted during the evaluation; no result is stored "
    "and nothing is sent"
)
RERUN_NUMBER_STEP = 100
"""A re-run's result series get Series Numbers this much higher per earlier evaluation that
made results (9001 -> 9101 -> 9201) and "Re-run N: " in the Series Description: a PACS that
already holds the first set shows two sets a radiologist can tell apart (outside probe 39)."""


class PerfusionService:
    """Scanner + runner of perfusion evaluations in the main server process."""

    def __init__(
        self, ctx: ServerContext, sender: Sender | None = None, *, start_scanner: bool = True
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.perfusion
        self.sender = sender
        self.jobs = PerfusionJobs(ctx, self.settings.max_concurrent)
        self._lock = threading.Lock()
        self._active: dict[int, tuple[int, int]] = {}  # series pk -> (run id, job id)
        self._superseded: set[int] = set()
        self._user_cancelled: set[int] = set()
        self._source_gone: set[int] = set()  # runs whose source series was deleted
        self._in_flight: set[int] = set()  # runs whose _run has not ended
        self._stopping = threading.Event()
        self._watch: dict[int, _Watched] = {}
        self._seen: dict[int, tuple[datetime, int]] = {}  # series pk -> (newest, max id)
        self._after_crash()
        self._watermark = self._initial_watermark()
        self._scanned_at = now() - timedelta(minutes=self.settings.lookback_minutes)
        self._stop = threading.Event()
        self._scan_lock = threading.RLock()  # one pass at a time (scanner, catch-up)
        self._scanned_once = False
        self._outage = OutageLog(log, "complete series are not recognised until it is back")
        self._thread: threading.Thread | None = None
        if start_scanner:
            self._thread = threading.Thread(
                target=self._scan_loop, name="perfusion-scan", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ lifecycle
    def close(self, wait: float = 15.0) -> None:
        """Stop: running evaluations end "interrupted" (redone at the next start) after
        removing what they stored; waits up to ``wait`` s for them to say so."""
        self._stop.set()
        self._stopping.set()
        self.jobs.shutdown()
        wait_until(lambda: not self._in_flight, wait)

    def _after_crash(self) -> None:
        """Start-up: remove scratch folders and results of evaluations a stop cut short.

        Scratch folders hold the exported input as plain DICOM; only ``_run``'s end removed
        them, which a kill -9 never reaches. Runs marked interrupted just now (by
        ``PerfusionJobs``; ``finished_at`` empty) may have stored part of their results:
        those are removed (the run is redone when its series is within the lookback)."""
        if not self.settings.keep_work_files:
            removed = remove_leftover_work(self.work_root)
            if removed:
                log.warning(
                    "perfusion: removed %d scratch folder(s) of evaluations that did not "
                    "finish (unencrypted patient images): %s in %s",
                    len(removed),
                    ", ".join(removed),
                    self.work_root,
                )
        with self.ctx.Session() as db:
            runs = list(
                db.scalars(
                    select(PerfusionRun).where(
                        PerfusionRun.state == "interrupted", PerfusionRun.finished_at.is_(None)
                    )
                )
            )
        for run in runs:
            made = _Made(
                int(run.stored or 0),
                list(run.result_series_uids or []),
                list(run.send_job_ids or []),
            )
            note = self._withdraw(run.id, made, wait=0.0)
            self._set_run(run.id, message=STOPPED + note, finished_at=now(), **made.record())

    @property
    def work_root(self) -> Path:
        if self.settings.work_dir:
            return Path(self.settings.work_dir).expanduser()
        return self.ctx.settings.data_dir / "perfusion"

    def _initial_watermark(self) -> int:
        """Look back ``lookback_minutes`` so series received just before a restart count."""
        since = now() - timedelta(minutes=self.settings.lookback_minutes)
        with self.ctx.Session() as db:
            first = db.scalar(select(func.min(Instance.id)).where(Instance.received_at >= since))
            if first is not None:
                return int(first) - 1
            return int(db.scalar(select(func.max(Instance.id))) or 0)

    # ------------------------------------------------------------------ scanning
    def _scan_loop(self) -> None:
        while not self._stop.wait(self.settings.scan_seconds):
            if not self._scan_needed():
                continue
            try:
                self.scan_once()
            except Exception as exc:  # noqa: BLE001 - the scanner must survive a busy index
                # an outage is one line (and a reminder), not a traceback every scan (probe 58)
                self._outage.failed(exc, "perfusion scan failed")
            else:
                self._outage.available()

    def _scan_needed(self) -> bool:
        """Whether a scan can start or abort anything. With ``auto_start`` off only runs
        under way (new images supersede them, a deleted source cancels them), series watched
        until they are quiet (a superseded run restarts) and the first scan (runs a stop
        interrupted restart) need one: the scanner queried the index every ``scan_seconds``
        for nothing (probe 58). A run submitted while it idles catches up first
        (``_catch_up``)."""
        if self.settings.auto_start or not self._scanned_once or self._watch:
            return True
        with self._lock:
            return bool(self._active)

    def _catch_up(self) -> None:
        """Bring an idle scanner's watermark to now before it follows a run again: what it
        did not follow while idle is not "new images" of that run (they would supersede it
        at once). The series updated within ``RESCAN_OVERLAP``, which the next scan reads
        again, are recorded as seen."""
        with self._scan_lock:
            if self._scan_needed():
                return  # it follows the index already
            with self.ctx.Session() as db:
                top = db.scalar(select(func.max(Instance.id)))
            self._watermark = max(self._watermark, int(top or 0))
            self._scanned_at = now()
            for series_pk, max_pk, last in self._new_rows(now()):
                self._seen[series_pk] = (last, int(max_pk))

    def _new_rows(self, at: datetime) -> list[Any]:
        """(series pk, max instance id, newest received_at) of the series with new
        instances by id, and of every series updated since the previous scan (minus an
        overlap): SQLite reuses the ids of deleted newest rows, so after a study was
        deleted a new series could lie wholly below the id watermark (outside probe 31)."""
        horizon = min(self._scanned_at, at) - RESCAN_OVERLAP
        self._scanned_at = max(self._scanned_at, now())
        with self.ctx.Session() as db:
            recent = select(Series.id).where(Series.updated_at >= horizon)
            return list(
                db.execute(
                    select(
                        Instance.series_pk,
                        func.max(Instance.id),
                        func.max(Instance.received_at),
                    )
                    .where(or_(Instance.id > self._watermark, Instance.series_pk.in_(recent)))
                    .group_by(Instance.series_pk)
                ).all()
            )

    def scan_once(self, at: datetime | None = None) -> list[int]:
        """One pass: follow new instances, abort superseded runs, start complete series.

        Returns the ids of the runs started.
        """
        with self._scan_lock:
            started = self._scan(at or now())
            self._scanned_once = True
            return started

    def _scan(self, at: datetime) -> list[int]:
        self.sources_deleted()  # a study deleted by retention or any other path
        horizon = min(self._scanned_at, at) - RESCAN_OVERLAP
        for series_pk, max_pk, last in self._new_rows(at):
            self._watermark = max(self._watermark, int(max_pk))
            signature = (last, int(max_pk))
            if self._seen.get(series_pk) == signature:
                continue  # nothing new since it was seen
            self._seen[series_pk] = signature
            w = self._watch.get(series_pk)
            self._watch[series_pk] = _Watched(
                max(last, w.last_received) if w else last, max(int(max_pk), w.max_pk if w else 0)
            )
            with self._lock:
                busy = bool(self._active)
            # a run analyses every series of its acquisition: new images of any of them
            # abort it (also a series that starts continuing the acquisition)
            for pk in self.acquisition_series(series_pk) if busy else [series_pk]:
                with self._lock:
                    active = self._active.get(pk)
                if active is not None:
                    self._supersede(pk, *active)
        for pk, (last, _) in list(self._seen.items()):
            if last < horizon - RESCAN_OVERLAP and pk not in self._watch:
                del self._seen[pk]
        started: list[int] = []
        quiet = timedelta(seconds=self.settings.quiet_seconds)
        handled: set[int] = set()
        for series_pk, w in list(self._watch.items()):
            if at - w.last_received < quiet:
                continue
            # one acquisition split over several series is analysed once, as a whole,
            # when the last of them is quiet (outside probe 30: two runs, both wrong)
            group = self.acquisition_series(series_pk)
            newest = self._newest(group)
            if newest is not None and at - newest < quiet:
                w.last_received = max(w.last_received, newest)
                continue
            del self._watch[series_pk]
            if group[0] in handled:
                continue
            handled.add(group[0])
            run_id = self._on_complete(group[0], w.max_pk, newest or w.last_received)
            if run_id is not None:
                started.append(run_id)
        return started

    def acquisition_series(self, series_pk: int) -> list[int]:
        """The series of the study that continue this series' acquisition, in time order
        (the first one names the run): ``[series_pk]`` when it stands alone. Decided from
        the index (``recognise.continuing``): same SOP Class, Frame of Reference, matrix,
        orientation and slice positions, times following each other."""
        with self.ctx.Session() as db:
            series = db.get(Series, series_pk)
            if series is None:
                return [series_pk]
            siblings = dict(
                db.execute(
                    select(Series.id, Series.frame_of_reference_uid).where(
                        Series.study_pk == series.study_pk, Series.modality == series.modality
                    )
                ).all()
            )
            if len(siblings) < 2:
                return [series_pk]
            rows = db.execute(
                select(
                    Instance.series_pk,
                    Instance.sop_class_uid,
                    Instance.rows,
                    Instance.columns,
                    Instance.frames,
                    Instance.attrs,
                ).where(Instance.series_pk.in_(list(siblings)))
            ).all()
        per_series: dict[int, list[InstanceInfo]] = {pk: [] for pk in siblings}
        for r in rows:
            per_series[r[0]].append(InstanceInfo(r[1], r[2], r[3], r[4] or 1, r[5] or {}))
        extents = {pk: extent(items, siblings[pk] or "") for pk, items in per_series.items()}
        return continuing(series_pk, extents)

    def _newest(self, series_pks: list[int]) -> datetime | None:
        with self.ctx.Session() as db:
            return db.scalar(  # type: ignore[no-any-return]
                select(func.max(Instance.received_at)).where(Instance.series_pk.in_(series_pks))
            )

    def _supersede(self, series_pk: int, run_id: int, job_id: int) -> None:
        """Abort the run of a series that got new images. Under the lock, so the run either
        is still active here (and its end sees the abort) or has decided its outcome."""
        with self._lock:
            active = self._active.get(series_pk)
            if active is None or active[0] != run_id:
                return  # it ended (or was cancelled) meanwhile: its outcome stands
            job_id = active[1]
            self._superseded.add(run_id)
            self._active.pop(series_pk, None)
            with self.ctx.WriteSession() as db, db.begin():
                db.execute(
                    update(PerfusionRun)
                    .where(PerfusionRun.id == run_id)
                    .values(
                        state="superseded",
                        message="new images of the series arrived during the evaluation; it "
                        "restarts when the series is complete again",
                        finished_at=now(),
                    )
                )
        log.info("new images for the series of perfusion run %d: aborting it", run_id)
        if job_id >= 0:
            self.jobs.cancel(job_id)

    def sources_deleted(self) -> list[int]:
        """Cancel the queued and running evaluations whose source series is no longer in
        the archive (a study deleted while it was evaluated: outside probe 39, the results
        brought the deleted study back and went to the PACS). Called by the study delete
        route at once and by every scan (retention). Returns the run ids cancelled."""
        with self._lock:
            active = {rid: job for rid, job in self._active.values()}
        cancelled = [rid for rid in active if not self._source_present(rid)]
        for run_id in cancelled:
            self._lose_source(run_id)
        return cancelled

    def _source_present(self, run_id: int) -> bool:
        """Whether the series the run evaluates still has instances in the archive (by UID:
        SQLite reuses the primary keys of deleted rows)."""
        with self.ctx.Session() as db:
            uid = db.scalar(select(PerfusionRun.series_uid).where(PerfusionRun.id == run_id))
            if uid is None:
                return False
            first = db.scalar(
                select(Instance.id)
                .join(Series, Series.id == Instance.series_pk)
                .where(Series.series_uid == uid)
                .limit(1)
            )
        return first is not None

    def _lose_source(self, run_id: int) -> None:
        """Abort a run whose source series was deleted: it stores and sends nothing more and
        its end removes what it stored. Under the lock, like ``_supersede``."""
        with self._lock:
            mine = [pk for pk, (rid, _) in self._active.items() if rid == run_id]
            if not mine:
                return  # it ended meanwhile (its end checks the source before sending)
            job_id = self._active[mine[0]][1]
            self._source_gone.add(run_id)
            for pk in mine:
                self._active.pop(pk)
            with self.ctx.WriteSession() as db, db.begin():
                db.execute(
                    update(PerfusionRun)
                    .where(PerfusionRun.id == run_id)
                    .values(state="cancelled", message=SOURCE_DELETED, finished_at=now())
                )
        log.warning("perfusion run %d: its source series was deleted; cancelling it", run_id)
        if job_id >= 0:
            self.jobs.cancel(job_id)

    def _on_complete(
        self, series_pk: int, max_pk: int, last_received: datetime | None = None
    ) -> int | None:
        with self.ctx.Session() as db:
            series = db.get(Series, series_pk)
            if series is None or series.modality not in ("CT", "MR"):
                return None
            latest = db.scalars(
                select(PerfusionRun)
                .where(PerfusionRun.series_uid == series.series_uid)
                .order_by(PerfusionRun.id.desc())
                .limit(1)
            ).first()
        # aborted for new images, or cut short by a server stop (found again at start-up
        # within lookback_minutes): redo it. A run a user cancelled stays cancelled.
        restart = latest is not None and latest.state in ("superseded", "interrupted")
        if latest is not None and not restart:
            # this content was evaluated already (e.g. found again after a restart). By time,
            # not by instance id: SQLite reuses the ids of deleted rows, and a series deleted
            # and sent again was never evaluated again (outside probe 31)
            if last_received is not None:
                if latest.created_at >= last_received:
                    return None
            elif latest.last_instance_pk >= max_pk:
                return None
        if not restart and not self.settings.auto_start:
            return None
        exam = self.examine_series(series_pk)
        if not restart and exam.confidence < self.settings.min_confidence:
            if exam.confidence > 0:
                log.info(
                    "series %s: perfusion confidence %.2f below the minimum: %s",
                    series.series_uid,
                    exam.confidence,
                    exam.reason,
                )
            return None
        with self._lock:
            if series_pk in self._active:
                return None
        return self._submit(series_pk, exam, "restart" if restart else "auto", "")

    def examine_series(self, series_pk: int) -> Examination:
        """examine() on the index rows of a series and the series continuing its acquisition
        (no blob is decrypted)."""
        group = self.acquisition_series(series_pk)
        with self.ctx.Session() as db:
            rows = db.execute(
                select(
                    Instance.sop_class_uid,
                    Instance.rows,
                    Instance.columns,
                    Instance.frames,
                    Instance.attrs,
                ).where(Instance.series_pk.in_(group))
            ).all()
        return examine(InstanceInfo(r[0], r[1], r[2], r[3] or 1, r[4] or {}) for r in rows)

    # ------------------------------------------------------------------ starting
    def start(self, series_uid: str, created_by: str = "") -> int:
        """Manual start through the API; returns the run id."""
        with self.ctx.Session() as db:
            series = db.scalars(select(Series).where(Series.series_uid == series_uid)).first()
            if series is None:
                raise PerfusionError(404, f"no series {series_uid} in the archive")
            series_pk = series.id
        series_pk = self.acquisition_series(series_pk)[0]
        with self._lock:
            active = self._active.get(series_pk)
        if active is not None:
            raise PerfusionError(409, f"an evaluation of this series is running (run {active[0]})")
        exam = self.examine_series(series_pk)
        if not exam.is_perfusion:
            raise PerfusionError(422, f"not a perfusion series: {exam.reason}")
        return self._submit(series_pk, exam, "manual", created_by)

    def _submit(self, series_pk: int, exam: Examination, trigger: str, created_by: str) -> int:
        self._catch_up()
        with self.ctx.WriteSession() as db, db.begin():
            series = db.get(Series, series_pk)
            assert series is not None
            study = db.get(Study, series.study_pk)
            group = self.acquisition_series(series_pk)
            count, max_pk = db.execute(
                select(func.count(Instance.id), func.max(Instance.id)).where(
                    Instance.series_pk.in_(group)
                )
            ).one()
            run = PerfusionRun(
                series_uid=series.series_uid,
                study_uid=study.study_uid if study else "",
                pool=study.pool if study else self.ctx.settings.pools[0].name,
                state="queued",
                trigger=trigger,
                confidence=exam.confidence,
                recognition=exam.reason,
                instances=int(count or 0),
                last_instance_pk=int(max_pk or 0),
                result_series_uids=[],
                send_job_ids=[],
                stored=0,
                message="",
                created_by=created_by,
                created_at=now(),
            )
            db.add(run)
            db.flush()
            run_id, series_uid, pool = run.id, run.series_uid, run.pool

        def runner(control: JobControl) -> Outcome:
            return self._run(control, run_id, group, pool)

        with self._lock:
            # reserve the series before the job can start and finish
            self._active[series_pk] = (run_id, -1)
        job_id = self.jobs.submit(
            KIND,
            runner,
            pool=pool,
            params={"series_uid": series_uid, "run_id": run_id, "trigger": trigger},
            created_by=created_by,
        )
        with self._lock:
            late = self._active.get(series_pk) != (run_id, -1)
            if not late:
                self._active[series_pk] = (run_id, job_id)
        if late:  # superseded or cancelled before its job existed
            self.jobs.cancel(job_id)
        with self.ctx.WriteSession() as db, db.begin():
            db.execute(update(PerfusionRun).where(PerfusionRun.id == run_id).values(job_id=job_id))
        log.info(
            "perfusion run %d (job %d, %s) for series %s: %s",
            run_id,
            job_id,
            trigger,
            series_uid,
            exam.reason,
        )
        return run_id

    def cancel(self, run_id: int) -> bool:
        """Cancel a queued or running evaluation; False when it is not active here.

        The run is "cancelled" from this moment on, so the API's answer says what it will
        be (it said "running" and became "cancelled" a moment later: outside probe): the
        job stops at its next check (export, the analysis process, each result stored)
        and ends with that state; the state "running" never overwrites it."""
        with self.ctx.Session() as db:
            run = db.get(PerfusionRun, run_id)
            if run is None or run.job_id is None:
                return False
            job_id = run.job_id
        # under the lock: the run either is still active (its end sees the cancel and
        # removes what it stored) or it has ended and the cancel comes too late
        with self._lock:
            mine = [pk for pk, (rid, _) in self._active.items() if rid == run_id]
            if not mine or not self.jobs.cancel(job_id):
                return False
            self._user_cancelled.add(run_id)
            for pk in mine:
                self._active.pop(pk)
            with self.ctx.WriteSession() as db, db.begin():
                db.execute(
                    update(PerfusionRun)
                    .where(PerfusionRun.id == run_id, PerfusionRun.state == "queued")
                    .values(
                        state="cancelled", message="cancelled before it started", finished_at=now()
                    )
                )
                db.execute(
                    update(PerfusionRun)
                    .where(PerfusionRun.id == run_id, PerfusionRun.state == "running")
                    .values(state="cancelled", message="cancelled")
                )
        return True

    # ------------------------------------------------------------------ running
    def _set_run(self, run_id: int, **values: Any) -> None:
        with self.ctx.WriteSession() as db, db.begin():
            stmt = update(PerfusionRun).where(PerfusionRun.id == run_id)
            if "state" in values:  # never overwrite the scanner's "superseded"
                stmt = stmt.where(PerfusionRun.state != "superseded")
            if values.get("state") == "running":  # nor a cancel that came first
                stmt = stmt.where(PerfusionRun.state == "queued")
            db.execute(stmt.values(**values))

    def _engine_config(self) -> dict[str, Any]:
        """The engine settings of ``[perfusion]``, checked by ``PerfusionConfig`` (ValueError
        naming the bad key: the one place that knows the valid ranges)."""
        s = self.settings
        values = {
            "method": s.method,
            "threshold_core": s.threshold_core,
            "threshold_tmax": s.threshold_tmax,
            "min_island_ml": s.min_island_ml,
            "uid_root": self.ctx.settings.server.uid_root,
        }
        PerfusionConfig.from_dict(values)
        return values

    def _run(self, control: JobControl, run_id: int, series_pks: list[int], pool: str) -> Outcome:
        work = self.work_root / f"run-{run_id}"
        made = _Made()
        with self._lock:
            self._in_flight.add(run_id)
        try:
            return self._run_and_record(control, run_id, series_pks, pool, work, made)
        finally:
            with self._lock:
                self._in_flight.discard(run_id)

    def _run_and_record(
        self,
        control: JobControl,
        run_id: int,
        series_pks: list[int],
        pool: str,
        work: Path,
        made: _Made,
    ) -> Outcome:
        try:
            outcome, state, extra = self._evaluate(control, run_id, series_pks, pool, work, made)
        except Exception as exc:  # noqa: BLE001 - the run must end with a state
            log.exception("perfusion run %d failed", run_id)
            outcome, state, extra = Outcome("failed", f"internal error: {exc}"), "failed", {}
        finally:
            if not self.settings.keep_work_files:
                shutil.rmtree(work, ignore_errors=True)
        # One decision under the lock: an abort (new images, a user's cancel, a stop) that
        # lands from here on finds the run no longer active and leaves its outcome alone;
        # one that landed before, even after the last store or send, undoes what it made.
        with self._lock:
            for pk, (rid, _) in list(self._active.items()):
                if rid == run_id:
                    self._active.pop(pk)
            superseded = run_id in self._superseded
            self._superseded.discard(run_id)
            by_user = run_id in self._user_cancelled
            self._user_cancelled.discard(run_id)
            gone = run_id in self._source_gone
            self._source_gone.discard(run_id)
            aborted = superseded or by_user or gone or control.cancelled
        extra = {**extra, **made.record()}  # the row always lists what it stored and sent
        if not aborted:
            message = outcome.message
            if state in ("done", "partial"):
                message += self._replace_older(run_id, extra.get("result"))
            self._set_run(run_id, state=state, message=message, finished_at=now(), **extra)
            return replace(outcome, message=message)
        if gone:
            state, message = "cancelled", SOURCE_DELETED
        elif superseded:
            state, message = (
                "superseded",
                "aborted: new images of the series arrived during the evaluation; a new "
                "evaluation starts when the series is complete again",
            )
        elif self._stopping.is_set() and not by_user:
            state, message = "interrupted", STOPPED
        else:
            state, message = "cancelled", "cancelled"
        message += self._withdraw(run_id, made, wait=5.0 if self._stopping.is_set() else 30.0)
        if gone:
            message += self._drop_emptied_study(run_id)
        extra.pop("result", None)  # an aborted run has no result
        with self.ctx.WriteSession() as db, db.begin():
            db.execute(
                update(PerfusionRun)
                .where(PerfusionRun.id == run_id)
                .values(state=state, message=message, finished_at=now(), **extra)
            )
        log.info("perfusion run %d %s: %s", run_id, state, message)
        return Outcome("cancelled", message)

    def _withdraw(self, run_id: int, made: _Made, wait: float, why: str = "aborted") -> str:
        """Undo what an aborted run made: cancel its send jobs, remove its results from the
        archive. Returns what was done, for the run's message ("" when it made nothing)."""
        notes: list[str] = []
        jobs: dict[int, Job] = {}
        if made.send_ids:
            queue = getattr(self.sender, "jobs", None)
            for job_id in made.send_ids:
                if queue is not None:
                    queue.cancel(job_id)

            def settled() -> bool:
                with self.ctx.Session() as db:
                    rows = db.scalars(select(Job).where(Job.id.in_(made.send_ids))).all()
                    jobs.clear()
                    jobs.update({j.id: j for j in rows})
                return all(j.state in FINAL_STATES for j in rows)

            wait_until(settled, wait, poll=0.2)
            sent = [
                f"job {j.id} sent {j.completed} object(s) to {j.node_name or 'the PACS'}"
                + ("" if j.state in FINAL_STATES else f" ({j.state})")
                for j in jobs.values()
                if j.completed
            ]
            stopped = [str(j.id) for j in jobs.values() if not j.completed]
            if stopped:
                notes.append(f"send job(s) {', '.join(stopped)} cancelled before sending")
            if sent:
                notes.append(
                    "ALREADY SENT: "
                    + "; ".join(sent)
                    + f" (result series {', '.join(made.series_uids)}): remove them there"
                )
        if made.series_uids:
            try:
                removed = remove_series(
                    self.ctx, made.series_uids, detail=f"results of {why} perfusion run {run_id}"
                )
            except Exception as exc:  # noqa: BLE001 - say so in the run, do not hide it
                log.exception("perfusion run %d: could not remove its results", run_id)
                notes.append(
                    f"its {made.stored} stored result object(s) could NOT be removed ({exc}): "
                    f"delete series {', '.join(made.series_uids)}"
                )
            else:
                notes.append(f"{removed} result object(s) it had stored removed from the archive")
        return "".join(f"; {n}" for n in notes)

    def _replace_older(self, run_id: int, result: Any) -> str:
        """A run of a series finished with results: the earlier finished runs of the same
        series are superseded by it. Their result series are removed from the archive
        (audited deletion), their pending sends cancelled; what reached a PACS is named in
        their message (it cannot be recalled). Seed FAQ (VEOcore): "at the end the correct
        and complete results should be available" -- one current set, not two with the same
        descriptions, one of them from a truncated bolus (outside probe 39). Returns the
        note for this run's message ("" when it replaced nothing)."""
        with self.ctx.Session() as db:
            run = db.get(PerfusionRun, run_id)
            if run is None:
                return ""
            older = list(
                db.scalars(
                    select(PerfusionRun).where(
                        PerfusionRun.series_uid == run.series_uid,
                        PerfusionRun.id < run_id,
                        PerfusionRun.state.in_(("done", "partial")),
                    )
                )
            )
            count = run.instances
        replaced: list[int] = []
        for old in older:
            made = _Made(
                int(old.stored or 0),
                list(old.result_series_uids or []),
                list(old.send_job_ids or []),
            )
            notes = self._withdraw(old.id, made, wait=10.0, why=f"superseded (by {run_id})")
            message = (
                f"superseded: replaced by run {run_id} ({count} image(s); this run evaluated "
                f"{old.instances}), the newer evaluation of the same series" + notes
            )
            if "ALREADY SENT" in notes:
                message += "; results already sent to a PACS cannot be recalled by Lucent"
            old_result = dict(old.result or {})
            old_result["superseded_by"] = run_id
            with self.ctx.WriteSession() as db, db.begin():
                db.execute(
                    update(PerfusionRun)
                    .where(PerfusionRun.id == old.id)
                    .values(state="superseded", message=message, result=old_result)
                )
            log.info("perfusion run %d superseded by run %d", old.id, run_id)
            replaced.append(old.id)
        if not replaced:
            return ""
        if isinstance(result, dict):
            result["replaces_runs"] = replaced
        names = ", ".join(map(str, replaced))
        return f"; replaces run {names} (its results were removed from the archive)"

    def _drop_emptied_study(self, run_id: int) -> str:
        """After an abort for a deleted source: a result stored in the instant between the
        check and the store made the deleted study anew; its results are gone again, and the
        study row (and a patient that only it used) goes too, through the audited delete."""
        with self.ctx.Session() as db:
            uid = db.scalar(select(PerfusionRun.study_uid).where(PerfusionRun.id == run_id))
            study = db.scalars(select(Study).where(Study.study_uid == uid)).first() if uid else None
            if study is None:
                return ""
            left = db.scalar(select(func.count(Series.id)).where(Series.study_pk == study.id))
        if left:
            return ""
        delete_study(self.ctx, str(uid), user="perfusion", address="", event="delete")
        return "; the study its results had re-created was removed"

    def _evaluate(
        self,
        control: JobControl,
        run_id: int,
        series_pks: list[int],
        pool: str,
        work: Path,
        made: _Made,
    ) -> tuple[Outcome, str, dict[str, Any]]:
        self._set_run(run_id, state="running")
        cancelled = (Outcome("cancelled", "cancelled"), "cancelled", {})
        try:
            engine = self._engine_config()
        except ValueError as exc:  # before exporting anything
            return Outcome("failed", f"[perfusion] settings: {exc}"), "failed", {}
        in_dir, out_dir = work / "input", work / "output"
        shutil.rmtree(work, ignore_errors=True)
        in_dir.mkdir(parents=True, mode=0o700)
        work.chmod(0o700)
        with self.ctx.Session() as db:
            instances = list(
                db.scalars(
                    # every series of the acquisition (a scanner may split it)
                    select(Instance).where(Instance.series_pk.in_(series_pks)).order_by(Instance.id)
                )
            )
            numbers = dict(
                db.execute(select(Series.id, Series.series_number).where(Series.id.in_(series_pks)))
                .tuples()
                .all()
            )
        total = len(instances)
        control.update(force=True, total=total, message=f"exporting {total} image(s)")
        names: dict[str, str] = {}
        for k, inst in enumerate(instances):
            if control.cancelled:
                return cancelled
            # file names are our own counters (never a UID)
            (in_dir / f"{k:06d}.dcm").write_bytes(self.ctx.instance_bytes(inst))
            names[f"{k:06d}.dcm"] = _image_name(inst.instance_number, numbers.get(inst.series_pk))
            control.update(progress=round(_EXPORT * (k + 1) / max(total, 1), 4))
        config_path = work / "config.json"
        config_path.write_text(json.dumps(engine))
        code, tail = self._analyse_in_process(control, in_dir, out_dir, config_path)
        if code is not None and code < 0 and control.cancel.wait(5.0):
            # killed by a signal that also stops us (SIGTERM to the service's process
            # group, systemd's stop): the stop ended it, not a failure of the analysis
            code = None
        if code is None:
            return cancelled
        result_path = out_dir / "result.json"
        # lucent.perfusion.cli: 0 ok, 2 refused, 3 analysed but some output objects missing
        if code not in (0, 2, 3) or not result_path.exists():
            reason = tail[-1] if tail else f"exit status {code}"
            return Outcome("failed", f"analysis failed: {reason}"), "failed", {}
        result: dict[str, Any] = json.loads(result_path.read_text())
        if code == 2:
            reason = _scratch_names_replaced(str(result.get("reason")), names)
            msg = f"not analysed ({result.get('code')}): {reason}"
            return Outcome("failed", msg), "refused", {"result": result}
        if control.cancelled:
            return cancelled
        # results into the archive through the one ingest path
        files = sorted((out_dir / "dicom").glob("*.dcm"))
        control.update(force=True, message=f"storing {len(files)} result object(s)")
        failures: list[str] = []
        series_uids = made.series_uids
        sr_series = None
        rerun = self._rerun_number(run_id)
        if rerun > 1:
            result.setdefault("archive", {})["rerun"] = rerun
        for k, f in enumerate(files):
            if control.cancelled:  # aborted: store nothing more (the end removes the rest)
                return cancelled
            if not self._source_present(run_id):  # never re-create a deleted study
                self._lose_source(run_id)
                return cancelled
            data = f.read_bytes() if rerun == 1 else mark_rerun(f, rerun)
            head = pydicom.dcmread(f, stop_before_pixels=True)
            uid = str(head.SeriesInstanceUID)
            if uid not in series_uids:
                # listed before its first object is stored: after a kill -9 the start-up
                # finds (and removes) every result series the run began
                series_uids.append(uid)
                self._set_run(run_id, **made.record())
            res = self.ctx.store(data, pool=pool, source=SOURCE_AE)
            if res.ok:
                made.stored += 1
                if head.get("Modality") == "SR":
                    sr_series = uid
            else:
                failures.append(f"{f.name}: not stored, 0x{res.status:04X} {res.reason}")
            control.update(
                progress=round(_EXPORT + _ANALYSE + 0.15 * (k + 1) / max(len(files), 1), 4),
                completed=made.stored,
                failed=len(failures),
            )
        stored = made.stored
        self._set_run(run_id, **made.record())
        result["archive"] = {
            **result.get("archive", {}),
            "stored": stored,
            "failed": len(failures),
            "series_instance_uids": series_uids,
            "summary_sr_series_instance_uid": sr_series,
        }
        refused = not_stored_report(len(files), failures)
        if refused is not None:
            # the results are incomplete in the archive: say so where a user looks (run
            # message, result JSON's status, QC flags and warnings), not a plain "done"
            result["status"] = "partial"
            result["archive"]["failures"] = failures[:20]
            result.setdefault("qc", {}).setdefault("flags", []).append(
                {"code": "results_not_stored", "reason": refused}
            )
            result.setdefault("warnings", []).append(refused)
        v = result.get("volumes", {})
        ratio = v.get("mismatch_ratio")
        if ratio is None:
            ratio = "infinite" if v.get("mismatch_ratio_infinite") else "not assessable"
        message = (
            f"core {v.get('core_ml')} mL, hypoperfusion {v.get('hypoperfusion_ml')} mL, "
            f"mismatch ratio {ratio}; {stored} of {len(files)} object(s) stored"
        )
        if control.cancelled:  # aborted while storing the last object: send nothing
            return cancelled
        if not self._source_present(run_id):  # deleted while the last one was stored
            self._lose_source(run_id)
            return cancelled
        send_ids = self._send(control, run_id, made, result)
        if send_ids:
            message += f"; sent with job(s) {', '.join(map(str, send_ids))}"
        extra = {
            "result": result,
            "result_series_uids": series_uids,
            "stored": stored,
            "send_job_ids": send_ids,
        }
        not_made = [
            f"{o.get('output')}: not made, {o.get('reason')}"
            for o in result.get("output_failures") or []
            if isinstance(o, dict)
        ]
        problems = ([refused] if refused is not None else []) + not_made[:3]
        if problems:
            message = f"PARTIAL: {'; '.join(problems)}; {message}"
            # the run and its job say "partial": not every result reached the archive
            return Outcome("partial", message), "partial", extra
        return Outcome("done", message), "done", extra

    def _rerun_number(self, run_id: int) -> int:
        """1 + the earlier evaluations of the same series that stored results (whatever
        became of them: some may be on a PACS already)."""
        with self.ctx.Session() as db:
            uid = db.scalar(select(PerfusionRun.series_uid).where(PerfusionRun.id == run_id))
            earlier = db.scalars(
                select(PerfusionRun.result_series_uids).where(
                    PerfusionRun.series_uid == uid, PerfusionRun.id < run_id
                )
            ).all()
        return 1 + sum(1 for uids in earlier if uids)

    def _analyse_in_process(
        self, control: JobControl, in_dir: Path, out_dir: Path, config_path: Path
    ) -> tuple[int | None, list[str]]:
        """``lucent-perfusion analyse`` in a worker process; None when cancelled."""
        cmd = [
            sys.executable,
            "-m",
            "server.perfusion.analysis_worker",  # lucent.perfusion.cli, ending with us
            "analyse",
            str(in_dir),
            "--out",
            str(out_dir),
            "--config",
            str(config_path),
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, analysis_worker.PARENT_ENV: str(os.getpid())},
        )
        tail: deque[str] = deque(maxlen=20)

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip()
                m = _PROGRESS.match(line)
                if m:
                    fraction = int(m.group(1)) / 100.0
                    control.update(
                        progress=round(_EXPORT + _ANALYSE * fraction, 4),
                        message=f"analysis: {m.group(2)}",
                    )
                elif line:
                    tail.append(line)

        reader = threading.Thread(target=read, name="perfusion-stderr", daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                if control.cancel.wait(0.2):
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    return None, list(tail)
        finally:
            reader.join(5)
        return proc.returncode, list(tail)

    def _send(
        self, control: JobControl, run_id: int, made: _Made, result: dict[str, Any]
    ) -> list[int]:
        """Results to the configured PACS node through the PACS service's send job.

        Each job id goes into the run's row as soon as the job exists; an abort stops
        further sends (the run's end cancels those made)."""
        series_uids = made.series_uids
        name = self.settings.send_to_node
        if not name or not series_uids:
            return []
        if self.sender is None:
            result.setdefault("warnings", []).append("results not sent: no PACS service")
            return []
        with self.ctx.Session() as db:
            node = db.scalars(select(RemoteNode).where(RemoteNode.name == name)).first()
            node_id = node.id if node else None
        if node_id is None:
            result.setdefault("warnings", []).append(f"results not sent: no remote node '{name}'")
            return []
        for uid in series_uids:
            if control.cancelled:
                break
            try:
                made.send_ids.append(
                    self.sender.send(node_id, series_uid=uid, created_by="perfusion")
                )
            except Exception as exc:  # noqa: BLE001 - PacsError and the like: report, go on
                result.setdefault("warnings", []).append(f"results not sent: {exc}")
                break
            self._set_run(run_id, send_job_ids=list(made.send_ids))
        return list(made.send_ids)


def mark_rerun(path: Path, rerun: int) -> bytes:
    """The result object with a re-run's Series Number (+``RERUN_NUMBER_STEP`` per earlier
    evaluation) and "Re-run N: " before its Series Description (LO: 64 characters; in front,
    where a PACS list that cuts long descriptions still shows it)."""
    ds = pydicom.dcmread(path)
    step = RERUN_NUMBER_STEP * (rerun - 1)
    ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + step
    ds.SeriesDescription = f"Re-run {rerun}: {ds.get('SeriesDescription') or ''}"[:64]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def not_stored_report(total: int, failures: list[str]) -> str | None:
    """One sentence on result objects the archive refused (None: all stored), e.g. "52 of
    58 result object(s) refused by the archive: R00001.dcm: not stored, 0x..."."""
    if not failures:
        return None
    return f"{len(failures)} of {total} result object(s) refused by the archive: {failures[0]}"


def wait_until(predicate: Any, timeout: float, poll: float = 0.1) -> bool:
    """Small helper for tests and shutdown: poll ``predicate`` until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def _image_name(instance_number: int | None, series_number: int | None) -> str:
    """An image as the reader finds it in the browser: "image 6 of series 3"."""
    image = f"image {instance_number}" if instance_number is not None else "an unnumbered image"
    return image + (f" of series {series_number}" if series_number is not None else "")


_SCRATCH_NAME = re.compile(r"\b\d{6}\.dcm\b")


def _scratch_names_replaced(reason: str, names: dict[str, str]) -> str:
    """The engine names the files it read; ours are scratch counters ("000006.dcm") nobody
    can find (outside probe 39): the refusal names the images by series and instance
    number instead."""
    named = _SCRATCH_NAME.sub(lambda m: names.get(m.group(0), m.group(0)), reason)
    return re.sub(r"\bfiles (?=image |an unnumbered image)", "", named)
