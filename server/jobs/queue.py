"""Job queue of the API process: retrieves, sends and commitments with progress and cancel.

Jobs run in a small thread pool of the API process, never on a DICOM listener thread (a
C-MOVE waits on the network, not the CPU). State lives in the index (``pacs_jobs``) so the
apps see progress through the API; cancel flags live in memory. Jobs left "queued" or
"running" by a previous process are marked "interrupted" at start; the owner of a kind
named ``resumable`` (sends: ``PacsService``) starts its ones again with :meth:`resume`.
A stop leaves a resumable job "queued" or "running" for that (as a kill -9 does): 13 sends
ended "interrupted" and the PACS got none of their 46 objects (probe 39).

"waiting" is the one state a runner may end in that is not final: a storage commitment
job, or a send job with commitment after its C-STOREs, whose N-ACTION went out and whose
report is still outstanding (Conformance 4.2.5; a send read "done" meanwhile, probe 52). It
holds no thread; the commitment records move it to a final state when the report arrives
or the request expires, and it survives a restart (the retry watcher carries on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.context import ServerContext
from server.index.pacs_models import Job

log = logging.getLogger("lucent.jobs")

FINAL_STATES = ("done", "failed", "cancelled", "interrupted", "partial")
WAITING = "waiting"
INTERRUPTED = "the server stopped while this job ran"
CANCELLED_QUEUED = "cancelled before it started"
RESUMED = "resumed after a server restart"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Outcome:
    """What a job runner returns: the final state and a sentence for the job list."""

    state: str
    message: str = ""
    status: int | None = None
    #: run after the outcome is written (a waiting job re-reads what changed meanwhile)
    after: Callable[[], None] | None = None


THROTTLE_S = 0.25
"""Progress is written at most this often; the last update is written this long after it
at the latest (a trailing write), so a job whose updates stop shows where it stands."""


class JobControl:
    """Handed to a runner: report progress (throttled DB writes), see cancel requests."""

    def __init__(self, queue: JobQueue, job_id: int, kind: str = "") -> None:
        self.queue = queue
        self.job_id = job_id
        self.kind = kind
        self.cancel = threading.Event()
        self._last_write = 0.0
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._trailing: threading.Timer | None = None
        self._closed = False

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    @property
    def stopping(self) -> bool:
        """The server is stopping: no user cancelled, the job ends "not sent: the server
        stopped" (and a resumable one carries on at the next start)."""
        return self.queue.stopping

    def update(self, *, force: bool = False, **fields: Any) -> None:
        """Set job columns (progress, total, completed, failed, warning, message, attempts).

        Within ``THROTTLE_S`` of the last write the fields wait for a trailing write: they
        were kept until the next update, and a retrieve whose PACS then went quiet read
        "0 completed" for the whole DIMSE timeout with an instance archived (probe s15)."""
        with self._lock:
            if self._closed:
                return
            self._pending.update(fields)
            wait = THROTTLE_S - (time.monotonic() - self._last_write)
            if not force and wait > 0:
                if self._trailing is None:
                    self._trailing = threading.Timer(wait, self._write_trailing)
                    self._trailing.daemon = True
                    self._trailing.start()
                return
            self._write_locked()

    def _write_locked(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        self._last_write = time.monotonic()
        values, self._pending = self._pending, {}
        if values:
            self.queue.write(self.job_id, **values)

    def _write_trailing(self) -> None:
        with self._lock:
            self._trailing = None
            if not self._closed:
                self._write_locked()

    def flush(self) -> None:
        self.update(force=True)

    def close(self) -> None:
        """Write what is pending and stop: the final state is written after this, and no
        trailing progress may land on top of it."""
        with self._lock:
            self._write_locked()
            self._closed = True


Runner = Callable[[JobControl], Outcome]


class JobQueue:
    def __init__(
        self, ctx: ServerContext, threads: int = 2, resumable: tuple[str, ...] = ()
    ) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="job")
        self._controls: dict[int, JobControl] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.resumable = resumable
        #: (id, kind) of the jobs a previous process left queued or running, oldest first
        self.stale = self._mark_interrupted()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _mark_interrupted(self) -> list[tuple[int, str]]:
        with self.ctx.WriteSession() as db, db.begin():
            stale = [
                (job_id, kind)
                for job_id, kind in db.execute(
                    select(Job.id, Job.kind)
                    .where(Job.state.in_(("queued", "running")))
                    .order_by(Job.id)
                )
            ]
            db.execute(
                update(Job)
                .where(Job.state.in_(("queued", "running")))
                .values(state="interrupted", message=INTERRUPTED)
            )
        return stale

    def write(self, job_id: int, *, only_from: str = "", **values: Any) -> bool:
        """Set job columns; ``only_from``: only while the job is in that state (a queued job
        is started or cancelled once, whoever comes first). False when nothing changed."""
        stmt = update(Job).where(Job.id == job_id)
        if only_from:
            stmt = stmt.where(Job.state == only_from)
        for attempt in range(5):
            try:
                with self.ctx.WriteSession() as db, db.begin():
                    changed = db.execute(stmt.values(**values)).rowcount
                return bool(changed)
            except Exception:  # noqa: BLE001 - SQLite busy under load: try again
                if attempt == 4:
                    log.exception("could not update job %d", job_id)
                time.sleep(0.05 * (attempt + 1))
        return False

    def submit(
        self,
        kind: str,
        runner: Runner,
        *,
        node_id: int | None = None,
        node_name: str = "",
        pool: str = "",
        params: dict[str, Any] | None = None,
        created_by: str = "",
        prepare: Callable[[Session, int], None] | None = None,
    ) -> int:
        """Record a queued job and run it in the pool; returns the job id at once.
        ``prepare(db, job_id)`` adds rows that belong to the job in the same transaction
        (a send's per-instance rows: a restart right after the 202 still knows them)."""
        with self.ctx.WriteSession() as db, db.begin():
            job = Job(
                kind=kind,
                state="queued",
                node_id=node_id,
                node_name=node_name,
                pool=pool,
                params=params or {},
                progress=0.0,
                completed=0,
                failed=0,
                warning=0,
                attempts=0,
                message="",
                created_by=created_by,
                created_at=now(),
            )
            db.add(job)
            db.flush()
            job_id = job.id
            if prepare is not None:
                prepare(db, job_id)
        self._start(job_id, kind, runner)
        return job_id

    def resume(self, job_id: int, runner: Runner, note: str = RESUMED) -> bool:
        """Queue again a job a previous process left unfinished (``stale``); it keeps its id,
        its per-instance rows and its counts. False when it is not "interrupted" now."""
        with self.ctx.Session() as db:
            kind = db.scalar(select(Job.kind).where(Job.id == job_id)) or ""
        if not self.write(
            job_id, only_from="interrupted", state="queued", message=note, finished_at=None
        ):
            return False
        self._start(job_id, kind, runner)
        return True

    def _start(self, job_id: int, kind: str, runner: Runner) -> None:
        control = JobControl(self, job_id, kind)
        with self._lock:
            self._controls[job_id] = control
        self._pool.submit(self._run, control, runner)

    def _run(self, control: JobControl, runner: Runner) -> None:
        job_id = control.job_id
        if control.cancelled or not self.write(
            job_id, only_from="queued", state="running", started_at=now()
        ):
            # cancelled while queued (``cancel`` wrote it already) or stopping
            if self._stopping.is_set() and control.kind in self.resumable:
                pass  # stays "queued": the next start resumes it
            elif self._stopping.is_set():
                self.write(job_id, only_from="queued", state="interrupted",
                           message=INTERRUPTED, finished_at=now())  # fmt: skip
            else:
                self.write(job_id, only_from="queued", state="cancelled",
                           message=CANCELLED_QUEUED, finished_at=now())  # fmt: skip
            with self._lock:
                self._controls.pop(job_id, None)
            return
        try:
            outcome = runner(control)
        except Exception as exc:  # noqa: BLE001 - a job must always end with a state
            log.exception("job %d failed", job_id)
            outcome = Outcome("failed", f"internal error: {exc}")
        control.close()
        if (
            outcome.state == "cancelled"
            and self._stopping.is_set()
            and (control.kind in self.resumable)
        ):
            # stays "running" with what it did so far: the next start resumes it
            self.write(job_id, message=f"{INTERRUPTED} ({outcome.message}); it resumes at the "
                       "next start")  # fmt: skip
            with self._lock:
                self._controls.pop(job_id, None)
            return
        if outcome.state == "cancelled" and self._stopping.is_set():
            # the server stopping ended it, not a user: what a restart reports after kill -9
            outcome = Outcome("interrupted", f"{INTERRUPTED} ({outcome.message})", outcome.status)
        values: dict[str, Any] = {"state": outcome.state, "message": outcome.message}
        if outcome.state != WAITING:
            values["finished_at"] = now()
        if outcome.status is not None:
            values["status"] = outcome.status
        if outcome.state == "done":
            values["progress"] = 1.0
        self.write(job_id, **values)
        if outcome.after is not None:
            try:
                outcome.after()
            except Exception:  # noqa: BLE001 - the job has its state; log what failed
                log.exception("job %d: follow-up after its end failed", job_id)
        with self._lock:
            self._controls.pop(job_id, None)

    def cancel(self, job_id: int) -> bool:
        """Ask a queued or running job to stop; False when it is not running here."""
        with self._lock:
            control = self._controls.get(job_id)
        if control is None:
            return False
        control.cancel.set()
        # A queued job ends now: it waited for a worker busy with long moves and read
        # "queued", no message, long after the 200 (probe 37). A running one stops itself.
        self.write(job_id, only_from="queued", state="cancelled", message=CANCELLED_QUEUED,
                   finished_at=now())  # fmt: skip
        return True

    def running(self) -> list[int]:
        with self._lock:
            return list(self._controls)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        """Stop: running jobs end as "interrupted" (not "cancelled": no user asked); a
        resumable one stays "running" (or "queued") for the next start to resume."""
        self._stopping.set()
        with self._lock:
            for control in self._controls.values():
                control.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
