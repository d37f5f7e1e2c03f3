"""Storage Commitment Push Model SCU (Conformance 4.1.2.5, 4.2.5 and 5).

N-ACTION (Action Type 1) carries a Transaction UID and the Referenced SOP Sequence; the
commitment result comes back as N-EVENT-REPORT (Event Type 1: all committed, 2: some failed)
in one of the three ways of 4.1.2.5:

1. ``same``: on the N-ACTION association, within a configurable time;
2. ``incoming``: the SCP opens a new association to our Store SCP (the listener's handler
   records it; see server.dimse.handlers);
3. ``reopen``: we open another association right after the N-ACTION one and wait on it.

pynetdicom serves requests that arrive on an association it requested (its reactor runs
for requestors too), so ways 1 and 3 bind an EVT_N_EVENT_REPORT handler to our association.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import build_context, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel

from lucent.dicom import uids
from lucent.net import status
from lucent.net.scu import UNCOMPRESSED, AssociationError, Peer, associate

log = logging.getLogger("lucent.commitment")

#: Well-known SOP Instance UID of the Storage Commitment Push Model SOP Instance (PS3.4 J.3).
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
MODES = ("same", "incoming", "reopen")

#: The status we answer an N-EVENT-REPORT with when we do not apply it: a report for a
#: transaction its sender was not asked, or one that would rewrite an answered transaction.
#: PS3.7 10.1.1.1.8 lists for N-EVENT-REPORT no "Refused: not authorised" (0x0124 is for
#: N-ACTION and N-CREATE); "Class-instance conflict" (0x0119) and "No such SOP Instance"
#: (0x0112) would say the Push Model SOP Class/Instance were wrong, and they are right.
#: "Processing failure" (0x0110) says the receiver did not process it, nothing more.
REPORT_NOT_APPLIED = 0x0110

#: How the message of an N-ACTION the SCP accepted begins (``RequestResult.message``).
ACCEPTED = "N-ACTION accepted"

#: Why a report was not applied ("" when it was): what ``on_report`` returns.
OnReport = Callable[["Report"], str]

#: PS3.3 C.14.1.1 Failure Reason meanings.
FAILURE_REASONS = {
    0x0110: "Processing failure",
    0x0112: "No such object instance",
    0x0119: "Class-instance conflict",
    0x0122: "Referenced SOP Class not supported",
    0x0131: "Duplicate transaction UID",
    0xA7FF: "Out of resources",
    0xA9FF: "Data set does not match SOP class",
    0xC000: "Cannot understand",
}


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class Report:
    """One N-EVENT-REPORT (Conformance 5.1.2): what the SCP committed and what it did not."""

    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)
    retrieve_ae: str = ""


@dataclass
class RequestResult:
    """The N-ACTION outcome and, for ways 1 and 3, the report if it came in time."""

    ok: bool
    transaction_uid: str
    message: str
    status: int | None = None
    report: Report | None = None
    #: whether the N-ACTION reached the SCP: False when no association carried it
    #: (connection refused, rejected, no presentation context), None when it was sent and
    #: no response came (timeout, abort: the SCP may or may not have it), True when the
    #: SCP answered it (accepted or refused). Conformance 4.2.5.3: the job says which.
    delivered: bool | None = True


def new_transaction_uid(prefix: str | None = None) -> str:
    """A Transaction UID under the organisation root ``prefix`` (PS3.4 J.3.2); through
    :func:`lucent.dicom.uids.make_uid`, so a root without its trailing dot works here too
    (it failed every commitment job: "The 'prefix' is not valid for use with a UID")."""
    return uids.make_uid(prefix) if prefix else str(generate_uid())


def action_dataset(transaction_uid: str, refs: Sequence[Reference]) -> Dataset:
    """Conformance 5.1.1: Transaction UID and Referenced SOP Sequence."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def parse_report(info: Dataset) -> Report:
    """Conformance 5.1.2: Referenced SOP Sequence (committed), Failed SOP Sequence + reason."""
    report = Report(
        str(info.get("TransactionUID", "")), retrieve_ae=str(info.get("RetrieveAETitle", "") or "")
    )
    for item in info.get("ReferencedSOPSequence", []) or []:
        report.committed.append(
            Reference(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        )
    for item in info.get("FailedSOPSequence", []) or []:
        reason = int(item.get("FailureReason", 0x0110) or 0x0110)
        report.failed.append(
            (Reference(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)), reason)
        )
    return report


