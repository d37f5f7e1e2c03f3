"""SCU side of the DICOM network: C-ECHO, C-FIND, C-MOVE, C-STORE (Conformance 4.2.1-4.2.4).

Every call opens its own association (4.2.1.4, 4.2.2.4: "a new association whenever the user
initiates ..."), with the peer's own timeouts, over IPv4 or IPv6 (the reference product is
IPv4-only; we do both), with TCP_NODELAY. Failures are values with a reason a person can act
on: refused, timeout, unknown host, association rejected (and why). C-FIND and C-STORE run on
our own association (``lucent.net.direct``, plain or TLS); C-ECHO and C-MOVE on pynetdicom
(``transport.install`` adds TCP_NODELAY there).

Storage commitment lives in :mod:`lucent.net.commitment`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import ipaddress
import logging
import queue
import re
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom import AE, build_context, dsutils, evt
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from lucent.api.schemas import FindOutcome  # the API's contract: one definition
from lucent.dicom import transcode
from lucent.net import direct, status, tls, transport
from lucent.net import upper_layer as ul

log = logging.getLogger("lucent.scu")

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Conformance 4.2.1.2 / 4.2.2.2 / 4.2.5.2: the three uncompressed syntaxes.
UNCOMPRESSED: tuple[str, ...] = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
#: Conformance 4.2.1.3 / 4.2.2.3: the maximum PDU size we announce as SCU.
DEFAULT_MAX_PDU = 16384
MAX_CONTEXTS = 128
#: PS3.8 9.3.4: A-ASSOCIATE-RJ Result field.
REJECTED_PERMANENT = 1
REJECTED_TRANSIENT = 2


@dataclass(frozen=True)
class Peer:
    """A remote AE as the SCU helpers need it (the index's RemoteNode, flattened).

    ``timeout`` covers TCP connect and association negotiation; ``dimse_timeout`` each DIMSE
    message; ``network_timeout`` silence on an open association.
    """

    ae_title: str
    host: str
    port: int
    calling_ae: str = "LUCENT"
    timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_pdu: int = DEFAULT_MAX_PDU
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    implementation_class_uid: str = ""
    implementation_version_name: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def unbracketed(host: str) -> str:
    """The IPv6 literal of a URL-style "[::1]" as socket calls take it ("::1"); any other
    host as given. A node stored as "[::1]" failed every association as "unknown host"."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            if ipaddress.ip_address(inner).version == 6:
                return inner
        except ValueError:
            pass
    return host


class AssociationError(Exception):
    """No association: ``kind`` is refused, timeout, unknown-host, unreachable, rejected,
    aborted, tls.

    ``permanent``: the peer said no in a way another attempt cannot change (PS3.8 9.3.4:
    A-ASSOCIATE-RJ result 1, "rejected-permanent", e.g. an unknown called AE title), so
    retrying it (Conformance 4.2.2.6) only makes the user wait. A transient rejection
    (result 2, e.g. too many associations) and connection failures are not permanent.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        permanent: bool = False,
        no_context: bool = False,
        uncompressed_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.permanent = permanent
        self.no_context = no_context
        """Accepted, but no presentation context for what was proposed: final for those
        classes and syntaxes, though another association proposing others may succeed."""
        self.uncompressed_refused = uncompressed_refused
        """No context because the peer took none of the uncompressed syntaxes, the only
        ones proposed: proposing compressed ones may succeed (a compressed-only peer)."""


def _diagnose_connect(peer: Peer) -> AssociationError:
    """Tell refused from timeout from unknown host (pynetdicom only logs "unable to connect")."""
    try:
        infos = socket.getaddrinfo(peer.host, peer.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return AssociationError("unknown-host", f"cannot resolve host '{peer.host}': {exc}")
    family, stype, proto, _, addr = infos[0]
    with socket.socket(family, stype, proto) as probe:
        probe.settimeout(max(0.5, min(peer.timeout, 10.0)))
        try:
            probe.connect(addr)
        except ConnectionRefusedError:
            return AssociationError(
                "refused",
                f"connection refused by {peer.address}: nothing listens on that port "
                "(check host, port and that the PACS is running)",
            )
        except TimeoutError:
            return AssociationError(
                "timeout",
                f"no answer from {peer.address} within {peer.timeout:g} s "
                "(host down, firewall, or wrong address)",
            )
        except OSError as exc:
            return AssociationError("unreachable", f"cannot connect to {peer.address}: {exc}")
        if peer.tls:
            problem = _tls_problem(peer, probe)
            if problem is not None:
                return problem
    tls_hint = "" if peer.tls else ", or one that expects TLS while this node has TLS off"
    return AssociationError(
        "aborted",
        f"{peer.address} accepts TCP connections but closed or aborted the association "
        f"request without an answer (a port that is not DICOM{tls_hint}?)",
    )


def _tls_context(peer: Peer) -> ssl.SSLContext:
    try:
        return tls.client_context(peer.tls_ca_file, peer.tls_cert, peer.tls_key)
    except tls.TlsConfigError as exc:
        raise AssociationError("tls", str(exc)) from exc


def _tls_problem(peer: Peer, sock: socket.socket) -> AssociationError | None:
    """Repeat the handshake on a probe connection to say why TLS failed (pynetdicom only
    logs it): untrusted certificate, wrong host name, our certificate refused, no TLS there."""
    try:
        with _tls_context(peer).wrap_socket(sock, server_hostname=peer.host) as wrapped:
            wrapped.do_handshake()
            wrapped.settimeout(1.0)
            wrapped.recv(1)  # a peer that refuses our certificate closes here (TLS 1.3)
    except ssl.SSLCertVerificationError as exc:
        return AssociationError(
            "tls", f"TLS: the certificate of {peer.address} is not trusted: {exc.verify_message}"
        )
    except ssl.SSLError as exc:
        return AssociationError(
            "tls",
            f"TLS handshake with {peer.address} failed ({exc.reason or exc}): is TLS enabled "
            "there, and does it trust our certificate?",
        )
    except TimeoutError:
        return None
    except OSError as exc:
        return AssociationError(
            "tls", f"TLS connection to {peer.address} closed during the handshake: {exc}"
        )
    return None


def _make_ae(peer: Peer) -> AE:
    transport.install()
    # pynetdicom pretty-prints every identifier for its debug log even when debug is off:
    # ~1 ms per C-FIND match, three times findscu's cost for a 1000-study list.
    _pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    _pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    ae = AE(ae_title=peer.calling_ae)
    if peer.implementation_class_uid:
        ae.implementation_class_uid = peer.implementation_class_uid
    if peer.implementation_version_name:
        ae.implementation_version_name = peer.implementation_version_name
    ae.connection_timeout = peer.timeout
    ae.acse_timeout = peer.timeout
    ae.dimse_timeout = peer.dimse_timeout
    ae.network_timeout = peer.network_timeout
    ae.maximum_pdu_size = peer.max_pdu
    return ae


def associate(
    peer: Peer,
    contexts: Sequence[PresentationContext],
    *,
    evt_handlers: list[Any] | None = None,
) -> Association:
    """Open an association or raise AssociationError with a reason a person can act on."""
    ae = _make_ae(peer)
    tls_args = None
    if peer.tls:
        tls_args = (_tls_context(peer), peer.host)
    started = time.monotonic()
    connected: list[bool] = []  # TCP got through (EVT_CONN_OPEN): tells silent from down
    handlers = [*(evt_handlers or []), (evt.EVT_CONN_OPEN, lambda _: connected.append(True))]
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            contexts=list(contexts),
            ae_title=peer.ae_title,
            max_pdu=peer.max_pdu,
            tls_args=tls_args,
            evt_handlers=handlers,
        )
    except socket.gaierror as exc:
        raise AssociationError("unknown-host", f"cannot resolve host '{peer.host}': {exc}") from exc
    except (OSError, ValueError) as exc:
        raise AssociationError("unreachable", f"cannot connect to {peer.address}: {exc}") from exc
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        reason = getattr(rsp, "reason_str", "") or "no reason given"
        source = getattr(rsp, "source_str", "")
        result = getattr(rsp, "result_str", "")
        hint = ""
        if "Called AE" in reason or "called AE" in reason.lower():
            hint = f" — check the AE title '{peer.ae_title}' configured for this node"
        elif "Calling AE" in reason or "calling ae" in reason.lower():
            hint = f" — the PACS does not know our AE title '{peer.calling_ae}'; register it there"
        raise AssociationError(
            "rejected",
            f"association rejected by {peer.address} ({result}, {source}): {reason}{hint}",
            permanent=getattr(rsp, "result", None) == REJECTED_PERMANENT,
        )
    if time.monotonic() - started >= peer.timeout * 0.9:
        # No second connect to find out (a host that is down took the timeout twice).
        if connected:
            raise _silent(peer)
        raise AssociationError(
            "timeout",
            f"no answer from {peer.address} within {peer.timeout:g} s "
            "(host down, firewall, or wrong address)",
        )
    if not assoc.accepted_contexts and assoc.rejected_contexts:
        raise AssociationError(
            "rejected",
            f"{peer.address} accepted none of the proposed presentation contexts "
            "(SOP class / transfer syntax not supported there)",
        )
    diagnosis = _diagnose_connect(peer)
    if diagnosis.kind == "aborted":  # TCP accepted, no answer we saw: a lost rejection?
        rejection = _rejection_on_probe(peer)
        if rejection is not None:
            raise rejection
    raise diagnosis


def _rejection_on_probe(peer: Peer) -> AssociationError | None:
    """Ask again on our own socket, which reads the answer synchronously, whether the peer
    rejects us, and why.

    pynetdicom loses the A-ASSOCIATE-RJ now and then when the peer closes the connection
    right after sending it (dcmqrscp does: 2 of 30 tries) and reports an abort; a permanent
    rejection then looked transient and was retried. None when the probe is not rejected.
    """
    context = ul.PresentationContext(1, str(Verification), [ul.IMPLICIT_LE])
    try:
        assoc = _request_direct(peer, [context])
    except direct.DirectError as exc:  # no second connect diagnosis: the caller has one
        return _rejected(peer, exc.message) if exc.kind == "rejected" else None
    except AssociationError:  # TLS set-up
        return None
    with contextlib.suppress(Exception):
        assoc.release()
    return None


# --------------------------------------------------------------------------- C-ECHO


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    status: int | None
    kind: str
    message: str
    elapsed_ms: float


def echo(peer: Peer) -> EchoResult:
    """C-ECHO with one clear message per failure (issue 3: "refused, timeout, rejected + why").

    It runs on our own socket (``lucent.net.direct``), which reads the peer's answer to the
    association request synchronously: a PACS that sends A-ASSOCIATE-RJ and closes at once
    (dcmqrscp does) is reported as the rejection it is, never as an abort."""
    start = time.perf_counter()
    context = ul.PresentationContext(1, str(Verification), [ul.IMPLICIT_LE])
    try:
        assoc = _open_direct(peer, [context])
    except AssociationError as exc:
        return EchoResult(False, None, exc.kind, exc.message, _ms(start))
    try:
        if assoc.accepted(1) is None:
            error = _none_accepted(peer)
            return EchoResult(False, None, error.kind, error.message, _ms(start))
        code = assoc.c_echo(1, assoc.next_message_id())
    except direct.DirectError as exc:
        assoc.abort()  # a late or broken answer leaves nothing to release politely
        kind = "timeout" if exc.kind == "timeout" else "aborted"
        return EchoResult(False, None, kind, f"C-ECHO to {peer.address}: {exc.message}", _ms(start))
    finally:
        if assoc.is_open:
            assoc.release()
    if code != status.SUCCESS:
        return EchoResult(
            False, code, "status", f"C-ECHO answered 0x{code:04X} by {peer.address}", _ms(start)
        )
    return EchoResult(True, code, "ok", f"C-ECHO to {peer.address} succeeded", _ms(start))


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def _release(assoc: Association) -> None:
    with contextlib.suppress(Exception):
        if assoc.is_established:
            assoc.release()


# --------------------------------------------------------------------------- C-FIND

#: Conformance 4.2.1.4: the return keys at STUDY level (plus the unique key and counts).
#: The table lists (0008,103E) under "Study Description"; that tag is Series Description,
#: so STUDY level asks for Study Description (0008,1030) and SERIES level for 0008,103E.
STUDY_KEYS: tuple[str, ...] = (
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ModalitiesInStudy",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "ReferringPhysicianName",
    "RequestingService",
    "AccessionNumber",
    "StudyInstanceUID",
    "StudyID",
    "PatientSex",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
)
LEVEL_KEYS = {"STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": IMAGE_KEYS}
UNIQUE_KEY = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


@dataclass
class FindResult:
    """One C-FIND against one peer (Conformance 4.2.1.6 decides ``outcome``).

    outcome: "success"; "truncated" (the limit was reached and we cancelled); "failed"
    (A700, A900, Cxxx or another failure ended this query; other queries continue);
    "cancelled" (FE00); "no-association" (with ``message``).
    """

    rows: list[dict[str, str]] = field(default_factory=list)
    outcome: FindOutcome = "success"
    status: int | None = None
    message: str = ""
    warnings: int = 0  # FF01 responses: optional keys not supported, values kept as sent
    elapsed_ms: float = 0.0
    case_sensitive: bool | None = None
    hidden_matches_possible: bool = False
    case_note: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("success", "truncated")


#: VRs that cannot be a C-FIND matching key (PS3.4 C.2.2.2: no matching on these).
_NO_MATCHING_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def check_keys(keys: Mapping[str, str]) -> None:
    """Refuse keys that are no DICOM keyword (or cannot be matched) instead of dropping them.

    pydicom sets an unknown keyword as a plain Python attribute that never reaches the
    identifier: "PatientsName=Nobody*" used to query with no condition at all, and the PACS
    answered every study it has.
    """
    bad = []
    for kw in keys:
        tag = tag_for_keyword(kw)
        vr = dictionary_vr_or_none(tag) if tag is not None else None
        if tag is None or vr is None:
            bad.append(f"'{kw}' is not a DICOM keyword")
        elif any(v in _NO_MATCHING_VRS for v in vr.split(" or ")):  # "OB or OW"
            bad.append(f"'{kw}' ({vr}) cannot be a matching key")
        elif kw == "QueryRetrieveLevel":
            bad.append("'QueryRetrieveLevel' is set by the level, not by a key")
    if bad:
        raise ValueError(
            "; ".join(bad) + " (keys are DICOM keywords such as PatientName, PatientID, "
            "StudyDate, AccessionNumber, ModalitiesInStudy, StudyInstanceUID)"
        )


#: Unique keys of the levels above each Study Root level (PS3.4 C.4.1.2.2.1).
_ABOVE = {"STUDY": (), "SERIES": ("StudyInstanceUID",)}
_ABOVE["IMAGE"] = ("StudyInstanceUID", "SeriesInstanceUID")


def _check_hierarchy(level: str, keys: Mapping[str, str]) -> None:
    """Hierarchical search (we do not negotiate relational queries): a SERIES or IMAGE query
    names the unique keys of every level above it, one UID or a UID list (PS3.4 C.4.1.2.2.1,
    C.4.1.3.1.1). Without them PACS differ: dcmqrscp ignored the patient keys and answered
    series of every patient, Orthanc filtered them; a clear 422 instead of either."""
    for kw in _ABOVE[level]:
        value = str(keys.get(kw) or "").strip()
        if not value or any(c in value for c in "*?"):
            raise ValueError(
                f"a query at {level} level must name {kw} (one UID, or several separated "
                "by '\\'): hierarchical search (PS3.4 C.4.1.2.2.1) has no wildcard above "
                "the query level; query the STUDY level first"
            )


def build_query(level: str, keys: Mapping[str, str]) -> Dataset:
    """A Study Root identifier with every return key of the level; ``keys`` set matching.

    Raises ValueError naming the key when a key or its value cannot be encoded (e.g.
    "Rows=abc"), before any association is opened: it used to fail while writing the
    identifier on the association thread, and the API answered 500.
    """
    level = level.upper()
    if level not in LEVEL_KEYS:
        raise ValueError(f"level must be STUDY, SERIES or IMAGE, not {level!r}")
    check_keys(keys)
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for kw in LEVEL_KEYS[level]:
        setattr(ds, kw, "")
    for kw, value in keys.items():
        if value is None:
            continue
        try:
            one = Dataset()
            # the trial is about the value's form, not its characters (the identifier gets
            # its character set below): without one, pydicom logged two warnings and a
            # UserWarning for every non-Latin-1 name (outside probe)
            one.SpecificCharacterSet = "ISO_IR 192"
            setattr(one, kw, value)
            for implicit in (True, False):
                fp = DicomBytesIO()
                fp.is_little_endian, fp.is_implicit_VR = True, implicit
                write_dataset(fp, one)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds here
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            text = str(value)[:80]
            raise ValueError(f"{kw} '{text}' cannot be a matching key: {reason}") from exc
        setattr(ds, kw, value)
    _check_hierarchy(level, keys)
    text = "".join(str(v) for v in keys.values() if v is not None)
    if not text.isascii():
        # PS3.5 6.1.2.3: without (0008,0005) only ASCII may be sent; "Müller*" went out as
        # bare Latin-1 bytes and dcmqrscp matched nothing. Latin-1 where it suffices (what
        # most PACS store German names in), else UTF-8.
        try:
            text.encode("latin-1")
            ds.SpecificCharacterSet = "ISO_IR 100"
        except UnicodeEncodeError:
            ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


# Text VRs whose raw bytes we decode ourselves; everything else goes through pydicom.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})  # fmt: skip
# Single-byte or UTF-8 character sets (PS3.3 C.12.1.1.2) → Python codecs; others (ISO 2022
# code extensions: Japanese, Korean, Chinese GB) need pydicom's decoder.
_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859_2",
           "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso8859_5",
           "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8",
           "ISO_IR 148": "iso8859_9", "ISO_IR 166": "tis_620", "ISO_IR 192": "utf-8",
           "GB18030": "gb18030", "GBK": "gbk"}  # fmt: skip

# Of those, the VRs whose bytes are in the Specific Character Set (the rest are ASCII).
_TEXT_SPECIFIC = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def dictionary_vr_or_none(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _row(ds: Dataset) -> dict[str, str]:
    """A C-FIND answer as keyword → text, decoding raw text values directly.

    pydicom's element conversion costs ~0.3 ms per answer; a 1000-study listing spent most
    of its time there. Values whose VR or character set needs more than a codec (binary
    VRs, ISO 2022 escapes) still go through pydicom, so the result is the same.
    """
    out: dict[str, str] = {}
    charset = ds.get_item(0x00080005)
    terms = [""]
    if charset is not None and charset.value:
        value = charset.value
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else _text(value)
        terms = [t.strip(" \x00") for t in text.split("\\")]
    codec = _CODECS.get(terms[0]) if len(terms) == 1 else None
    for tag in ds.keys():  # noqa: SIM118 - iterating ds itself converts every element
        if tag == 0x00080052:  # QueryRetrieveLevel
            continue
        raw = ds.get_item(tag)
        keyword = keyword_for_tag(tag)
        if not keyword or raw is None:
            continue
        vr = getattr(raw, "VR", None) or dictionary_vr_or_none(tag)
        value = getattr(raw, "value", None)
        if codec and vr in _TEXT_VRS and isinstance(value, bytes) and getattr(raw, "is_raw", False):
            text = value.decode(codec if vr in _TEXT_SPECIFIC else "ascii", "replace")
            if vr in ("LT", "ST", "UT"):  # single-valued free text: keep leading spaces
                out[keyword] = text.rstrip(" \x00")
            else:
                out[keyword] = "\\".join(v.strip(" \x00") for v in text.split("\\"))
            continue
        elem = ds[tag]
        if elem.VR != "SQ":
            out[keyword] = _text(elem.value)
    return out


#: How often a C-CANCEL watcher looks at its cancel flag: the C-CANCEL-RQ leaves within
#: this of the request, whether or not the PACS is sending responses.
CANCEL_POLL_S = 0.05

#: How long after our C-CANCEL-RQ we wait for the PACS's final response (PS3.7 9.3.2.3;
#: PS3.4 C.4.2.3.1: FE00, or it finishes anyway) before we abort the association. A PACS
#: that honours the cancel answers once the sub-operation in flight ends (Orthanc,
#: dcmqrscp: well under a second on a LAN); a hung one never answers, and the cancelled job
#: stayed "running" until the DIMSE timeout (the node's, 30 s by default), while the
#: radiologist who clicked Cancel expects it to end within seconds. Five seconds leaves a
#: slow PACS room for one more large sub-operation and keeps Cancel prompt. Not a per-node
#: option: it bounds how long Cancel takes, not how long a PACS may work.
CANCEL_GRACE_S = 5.0


class _CancelWatch:
    """Sends one C-CANCEL-RQ as soon as ``cancel`` is set, from its own thread.

    Conformance 4.2.2 / issue 3: "cancel sends C-CANCEL". Checking the flag only when a
    pending response arrives sent nothing while a busy PACS was silent (pending responses
    are optional, PS3.4 C.4.2.3.1) — the cancel waited seconds or never went out. Both
    pynetdicom's ``send_c_cancel`` (it queues PDUs for the DUL thread) and
    ``DirectAssociation.c_cancel`` (it writes under a lock) are safe from another thread
    while the caller waits for responses. Start it only once the request is on the wire,
    and :meth:`stop` it before the association is released: no C-CANCEL goes out after.

    ``abandon``: called ``grace`` seconds after the C-CANCEL (whoever sent it) when the
    operation has not ended by then: it aborts the association and wakes the caller's
    reader, so a hung PACS cannot hold a cancelled job until the DIMSE timeout. ``abandoned``
    then tells the caller why its reader stopped (and that nothing is left to release).
    """

    def __init__(
        self,
        cancel: threading.Event | None,
        send: Callable[[], None],
        *,
        abandon: Callable[[], None] | None = None,
        grace: float = CANCEL_GRACE_S,
    ) -> None:
        self._cancel = cancel
        self._send = send
        self._abandon = abandon
        self.grace = grace
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None
        self.sent = False
        self.abandoned = False
        if cancel is not None:
            threading.Thread(target=self._watch, name="c-cancel", daemon=True).start()

    def _watch(self) -> None:
        assert self._cancel is not None
        while not self._done:
            if self._cancel.wait(CANCEL_POLL_S):
                self.fire()
                return

    def fire(self) -> bool:
        """Send the C-CANCEL now unless it went out already or the operation ended;
        True when this call sent it."""
        with self._lock:
            if self.sent or self._done:
                return False
            self.sent = True
            try:
                self._send()
            except Exception as exc:  # noqa: BLE001 - a broken association shows in the reader
                log.warning("C-CANCEL not sent: %s", exc)
            if self._abandon is not None:
                self._timer = threading.Timer(self.grace, self._give_up)
                self._timer.daemon = True
                self._timer.start()
            return True

    def _give_up(self) -> None:
        """No final response within the grace after our C-CANCEL: abort (the PACS hangs)."""
        with self._lock:
            if self._done:
                return
            self._done = self.abandoned = True
        log.warning("no final response %.1f s after C-CANCEL: aborting the association", self.grace)
        assert self._abandon is not None
        try:
            self._abandon()
        except Exception as exc:  # noqa: BLE001 - the reader's timeout still ends it
            log.warning("A-ABORT after an unanswered C-CANCEL failed: %s", exc)

    def stop(self) -> None:
        """The operation ended: the watcher sends nothing from now on and exits."""
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()


class _CancelUnconfirmed(direct.DirectError):
    """The PACS sent no final response within the grace after our C-CANCEL: aborted."""


def _abandon_direct(assoc: direct.DirectAssociation) -> None:
    """A-ABORT on our own socket from the watcher thread, then shut the socket down: that
    wakes the caller's thread blocked in ``recv`` (closing the socket does not on Linux).
    The caller's thread closes it when its reader has stopped."""
    with contextlib.suppress(OSError):
        assoc.sock.sendall(ul.abort(0, 0))
    with contextlib.suppress(OSError):
        assoc.sock.shutdown(socket.SHUT_RDWR)


class _ResponsePump:
    """pynetdicom's C-MOVE responses, read by a helper thread into a queue of our own, so
    that the watcher can end the caller's wait (:meth:`wake`) when it aborts.

    pynetdicom's generator waits in the DIMSE queue for up to the DIMSE timeout, and our
    own A-ABORT queues nothing there (only the peer's does, fsm AA-2/3/4); a (None, None)
    put there ourselves can be taken by the association's reactor, which the abort
    restarts (in the server it was: the cancelled job still waited the whole DIMSE
    timeout). After a wake the helper thread stays in pynetdicom's wait until that
    timeout, then ends.
    """

    _END = object()

    def __init__(self, responses: Iterator[tuple[Dataset | None, Dataset | None]]) -> None:
        self._box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._responses = responses
        threading.Thread(target=self._read, name="c-move-responses", daemon=True).start()

    def _read(self) -> None:
        try:
            for item in self._responses:
                self._box.put(item)
        except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
            self._box.put(exc)
        finally:
            self._box.put(self._END)

    def wake(self) -> None:
        """End the caller's iteration now (its loop then sees why)."""
        self._box.put((None, None))

    def __iter__(self) -> Iterator[tuple[Dataset | None, Dataset | None]]:
        while True:
            item = self._box.get()
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


def _abandon_pynetdicom(assoc: Association, pump: _ResponsePump) -> None:
    """A-ABORT on a pynetdicom association from the watcher thread, and wake the caller.

    Not blocking: a blocking abort waits for the peer to close the connection, up to the
    ARTIM timeout (the node's timeout) with a hung PACS; the DUL thread closes it by then.
    """
    assoc.abort(block=False)
    pump.wake()


def _unconfirmed(grace: float) -> str:
    """What the job says when the PACS never answered the cancel (Conformance 4.2.2)."""
    return (
        f"the PACS did not confirm the cancel within {grace:g} s (no final response); "
        "the association was aborted (A-ABORT)"
    )


def _find_on(
    assoc: direct.DirectAssociation,
    query: _Query,
    identifier: Dataset,
    limit: int,
    cancel: threading.Event | None,
    result: FindResult,
    seen: dict[str, dict[str, str]],
    unique: str,
    tag: str = "",
) -> list[dict[str, str]]:
    """Run one C-FIND on an open association; apply the 4.2.1.6 table to each response."""
    msg_id = assoc.next_message_id()
    answers = assoc.c_find(
        query.context_id, StudyRootQueryRetrieveInformationModelFind, query.encode(identifier),
        msg_id,
    )  # fmt: skip
    watch = _CancelWatch(
        cancel,
        lambda: assoc.c_cancel(query.context_id, msg_id),
        abandon=lambda: _abandon_direct(assoc),
    )
    try:
        return _find_answers(answers, query, limit, cancel, result, seen, unique, tag, watch)
    except direct.DirectError as exc:
        if not watch.abandoned:
            raise
        # a hung PACS after our C-CANCEL (the limit, or the user's cancel): what matched so
        # far is kept, and the query ends now instead of at the DIMSE timeout
        if result.outcome != "truncated":
            result.outcome = "cancelled"
        what = f"{_unconfirmed(watch.grace)}: {len(result.rows)} match(es) received"
        result.message = f"{result.message}; {what}" if result.message else what
        raise _CancelUnconfirmed("aborted", result.message) from exc
    finally:
        watch.stop()


def _find_answers(
    answers: Iterable[direct.FindAnswer],
    query: _Query,
    limit: int,
    cancel: threading.Event | None,
    result: FindResult,
    seen: dict[str, dict[str, str]],
    unique: str,
    tag: str,
    watch: _CancelWatch,
) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []
    for answer in answers:
        code = answer.status
        if code in (status.PENDING, status.PENDING_WARNING):
            if code == status.PENDING_WARNING:
                result.warnings += 1  # 4.2.1.6: FF01 - returned values not overridden
            if watch.sent or answer.identifier is None:
                continue
            if cancel is not None and cancel.is_set():
                watch.fire()
                result.outcome = "cancelled"
                continue
            row = query.row(answer.identifier)
            if tag:
                row["_variant"] = tag
            key = row.get(unique) or f"#{len(seen)}"
            if key not in seen:
                if len(result.rows) >= limit:
                    # a match beyond the limit: the list is incomplete (4.2.1.4), stop the
                    # PACS. Exactly ``limit`` matches and a final 0000 is a complete list.
                    if watch.fire():
                        result.outcome = "truncated"
                        result.message = f"stopped at the limit of {limit} results"
                    continue
                seen[key] = row
                result.rows.append(row)
            got.append(row)
            continue
        watch.stop()
        result.status = code
        if watch.sent and result.outcome not in ("truncated", "cancelled"):
            result.outcome = "cancelled"  # the watcher sent it while the PACS was silent
        if code == status.SUCCESS:
            return got
        if code == status.QR_CANCEL:
            if not watch.sent:
                result.outcome = "cancelled"
                result.message = (
                    "the PACS ended the query: matching terminated due to cancel (FE00)"
                )
            return got
        # 4.2.1.6: A700, A900, Cxxx (and any other failure) end the current query.
        result.outcome = "failed"
        comment = answer.comment
        result.message = f"{find_status_text(code)} (0x{code:04X})" + (
            f": {comment}" if comment else ""
        )
        return got
    return got


@dataclass(frozen=True)
class _Query:
    """The negotiated C-FIND context: how identifiers are written and read on it."""

    context_id: int
    transfer_syntax: str

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax == IMPLICIT_LE

    @property
    def little(self) -> bool:
        return self.transfer_syntax != EXPLICIT_BE

    def encode(self, ds: Dataset) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = self.little, self.implicit
        write_dataset(fp, ds)
        return fp.getvalue()

    def row(self, data: bytes) -> dict[str, str]:
        if self.little:
            fast = _row_from_bytes(data, self.implicit)
            if fast is not None:
                return fast
        ds = read_dataset(io.BytesIO(data), self.implicit, self.little)
        return _row(ds)


_EXPLICIT_LONG = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC",
                            b"UN", b"UR", b"UT", b"UV"))  # fmt: skip
