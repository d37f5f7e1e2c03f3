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

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, UOWTransaction, selectinload

from lucent.net.commitment import ACCEPTED, Reference, Report
from server.context import ServerContext
from server.index.models import RemoteNode
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


#: Request states a report no longer rewrites: every instance answered, or the N-ACTION
#: refused for good. An expired request still takes a late report (``item_state``).
FINAL_STATES = ("answered", "failed")

#: What the records say when a node's pending requests end because it was deleted (its id
#: is reused by the next node added: the retries went to that node, probe 38).
NODE_DELETED = "the node was deleted"

#: ... and when the node row of a request names another node now (renamed, or a deleted
#: node's id reused by a node added later).
NODE_CHANGED = "the node changed"

#: How the message of a pending request begins whose N-ACTION never reached the PACS (no
#: association: connection refused, rejected, no presentation context) ...
NOT_DELIVERED = "N-ACTION not delivered"
#: ... or was sent and got no response (timeout, abort): the PACS may not have it.
NOT_CONFIRMED = "N-ACTION not confirmed"
#: What follows in such a message: when the next attempt is due (or that none is left).
NEXT_ATTEMPT = "; next attempt"


def delivered(state: str, message: str) -> bool:
    """Whether a request's N-ACTION is out or accepted, so a report may come: its message
    is empty (the N-ACTION is on its way) or says the SCP accepted it. A pending request
    whose N-ACTION got no association, no response or a transient refusal waits for its
    next attempt, not for a report (probe 56: "waiting for the commitment report" for ten
    minutes while nothing listened on the node's port)."""
    return state != "pending" or not message or message.startswith(ACCEPTED)


def awaiting(state: str, message: str) -> str | None:
    """What a request waits for, as GET /pacs/commitments shows it: "report" (N-ACTION
    accepted or on its way), "retry" (not delivered or not accepted: the next attempt is due
    at its ``retry_at``); None once it is no longer pending."""
    if state != "pending":
        return None
    return "report" if delivered(state, message) else "retry"


def reason_of(message: str) -> str:
    """A request's message without its retry schedule (what an expiry note quotes)."""
    return message.split(NEXT_ATTEMPT, 1)[0]


#: The start of an expiry's note: no report came after the last attempt ...
NO_REPORT = "no commitment report after"
#: ... or the last N-ACTION was not accepted (refused, no presentation context, no answer).
NOT_ACCEPTED = "the N-ACTION was not accepted"


@dataclass(frozen=True)
class Applied:
    """What became of a report: instances updated, or why it was not applied at all."""

    updated: int = 0
    refused: str = ""


def same_ae(a: str, b: str) -> bool:
    """AE titles compared as DICOM does: leading and trailing spaces are not significant
    (PS3.5 6.2, VR AE); case is."""
    return a.strip(" ") == b.strip(" ")


def _origin_refusal(session: Session, req: CommitmentRequest, calling_ae: str) -> str:
    """Way 2: only the node the N-ACTION went to may report on it, by its AE title; the
    node row must still be that node (ids of deleted nodes are reused)."""
    node = session.get(RemoteNode, req.node_id) if req.node_id is not None else None
    if node is None:
        return f"it was requested from '{req.node_name}', which was deleted"
    if node.name != req.node_name:
        return f"it was requested from '{req.node_name}'; node {node.id} is now '{node.name}'"
    if not same_ae(node.ae_title, calling_ae):
        return f"it was requested from '{node.name}' (AE {node.ae_title.strip()})"
    return ""


def _changes(req: CommitmentRequest, report: Report) -> int:
    """How many of the request's items the report would change."""
    items = {i.sop_instance_uid: i for i in req.items}
    said = [(ref, "committed", None) for ref in report.committed]
    said += [(ref, "failed", reason) for ref, reason in report.failed]
    return sum(
        1
        for ref, state, reason in said
        if (item := items.get(ref.sop_instance_uid)) is not None
        and (item.state, item.failure_reason) != (state, reason)
    )


def apply_report(session: Session, report: Report, calling_ae: str | None = None) -> Applied:
    """Update the items of the report's transaction, if its sender may (Conformance 4.2.5).

    ``calling_ae`` is the AE title that opened the association (way 2); None for a report
    on our own association, already matched to the transaction requested there (ways 1
    and 3). An answered transaction is not rewritten: a report from any AE turned a
    patient's "1 failed" into committed (probe 38); the same answer again is no change.
    """
    req = session.scalars(
        select(CommitmentRequest)
        .where(CommitmentRequest.transaction_uid == report.transaction_uid)
        .options(selectinload(CommitmentRequest.items))
    ).first()
    if req is None:
        return Applied(refused="no such transaction was requested")
    if calling_ae is not None:
        refused = _origin_refusal(session, req, calling_ae)
        if refused:
            return Applied(refused=refused)
    if req.state in FINAL_STATES and _changes(req, report):
        return Applied(refused=f"the transaction is final ({req.state}: {req.message})")
    if req.state in FINAL_STATES:
        return Applied()
    return Applied(_apply(session, req, report))


