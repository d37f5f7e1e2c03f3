"""Failure statuses no real PACS emits on demand, from a small scripted pynetdicom peer.

Only for those cases (issue 3): C-FIND A700, A900, Cxxx, FE00, FF01 (Conformance 4.2.1.6);
C-MOVE A701, A702, A801, A900, Cxxx, FE00, B000 with retries and backoff (4.2.2.6), and a
C-CANCEL during a slow C-MOVE; C-STORE failure and warning statuses, a peer that aborts
mid-send and one that takes only some SOP classes (4.2.4); storage commitment ways 1 and 3
of 4.1.2.5 (Orthanc only does way 2). Everything else is tested against Orthanc, dcmqrscp
and storescp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import (
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from lucent.net import commitment, scu, status
from tests.support.peers import free_port

UNCOMPRESSED = list(scu.UNCOMPRESSED)
FAIL_STORE = 0xFFFF  # script marker: a sub-operation that fails
ABORT = -1  # script marker: the peer aborts the association instead of answering
HANG = -2  # script marker: the peer never answers that C-STORE (until it is stopped)


def _tiny(fail: bool = False) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ("1.2.3.999." if fail else "1.2.3.1.") + str(time.monotonic_ns())
    ds.PatientName = "Tiny^Sub"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


class ScriptedPeer:
    """A pynetdicom SCP whose answers are scripted per test (statuses, delays, reports)."""

    def __init__(self, aet: str = "SCRIPTED", host: str = "127.0.0.1") -> None:
        self.aet = aet
        self.host = host
        self.port = free_port(host)
        self.find_script: list[tuple[int, Dataset | None]] = []
        self.move_scripts: list[list[int]] = []
        self.move_calls = 0
        self.move_delay = 0.0
        self.store_delay = 0.0
        self.cancelled = threading.Event()
        self.silence = 0.0  # seconds of silence before the first C-FIND/C-MOVE answer
        self.cancel_seen: list[float] = []  # monotonic times a C-CANCEL-RQ arrived
        self.commit_mode = "same"  # same | reopen: where the N-EVENT-REPORT goes
        self.failed_uids: set[str] = set()
        self.store_statuses: dict[str, int] = {}  # SOP Instance UID -> status; ABORT, HANG
        self.stopped = threading.Event()  # ends what HANG holds back
        self._pending_report: Dataset | None = None
        self._server: Any = None

    # ---- handlers
    def _silent(self, event: Any) -> bool:
        """Say nothing for ``silence`` seconds (a busy PACS: pending answers are optional);
        True when a C-CANCEL arrived meanwhile."""
        until = time.monotonic() + self.silence
        while time.monotonic() < until:
            # cancel_seen too: on a loaded machine the C-CANCEL can arrive before this
            # handler runs, and pynetdicom's is_cancelled then missed it (CI)
            if event.is_cancelled or self.cancel_seen:
                return True
            time.sleep(0.01)
        return bool(event.is_cancelled or self.cancel_seen)

    def _dimse_recv(self, event: Any) -> None:
        if type(event.message).__name__ == "C_CANCEL_RQ":
            self.cancel_seen.append(time.monotonic())

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        if self.silence and self._silent(event):
            yield 0xFE00, None
            return
        yield from self.find_script

    def _move(self, event: Any) -> Iterator[Any]:
        """Pending entries store a tiny CT into this same AE (a real sub-operation);
        FAIL_STORE makes that sub-operation fail; any other code ends the C-MOVE with it."""
        script = self.move_scripts[min(self.move_calls, len(self.move_scripts) - 1)]
        self.move_calls += 1
        yield self.host, self.port, {"contexts": [build_context(CTImageStorage)]}
        yield sum(1 for code in script if code != 0x0000)  # pynetdicom reads this many
        if self.silence and self._silent(event):
            self.cancelled.set()
            yield 0xFE00, None
            return
        for code in script:
            if self.move_delay:
                time.sleep(self.move_delay)
            if event.is_cancelled:
                self.cancelled.set()
                yield 0xFE00, None
                return
            if code in (0xFF00, FAIL_STORE):
                yield 0xFF00, _tiny(fail=code == FAIL_STORE)
            elif code != 0x0000:
                yield code, None
                return

    def _store(self, event: Any) -> int:
        if self.store_delay:
            time.sleep(self.store_delay)
        uid = str(event.dataset.SOPInstanceUID)
        code = self.store_statuses.get(uid, 0xA700 if uid.startswith("1.2.3.999.") else 0x0000)
        if code == ABORT:
            event.assoc.abort()
        if code == HANG:
            self.stopped.wait(60)
            return 0x0000
        return code

    def _report(self, info: Dataset) -> Dataset:
        ok, failed = [], []
        for item in info.ReferencedSOPSequence:
            (failed if item.ReferencedSOPInstanceUID in self.failed_uids else ok).append(item)
        out = Dataset()
        out.TransactionUID = info.TransactionUID
        out.ReferencedSOPSequence = ok
        if failed:
            for item in failed:
                item.FailureReason = 0x0112
            out.FailedSOPSequence = failed
        return out

    def _action(self, event: Any) -> tuple[int, None]:
        report = self._report(event.action_information)
        if self.commit_mode == "same":

            def later() -> None:
                time.sleep(0.1)
                event.assoc.send_n_event_report(
                    report, 2 if "FailedSOPSequence" in report else 1,
                    StorageCommitmentPushModel, commitment.PUSH_MODEL_INSTANCE,
                )  # fmt: skip

            threading.Thread(target=later, daemon=True).start()
        else:
            self._pending_report = report
        return 0x0000, None

    def _established(self, event: Any) -> None:
        report, self._pending_report = self._pending_report, None
        if report is None or self.commit_mode != "reopen":
            return

        def later() -> None:
            time.sleep(0.1)
            event.assoc.send_n_event_report(
                report, 1, StorageCommitmentPushModel, commitment.PUSH_MODEL_INSTANCE
            )

        threading.Thread(target=later, daemon=True).start()

    def start(self) -> ScriptedPeer:
        ae = AE(self.aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove, UNCOMPRESSED)
        ae.add_supported_context(StorageCommitmentPushModel, UNCOMPRESSED)
        ae.add_supported_context(CTImageStorage, UNCOMPRESSED)
        ae.add_requested_context(CTImageStorage)
        handlers = [
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_N_ACTION, self._action),
            (evt.EVT_ESTABLISHED, self._established),
            (evt.EVT_DIMSE_RECV, self._dimse_recv),
        ]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._server is not None:
            self._server.shutdown()

    def peer(self, **kwargs: Any) -> scu.Peer:
        return scu.Peer(self.aet, self.host, self.port, timeout=5, dimse_timeout=10, **kwargs)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedPeer]:
    peer = ScriptedPeer().start()
    yield peer
    peer.stop()


def _match(name: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = name
    ds.StudyInstanceUID = f"1.2.3.{abs(hash(name)) % 10000}"
    return ds


# --------------------------------------------------------------------------- C-FIND 4.2.1.6


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(0xA700, "failed"), (0xA900, "failed"), (0xC001, "failed"), (0xFE00, "cancelled")],
)
def test_find_failure_statuses_end_the_query(
    scripted: ScriptedPeer, code: int, outcome: str
) -> None:
    scripted.find_script = [(0xFF00, _match("A^B")), (code, None)]
    result = scu.find(scripted.peer(), "STUDY", {"PatientName": "*"})
    assert result.outcome == outcome
    assert result.status == code
    assert f"0x{code:04X}" in result.message or outcome == "cancelled"
    assert [r["PatientName"] for r in result.rows] == ["A^B"]  # what came before is kept


def test_find_pending_warning_keeps_values(scripted: ScriptedPeer) -> None:
    scripted.find_script = [(0xFF01, _match("A^B")), (0xFF00, _match("C^D")), (0x0000, None)]
    result = scu.find(scripted.peer(), "STUDY", {})
    assert result.outcome == "success" and result.warnings == 1
    assert len(result.rows) == 2


def test_find_limit_sends_cancel(scripted: ScriptedPeer) -> None:
    scripted.find_script = [(0xFF00, _match(f"N{i}^X")) for i in range(20)] + [(0, None)]
    result = scu.find(scripted.peer(), "STUDY", {}, limit=5)
    assert result.outcome == "truncated" and len(result.rows) == 5


def test_find_with_exactly_limit_matches_is_complete(scripted: ScriptedPeer) -> None:
    """4.2.1.4: five matches and a final 0000 under a limit of five is the whole list; it
    was reported truncated (outside probe), which tells the user results may be missing."""
    scripted.find_script = [(0xFF00, _match(f"N{i}^X")) for i in range(5)] + [(0, None)]
    result = scu.find(scripted.peer(), "STUDY", {}, limit=5)
    assert result.outcome == "success" and len(result.rows) == 5 and result.status == 0


# --------------------------------------------------------------------------- C-MOVE 4.2.2.6


@pytest.mark.parametrize("code", [0xA701, 0xA702, 0xA801, 0xA900, 0xC000, 0xFE00, 0xB000])
def test_move_failures_are_retried_with_backoff(scripted: ScriptedPeer, code: int) -> None:
    # B000 is what the SCP reports itself when a sub-operation failed
    scripted.move_scripts = [[0xFF00, FAIL_STORE] if code == 0xB000 else [0xFF00, code]]
    scripted.move_calls = 0
    waits: list[float] = []
    result = scu.move_with_retries(
        scripted.peer(),
        scu.move_identifier("1.2.3"),
        "LUCENT",
        retries=2,
        backoff=0.5,
        sleep=waits.append,
    )
    assert result.status == code and not result.ok
    assert result.attempts == 3 and scripted.move_calls == 3
    assert waits == [0.5, 1.0]  # exponential backoff
    assert scu.move_status_text(code) in result.message


def test_move_succeeds_on_retry(scripted: ScriptedPeer) -> None:
    scripted.move_scripts = [[0xA702], [0xFF00, 0xFF00, 0x0000]]
    scripted.move_calls = 0
    result = scu.move_with_retries(
        scripted.peer(), scu.move_identifier("1.2.3"), "LUCENT", retries=3, sleep=lambda s: None
    )
    assert result.ok and result.attempts == 2


def test_move_connection_failure_is_retried() -> None:
    dead = scu.Peer("NOBODY", "127.0.0.1", free_port(), timeout=2)
    result = scu.move_with_retries(
        dead, scu.move_identifier("1.2.3"), "LUCENT", retries=1, sleep=lambda s: None
    )
    assert result.status is None and result.attempts == 2
    assert "refused" in result.message


def test_move_transient_rejection_is_retried() -> None:
    """A-ASSOCIATE-RJ result 2 (rejected-transient; here pynetdicom's "local limit
    exceeded" with its one association busy) keeps the retries of 4.2.2.6; only a
    permanent rejection (tested against dcmqrscp) ends at once."""
    ae = AE("BUSY")
    ae.maximum_associations = 1
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        holder = AE("HOLDER")
        holder.add_requested_context(Verification)
        held = holder.associate("127.0.0.1", port, ae_title="BUSY")
        assert held.is_established
        try:
            peer = scu.Peer("BUSY", "127.0.0.1", port, timeout=5)
            delays: list[float] = []
            result = scu.move_with_retries(
                peer, scu.move_identifier("1.2.3"), "LUCENT", retries=2, sleep=delays.append
            )
        finally:
            held.release()
    finally:
        server.shutdown()
    assert result.status is None and result.attempts == 3 and not result.permanent
    assert "Rejected Transient" in result.message and len(delays) == 2


def test_move_cancel_sends_c_cancel(scripted: ScriptedPeer) -> None:
    scripted.move_scripts = [[0xFF00] * 50 + [0x0000]]
    scripted.move_calls = 0
    scripted.move_delay = 0.05
    scripted.cancelled.clear()
    cancel = threading.Event()
    seen: list[float] = []

    def progress(p: scu.MoveProgress) -> None:
        seen.append(p.fraction)
        if len(seen) == 3:
            cancel.set()

    try:
        result = scu.move_with_retries(
            scripted.peer(), scu.move_identifier("1.2.3"), "LUCENT",
            on_progress=progress, cancel=cancel, sleep=lambda s: None,
        )  # fmt: skip
    finally:
        scripted.move_delay = 0.0
    assert result.cancelled and result.status == 0xFE00 and result.attempts == 1
    assert scripted.cancelled.is_set()  # the peer saw the C-CANCEL
    assert seen[0] < seen[-1] < 1.0


def _cancel_after(delay: float) -> tuple[threading.Event, list[float]]:
    """A cancel flag set ``delay`` seconds from now, and (later) the monotonic time it was."""
    cancel, when = threading.Event(), []

    def later() -> None:
        time.sleep(delay)
        when.append(time.monotonic())
        cancel.set()

    threading.Thread(target=later, daemon=True).start()
    return cancel, when


def test_move_cancel_while_pacs_is_silent(scripted: ScriptedPeer) -> None:
    """Pending responses are optional: a PACS busy for seconds sends none. The C-CANCEL
    must still leave at once (issue 3: "cancel sends C-CANCEL"), not with the next answer."""
    scripted.move_scripts = [[0xFF00, 0x0000]]
    scripted.move_calls = 0
    scripted.cancelled.clear()
    scripted.cancel_seen.clear()
    scripted.silence = 6.0
    cancel, when = _cancel_after(0.3)
    start = time.monotonic()
    try:
        result = scu.move(scripted.peer(), scu.move_identifier("1.2.3"), "LUCENT", cancel=cancel)
    finally:
        scripted.silence = 0.0
    assert scripted.cancel_seen and scripted.cancel_seen[0] - when[0] < 1.0
    assert result.cancelled and result.status == 0xFE00
    assert time.monotonic() - start < 4.0  # the PACS stopped on our C-CANCEL, not at its end


def test_find_cancel_while_pacs_is_silent(scripted: ScriptedPeer) -> None:
    scripted.find_script = [(0xFF00, _match("A^B")), (0x0000, None)]
    scripted.cancel_seen.clear()
    scripted.silence = 6.0
    cancel, when = _cancel_after(0.3)
    start = time.monotonic()
    try:
        result = scu.find(scripted.peer(), "STUDY", {"PatientName": "*"}, cancel=cancel)
    finally:
        scripted.silence = 0.0
    assert scripted.cancel_seen and scripted.cancel_seen[0] - when[0] < 1.0
    assert result.outcome == "cancelled" and result.status == 0xFE00 and not result.rows
    assert time.monotonic() - start < 4.0


# --------------------------------------------------------------------------- C-STORE 4.2.4


def _part10(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _outgoing(ds: Dataset, sop_class: str = CTImageStorage) -> scu.Outgoing:
    raw = _part10(ds)
    return scu.Outgoing(sop_class, str(ds.SOPInstanceUID), ExplicitVRLittleEndian, lambda: raw)


@pytest.mark.parametrize("code", [0xA700, 0xA900, 0xC000, 0xB000, 0x0122])
def test_store_status_is_recorded_per_instance(scripted: ScriptedPeer, code: int) -> None:
    sets = [_tiny(), _tiny(), _tiny()]
    scripted.store_statuses = {str(sets[1].SOPInstanceUID): code}
    outcomes = scu.store(scripted.peer(), [_outgoing(ds) for ds in sets])
    assert [o.status for o in outcomes] == [0x0000, code, 0x0000]  # the send goes on
    assert outcomes[1].ok == (code == 0xB000)  # B000: warning, stored with coercion
    # no Error Comment from the peer: the reason is the code's meaning (PS3.4 B.2.3)
    assert outcomes[1].message == status.describe(code) != f"0x{code:04X}"
    assert [o.sop_instance_uid for o in outcomes] == [str(ds.SOPInstanceUID) for ds in sets]


def test_store_abort_ends_the_send_with_the_reason(scripted: ScriptedPeer) -> None:
    sets = [_tiny(), _tiny(), _tiny()]
    scripted.store_statuses = {str(sets[1].SOPInstanceUID): ABORT}
    outcomes = scu.store(scripted.peer(), [_outgoing(ds) for ds in sets])
    assert [o.status for o in outcomes] == [0x0000, None, None]
    assert "no C-STORE response" in outcomes[1].message
    assert "aborted" in outcomes[1].message
    # the third has a result too: never sent, for another association to take (probe 26)
    assert [o.attempted for o in outcomes] == [True, True, False]
    assert outcomes[2].message.startswith("not attempted: association lost after 2 of 3")
    assert "aborted" in outcomes[2].message


def test_store_class_the_peer_does_not_take(scripted: ScriptedPeer) -> None:
    """The peer accepts CT but not MR: the MR instance fails alone and is never read."""
    reads: list[str] = []
    mr = _tiny()
    raw = _part10(mr)

    def load() -> bytes:
        reads.append("mr")
        return raw

    items = [
        _outgoing(_tiny()),
        scu.Outgoing(MRImageStorage, str(mr.SOPInstanceUID), ExplicitVRLittleEndian, load),
        _outgoing(_tiny()),
    ]
    outcomes = scu.store(scripted.peer(), items)
    assert [o.status for o in outcomes] == [0x0000, None, 0x0000]
    assert "no presentation context for MR Image Storage" in outcomes[1].message
    assert outcomes[1].permanent and not reads
    with pytest.raises(scu.AssociationError, match="accepted none"):
        scu.store(scripted.peer(), [items[1]])


# --------------------------------------------------------------------------- commitment


REFS = [
    commitment.Reference("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.1"),
    commitment.Reference("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.2"),
]


def test_commitment_way1_report_on_same_association(scripted: ScriptedPeer) -> None:
    scripted.commit_mode = "same"
    scripted.failed_uids = {"1.2.3.4.2"}
    res = commitment.request(scripted.peer(), REFS, mode="same", wait=5)
    assert res.ok and res.report is not None
    assert [r.sop_instance_uid for r in res.report.committed] == ["1.2.3.4.1"]
    assert [(r.sop_instance_uid, why) for r, why in res.report.failed] == [("1.2.3.4.2", 0x0112)]


def test_commitment_way3_report_on_another_association(scripted: ScriptedPeer) -> None:
    scripted.commit_mode = "reopen"
    scripted.failed_uids = set()
    res = commitment.request(scripted.peer(), REFS, mode="reopen", wait=5)
    assert res.ok and res.report is not None
    assert len(res.report.committed) == 2 and not res.report.failed


def test_commitment_no_report_in_time(scripted: ScriptedPeer) -> None:
    scripted.commit_mode = "incoming"  # keeps the report: nothing arrives on our association
    res = commitment.request(scripted.peer(), REFS, mode="same", wait=0.3)
    assert res.ok and res.report is None and "no report" in res.message


def test_echo_failures_have_clear_messages(scripted: ScriptedPeer) -> None:
    assert scu.echo(scripted.peer()).ok
    refused = scu.echo(scu.Peer("X", "127.0.0.1", free_port(), timeout=2))
    assert refused.kind == "refused" and "connection refused" in refused.message
    unknown = scu.echo(scu.Peer("X", "no-such-host.invalid", 104, timeout=2))
    assert unknown.kind == "unknown-host"


def test_echo_tells_a_silent_port_from_a_closing_one() -> None:
    """Outside probe: a port that took the TCP connection and never answered was reported
    as "host down, firewall", and one that closed at once as "did not answer within 4 s"."""
    import socket
    import threading

    def serve(listener: socket.socket, close_at_once: bool, stop: threading.Event) -> None:
        held = []
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            if close_at_once:
                conn.close()
            else:
                held.append(conn)
        for c in held:
            c.close()

    for close_at_once in (False, True):
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(listener, close_at_once, stop))
        thread.start()
        try:
            port = listener.getsockname()[1]
            result = scu.echo(scu.Peer("X", "127.0.0.1", port, timeout=1.5))
        finally:
            stop.set()
            thread.join()
            listener.close()
        assert not result.ok
        assert "accepts TCP connections" in result.message, result.message
        assert "host down" not in result.message
        assert "expects TLS" in result.message
        if close_at_once:
            assert result.kind == "aborted" and "closed" in result.message, result.message
        else:
            assert result.kind == "timeout" and "within 1.5 s" in result.message, result.message


def test_a_silent_port_is_told_after_one_timeout() -> None:
    """After pynetdicom's own timeout, a second connect to "diagnose" made a host that is
    down cost the timeout twice (review); whether TCP got through is known already."""
    import socket
    import threading

    from pynetdicom.sop_class import Verification

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent)
    thread.start()
    try:
        peer = scu.Peer("X", "127.0.0.1", listener.getsockname()[1], timeout=1.5)
        with pytest.raises(scu.AssociationError) as err:
            scu.associate(peer, [build_context(Verification)])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert err.value.kind == "timeout" and "accepts TCP connections" in str(err.value)
    assert len(held) == 1  # one connection: no second connect after the timeout