_TAG_INFO: dict[int, tuple[str, str | None]] = {}

# How ``_row_from_bytes`` treats an element: leave it out, ASCII text, text in the Specific
# Character Set, free text in it (LT/ST/UT: one value, leading spaces kept); None: pydicom.
_SKIP, _ASCII, _SPECIFIC, _FREE = 0, 1, 2, 3
#: Element header bytes (tag, or tag + VR when explicit) -> (keyword, kind, long length).
_HEADERS: dict[bytes, tuple[str, int | None, bool]] = {}


#: The caches above stop growing here: a peer choosing tags (private ones, VRs) must not
#: make a long-running server hold an entry for each.
_CACHE_LIMIT = 8192


def _tag_info(tag: int) -> tuple[str, str | None]:
    info = _TAG_INFO.get(tag)
    if info is None:
        info = (keyword_for_tag(tag), dictionary_vr_or_none(tag))
        if len(_TAG_INFO) < _CACHE_LIMIT:
            _TAG_INFO[tag] = info
    return info


def _header_info(key: bytes) -> tuple[str, int | None, bool]:
    """What an element header means for a row, cached: an answer repeats the same dozen
    headers, so the dictionary look-ups happen once per process, not once per element."""
    info = _HEADERS.get(key)
    if info is not None:
        return info
    group, elem = struct.unpack_from("<HH", key)
    tag = (group << 16) | elem
    keyword, vr = _tag_info(tag)
    long_length = False
    if len(key) == 6:  # explicit VR: the VR is in the stream
        long_length = key[4:6] in _EXPLICIT_LONG
        vr = key[4:6].decode("ascii", "replace")
    kind: int | None
    if tag == 0x00080052 or not keyword or group == 0x0000:
        kind = _SKIP
    elif vr not in _TEXT_VRS:
        kind = None  # binary, sequence or unknown: let pydicom decode
    elif vr in ("LT", "ST", "UT"):
        kind = _FREE
    elif vr in _TEXT_SPECIFIC:
        kind = _SPECIFIC
    else:
        kind = _ASCII
    info = (keyword, kind, long_length)
    if len(_HEADERS) < _CACHE_LIMIT:
        _HEADERS[key] = info
    return info


