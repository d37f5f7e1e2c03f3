"""The job queue: a job the server's stop ends is "interrupted", as a restart after kill -9
reports it, not "cancelled" (which says a user asked); a user's cancel stays "cancelled"."""

from __future__ import annotations

import time

from server.context import ServerContext
from server.index.pacs_models import Job
from server.jobs.queue import JobControl, JobQueue, Outcome


def _until_cancelled(control: JobControl) -> Outcome:
    control.update(force=True, total=10, completed=3)
    control.cancel.wait(10)
    return Outcome("cancelled", "cancelled on request (C-CANCEL)")


def _state(ctx: ServerContext, job_id: int, timeout: float = 10.0) -> tuple[str, str, int]:
    deadline = time.monotonic() + timeout
    while True:
        with ctx.Session() as db:
            job = db.get(Job, job_id)
            assert job is not None
            if job.state not in ("queued", "running") or time.monotonic() > deadline:
                return job.state, job.message, job.completed
        time.sleep(0.02)


def test_stopping_the_server_interrupts_jobs_and_a_user_cancel_cancels(
    ctx: ServerContext,
) -> None:
    queue = JobQueue(ctx)
    asked = queue.submit("retrieve", _until_cancelled)
    while _state(ctx, asked, 0)[0] == "queued":
        time.sleep(0.02)
    assert queue.cancel(asked)
    assert _state(ctx, asked)[0] == "cancelled"
    stopped = queue.submit("retrieve", _until_cancelled)
    while _state(ctx, stopped, 0)[0] == "queued":
        time.sleep(0.02)
    queue.shutdown()
    state, message, completed = _state(ctx, stopped)
    assert state == "interrupted" and "the server stopped" in message
    assert completed == 3  # the progress made is kept
