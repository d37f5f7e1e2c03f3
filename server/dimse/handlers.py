"""DIMSE service handlers, bound with their arguments (pynetdicom qrscp style).

Store SCP: every caller (Conformance 4.2.3.5). Query/Retrieve SCP: only configured remote
nodes when ``restrict_query_retrieve`` is on (a secure default; the reference product has
no Q/R SCP at all).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy import select

from lucent.dicom import transcode, transfer_syntaxes
from lucent.dicom.transfer_syntaxes import EXPLICIT_LE, IMPLICIT_LE
from lucent.net import status, tls
from lucent.net import upper_layer as ul
from lucent.net.scu import unbracketed
from server.config import PoolSection
from server.context import ArchiveReadError, ServerContext
from server.dimse import access, audit_trail, identifiers, refusal, transcoder
from server.index import queries
from server.index.models import Instance, RemoteNode

log = logging.getLogger("lucent.dimse")

PATIENT_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.1."


#: Failed: Unable to process (PS3.4 C.4.1.1.4, C000-CFFF), for a request the index database
#: cannot answer now; C000 stays the code of any other failure.
INDEX_UNAVAILABLE = 0xC001


def _unavailable(reason: str) -> Dataset:
    """The failure status of a Q/R request during an index database outage (probe 58)."""
    return _status(INDEX_UNAVAILABLE, f"index database unavailable: {reason}")


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = status.error_comment(comment)
    return ds


def handle_echo(event: Event) -> int:
    return status.SUCCESS


def handle_store(event: Event, ctx: ServerContext, pool: PoolSection) -> Dataset | int:
    """C-STORE: the raw encoded data set goes straight into the one ingest path."""
    req = event.request
    d = ctx.settings.dimse
    meta = ul.file_meta(
        str(req.AffectedSOPClassUID),
        str(req.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
        d.implementation_class_uid,
        d.implementation_version_name,
        event.assoc.requestor.ae_title,
    )  # ours, as the fast path writes it: pynetdicom's would name pynetdicom, no Source AE
    result = ctx.store(
        meta + event.encoded_dataset(include_meta=False),
        pool=pool.name,
        source=event.assoc.requestor.ae_title,
        expected_sop_class=str(req.AffectedSOPClassUID),
        expected_sop_instance=str(req.AffectedSOPInstanceUID),
    )
    _received(event, pool).add(result)
    if result.ok:
        return status.SUCCESS
    return _status(result.status, result.reason)


def _caller(event: Event) -> tuple[str, str]:
    return event.assoc.requestor.ae_title.strip(), str(event.assoc.requestor.address)


def _received(event: Event, pool: PoolSection) -> audit_trail.Received:
    """The per-association audit collector (written when the connection closes)."""
    assoc = event.assoc
    received = getattr(assoc, "_lucent_received", None)
    if received is None:
        received = audit_trail.Received(*_caller(event), pool.name)
        assoc._lucent_received = received  # type: ignore[attr-defined]
    return received


def handle_closed(event: Event, ctx: ServerContext) -> None:
    received = getattr(event.assoc, "_lucent_received", None)
    if received is not None:
        received.flush(ctx)


def _query_text(identifier: Dataset) -> str:
    """The matching keys a caller sent, for the audit record ('' values are return keys)."""
    parts = []
    for elem in identifier:
        if elem.VR != "SQ" and elem.value not in (None, "", b""):
            parts.append(f"{elem.keyword or elem.tag}={elem.value}")
    return " ".join(parts)


def _peer_allowed(event: Event, ctx: ServerContext) -> RemoteNode | None | bool:
    """The remote node the caller is, True if Q/R is open to all, or None if refused."""
    requestor = event.assoc.requestor
    return access.query_retrieve_caller(ctx, requestor.ae_title, str(requestor.address))


def _scoped(f: queries.Filter, ctx: ServerContext, pool: PoolSection) -> queries.Filter:
    """Q/R on a pool's AE sees that pool ([dimse] query_scope = "pool"): the studies of
    every pool answered whichever pool AE was called, so data kept apart in pools (and
    from users without rights on them) was open to every remote node."""
    if ctx.settings.dimse.query_scope == "pool":
        f.pools = [pool.name]
    return f


def handle_find(
    event: Event, ctx: ServerContext, pool: PoolSection
) -> Iterator[tuple[int, Dataset | None]]:
    try:
        allowed = _peer_allowed(event, ctx)
    except access.IndexUnavailable as exc:
        yield _unavailable(exc.reason), None
        return
    if allowed is None:
        yield _status(status.NOT_AUTHORIZED, "calling AE is not a configured remote node"), None
        return
    identifier = event.identifier
    level = identifiers.level_of(identifier)
    patient_root = str(event.request.AffectedSOPClassUID).startswith(PATIENT_ROOT_PREFIX)
    problem = identifiers.check_find_identifier(identifier, patient_root)
    if problem:
        yield _status(status.QR_IDENTIFIER_MISMATCH, problem), None
        return
    try:
        f = identifiers.to_filter(identifier, case_insensitive_text=False, level=level)
        f = _scoped(f, ctx, pool)
        keep, unsupported = identifiers.extra_matching(identifier)
        pending = status.PENDING_WARNING if unsupported else status.PENDING
        cap = ctx.settings.dimse.max_find_results
        with ctx.Session() as session:
            found = queries.find(session, level, f, limit=cap + 1 if cap > 0 else 2**62)
        if cap > 0 and len(found) > cap:
            log.warning("C-FIND at %s level refused: more than %d matches", level, cap)
            message = f"more than {cap} matches; narrow the query"
            yield _status(status.OUT_OF_RESOURCES, message), None
            return
        matches = [m for m in found if keep(m)]
    except Exception as exc:
        reason = access.index_outage(exc)  # logged once per outage, not a traceback each
        if reason is not None:
            yield _unavailable(reason), None
            return
        log.exception("C-FIND failed")
        yield _status(status.QR_UNABLE_TO_PROCESS, str(exc)), None
        return
    ae_title = event.assoc.acceptor.ae_title
    audit_trail.query(ctx, *_caller(event), level, _query_text(identifier), len(matches))
    for match in matches:
        if event.is_cancelled:
            yield status.QR_CANCEL, None
            return
        yield pending, identifiers.response(identifier, match, ae_title)
    yield status.SUCCESS, None


def _selected(
    event: Event, ctx: ServerContext, pool: PoolSection
) -> tuple[list[Instance] | None, Dataset | None]:
    identifier = event.identifier
    patient_root = str(event.request.AffectedSOPClassUID).startswith(PATIENT_ROOT_PREFIX)
    problem = identifiers.check_retrieve_identifier(identifier, patient_root)
    if problem:
        return None, _status(status.QR_IDENTIFIER_MISMATCH, problem)
    f = _scoped(identifiers.to_filter(identifier, case_insensitive_text=False), ctx, pool)
    with ctx.Session() as session:
        return queries.instances_for(session, identifiers.level_of(identifier), f), None


def _load(ctx: ServerContext, inst: Instance) -> bytes | None:
    try:
        return ctx.instance_bytes(inst)
    except ArchiveReadError as exc:
        # the context logged and audited the damage (rate-limited): a retried C-GET of 500
        # damaged objects wrote 500 ERROR lines each time (outside probe 48)
        log.debug("cannot read %s for retrieve: %s", inst.sop_instance_uid, exc)
        return None
    except Exception:
        log.exception("cannot read %s for retrieve", inst.sop_instance_uid)
        return None


def _contexts(found: list[Instance]) -> list[Any]:
    """Presentation contexts for the C-MOVE sub-association.

    Every SOP class is offered in Explicit and Implicit VR Little Endian (and any other
    uncompressed syntax it is stored in): Implicit VR Little Endian is the default syntax
    every DICOM receiver supports (PS3.5 10.1), and a destination that accepts nothing else
    refused the whole sub-association (A801) when we offered only the stored syntax. Data
    stored uncompressed is re-encoded by pynetdicom; data stored compressed is decompressed
    (``_outgoing``) when the destination takes no context in its stored syntax. Each stored
    compressed syntax also gets a context of its own, after all the uncompressed ones, so
    a destination that accepts it gets the instance as stored. At most 128 contexts
    (PS3.8 9.3.2.2: odd IDs 1-255): beyond that, compressed data travels decompressed.
    """
    stored: dict[str, set[str]] = {}
    for inst in found:
        stored.setdefault(inst.sop_class_uid, set()).add(inst.transfer_syntax_uid)
    out = []
    for sop_class, syntaxes in stored.items():
        native = syntaxes & transfer_syntaxes.NATIVE
        offered = [EXPLICIT_LE, IMPLICIT_LE, *sorted(native - {EXPLICIT_LE, IMPLICIT_LE})]
        out.append(build_context(sop_class, offered))
    for sop_class, syntaxes in stored.items():
        for syntax in sorted(syntaxes - transfer_syntaxes.NATIVE):
            out.append(build_context(sop_class, [syntax]))
    return out[:128]


def _accepted(assoc: Association | None) -> dict[str, set[str]]:
    """Transfer syntaxes per SOP class on which ``assoc`` lets us send C-STORE requests
    (what pynetdicom's send_c_store chooses from: accepted, SCU role for us)."""
    out: dict[str, set[str]] = {}
    for cx in assoc.accepted_contexts if assoc is not None else []:
        if cx.as_scu:
            out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out


class _SubAssociation:
    """Catches the C-MOVE sub-association pynetdicom opens after our first yields, so the
    sub-operations know what the destination accepted (EVT_ACCEPTED fires before
    ``AE.associate`` returns), and why it failed when it does (``_guard_sub_associations``).
    """

    def __init__(self, destination: str = "", address: str = "") -> None:
        self.assoc: Association | None = None
        self.destination = destination
        self.address = address
        self.connected = False

    def on_accepted(self, event: Event) -> None:
        self.assoc = event.assoc

    def on_connected(self, event: Event) -> None:
        self.connected = True

    def failure(self, assoc: Association) -> refusal.Refused:
        """A702 for a known destination we could not associate with (PS3.4 C.4.2.1.5:
        "Refused: Out of resources - Unable to perform sub-operations", as DCMTK dcmqrscp
        answers), with the destination and the reason in the Error Comment. pynetdicom
        answered A801 "Move Destination unknown", which sent clinic IT looking for a
        misspelt AE title when the PACS was merely down."""
        where = f"{self.destination} at {self.address}"
        if assoc.is_rejected:
            reason = getattr(assoc.acceptor.primitive, "reason_str", "") or "no reason given"
            comment = f"{self.destination} rejected the association: {reason}"
        elif self.connected:
            comment = f"{where} aborted the association"
        else:
            comment = f"{where} unreachable: no connection"
        # the Error Comment holds 64 characters: the AE title first, the rest in the log
        log.warning("C-MOVE refused (0xA702): %s (move destination %s)", comment, where)
        return refusal.Refused(status.QR_OUT_OF_RESOURCES_SUBOPS, comment)


_guard_lock = threading.Lock()


def _guard_sub_associations(ae: Any) -> None:
    """Make ``ae.associate`` raise ``refusal.Refused`` when a C-MOVE sub-association fails.

    pynetdicom opens the sub-association itself, after our first yield, and hard-codes A801
    when it fails; it does so inside its ``attempt`` guard, which ``server.dimse.refusal``
    teaches to answer a ``Refused`` with its own status and comment. Only associations that
    carry a ``_SubAssociation`` handler are touched; a successful one costs one look-up.
    """
    if getattr(ae, "_lucent_move_guard", False):
        return
    with _guard_lock:
        if getattr(ae, "_lucent_move_guard", False):
            return
        original = ae.associate

        def associate(addr: str, port: int, *args: Any, **kwargs: Any) -> Association:
            assoc = original(addr, port, *args, **kwargs)
            if assoc.is_established:
                return assoc
            sub = next(
                (
                    h.__self__
                    for _, h, *_ in kwargs.get("evt_handlers") or []
                    if isinstance(getattr(h, "__self__", None), _SubAssociation)
                ),
                None,
            )
            if sub is None:
                return assoc
            sock = assoc.dul.socket
            if sock is not None:  # what pynetdicom does after a failed sub-association
                sock.close()
            raise sub.failure(assoc)

        ae.associate = associate
        ae._lucent_move_guard = True


#: A transfer syntax no peer can have accepted (under our own UID root): a data set that
#: claims it has no presentation context, so pynetdicom refuses to send it.
_NEVER_ACCEPTED = "1.2.826.0.1.3680043.10.1455.99.1"


def _unsendable(inst: Instance) -> Dataset:
    """A stand-in that makes pynetdicom count the sub-operation as failed, with its SOP
    Instance UID in the Failed SOP Instance UID List (PS3.4 C.4.2.3.1, C.4.3.3.1).

    It claims a transfer syntax no peer accepted, so send_c_store raises before anything
    goes on the wire; a failure status from the handler would instead end the whole
    C-GET/C-MOVE. Used when an instance cannot be read from the archive or transcoded.
    """
    ds = Dataset()
    ds.SOPClassUID = inst.sop_class_uid
    ds.SOPInstanceUID = inst.sop_instance_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = _NEVER_ACCEPTED
    return ds


def _outgoing(inst: Instance, raw: bytes, accepted: set[str]) -> tuple[Dataset, bool]:
    """The data set to send for ``inst`` and whether its pixel data were transcoded.

    Stored syntax accepted, or uncompressed both ways: read here as stored; pynetdicom's
    send_c_store re-encodes it in an accepted uncompressed syntax (Explicit ↔ Implicit VR,
    Deflated ↔ inflated). Pixel data to decode or byte-swap (compressed stored, only
    uncompressed accepted; uncompressed stored, only RLE or only the other byte order
    accepted): in a helper process (``server.dimse.transcoder``), never on this
    association thread. A failure there gives ``_unsendable`` (this sub-operation fails,
    the others go on).
    """
    own = inst.transfer_syntax_uid
    # Big endian stored, little endian accepted (or the reverse) is a transcoding too:
    # pynetdicom re-encodes the values but would send Pixel Data's bytes unswapped.
    if not (transcode.codes_pixels(own, accepted) or transcode.changes_byte_order(own, accepted)):
        return dcmread(io.BytesIO(raw)), False
    data, _, _, error = transcoder.shared().run(raw, own, accepted, inst.sop_class_uid)
    if data is None:
        log.warning("retrieve: %s (stored %s) not sent: %s", inst.sop_instance_uid, own, error)
        return _unsendable(inst), False
    return dcmread(io.BytesIO(data)), True


def _sub_operations(
    event: Event, ctx: ServerContext, found: list[Instance], peer: _SubAssociation | None = None
) -> Iterator[Any]:
    """The C-STORE sub-operations of a C-MOVE or C-GET, one instance at a time (memory
    stays flat however large the study), honouring C-CANCEL. ``peer``: the C-MOVE
    sub-association; C-GET sends on the caller's own association."""
    transcoded = 0
    try:
        for inst in found:
            if event.is_cancelled:
                yield status.QR_CANCEL, None
                return
            raw = _load(ctx, inst)
            if raw is None:  # logged by _load; this sub-operation fails, the others go on
                yield status.PENDING, _unsendable(inst)
                continue
            accepted = _accepted(peer.assoc if peer is not None else event.assoc)
            ds, changed = _outgoing(inst, raw, accepted.get(inst.sop_class_uid, set()))
            transcoded += changed
            yield status.PENDING, ds
    finally:
        if transcoded:
            log.warning(
                "retrieve for %s: %d of %d instances transcoded (the peer accepted no "
                "context in their stored transfer syntax)",
                event.assoc.requestor.ae_title.strip(),
                transcoded,
                len(found),
            )


@contextmanager
def _index_needed() -> Iterator[None]:
    """A C-MOVE/C-GET step that needs the index: during an outage it is refused with the
    outage's failure status (logged once per outage), before any sub-operation; it was
    pynetdicom's C511 "unhandled exception" with a traceback per request (probe 58)."""
    try:
        yield
    except refusal.Refused:
        raise
    except Exception as exc:
        reason = access.index_outage(exc)
        if reason is None:
            raise
        raise _refused(_unavailable(reason)) from exc


def _refused(error: Dataset) -> refusal.Refused:
    return refusal.Refused(int(error.Status), str(error.get("ErrorComment", "")))


def handle_move(event: Event, ctx: ServerContext, pool: PoolSection) -> Iterator[Any]:
    # Refusals are raised before the first yield (server.dimse.refusal): answered with
    # their own status, no sub-operation counts, and no association to the destination.
    with _index_needed():
        caller = _peer_allowed(event, ctx)
        if caller is None:
            raise refusal.Refused(
                status.NOT_AUTHORIZED, "calling AE is not a configured remote node"
            )
        destination = event.move_destination
        dest = (
            destination.decode() if isinstance(destination, bytes) else str(destination)
        ).strip()
        node = _move_destination(ctx, dest, caller)
        if node is None:
            log.warning("C-MOVE to %r refused: no remote node with that AE title may receive", dest)
            raise refusal.Refused(status.QR_MOVE_DESTINATION_UNKNOWN, f"unknown destination {dest}")
        found, error = _selected(event, ctx, pool)
    if error is not None or found is None:
        raise _refused(error if error is not None else _status(status.QR_UNABLE_TO_PROCESS, ""))
    host = unbracketed(node.host)  # a node stored as "[::1]" before hosts were normalised
    peer = _SubAssociation(dest, f"{node.host}:{node.port}")
    _guard_sub_associations(event.assoc.ae)
    options: dict[str, Any] = {
        "contexts": _contexts(found) or None,
        "evt_handlers": [
            (evt.EVT_ACCEPTED, peer.on_accepted),
            (evt.EVT_CONN_OPEN, peer.on_connected),
        ],
    }
    if node.tls:
        # the node's TLS setting holds for our C-MOVE sub-operations too: they went out in
        # clear text to a node marked TLS (outside probe 25)
        options["tls_args"] = (_client_tls(ctx), host)
    yield host, node.port, options
    yield len(found)
    _audit_retrieve(event, ctx, "C-MOVE", f"{dest.strip()} ({node.host}:{node.port})", found)
    yield from _sub_operations(event, ctx, found, peer)


def _client_tls(ctx: ServerContext) -> Any:
    s = ctx.settings
    return tls.client_context(
        s.pacs.tls_ca_file or s.dimse.tls_ca_file, s.dimse.tls_cert, s.dimse.tls_key
    )


def _move_destination(
    ctx: ServerContext, ae_title: str, caller: RemoteNode | bool
) -> RemoteNode | None:
    """The node a C-MOVE may send to: a store target with that AE title, or the caller
    itself (a viewer retrieving to its own AE). A node marked as no store target received
    patient data all the same, although an API send to it is refused (outside probe)."""
    with ctx.Session() as session:
        nodes = list(session.scalars(select(RemoteNode).where(RemoteNode.ae_title == ae_title)))
    for node in nodes:
        if node.store_target:
            return node
    if isinstance(caller, RemoteNode):
        for node in nodes:
            if node.id == caller.id:
                return node
    return None


def handle_get(event: Event, ctx: ServerContext, pool: PoolSection) -> Iterator[Any]:
    with _index_needed():
        if _peer_allowed(event, ctx) is None:
            raise refusal.Refused(
                status.NOT_AUTHORIZED, "calling AE is not a configured remote node"
            )
        found, error = _selected(event, ctx, pool)
    if error is not None or found is None:
        raise _refused(error if error is not None else _status(status.QR_UNABLE_TO_PROCESS, ""))
    yield len(found)
    _audit_retrieve(event, ctx, "C-GET", "the caller", found)
    yield from _sub_operations(event, ctx, found)


def _audit_retrieve(
    event: Event, ctx: ServerContext, operation: str, destination: str, found: list[Instance]
) -> None:
    value = event.identifier.get("StudyInstanceUID", "")
    studies = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    if not any(studies):  # retrieve by series/instance: name the studies from the index
        with ctx.Session() as session:
            studies = queries.study_uids_of(session, [i.series_pk for i in found])
    audit_trail.retrieve(
        ctx, *_caller(event), operation, destination, [s for s in studies if s], len(found)
    )


def handle_commitment_report(event: Event, ctx: ServerContext) -> tuple[int, Dataset | None]:
    """N-EVENT-REPORT of a Storage Commitment SCP on a new association (Conformance 4.1.2.5
    way 2): record committed/failed instances in the index; no network work here.

    Only the node the N-ACTION went to, by its AE title, may report on a transaction, and
    an answered one is not rewritten: any AE turned a failed instance into "committed"
    (probe 38). A report we do not apply is answered with a failure and logged."""
    from lucent.net.commitment import REPORT_NOT_APPLIED, parse_report
    from server.pacs.records import receive_report

    calling = str(event.assoc.requestor.ae_title)
    try:
        report = parse_report(event.event_information)
        applied = receive_report(ctx, report, calling)
    except Exception:
        log.exception("could not record a storage commitment report from %s", calling.strip())
        return 0x0110, None  # Processing failure
    if applied.refused:
        log.warning(
            "storage commitment report from %s for transaction %s refused (0x%04X): %s",
            calling.strip(),
            report.transaction_uid,
            REPORT_NOT_APPLIED,
            applied.refused,
        )
        return REPORT_NOT_APPLIED, None
    log.info(
        "storage commitment report %s from %s: %d committed, %d failed (%d recorded)",
        report.transaction_uid,
        calling.strip(),
        len(report.committed),
        len(report.failed),
        applied.updated,
    )
    return status.SUCCESS, None


def bindings(ctx: ServerContext, pool: PoolSection) -> list[Any]:
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ctx, pool]),
        (evt.EVT_C_FIND, handle_find, [ctx, pool]),
        (evt.EVT_C_MOVE, handle_move, [ctx, pool]),
        (evt.EVT_C_GET, handle_get, [ctx, pool]),
        (evt.EVT_N_EVENT_REPORT, handle_commitment_report, [ctx]),
        (evt.EVT_CONN_CLOSE, handle_closed, [ctx]),
    ]