def _row_from_bytes(data: bytes, implicit: bool) -> dict[str, str] | None:
    """``_row`` straight from a little-endian identifier's bytes, or None when it holds
    anything but plain text values in a single-codec character set (then pydicom decodes).

    C-FIND answers are a dozen short text elements; building a pydicom Dataset for each
    cost more than the network round trip of the whole answer. One pass: elements come in
    ascending tag order, so Specific Character Set (0008,0005) precedes every value it
    governs; a data set that breaks that order goes to pydicom.
    """
    out: dict[str, str] = {}
    codec = "latin-1"
    specific_seen = False
    pos, end = 0, len(data)
    unpack = struct.unpack_from
    head = 4 if implicit else 6
    headers = _HEADERS
    while pos < end:
        if pos + 8 > end:
            return None
        key = bytes(data[pos : pos + head])
        info = headers.get(key) or _header_info(key)
        keyword, kind, long_length = info
        if implicit:
            (length,) = unpack("<L", data, pos + 4)
            start = pos + 8
        elif long_length:
            if pos + 12 > end:
                return None
            (length,) = unpack("<L", data, pos + 8)
            start = pos + 12
        else:
            (length,) = unpack("<H", data, pos + 6)
            start = pos + 8
        pos = start + length
        if length == 0xFFFFFFFF or pos > end:
            return None
        if key[:4] == b"\x08\x00\x05\x00":  # Specific Character Set
            charset = data[start:pos].decode("ascii", "replace").strip(" \x00")
            found = _CODECS.get(charset)
            if found is None or "\\" in charset or specific_seen:
                return None  # ISO 2022 extensions, unknown, or after the values it governs
            codec = found
        if kind == _SKIP:
            continue
        if kind is None:
            return None
        if not length:
            out[keyword] = ""
            continue
        if kind == _ASCII:
            text = data[start:pos].decode("ascii", "replace")
        else:
            specific_seen = True
            text = data[start:pos].decode(codec, "replace")
            if kind == _FREE:
                out[keyword] = text.rstrip(" \x00")
                continue
        if "\\" in text:
            out[keyword] = "\\".join([v.strip(" \x00") for v in text.split("\\")])
        else:
            out[keyword] = text.strip(" \x00")
    return out


