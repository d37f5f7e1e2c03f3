"""Storage commitment records in the index (Conformance 4.2.5, 5.1.2).

Shared by the API process (N-ACTION, ways 1 and 3) and the DICOM listener workers (way 2:
the SCP opens a new association to our Store SCP): both record a report the same way here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from lucent.net.commitment import Reference, Report
from server.context import ServerContext
from server.index.pacs_models import CommitmentItem, CommitmentRequest, Job
from server.jobs.queue import now

log = logging.getLogger("lucent.commitment")


def create_request(
    session: Session,
    *,
    transaction_uid: str,
    node_id: int | None,
    node_name: str,
    job_pk: int | None,
    mode: str,
    attempt: int,
    refs: Sequence[Reference],
    retry_at: datetime | None,
) -> CommitmentRequest:
    t = now()
    req = CommitmentRequest(
        transaction_uid=transaction_uid,
        node_id=node_id,
        node_name=node_name,
        job_pk=job_pk,
        state="pending",
        mode=mode,
        attempt=attempt,
        message="",
        requested_at=t,
        retry_at=retry_at,
    )
    req.items = [
        CommitmentItem(
            sop_instance_uid=r.sop_instance_uid,
            sop_class_uid=r.sop_class_uid,
            state="pending",
            updated_at=t,
        )
        for r in refs
    ]
    session.add(req)
    session.flush()
    return req


def apply_report(session: Session, report: Report) -> int:
    """Update the items of the report's transaction; returns how many were updated."""
    req = session.scalars(
        select(CommitmentRequest)
        .where(CommitmentRequest.transaction_uid == report.transaction_uid)
        .options(selectinload(CommitmentRequest.items))
    ).first()
    if req is None:
        log.warning("N-EVENT-REPORT for unknown transaction %s", report.transaction_uid)
        return 0
    t = now()
    items = {i.sop_instance_uid: i for i in req.items}
    changed = 0
    for ref in report.committed:
        item = items.get(ref.sop_instance_uid)
        if item is not None:
            item.state, item.failure_reason, item.updated_at = "committed", None, t
            changed += 1
    for ref, reason in report.failed:
        item = items.get(ref.sop_instance_uid)
        if item is not None:
            item.state, item.failure_reason, item.updated_at = "failed", reason, t
            changed += 1
    if all(i.state != "pending" for i in req.items):
        req.state = "answered"
        req.answered_at = t
        req.retry_at = None
        failed = sum(1 for i in req.items if i.state == "failed")
        req.message = f"{len(req.items) - failed} committed, {failed} failed"
        _tell_job(session, req)
    return changed


def refuse(req: CommitmentRequest, code: int, message: str) -> None:
    """The N-ACTION itself was refused for good: every item failed with that status."""
    t = now()
    req.state, req.retry_at, req.message = "failed", None, message
    for item in req.items:
        if item.state == "pending":
            item.state, item.failure_reason, item.updated_at = "failed", code, t


def commit_state(committed: int, failed: int) -> str:
    """A commit job's final state from its report: instances the SCP did not commit are
    not "done" (a job with 2 of 3 failed said done, hidden from state=partial|failed)."""
    if not failed:
        return "done"
    return "partial" if committed else "failed"


def _tell_job(session: Session, req: CommitmentRequest) -> None:
    """A report that arrives after its job ended (way 2, or after the wait) still reaches
    the job: a commit job's counts become the report's, a send job's message names it."""
    if req.job_pk is None:
        return
    job = session.get(Job, req.job_pk)
    if job is None:
        return
    failed = sum(1 for i in req.items if i.state == "failed")
    committed = len(req.items) - failed
    if job.kind == "commit":
        job.completed, job.failed = committed, failed
    if job.state in ("queued", "running"):
        return  # the running job words its message itself when its wait ends
    if job.kind == "commit" and job.state == "done":
        job.state = commit_state(committed, failed)
    note = f"storage commitment report: {committed} committed, {failed} failed"
    if note not in job.message:
        job.message = f"{job.message}; {note}" if job.message else note


def record_report(ctx: ServerContext, report: Report) -> int:
    """apply_report in its own transaction, retried while SQLite is busy."""
    for attempt in range(8):
        try:
            with ctx.WriteSession() as session, session.begin():
                return apply_report(session, report)
        except OperationalError:
            if attempt == 7:
                raise
            time.sleep(0.05 * (attempt + 1))
    return 0


def is_answered(ctx: ServerContext, transaction_uid: str) -> bool:
    with ctx.Session() as session:
        state = session.scalar(
            select(CommitmentRequest.state).where(
                CommitmentRequest.transaction_uid == transaction_uid
            )
        )
    return state == "answered"