def _apply(session: Session, req: CommitmentRequest, report: Report) -> int:
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


def end_requests_of(session: Session, node_ids: Sequence[int], why: str) -> int:
    """End the pending requests of nodes ``node_ids`` (expired, ``why``) and move their
    jobs on: nothing will be asked of those nodes any more. Returns how many ended."""
    reqs = list(
        session.scalars(
            select(CommitmentRequest)
            .where(
                CommitmentRequest.node_id.in_(list(node_ids)),
                CommitmentRequest.state == "pending",
            )
            .options(selectinload(CommitmentRequest.items))
        )
    )
    for req in reqs:
        req.state, req.retry_at, req.message = "expired", None, why
    for job_pk in dict.fromkeys(r.job_pk for r in reqs):
        sync_job(session, job_pk)
    return len(reqs)


@event.listens_for(Session, "before_flush")
def _end_requests_of_deleted_nodes(
    session: Session, _context: UOWTransaction, _instances: object
) -> None:
    """A node deleted through the ORM (DELETE /nodes/{id}) ends its pending requests in the
    same transaction: SQLite gives the next node added the same id, and the retry watcher
    sent the deleted node's N-ACTIONs, with the patient's UIDs, to that node (probe 38)."""
    gone = [o.id for o in session.deleted if isinstance(o, RemoteNode) and o.id is not None]
    if gone:
        end_requests_of(session, gone, f"{NODE_DELETED}: the node was removed before it reported")


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
    #: the newest request's N-ACTION reached the SCP and was accepted (or is on its way);
    #: False while it waits for another attempt (``delivered``)
    delivered: bool = True

    @property
    def state(self) -> str:
        """ "waiting" while a report is outstanding: a commit job that reads "done" makes
        clinic IT delete local copies the PACS never confirmed (outside probe)."""
        if self.outstanding:
            return "waiting"
        return commit_state(self.committed, self.failed + self.unconfirmed)

    @property
    def ended(self) -> str:
        """Why the newest request ended unanswered: its expiry note (no report after the
        last attempt, the node deleted or changed)."""
        if self.note.startswith((NO_REPORT, NOT_ACCEPTED, NODE_DELETED, NODE_CHANGED)):
            return self.note
        return f"{NO_REPORT} {self.attempt} request(s)"

    @property
    def text(self) -> str:
        counts = f"{self.committed} committed, {self.failed} failed"
        if self.outstanding and not self.delivered:
            # no report is awaited for a request the PACS never took: say why and when
            # the next attempt is due (the note carries both, Conformance 4.2.5.3)
            return (
                f"{self.note}; {self.outstanding} of {self.total} instance(s) not committed "
                f"yet ({counts} so far; request {self.attempt})"
            )
        if self.outstanding:
            head = self.note or "N-ACTION sent"
            return (
                f"{head}; waiting for the commitment report of {self.outstanding} of "
                f"{self.total} instance(s) ({counts} so far; request {self.attempt})"
            )
        if self.unconfirmed:
            return (
                f"{self.unconfirmed} of {self.total} instance(s) never confirmed: "
                f"{self.ended}; {counts}"
            )
        if self.refused:
            return f"{self.note}: {counts}"
        return f"N-ACTION accepted; storage commitment report: {counts}"


def _requests_of(session: Session, job_pk: int) -> list[CommitmentRequest]:
    return list(
        session.scalars(
            select(CommitmentRequest)
            .where(CommitmentRequest.job_pk == job_pk)
            .order_by(CommitmentRequest.id)
            .options(selectinload(CommitmentRequest.items))
        )
    )


def _instance_states(reqs: Sequence[CommitmentRequest]) -> dict[str, str]:
    """Per SOP Instance UID the commitment state over all of a job's requests (oldest
    first): the SCP's last word (committed / failed) from whichever request it came;
    without one, "pending" while the newest request naming it is pending or superseded by
    a retry on its way, "unconfirmed" once that request expired or was refused."""
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
    out: dict[str, str] = {}
    for uid, request_state in newest.items():
        if uid in decided:
            out[uid] = decided[uid][1]
        else:
            out[uid] = "unconfirmed" if request_state in ("expired", "failed") else "pending"
    return out