def _open_find(peer: Peer) -> tuple[direct.DirectAssociation, _Query]:
    """A query association on our own socket reader (``lucent.net.direct``)."""
    contexts = [ul.PresentationContext(1, StudyRootQueryRetrieveInformationModelFind,
                                       list(UNCOMPRESSED))]  # fmt: skip
    assoc = _open_direct(peer, contexts)
    ts = assoc.accepted(1)
    if ts is None:
        assoc.release()
        raise _none_accepted(peer)
    return assoc, _Query(1, ts)


def _rejected(peer: Peer, reason: str) -> AssociationError:
    """``reason`` is ``lucent.net.direct``'s text: "permanent rejection: ..." for
    A-ASSOCIATE-RJ result 1, "transient rejection: ..." for result 2."""
    hint = ""
    if "called ae" in reason.lower():
        hint = f" — check the AE title '{peer.ae_title}' configured for this node"
    elif "calling ae" in reason.lower():
        hint = f" — the PACS does not know our AE title '{peer.calling_ae}'; register it there"
    return AssociationError(
        "rejected",
        f"association rejected by {peer.address}: {reason}{hint}",
        permanent=reason.startswith("permanent"),
    )


def _next_msg_id(assoc: Association) -> int:
    """A fresh Message ID per request on an association (needed to C-CANCEL it)."""
    n = int(getattr(assoc, "_lucent_msg_id", 0)) % 65535 + 1
    assoc._lucent_msg_id = n  # type: ignore[attr-defined]
    return n


def find_status_text(code: int) -> str:
    """Conformance 4.2.1.6 meanings."""
    if code == status.SUCCESS:
        return "Matching is complete"
    if code == status.PENDING:
        return "Matches are continuing"
    if code == status.PENDING_WARNING:
        return "Matches are continuing; one or more optional keys were not supported"
    if code == status.QR_CANCEL:
        return "Matching terminated due to Cancel request"
    if 0xA700 <= code <= 0xA7FF:
        return "Refused: Out of Resources"
    if code == 0xA900:
        return "Error: Identifier does not match SOP Class"
    if 0xC000 <= code <= 0xCFFF:
        return "Error: Unable to process"
    if code == status.NOT_AUTHORIZED:
        return "Refused: Not authorised"
    return "Failed"


#: Characters after which a name word starts (PS3.5 6.2.1 component/group delimiters and the
#: word breaks inside a component); a wildcard is none of them.
_NAME_SEPARATORS = frozenset("^= -'.")