def failure_text(reason: int) -> str:
    return f"{FAILURE_REASONS.get(reason, 'Failure')} (0x{reason:04X})"


class _Waiter:
    """Collects the N-EVENT-REPORT of one transaction arriving on an association we
    requested (ways 1 and 3). Only the transaction requested on that association is handed
    to ``on_report``: a node's report for another node's transaction was applied (probe 38)."""

    def __init__(self, transaction_uid: str, on_report: OnReport | None) -> None:
        self.transaction_uid = transaction_uid
        self.on_report = on_report
        self.report: Report | None = None
        self.done = threading.Event()

    def handle(self, event: Event) -> tuple[int, Dataset | None]:
        peer = str(event.assoc.acceptor.ae_title).strip()
        try:
            report = parse_report(event.event_information)
        except Exception:  # noqa: BLE001 - a garbled report: answer "processing failure"
            return 0x0110, None
        if report.transaction_uid != self.transaction_uid:
            log.warning(
                "storage commitment report from %s for transaction %s refused: only %s "
                "was requested on this association",
                peer,
                report.transaction_uid,
                self.transaction_uid,
            )
            return REPORT_NOT_APPLIED, None
        refused = self.on_report(report) if self.on_report is not None else ""
        if refused:
            log.warning(
                "storage commitment report from %s for transaction %s refused: %s",
                peer,
                report.transaction_uid,
                refused,
            )
            return REPORT_NOT_APPLIED, None
        self.report = report
        self.done.set()
        return status.SUCCESS, None


def _contexts() -> list[object]:
    return [build_context(StorageCommitmentPushModel, list(UNCOMPRESSED))]


def request(
    peer: Peer,
    refs: Sequence[Reference],
    *,
    transaction_uid: str | None = None,
    mode: str = "same",
    wait: float = 30.0,
    on_report: OnReport | None = None,
    answered: Callable[[], bool] | None = None,
) -> RequestResult:
    """Send the N-ACTION and, for ``same`` and ``reopen``, wait up to ``wait`` seconds.

    The report of this transaction goes to ``on_report``, which says why it did not apply
    it ("" when it did); a report for another transaction is refused (Conformance 4.1.2.5).
    ``answered`` lets the caller stop waiting early when the report came another way (e.g.
    way 2 recorded by our listener meanwhile). Raises nothing: failures are values.
    """
    if mode not in MODES:
        raise ValueError(f"commitment mode must be one of {MODES}")
    uid = transaction_uid or new_transaction_uid()
    waiter = _Waiter(uid, on_report)
    handlers = [(evt.EVT_N_EVENT_REPORT, waiter.handle)]
    try:
        assoc = associate(peer, _contexts(), evt_handlers=handlers)  # type: ignore[arg-type]
    except AssociationError as exc:
        return RequestResult(False, uid, exc.message, delivered=False)
    try:
        rsp, _ = assoc.send_n_action(
            action_dataset(uid, refs), 1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
        )
        code = int(rsp.Status) if rsp is not None and "Status" in rsp else None
        if code is None:
            return RequestResult(
                False, uid, "no N-ACTION response (timeout or abort)", delivered=None
            )
        if code != status.SUCCESS:
            comment = str(rsp.get("ErrorComment", "") or "")
            return RequestResult(
                False, uid, f"N-ACTION refused with 0x{code:04X} {comment}".strip(), code
            )
        if mode == "same":
            _wait(waiter, wait, answered, lambda: assoc.is_established)
    finally:
        if assoc.is_established:
            assoc.release()
    if mode == "reopen" and not waiter.done.is_set():
        try:
            second = associate(peer, _contexts(), evt_handlers=handlers)  # type: ignore[arg-type]
        except AssociationError as exc:
            return RequestResult(True, uid, f"{ACCEPTED}; waiting failed: {exc.message}", 0)
        try:
            _wait(waiter, wait, answered, lambda: second.is_established)
        finally:
            if second.is_established:
                second.release()
    message = ACCEPTED
    if waiter.report is not None:
        message += "; commitment report received"
    elif mode != "incoming":
        message += f"; no report within {wait:g} s on the association"
    return RequestResult(True, uid, message, status.SUCCESS, waiter.report)


def _wait(
    waiter: _Waiter,
    wait: float,
    answered: Callable[[], bool] | None,
    alive: Callable[[], bool],
) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and alive():
        if waiter.done.wait(0.05):
            return
        if answered is not None and answered():
            return