def instance_states(session: Session, job_pk: int) -> dict[str, str]:
    """What the commitment of job ``job_pk`` says per instance (``_instance_states``);
    empty when the job requested none. GET /jobs/{id}/instances shows it beside each
    C-STORE result, and a retry of a send takes the instances not committed."""
    return _instance_states(_requests_of(session, job_pk))


#: Commitment states of an instance that a retry of its send job sends again.
NOT_COMMITTED = ("failed", "unconfirmed")


def summarize(session: Session, job_pk: int) -> CommitSummary | None:
    """The commitment of job ``job_pk`` from its requests; None when it made none."""
    reqs = _requests_of(session, job_pk)
    if not reqs:
        return None
    states = list(_instance_states(reqs).values())
    last = reqs[-1]
    return CommitSummary(
        total=len(states),
        committed=states.count("committed"),
        failed=states.count("failed"),
        outstanding=states.count("pending"),
        unconfirmed=states.count("unconfirmed"),
        attempt=last.attempt,
        note=last.message,
        refused=last.state == "failed",
        delivered=delivered(last.state, last.message),
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
            follow_send(job, summary)
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


def receive_report(ctx: ServerContext, report: Report, calling_ae: str | None) -> Applied:
    """apply_report in its own transaction, retried while SQLite is busy."""
    for attempt in range(8):
        try:
            with ctx.WriteSession() as session, session.begin():
                return apply_report(session, report, calling_ae)
        except OperationalError:
            if attempt == 7:
                raise
            time.sleep(0.05 * (attempt + 1))
    return Applied()


#: The states a send job with storage commitment moves between as its records change
#: (a late report may still confirm what an expired request left unconfirmed).
_SEND_FOLLOWS = ("waiting", "done", "partial", "failed")


def send_state(total: int, summary: CommitSummary) -> tuple[str, int, int]:
    """State, completed and failed of a send job of ``total`` instances whose stored ones
    were asked for commitment (``summary``; Conformance 4.2.5, schemas.JobState).

    "waiting" while a report is outstanding: the job read "done" (final, finished_at set)
    with "waiting for the commitment report of 10 of 10 instance(s)" in its message, was
    missing from state=waiting, and then turned "partial" when the request expired (outside
    probe 52): a client polling for a final state took "done" for the answer. Once nothing
    is outstanding it is final: "done" when every instance was stored and committed, else
    "partial" or "failed" (nothing committed) as a commit job with that report ends.

    An instance counts as completed when stored and committed (while waiting: stored and
    not reported failed); failed when its C-STORE failed or the SCP did not commit it
    (failed in the report, or never confirmed): "10 stored, 0 failed" after a commitment
    that confirmed none would tell clinic IT the PACS holds what it never confirmed.
    GET /jobs/{id}/instances shows both per instance (C-STORE status and commitment), and
    POST /jobs/{id}/retry sends the instances not committed again with a new commitment
    request (a PACS that did not commit an instance may not hold it: IHE RAD-10)."""
    not_committed = summary.failed + summary.unconfirmed
    completed = summary.total - not_committed
    failed = total - summary.total + not_committed
    if summary.outstanding:
        return "waiting", completed, failed
    return commit_state(summary.committed, failed), completed, failed


def follow_send(job: Job, summary: CommitSummary) -> None:
    """A send job after its C-STOREs follows its commitment records: message, counts and,
    unless it was cancelled or interrupted, its state (``send_state``); it read "done"
    with failed=0 after "4 committed, 1 failed" (probe 38), and "done" while waiting."""
    head = job.message.split(SEND_MARKER, 1)[0]
    text = summary.text
    if job.total is None:
        job.message = head + SEND_MARKER + text
        return
    state, completed, failed = send_state(job.total, summary)
    not_committed = summary.failed + summary.unconfirmed
    if not summary.outstanding and not_committed:
        text += (
            f"; {not_committed} stored instance(s) not committed: a retry of this job "
            "sends them again and requests their commitment"
        )
    job.message = head + SEND_MARKER + text
    job.completed, job.failed = completed, failed
    if job.state not in _SEND_FOLLOWS:
        return  # cancelled (or interrupted) stays so: only the counts follow the records
    if state != job.state:
        job.finished_at = None if state == "waiting" else now()
        if state != "waiting":
            job.progress = 1.0
    job.state = state


def record_report(ctx: ServerContext, report: Report) -> int:
    """A report that came on our own association for its transaction (ways 1 and 3):
    how many instances it updated (0 when it was not applied)."""
    return receive_report(ctx, report, None).updated


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