def name_variants(pattern: str) -> list[str]:
    """Spellings to query a case-sensitive PACS with: as typed, UPPER, Title, lower.

    Title case starts a capital only at the start and after a name separator (PS3.5 6.2.1:
    ``^`` between components, ``=`` between groups; space, hyphen, apostrophe, period inside
    them), never after a wildcard inside a word: ``schm?dt*`` must become ``Schm?dt*``, not
    ``Schm?Dt*``, or a case-sensitive PACS never sees the spelling "Schmidt" (probe 37).
    """

    def title(text: str) -> str:
        out, up = [], True
        for ch in text:
            out.append(ch.upper() if up else ch.lower())
            if ch in _NAME_SEPARATORS:
                up = True
            elif ch != "*":  # '*' may be empty: a leading '*schmidt' still means 'Schmidt'
                up = False
        return "".join(out)

    variants: list[str] = []
    for v in (pattern, pattern.upper(), title(pattern), pattern.lower()):
        if v not in variants:
            variants.append(v)
    return variants


def _pn_match(pattern: str, value: str, fold: bool) -> bool:
    """DICOM wildcard matching of a PN value (``*``/``?``), optionally case-insensitive."""
    if fold:
        pattern, value = pattern.upper(), value.upper()
    pattern = pattern.replace("[", "[[]")
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern)


def find(
    peer: Peer,
    level: str,
    keys: Mapping[str, str],
    *,
    limit: int = 1024,
    case_insensitive: bool = False,
    cancel: threading.Event | None = None,
    known_case_sensitive: bool | None = None,
) -> FindResult:
    """C-FIND Study Root at STUDY, SERIES or IMAGE level (Conformance 4.2.1).

    At most ``limit`` results (4.2.1.4; we then send C-CANCEL). With ``case_insensitive`` and
    a Patient's Name containing letters, the name is also queried as UPPER, Title and lower
    case on the same association, the union is filtered locally ignoring case, and the
    result says whether the PACS matched case-sensitively (FAQ: "schmidt" vs "Schmidt") and
    so may hide spellings we did not try (e.g. "McDonald"). A plain search with letters in
    the name says so too unless the PACS is known (``known_case_sensitive`` False, or its
    answers show it) to match ignoring case.
    """
    start = time.perf_counter()
    level = level.upper()
    result = FindResult()
    try:
        identifier = build_query(level, keys)
    except (ValueError, TypeError) as exc:
        result.outcome, result.message = "failed", str(exc)
        return result
    try:
        assoc, query = _open_find(peer)
    except AssociationError as exc:
        result.outcome, result.message = "no-association", exc.message
        result.elapsed_ms = _ms(start)
        return result
    unique = UNIQUE_KEY[level]
    seen: dict[str, dict[str, str]] = {}
    try:
        name = str(keys.get("PatientName", "") or "")
        if not any(ch.isalpha() for ch in name):
            _find_on(assoc, query, identifier, limit, cancel, result, seen, unique)
        elif not case_insensitive:
            _find_on(assoc, query, identifier, limit, cancel, result, seen, unique)
            _judge_plain(name, known_case_sensitive, result)
        else:
            per_variant: dict[str, list[dict[str, str]]] = {}
            for variant in name_variants(name):
                identifier.PatientName = variant
                per_variant[variant] = _find_on(
                    assoc, query, identifier, limit, cancel, result, seen, unique, tag=variant
                )
                if not result.ok or result.outcome == "truncated":
                    break
            _judge_case(name, per_variant, result)
        usable = True
        if level == "STUDY" and result.ok:
            usable = _apply_modalities(assoc, query, keys, limit, cancel, result)
        if usable:
            assoc.release()
        else:
            assoc.abort()
    except _CancelUnconfirmed:
        assoc.abort()  # the outcome and message say what the cancel left
    except direct.DirectError as exc:
        assoc.abort()
        result.outcome = "failed"
        result.message = f"the C-FIND on {peer.address} ended: {exc.message}"
    result.elapsed_ms = _ms(start)
    return result


def wanted_modalities(keys: Mapping[str, str]) -> list[str]:
    """The Modalities in Study values a query asks for; [] when it asks for none (empty, or
    a universal ``*``)."""
    value = str(keys.get("ModalitiesInStudy") or "")
    wanted = [v.strip() for v in value.split("\\") if v.strip()]
    return [] if any(v == "*" for v in wanted) else wanted


def modalities_match(wanted: Sequence[str], modalities: Iterable[str]) -> bool:
    """PS3.4 C.2.2.2: a multi-valued attribute matches when one of its values matches one
    of the values asked for (single value matching, or ``*``/``?`` wildcard matching; CS
    values match case-sensitively)."""
    have = [m.strip() for m in modalities if m.strip()]
    for w in wanted:
        pattern = w.replace("[", "[[]")
        wild = "*" in w or "?" in w
        if any(fnmatch.fnmatchcase(m, pattern) if wild else m == w for m in have):
            return True
    return False


def _study_modalities(
    assoc: direct.DirectAssociation,
    query: _Query,
    study_uid: str,
    budget: int,
    cancel: threading.Event | None,
) -> tuple[list[str] | None, int, str]:
    """The modalities of one study from a SERIES level C-FIND (Modality of each series) on
    the query's association: (modalities or None when they could not be learnt, series
    rows received, why not)."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = ""
    identifier.Modality = ""
    sub = FindResult()
    _find_on(assoc, query, identifier, budget, cancel, sub, {}, "SeriesInstanceUID")
    if sub.outcome == "truncated":
        return None, len(sub.rows), f"its series answers reached the limit of {budget} results"
    if not sub.ok:
        return None, len(sub.rows), sub.message or f"the SERIES level query ended {sub.outcome}"
    found = [r.get("Modality", "").strip() for r in sub.rows]
    mods = list(dict.fromkeys(m for v in found for m in v.split("\\") if m.strip()))
    if not mods:
        return None, len(sub.rows), "its SERIES level answers named no Modality"
    return mods, len(sub.rows), ""


def _apply_modalities(
    assoc: direct.DirectAssociation,
    query: _Query,
    keys: Mapping[str, str],
    limit: int,
    cancel: threading.Event | None,
    result: FindResult,
) -> bool:
    """Apply a Modalities in Study key the PACS left unapplied (Conformance 4.2.1.4).

    A PACS that does not support (0008,0061) ignores it as a matching key and answers every
    study without it (DCMTK dcmqrscp: 13 studies, CT ones included, for "MR"; probe 56).
    For each such answer the study's modalities come from a SERIES level C-FIND on the same
    association, fill ModalitiesInStudy, and a study that does not match is left out. The
    follow-up reads at most ``limit`` series in all; what it cannot learn (the PACS refuses
    the SERIES level, the limit, a timeout) stays in the result, and its message says that
    this PACS did not apply the filter to them. An answer that carries the attribute but
    does not match either is left out too: the PACS returned the key without matching it.
    False when the association broke on the follow-up (abort it, do not release it).
    """
    wanted = wanted_modalities(keys)
    if not wanted:
        return True
    usable = True
    kept: list[dict[str, str]] = []
    unknown = 0
    dropped = 0
    queried = 0
    budget = limit
    why = ""
    for row in result.rows:
        have = row.get("ModalitiesInStudy", "")
        if have:
            if modalities_match(wanted, have.split("\\")):
                kept.append(row)
            else:
                dropped += 1
            continue
        mods: list[str] | None = None
        uid = row.get("StudyInstanceUID", "")
        if why:
            pass  # the follow-up stopped: the rest stay as answered
        elif cancel is not None and cancel.is_set():
            why = "the query was cancelled"
        elif not uid:
            why = "an answer had no Study Instance UID"
        elif budget <= 0:
            why = f"the SERIES level answers reached the limit of {limit} results"
        else:
            queried += 1
            try:
                mods, got, problem = _study_modalities(assoc, query, uid, budget, cancel)
            except direct.DirectError as exc:  # a timeout, an abort: the rest stay as is
                usable = False
                mods, got, problem = None, 0, f"the SERIES level C-FIND ended: {exc.message}"
            budget -= got
            if mods is None:
                why = problem
        if mods is None:
            unknown += 1
            kept.append(row)
            continue
        row["ModalitiesInStudy"] = "\\".join(mods)
        if modalities_match(wanted, mods):
            kept.append(row)
        else:
            dropped += 1
    result.rows = kept
    notes = []
    if queried:
        notes.append(
            f"this PACS did not answer Modalities in Study (0008,0061): the modalities of "
            f"{queried} stud{'y' if queried == 1 else 'ies'} were read from their series "
            "(SERIES level C-FIND)"
        )
    if dropped:
        asked = "\\".join(wanted)
        notes.append(f"{dropped} of its answers left out: their modalities do not match '{asked}'")
    if unknown:
        notes.append(
            f"WARNING: this PACS did not apply the Modalities in Study filter to {unknown} "
            f"stud{'y' if unknown == 1 else 'ies'} ({why}): they are listed without "
            "checking their modalities and may not match"
        )
    if notes:
        text = "; ".join(notes)
        result.message = f"{result.message}; {text}" if result.message else text
    return usable


def _judge_plain(typed: str, known: bool | None, result: FindResult) -> None:
    """A case-sensitive search with letters in the name: matches written with another
    capitalisation may be hidden unless the PACS matches ignoring case (probe 37: on
    dcmqrscp 'schmidt*' found 1 of 4 and said nothing)."""
    if any(not _pn_match(typed, r.get("PatientName", ""), False) for r in result.rows):
        known = False  # it answered other capitalisations: it ignores case
    result.case_sensitive = known
    if known is False:
        result.hidden_matches_possible = False
        result.case_note = ""
        return
    result.hidden_matches_possible = True
    how = (
        "this PACS matches names case-sensitively"
        if known
        else "this PACS may match names case-sensitively"
    )
    result.case_note = (
        f"{how}: only '{typed}' as written was searched; names written with other "
        "capitalisation may be hidden: use the case-insensitive search to find them"
    )


def _judge_case(
    typed: str, per_variant: Mapping[str, list[dict[str, str]]], result: FindResult
) -> None:
    """Filter the union case-insensitively and say whether matches may be hidden."""
    result.rows = [r for r in result.rows if _pn_match(typed, r.get("PatientName", ""), True)]
    for r in result.rows:
        r.pop("_variant", None)
    insensitive = any(
        not _pn_match(variant, row.get("PatientName", ""), False)
        for variant, rows in per_variant.items()
        for row in rows
    )
    found_sets = [frozenset(id(r) for r in rows) for rows in per_variant.values()]
    differs = len({len(s) for s in found_sets}) > 1 or (
        len(found_sets) > 1 and any(s != found_sets[0] for s in found_sets)
    )
    tried = ", ".join(f"'{v}'" for v in per_variant)
    if insensitive:
        result.case_sensitive = False
        result.hidden_matches_possible = False
        result.case_note = ""
    elif differs:
        result.case_sensitive = True
        result.hidden_matches_possible = True
        result.case_note = (
            f"this PACS matches names case-sensitively; searched {tried}: names written "
            "with other capitalisation (e.g. 'McDonald') may be hidden"
        )
    else:
        result.case_sensitive = None
        result.hidden_matches_possible = True
        result.case_note = (
            f"could not tell whether this PACS matches names case-sensitively; searched "
            f"{tried}: names written with other capitalisation may be hidden"
        )


# --------------------------------------------------------------------------- C-MOVE


#: Conformance 4.2.2.6: statuses after which the retrieve is tried again.
def move_should_retry(code: int | None) -> bool:
    if code is None:  # connection failure or abort
        return True
    return (
        code in (0xA701, 0xA702, 0xA801, 0xA900, status.QR_CANCEL, status.QR_SUBOPS_WARNING)
        or 0xC000 <= code <= 0xCFFF
        or 0xA700 <= code <= 0xA7FF
    )


def move_status_text(code: int | None) -> str:
    """Conformance 4.2.2.6 meanings."""
    table = {
        0x0000: "Sub-operations complete - no failures",
        0xA701: "Refused: Out of resources - unable to calculate number of matches",
        0xA702: "Refused: Out of resources - unable to perform sub-operations",
        0xA801: "Refused: Move destination unknown",
        0xA900: "Failed: Identifier does not match SOP class",
        0xFE00: "Sub-operations terminated due to Cancel indication",
        0xB000: "Warning: Sub-operations complete - one or more failures",
        0xFF00: "Sub-operations are continuing",
    }
    if code is None:
        return "no response (connection failed or aborted)"
    if code in table:
        return table[code]
    if 0xC000 <= code <= 0xCFFF:
        return "Failed: Unable to process"
    if 0xA700 <= code <= 0xA7FF:
        return "Refused: Out of resources"
    return "Failed"


@dataclass
class MoveProgress:
    """Sub-operation counters from pending responses (0000,1020..1023)."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0

    @property
    def total(self) -> int | None:
        if self.remaining is None:
            return None
        return self.remaining + self.completed + self.failed + self.warning

    @property
    def fraction(self) -> float:
        total = self.total
        if not total:
            return 0.0
        return (self.completed + self.failed + self.warning) / total


