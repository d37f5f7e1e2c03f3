"""Storage commitment records in the index (Conformance 4.2.5, 5.1.2).

Shared by the API process (N-ACTION, ways 1 and 3) and the DICOM listener workers (way 2:
the SCP opens a new association to our Store SCP): both record a report the same way here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    if changed:  # a partial report counts too: its instances are committed (or failed)
        session.flush()
        sync_job(session, req.job_pk)
    return changed


def item_state(item_state: str, request_state: str) -> str:
    """An instance's commitment state as the API shows it: one still "pending" in a request
    that expired was never confirmed and never will be on that request, so "unconfirmed"
    (Conformance 4.2.5.3; GET /pacs/commitments read "pending" for good, outside probe 26).
    The stored item keeps "pending": a late report still counts (``apply_report``)."""
    if item_state == "pending" and request_state == "expired":
        return "unconfirmed"
    return item_state


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


#: What a send job's message says about its storage commitment follows this marker; the
#: part after it is rewritten as reports arrive and when the request expires.
SEND_MARKER = "; storage commitment: "


#: What a cancelled commit job's message says after it about a report that came later.
LATE_MARKER = "; reported after the cancel: "


@dataclass(frozen=True)
class CommitSummary:
    """Where a job's storage commitment stands, over all its requests (retries included).

    Per instance the SCP's last word counts (committed or failed, from whichever request
    it came); an instance without one is ``outstanding`` while its newest request is
    pending (or superseded by a retry on its way) and ``unconfirmed`` once that request
    expired: nobody ever confirmed it, so it is not committed (Conformance 4.2.5.3).
    """

    total: int
    committed: int
    failed: int
    outstanding: int
    unconfirmed: int
    attempt: int
    note: str  # the newest request's message (N-ACTION result, expiry, refusal)
    refused: bool = False  # the SCP refused the newest N-ACTION for good

    @property
    def state(self) -> str:
        """ "waiting" while a report is outstanding: a commit job that reads "done" makes
        clinic IT delete local copies the PACS never confirmed (outside probe)."""
        if self.outstanding:
            return "waiting"
        return commit_state(self.committed, self.failed + self.unconfirmed)

    @property
    def text(self) -> str:
        counts = f"{self.committed} committed, {self.failed} failed"
        if self.outstanding:
            head = self.note or "N-ACTION sent"
            return (
                f"{head}; waiting for the commitment report of {self.outstanding} of "
                f"{self.total} instance(s) ({counts} so far; request {self.attempt})"
            )
        if self.unconfirmed:
            return (
                f"{self.unconfirmed} of {self.total} instance(s) never confirmed: "
                f"no commitment report after {self.attempt} request(s); {counts}"
            )
        if self.refused:
            return f"{self.note}: {counts}"
        return f"N-ACTION accepted; storage commitment report: {counts}"


def summarize(session: Session, job_pk: int) -> CommitSummary | None:
    """The commitment of job ``job_pk`` from its requests; None when it made none."""
    reqs = list(
        session.scalars(
            select(CommitmentRequest)
            .where(CommitmentRequest.job_pk == job_pk)
            .order_by(CommitmentRequest.id)
            .options(selectinload(CommitmentRequest.items))
        )
    )
    if not reqs:
        return None
    decided: dict[str, tuple[datetime, str]] = {}
    newest: dict[str, str] = {}  # uid -> state of the newest request naming it
    for req in reqs:  # oldest first: later requests overwrite
        for item in req.items:
            uid = item.sop_instance_uid
            newest[uid] = req.state
            if item.state != "pending":
                seen = decided.get(uid)
                if seen is None or item.updated_at >= seen[0]:
                    decided[uid] = (item.updated_at, item.state)
    committed = sum(1 for _, state in decided.values() if state == "committed")
    failed = len(decided) - committed
    undecided = [uid for uid in newest if uid not in decided]
    unconfirmed = sum(1 for uid in undecided if newest[uid] in ("expired", "failed"))
    last = reqs[-1]
    return CommitSummary(
        total=len(newest),
        committed=committed,
        failed=failed,
        outstanding=len(undecided) - unconfirmed,
        unconfirmed=unconfirmed,
        attempt=last.attempt,
        note=last.message,
        refused=last.state == "failed",
    )


def sync_job(session: Session, job_pk: int | None) -> None:
    """Make the job follow its commitment records: a commit job's state, counts and
    message, a send job's commitment note. Called whenever the records change (a report,
    a partial one included; a retry; an expiry; a refusal) and after the job's runner
    ended, so a report that raced the runner's end is not lost either."""
    if job_pk is None:
        return
    job = session.get(Job, job_pk)
    if job is None or job.kind not in ("commit", "send"):
        return
    summary = summarize(session, job_pk)
    if summary is None:
        return
    if job.kind == "send":
        if job.state not in ("queued", "running") and SEND_MARKER in job.message:
            head = job.message.split(SEND_MARKER, 1)[0]
            job.message = head + SEND_MARKER + summary.text
        return
    decided = summary.committed + summary.failed + summary.unconfirmed
    before = (job.completed, job.failed)
    job.completed = summary.committed
    job.failed = summary.failed + summary.unconfirmed
    job.total = summary.total
    job.attempts = max(job.attempts or 0, summary.attempt)
    job.progress = round(decided / summary.total, 4) if summary.total else 1.0
    if job.state in ("queued", "running"):
        return  # the runner words state and message itself when it ends, then syncs again
    if job.state == "cancelled":
        # Cancelled stays cancelled (a late report turned it "partial" and dropped "cancelled
        # by ..."): only the counts follow the records, and the message notes the report.
        if (job.completed, job.failed) != before:
            head = job.message.split(LATE_MARKER, 1)[0]
            counts = f"{job.completed} committed, {job.failed} failed or unconfirmed"
            job.message = head + LATE_MARKER + counts
        return
    state = summary.state
    if state != job.state:
        job.finished_at = None if state == "waiting" else now()
    job.state = state
    job.message = summary.text


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


def request_state(ctx: ServerContext, transaction_uid: str) -> str | None:
    with ctx.Session() as session:
        return session.scalar(
            select(CommitmentRequest.state).where(
                CommitmentRequest.transaction_uid == transaction_uid
            )
        )


def is_answered(ctx: ServerContext, transaction_uid: str) -> bool:
    return request_state(ctx, transaction_uid) == "answered"


def job_cancelled(session: Session, job_pk: int | None) -> bool:
    """Whether job ``job_pk`` was cancelled; its row locked (PostgreSQL) until the end of
    the transaction, so a cancel and a retry of its request do not interleave."""
    if job_pk is None:
        return False
    job = session.get(Job, job_pk, with_for_update=True)
    return job is not None and job.state == "cancelled"