@dataclass
class MoveResult:
    status: int | None
    message: str
    progress: MoveProgress = field(default_factory=MoveProgress)
    attempts: int = 1
    cancelled: bool = False
    failed_sop_instances: list[str] = field(default_factory=list)
    #: no association, and another attempt cannot get one (a permanent rejection)
    permanent: bool = False
    #: we sent C-CANCEL and the PACS gave no final response within CANCEL_GRACE_S: aborted
    cancel_unconfirmed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == status.SUCCESS


#: Digits and dots, no empty component. Leading zeros are tolerated: some PACS hold such
#: (non-conformant) UIDs, and what their C-FIND returned must be retrievable.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _move_uids(name: str, value: str) -> str:
    """One UID or a list of them (PS3.4 C.4.2.2.1: unique keys, no wildcards, no empty value).

    An empty or wildcard unique key would be universal matching: a PACS such as dcmqrscp
    then moves everything it holds into our pool.
    """
    value = value.strip()
    if not value:
        raise ValueError(
            f"a retrieve needs the {name}: an empty one would match everything on the PACS"
        )
    for uid in value.split("\\"):
        uid = uid.strip()
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise ValueError(
                f"{name} '{uid[:80]}' is not a valid UID (digits and dots, at most 64 "
                "characters; no wildcards in a retrieve)"
            )
    return value


def move_identifier(study_uid: str, series_uid: str = "", sop_instance_uid: str = "") -> Dataset:
    """Study Root C-MOVE identifier at the deepest level given (4.2.2.4; IMAGE as well)."""
    ds = Dataset()
    ds.StudyInstanceUID = _move_uids("Study Instance UID", study_uid)
    ds.QueryRetrieveLevel = "STUDY"
    if series_uid:
        ds.QueryRetrieveLevel = "SERIES"
        ds.SeriesInstanceUID = _move_uids("Series Instance UID", series_uid)
    if sop_instance_uid:
        if not series_uid:
            raise ValueError("an IMAGE level retrieve needs the Series Instance UID too")
        ds.QueryRetrieveLevel = "IMAGE"
        ds.SOPInstanceUID = _move_uids("SOP Instance UID", sop_instance_uid)
    return ds


def _counts(rsp: Dataset, progress: MoveProgress) -> None:
    if "NumberOfRemainingSuboperations" in rsp:
        progress.remaining = int(rsp.NumberOfRemainingSuboperations)
    for kw, attr in (
        ("NumberOfCompletedSuboperations", "completed"),
        ("NumberOfFailedSuboperations", "failed"),
        ("NumberOfWarningSuboperations", "warning"),
    ):
        if kw in rsp and rsp[kw].value is not None:
            setattr(progress, attr, int(rsp[kw].value))


def move(
    peer: Peer,
    identifier: Dataset,
    destination: str,
    *,
    on_progress: Callable[[MoveProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> MoveResult:
    """One C-MOVE attempt; a set ``cancel`` sends C-CANCEL (Conformance 4.2.2)."""
    progress = MoveProgress()
    try:
        assoc = associate(
            peer, [build_context(StudyRootQueryRetrieveInformationModelMove, list(UNCOMPRESSED))]
        )
    except AssociationError as exc:
        return MoveResult(None, exc.message, progress, permanent=exc.permanent)
    final: Dataset | None = None
    last_identifier: Dataset | None = None
    watch: _CancelWatch | None = None
    try:
        msg_id = _next_msg_id(assoc)
        # pynetdicom sends the C-MOVE-RQ here already (its responses come from a wrapper
        # generator), so the watcher's C-CANCEL can only follow it.
        responses = assoc.send_c_move(
            identifier, destination, StudyRootQueryRetrieveInformationModelMove, msg_id=msg_id
        )
        pump = _ResponsePump(responses)
        watch = _CancelWatch(
            cancel,
            lambda: assoc.send_c_cancel(
                msg_id, query_model=StudyRootQueryRetrieveInformationModelMove
            ),
            abandon=lambda: _abandon_pynetdicom(assoc, pump),
        )
        for rsp, rsp_identifier in pump:
            if watch.abandoned:  # a hung PACS: aborted after the grace, not the DIMSE timeout
                return MoveResult(
                    None, _unconfirmed(watch.grace), progress, cancelled=True,
                    cancel_unconfirmed=True,
                )  # fmt: skip
            if rsp is None or "Status" not in rsp:
                return MoveResult(
                    None, "association aborted or C-MOVE response timed out", progress
                )
            _counts(rsp, progress)
            code = int(rsp.Status)
            if code == status.PENDING or code == status.PENDING_WARNING:
                if on_progress is not None:
                    on_progress(progress)
                if cancel is not None and cancel.is_set():
                    watch.fire()  # the watcher's C-CANCEL, unless it went out already
                continue
            watch.stop()  # the final response: nothing to abort from here on
            final = rsp
            last_identifier = rsp_identifier
            break
    finally:
        if watch is not None:
            watch.stop()
        if watch is None or not watch.abandoned:  # aborted: nothing to release
            _release(assoc)
    cancel_sent = watch is not None and watch.sent
    if final is None:
        return MoveResult(None, "the C-MOVE ended without a final status", progress)
    code = int(final.Status)
    if "NumberOfRemainingSuboperations" not in final:
        progress.remaining = 0  # final responses may omit it (PS3.4 C.4.2.1.6)
    if on_progress is not None:
        on_progress(progress)
    failed_uids: list[str] = []
    if last_identifier is not None and "FailedSOPInstanceUIDList" in last_identifier:
        value = last_identifier.FailedSOPInstanceUIDList
        failed_uids = [str(v) for v in (value if isinstance(value, list | tuple) else [value]) if v]
    comment = str(final.get("ErrorComment", "") or "")
    message = f"{move_status_text(code)} (0x{code:04X})" + (f": {comment}" if comment else "")
    if code == status.QR_CANCEL and cancel_sent:
        message = "cancelled on request (C-CANCEL); the PACS stopped the sub-operations"
    return MoveResult(
        code, message, progress, cancelled=cancel_sent, failed_sop_instances=failed_uids
    )


def move_with_retries(
    peer: Peer,
    identifier: Dataset,
    destination: str,
    *,
    retries: int = 3,
    backoff: float = 2.0,
    max_backoff: float = 60.0,
    on_progress: Callable[[MoveProgress], None] | None = None,
    on_retry: Callable[[int, MoveResult, float], None] | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], Any] | None = None,
    final_reason: Callable[[MoveResult], str | None] | None = None,
    on_attempt: Callable[[int], None] | None = None,
) -> MoveResult:
    """C-MOVE with the retries of Conformance 4.2.2.6 (A701, A702, A801, A900, Cxxx, FE00,
    B000 and connection failures), exponential backoff, at most ``retries`` extra attempts.

    A cancel we asked for is final; an FE00 the PACS sends on its own is retried. A
    permanent association rejection (A-ASSOCIATE-RJ result 1, e.g. a wrong called AE
    title) is final too: three more attempts only made the user wait ~14 s for the same
    answer. A transient one (result 2) is retried like a connection failure.
    ``final_reason``: the caller's reason why another attempt cannot help (e.g. our own
    Store SCP refused instances as non-conformant), appended to the message; None: retry.
    ``on_attempt``: called with the attempt number before each attempt's association, so a
    job can say which attempt runs (the PACS's counters start from zero on each one).
    """
    wait = sleep or (lambda s: cancel.wait(s) if cancel is not None else time.sleep(s))
    attempt = 0
    while True:
        attempt += 1
        if on_attempt is not None:
            on_attempt(attempt)
        result = move(peer, identifier, destination, on_progress=on_progress, cancel=cancel)
        result.attempts = attempt
        if result.ok or result.cancelled or (cancel is not None and cancel.is_set()):
            if cancel is not None and cancel.is_set():
                result.cancelled = True
            return result
        if result.permanent:
            result.message += " (a permanent rejection: not retried)"
            return result
        if attempt > retries or not move_should_retry(result.status):
            return result
        reason = final_reason(result) if final_reason is not None else None
        if reason:
            result.message += f"; {reason}: not retried"
            return result
        delay = min(max_backoff, backoff * (2 ** (attempt - 1)))
        log.warning(
            "C-MOVE from %s: %s; retry %d/%d in %.1f s",
            peer.address, result.message, attempt, retries, delay,
        )  # fmt: skip
        if on_retry is not None:
            on_retry(attempt, result, delay)
        wait(delay)
        if cancel is not None and cancel.is_set():
            result.cancelled = True
            return result


# --------------------------------------------------------------------------- C-STORE


@dataclass(frozen=True)
class Outgoing:
    """One instance to send: Part-10 bytes (read lazily) plus what the contexts need."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    load: Callable[[], bytes]


@dataclass
class StoreOutcome:
    sop_instance_uid: str
    sop_class_uid: str
    status: int | None
    message: str = ""
    sent_transfer_syntax: str = ""
    transcoded: bool = False
    permanent: bool = False
    """Failed here, not on the wire (the peer took no context for the class, the data could
    not be read or transcoded): another attempt fails the same way."""
    attempted: bool = True
    """False: never sent, the association was lost on an instance before it ("not
    attempted: association lost after ...") or none was opened; another may take it."""

    @property
    def ok(self) -> bool:
        return self.status is not None and (
            self.status == status.SUCCESS or 0xB000 <= self.status <= 0xBFFF
        )


def store_contexts(
    items: Iterable[Outgoing], compressed: bool = False
) -> list[PresentationContext]:
    """Presentation contexts for a send (Conformance 4.2.4.2 / 4.2.4.4; PS3.8 9.3.2.2).

    By default one context per SOP class with the uncompressed syntaxes. With ``compressed``
    (a node's ``propose_compressed``), in this order of priority:

    1. the uncompressed context of every SOP class;
    2. one context per (SOP class, stored syntax that is not uncompressed), so data stored
       compressed travels as is;
    3. per SOP class, one context with the lossless syntaxes we can transcode to
       (``transcode.LOSSLESS_TARGETS``: Deflated, RLE, JPEG-LS, JPEG 2000 lossless and JPEG
       Lossless SV1 / Process 14) for
       a peer that accepts none of the above. Lossy syntaxes are proposed only for data
       stored in them (never a transcoding target: an outside tester's peer that took only
       Deflated, JPEG-LS or JPEG 2000 lossless "accepted none of the proposed contexts").

    At most 128 contexts per association (PS3.8): what does not fit of 2 and 3 is left
    out (those instances go uncompressed); more SOP classes than 128 is a ValueError.
    """
    by_class: dict[str, set[str]] = {}
    for it in items:
        by_class.setdefault(it.sop_class_uid, set()).add(it.transfer_syntax_uid)
    contexts: list[PresentationContext] = [
        build_context(cls, list(UNCOMPRESSED)) for cls in by_class
    ]
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(
            f"{len(by_class)} SOP classes need {len(contexts)} presentation contexts; "
            "DICOM allows 128 per association: split the send"
        )
    if not compressed:
        return contexts
    extra: list[PresentationContext] = []
    for cls, syntaxes in by_class.items():
        extra += [build_context(cls, [ts]) for ts in sorted(syntaxes - set(UNCOMPRESSED))]
    for cls, syntaxes in by_class.items():
        targets = [ts for ts in transcode.LOSSLESS_TARGETS if ts not in syntaxes]
        if targets:
            extra.append(build_context(cls, targets))
    room = MAX_CONTEXTS - len(contexts)
    if len(extra) > room:
        log.warning(
            "send: %d compressed presentation contexts do not fit in 128; %d left out "
            "(their instances go uncompressed)",
            len(extra), len(extra) - room,
        )  # fmt: skip
    return contexts + extra[:room]


@dataclass(frozen=True)
class _StoreContexts:
    """What the peer accepted for a send: syntaxes per SOP class, context per (class, syntax)."""

    by_class: dict[str, set[str]]
    context_for: dict[tuple[str, str], int]

    @classmethod
    def of(
        cls, assoc: direct.DirectAssociation, proposed: Sequence[ul.PresentationContext]
    ) -> _StoreContexts:
        by_class: dict[str, set[str]] = {}
        context_for: dict[tuple[str, str], int] = {}
        for cx in proposed:
            ts = assoc.accepted(cx.id)
            if ts is None:
                continue
            by_class.setdefault(cx.abstract_syntax, set()).add(ts)
            context_for.setdefault((cx.abstract_syntax, ts), cx.id)
        return cls(by_class, context_for)


def _prepare(
    item: Outgoing, raw: bytes, accepted: set[str]
) -> tuple[Dataset | None, str, bool, str]:
    """Pick the syntax to send in and transcode when the peer accepts only another one.

    Returns (dataset, syntax, transcoded, error). The rules live in
    :func:`lucent.dicom.transcode.prepare`, shared with the Query/Retrieve SCP.
    """
    ds = dcmread(io.BytesIO(raw))
    done = transcode.prepare(ds, item.transfer_syntax_uid, accepted, item.sop_class_uid)
    return done.dataset, done.syntax, done.transcoded, done.error


def _encode(ds: Dataset, syntax: str) -> bytes | None:
    """The data set (without file meta) in ``syntax``, as pynetdicom's send_c_store encoded
    it (Deflated: the explicit little endian bytes, deflated)."""
    uid = UID(syntax)
    return dsutils.encode(ds, uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)


def _request_direct(peer: Peer, contexts: list[ul.PresentationContext]) -> direct.DirectAssociation:
    """An association on our own socket (``lucent.net.direct``), plain or TLS; raises
    DirectError (or AssociationError for a TLS set-up problem)."""
    return direct.DirectAssociation.request(
        peer.host,
        peer.port,
        called_ae=peer.ae_title,
        calling_ae=peer.calling_ae,
        contexts=contexts,
        max_pdu=peer.max_pdu,
        implementation_class_uid=peer.implementation_class_uid or ul.IMPLEMENTATION_CLASS_UID,
        implementation_version=peer.implementation_version_name or ul.IMPLEMENTATION_VERSION,
        connect_timeout=peer.timeout,
        network_timeout=peer.dimse_timeout,
        tls_context=_tls_context(peer) if peer.tls else None,
    )


def _open_direct(peer: Peer, contexts: list[ul.PresentationContext]) -> direct.DirectAssociation:
    """An association on our own socket, or AssociationError with the reason (rejection
    text, or a fresh connect diagnosis)."""
    try:
        return _request_direct(peer, contexts)
    except direct.DirectError as exc:
        if exc.kind == "rejected":
            raise _rejected(peer, exc.message) from exc
        if exc.kind == "timeout":  # no TCP connection in time; a probe would wait again
            raise AssociationError(
                "timeout",
                f"no answer from {peer.address} within {peer.timeout:g} s "
                "(host down, firewall, or wrong address)",
            ) from exc
        if exc.kind == "silent":
            raise _silent(peer) from exc
        raise _diagnose_connect(peer) from exc


def _silent(peer: Peer) -> AssociationError:
    """TCP connected, then no A-ASSOCIATE answer in time (the probe told this apart from a
    host that is down: it said "host down, firewall" for a port that took the connection)."""
    tls_hint = "" if peer.tls else ", or one that expects TLS while this node has TLS off"
    return AssociationError(
        "timeout",
        f"{peer.address} accepts TCP connections but did not answer the association request "
        f"within {peer.timeout:g} s (a port that is not DICOM{tls_hint}?)",
    )


def _none_accepted(
    peer: Peer,
    assoc: direct.DirectAssociation,
    proposed: Sequence[ul.PresentationContext],
    compressed: bool,
) -> AssociationError:
    """Why the peer took none of the contexts, from its per-context results (PS3.8 9.3.3.2):
    a compressed-only peer answered "transfer syntaxes not supported" to a send that
    proposed only the uncompressed ones, and the reason said "SOP class / transfer syntax
    not supported there" without naming the way out (outside probe 26)."""
    classes = sorted({UID(cx.abstract_syntax).name for cx in proposed})
    names = ", ".join(classes[:3]) + (f" and {len(classes) - 3} more" if len(classes) > 3 else "")
    results = {assoc.accept.contexts.get(cx.id, (None, ""))[0] for cx in proposed}
    if results == {ul.ABSTRACT_NOT_SUPPORTED}:
        return AssociationError(
            "rejected",
            f"{peer.address} accepted none of the proposed presentation contexts: "
            f"it does not support {names} (abstract syntax not supported)",
            no_context=True,
        )
    if not compressed:
        syntaxes = ", ".join(UID(ts).name for ts in UNCOMPRESSED)
        return AssociationError(
            "rejected",
            f"{peer.address} accepted none of the uncompressed transfer syntaxes proposed "
            f"({syntaxes}) for {names}: it may take compressed data only",
            no_context=True,
            uncompressed_refused=True,
        )
    return AssociationError(
        "rejected",
        f"{peer.address} accepted none of the proposed presentation contexts for {names} "
        "(SOP class / transfer syntax not supported there)",
        no_context=True,
    )


#: Instances read (and decrypted) ahead of the one being sent: one hides a read behind a
#: send; more would only hold more (possibly very large) instances in memory per lane.
PREFETCH = 1


def _prefetched(
    items: Sequence[Outgoing], wanted: Callable[[Outgoing], bool]
) -> Iterator[tuple[Outgoing, bytes | Exception | None]]:
    """``items`` with their bytes, read by one helper thread up to PREFETCH ahead.

    Reading the next instance (a file read, which releases the GIL, and its decryption)
    overlaps with sending this one. A load that fails yields its exception; an item that is
    not ``wanted`` (the peer takes no context for it) yields None and is never read. When
    the caller stops early, what was queued is dropped and at most one read is waited for.
    """
    pending: deque[tuple[Outgoing, Future[bytes] | None]] = deque()
    pool = ThreadPoolExecutor(1, thread_name_prefix="store-read")
    source = iter(items)

    def queue_next() -> None:
        for item in source:
            pending.append((item, pool.submit(item.load) if wanted(item) else None))
            return

    try:
        for _ in range(max(PREFETCH, 1)):
            queue_next()
        while pending:
            item, future = pending.popleft()
            queue_next()
            got: bytes | Exception | None = None
            if future is not None:
                try:
                    got = future.result()
                except Exception as exc:  # noqa: BLE001 - an unreadable object: per instance
                    got = exc
            yield item, got
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def store(
    peer: Peer,
    items: Sequence[Outgoing],
    *,
    compressed: bool = False,
    on_result: Callable[[StoreOutcome], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[StoreOutcome]:
    """C-STORE SCU: send ``items`` on one association (Conformance 4.2.4).

    Raises AssociationError when no association could be opened; per-instance failures are
    values in the returned list (and passed to ``on_result`` as they happen). When the
    association is lost (a C-STORE response timeout, an A-ABORT), every instance after the
    one it was lost on is returned too, not attempted (``attempted`` False), so each item
    has a result unless the send was cancelled. Runs on our
    own socket (``lucent.net.direct``, TLS too): archived bytes go out as they are stored,
    and the next instances are read while this one is on the wire.
    """
    if not items:
        return []
    proposed = [
        ul.PresentationContext(
            2 * i + 1, str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax]
        )
        for i, cx in enumerate(store_contexts(items, compressed))
    ]
    assoc = _open_direct(peer, proposed)
    accepted = _StoreContexts.of(assoc, proposed)
    if not accepted.context_for:
        assoc.release()
        raise _none_accepted(peer, assoc, proposed, compressed)
    outcomes: list[StoreOutcome] = []
    lost = False  # the association broke under an instance (not a cancel, not the end)
    reads = _prefetched(items, lambda it: it.sop_class_uid in accepted.by_class)
    try:
        for item, raw in reads:
            if cancel is not None and cancel.is_set():
                break
            outcome = _store_one(assoc, item, raw, accepted)
            outcomes.append(outcome)
            if on_result is not None:
                on_result(outcome)
            if not assoc.is_open:
                lost = True
                break
    finally:
        reads.close()  # stop reading ahead now, not when the generator is collected
        if assoc.is_open:
            assoc.release()
        else:
            assoc.abort()
    if lost and len(outcomes) < len(items):
        # The peer stopped answering (C-STORE response timeout, A-ABORT): what came after
        # the stuck instance has a result too, or a finished send listed 2 of 6 instances
        # and its progress stayed at 0.33 (outside probe 26).
        why = outcomes[-1].message if outcomes else "the association closed"
        done = len(outcomes)
        for item in items[done:]:
            skipped = StoreOutcome(
                item.sop_instance_uid, item.sop_class_uid, None,
                f"not attempted: association lost after {done} of {len(items)} "
                f"instance(s) ({why})",
                attempted=False,
            )  # fmt: skip
            outcomes.append(skipped)
            if on_result is not None:
                on_result(skipped)
    return outcomes


def _store_one(
    assoc: direct.DirectAssociation,
    item: Outgoing,
    raw: bytes | Exception | None,
    accepted: _StoreContexts,
) -> StoreOutcome:
    syntaxes = accepted.by_class.get(item.sop_class_uid, set())
    if not syntaxes or raw is None:
        name = UID(item.sop_class_uid).name
        return StoreOutcome(
            item.sop_instance_uid,
            item.sop_class_uid,
            None,
            f"the peer accepted no presentation context for {name} ({item.sop_class_uid})",
            permanent=True,
        )
    if isinstance(raw, Exception):
        return StoreOutcome(
            item.sop_instance_uid, item.sop_class_uid, None, f"cannot read: {raw}", permanent=True
        )
    syntax, transcoded = item.transfer_syntax_uid, False
    offset = _dataset_offset(raw) if syntax in syntaxes else None
    payload: bytes | memoryview
    if offset is not None:
        payload = memoryview(raw)[offset:]  # as archived: no decode, no re-encode
    else:
        try:
            ds, syntax, transcoded, error = _prepare(item, raw, syntaxes)
        except Exception as exc:  # noqa: BLE001 - unreadable archive object
            return StoreOutcome(
                item.sop_instance_uid, item.sop_class_uid, None, f"cannot read: {exc}",
                permanent=True,
            )  # fmt: skip
        if ds is None:
            return StoreOutcome(
                item.sop_instance_uid, item.sop_class_uid, None, error, permanent=True
            )
        encoded = _encode(ds, syntax)
        if encoded is None:
            return StoreOutcome(
                item.sop_instance_uid, item.sop_class_uid, None,
                f"cannot encode the data set in {syntax}", syntax, transcoded, permanent=True,
            )  # fmt: skip
        payload = encoded
    context_id = accepted.context_for[(item.sop_class_uid, syntax)]
    try:
        answer = assoc.c_store(
            context_id, item.sop_class_uid, item.sop_instance_uid, payload,
            assoc.next_message_id(),
        )  # fmt: skip
    except direct.DirectError as exc:
        return StoreOutcome(
            item.sop_instance_uid, item.sop_class_uid, None,
            f"no C-STORE response ({exc.message})", syntax, transcoded,
        )  # fmt: skip
    # PS3.4 B.2.3: the meaning of a status that is not success, with the peer's Error
    # Comment when it sent one (most send none: the reason was empty, outside probe 26)
    text = answer.comment
    if answer.status != status.SUCCESS:
        text = status.describe(answer.status, answer.comment)
    return StoreOutcome(
        item.sop_instance_uid, item.sop_class_uid, answer.status, text, syntax, transcoded
    )


def _dataset_offset(raw: bytes) -> int | None:
    """Where the data set starts after a Part-10 header with a group length, else None."""
    if len(raw) < 144 or raw[128:132] != b"DICM" or raw[132:136] != b"\x02\x00\x00\x00":
        return None
    if raw[136:138] != b"UL":
        return None
    return 144 + int.from_bytes(raw[140:144], "little")


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), max(1, size)):
        yield items[i : i + size]
