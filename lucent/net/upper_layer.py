"""The few DICOM Upper Layer PDUs and DIMSE commands our fast paths need (PS3.8, PS3.7).

Pure encoding/decoding, no sockets. The Store SCP's fast path uses it for associations that
only carry Verification and Storage (everything else goes to pynetdicom), and the C-FIND SCU
(``lucent.net.direct``) for its side of an association. Field layouts: PS3.8 9.3 (PDUs and
items), PS3.7 9.3.1 (C-STORE), 9.1.2 (C-FIND), 9.3.5 (C-ECHO), E.1 (command encoding).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from lucent.net.status import error_comment as _comment_text

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
#: Our Implementation Class UID and Version Name (PS3.7 D.3.3.2), the defaults of [dimse].
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1455.1.0.1"
IMPLEMENTATION_VERSION = "LUCENT_010"

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07

# Presentation context results (PS3.8 9.3.3.2).
ACCEPTANCE, ABSTRACT_NOT_SUPPORTED, TRANSFER_NOT_SUPPORTED = 0, 3, 4


class ProtocolError(ValueError):
    """The peer sent something the standard does not allow; the association is aborted, or
    rejected with ``rejection`` (result, source, reason of PS3.8 Table 9-21) where the
    standard names one."""

    def __init__(self, message: str, rejection: tuple[int, int, int] | None = None) -> None:
        super().__init__(message)
        self.rejection = rejection


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\0 ").decode("ascii", "replace")


@dataclass
class PresentationContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass
class AssociateRequest:
    called_ae: str
    calling_ae: str
    contexts: list[PresentationContext]
    max_pdu: int = 0  # 0 = unlimited (PS3.8 D.1)
    implementation_class_uid: str = ""
    implementation_version: str = ""
    # User information sub-items other than max length / implementation / async window:
    # role selection, extended negotiation, user identity. Their presence sends the
    # association to the full implementation.
    other_user_items: list[int] = field(default_factory=list)
    # The two 16-byte AE title fields as received: the A-ASSOCIATE-AC returns them
    # identical (PS3.8 9.3.3), leading spaces and all.
    raw_titles: bytes = b""
    # SOP classes for which the requestor proposes to be the SCP only (role selection,
    # PS3.7 D.3.3.4): the storage contexts of a C-GET, on which we would send, not receive.
    scp_role_classes: set[str] = field(default_factory=set)


def parse_associate_rq(pdu: bytes) -> AssociateRequest:
    """Decode an A-ASSOCIATE-RQ PDU (including its 6-byte header)."""
    if len(pdu) < 74 or pdu[0] != A_ASSOCIATE_RQ:
        raise ProtocolError("not an A-ASSOCIATE-RQ")
    (version,) = struct.unpack(">H", pdu[6:8])
    if not version & 1:
        # rejected-permanent, service-provider (ACSE), protocol-version-not-supported
        raise ProtocolError(f"protocol version {version} not supported", (1, 2, 2))
    req = AssociateRequest(
        called_ae=pdu[10:26].decode("ascii", "replace").strip(),
        calling_ae=pdu[26:42].decode("ascii", "replace").strip(),
        contexts=[],
        raw_titles=bytes(pdu[10:42]),
    )
    pos, end = 74, len(pdu)
    while pos + 4 <= end:
        item_type = pdu[pos]
        (length,) = struct.unpack(">H", pdu[pos + 2 : pos + 4])
        body = pdu[pos + 4 : pos + 4 + length]
        if len(body) != length:
            raise ProtocolError("item runs past the end of the PDU")
        if item_type == 0x10:
            if _uid(body) != APPLICATION_CONTEXT:
                # rejected-permanent, service-user, application-context-name-not-supported
                raise ProtocolError(f"application context {_uid(body)} not supported", (1, 1, 2))
        elif item_type == 0x20:
            req.contexts.append(_parse_context(body))
        elif item_type == 0x50:
            _parse_user_info(body, req)
        pos += 4 + length
    for ctx in req.contexts:  # PS3.8 9.3.2.2: odd IDs, one abstract and 1+ transfer syntaxes
        if not ctx.id % 2 or not ctx.abstract_syntax or not ctx.transfer_syntaxes:
            raise ProtocolError(
                f"presentation context {ctx.id} is malformed (an even ID, or no abstract or "
                "transfer syntax)"
            )
    return req


def _parse_context(body: bytes) -> PresentationContext:
    ctx = PresentationContext(id=body[0], abstract_syntax="", transfer_syntaxes=[])
    pos = 4
    while pos + 4 <= len(body):
        sub = body[pos]
        (length,) = struct.unpack(">H", body[pos + 2 : pos + 4])
        value = _uid(body[pos + 4 : pos + 4 + length])
        if sub == 0x30:
            ctx.abstract_syntax = value
        elif sub == 0x40:
            ctx.transfer_syntaxes.append(value)
        pos += 4 + length
    return ctx


def _parse_user_info(body: bytes, req: AssociateRequest) -> None:
    pos = 0
    while pos + 4 <= len(body):
        sub = body[pos]
        (length,) = struct.unpack(">H", body[pos + 2 : pos + 4])
        value = body[pos + 4 : pos + 4 + length]
        if sub == 0x51 and length == 4:
            (req.max_pdu,) = struct.unpack(">L", value)
        elif sub == 0x52:
            req.implementation_class_uid = _uid(value)
        elif sub == 0x55:
            req.implementation_version = value.decode("ascii", "replace").strip()
        elif sub == 0x58 and (length < 1 or value[0] not in (1, 2, 3, 4, 5)):
            # PS3.7 D.3.3.7.1 defines types 1-5; pynetdicom, handed such a request, stayed
            # silent until the ACSE timeout (outside probe 23): an invalid parameter value
            raise ProtocolError(f"user identity type {value[:1].hex() or 'missing'} undefined")
        elif sub != 0x53:  # 0x53 async window: we answer nothing = one operation at a time
            req.other_user_items.append(sub)
            if sub == 0x54 and length >= 2:
                (uid_length,) = struct.unpack(">H", value[:2])
                roles = value[2 + uid_length : 4 + uid_length]
                # the requestor will only be the SCP (SCU-role 0, SCP-role 1); with both
                # roles it may still store towards us (PS3.7 D.3.3.4)
                if len(roles) == 2 and roles[0] == 0 and roles[1] == 1:
                    req.scp_role_classes.add(_uid(value[2 : 2 + uid_length]))
        pos += 4 + length


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def associate_ac(
    req: AssociateRequest,
    results: list[tuple[int, int, str]],
    *,
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version: str,
) -> bytes:
    """A-ASSOCIATE-AC: ``results`` are (context id, result, chosen transfer syntax)."""
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for ctx_id, result, ts in results:
        sub = _item(0x40, ts.encode()) if result == ACCEPTANCE else _item(0x40, b"")
        items += _item(0x21, struct.pack(">BBBB", ctx_id, 0, result, 0) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu))
    user += _item(0x52, implementation_class_uid.encode())
    user += _item(0x55, implementation_version.encode()[:16])
    items += _item(0x50, user)
    titles = req.raw_titles or _ae(req.called_ae) + _ae(req.calling_ae)
    body = struct.pack(">HH", 1, 0) + titles + b"\0" * 32
    body += items
    return struct.pack(">BBL", A_ASSOCIATE_AC, 0, len(body)) + body


def associate_rq(
    called_ae: str,
    calling_ae: str,
    contexts: list[PresentationContext],
    *,
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version: str,
) -> bytes:
    """A-ASSOCIATE-RQ proposing ``contexts`` (PS3.8 9.3.2)."""
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for c in contexts:
        sub = _item(0x30, c.abstract_syntax.encode())
        sub += b"".join(_item(0x40, ts.encode()) for ts in c.transfer_syntaxes)
        items += _item(0x20, struct.pack(">BBBB", c.id, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu))
    user += _item(0x52, implementation_class_uid.encode())
    if implementation_version:
        user += _item(0x55, implementation_version.encode()[:16])
    items += _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + _ae(called_ae) + _ae(calling_ae) + b"\0" * 32 + items
    return struct.pack(">BBL", A_ASSOCIATE_RQ, 0, len(body)) + body


@dataclass
class AssociateAccept:
    """What an A-ASSOCIATE-AC settled: per context id (result, transfer syntax); the
    acceptor's maximum PDU length (0 = unlimited)."""

    contexts: dict[int, tuple[int, str]]
    max_pdu: int = 0


def parse_associate_ac(pdu: bytes) -> AssociateAccept:
    """Decode an A-ASSOCIATE-AC PDU (including its 6-byte header)."""
    if len(pdu) < 74 or pdu[0] != A_ASSOCIATE_AC:
        raise ProtocolError("not an A-ASSOCIATE-AC")
    out = AssociateAccept({})
    pos = 74
    while pos + 4 <= len(pdu):
        item_type = pdu[pos]
        (length,) = struct.unpack(">H", pdu[pos + 2 : pos + 4])
        body = pdu[pos + 4 : pos + 4 + length]
        if len(body) != length:
            raise ProtocolError("A-ASSOCIATE-AC item runs past the PDU")
        if item_type == 0x21 and length >= 4:
            ts = ""
            if length >= 8 and body[4] == 0x40:
                (ts_len,) = struct.unpack(">H", body[6:8])
                ts = _uid(body[8 : 8 + ts_len])
            out.contexts[body[0]] = (body[2], ts)
        elif item_type == 0x50:
            probe = AssociateRequest("", "", [])
            _parse_user_info(body, probe)
            out.max_pdu = probe.max_pdu
        pos += 4 + length
    return out


#: A-ASSOCIATE-RJ reasons by (source, reason), PS3.8 9.3.4.
REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "Calling AE title not recognised",
    (1, 7): "Called AE title not recognised",
    (2, 1): "no reason given (ACSE)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def release_rq() -> bytes:
    return struct.pack(">BBLL", A_RELEASE_RQ, 0, 4, 0)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return struct.pack(">BBLBBBB", A_ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def release_rp() -> bytes:
    return struct.pack(">BBLL", A_RELEASE_RP, 0, 4, 0)


def abort(source: int = 2, reason: int = 0) -> bytes:
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


def p_data(context_id: int, payload: bytes, *, command: bool, last: bool = True) -> bytes:
    header = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">LBB", len(payload) + 2, context_id, header) + payload
    return struct.pack(">BBL", P_DATA_TF, 0, len(pdv)) + pdv


def p_data_fragments(
    context_id: int, payload: bytes, *, command: bool, max_pdu: int
) -> list[bytes]:
    """``payload`` as P-DATA-TF PDUs that each fit the receiver's maximum PDU length."""
    room = max(max_pdu - 6, 64) if max_pdu else len(payload) or 1
    chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    return [
        p_data(context_id, chunk, command=command, last=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    ]


def iter_pdvs(body: memoryview) -> list[tuple[int, int, memoryview]]:
    """The PDV items of a P-DATA-TF body: (context id, control header, fragment)."""
    out = []
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            raise ProtocolError("truncated PDV item")
        (length,) = struct.unpack_from(">L", body, pos)
        if length < 2 or pos + 4 + length > end:
            raise ProtocolError("PDV item length is inconsistent with the PDU")
        out.append((body[pos + 4], body[pos + 5], body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    return out


# ----------------------------------------------------------------------- DIMSE commands
def parse_command(data: bytes) -> dict[int, bytes]:
    """Command set elements (always Implicit VR Little Endian, PS3.7 6.3.1) by tag."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        if group != 0x0000 or pos + 8 + length > end:
            raise ProtocolError("malformed DIMSE command set")
        out[(group << 16) | elem] = bytes(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return out


def command_uint(cmd: dict[int, bytes], tag: int) -> int | None:
    raw = cmd.get(tag)
    if raw is None:
        return None
    if len(raw) == 2:
        return int(struct.unpack("<H", raw)[0])
    if len(raw) == 4:
        return int(struct.unpack("<L", raw)[0])
    raise ProtocolError(f"command element {tag:08X} has length {len(raw)}")


@dataclass(frozen=True, slots=True)
class Response:
    """The fields of a DIMSE response command set an SCU acts on (PS3.7 E.1, 9.3)."""

    command_field: int
    responded_id: int | None  # Message ID Being Responded To (0000,0120)
    status: int | None
    comment: str  # Error Comment (0000,0902)
    has_data: bool  # Command Data Set Type (0000,0800) other than 0101


def parse_response(data: bytes | bytearray) -> Response:
    """A response command set, walked once for the five fields an SCU needs.

    ``parse_command`` builds a dict of every element; a C-FIND listing reads one response
    per match, so this walker reads only what it uses and copies nothing else."""
    command_field = responded_id = status = None
    data_set_type = 0x0101
    comment = b""
    pos, end = 0, len(data)
    unpack = struct.unpack_from
    while pos + 8 <= end:
        group, elem, length = unpack("<HHL", data, pos)
        start = pos + 8
        pos = start + length
        if group != 0x0000 or pos > end:
            raise ProtocolError("malformed DIMSE command set")
        if elem in (0x0100, 0x0120, 0x0800, 0x0900):
            if length == 2:
                (value,) = unpack("<H", data, start)
            elif length == 4:
                (value,) = unpack("<L", data, start)
            else:
                raise ProtocolError(f"command element (0000,{elem:04X}) has length {length}")
            if elem == 0x0100:
                command_field = value
            elif elem == 0x0120:
                responded_id = value
            elif elem == 0x0800:
                data_set_type = value
            else:
                status = value
        elif elem == 0x0902:
            comment = bytes(data[start:pos])
    if command_field is None:
        raise ProtocolError("DIMSE command set without a Command Field")
    return Response(
        command_field,
        responded_id,
        status,
        comment.rstrip(b"\0 ").decode("latin-1"),
        data_set_type != 0x0101,
    )


def command_uid(cmd: dict[int, bytes], tag: int) -> str:
    return _uid(cmd.get(tag, b""))


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if tag in (0x00000002, 0x00001000) else b" "
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from (tag, value) pairs in tag order, with its group length."""
    body = b"".join(_element(tag, value) for tag, value in elements)
    return _element(0x00000000, struct.pack("<L", len(body))) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def response(
    command_field: int,
    message_id: int,
    status: int,
    *,
    sop_class: str = "",
    sop_instance: str = "",
    error_comment: str = "",
) -> bytes:
    """A C-STORE-RSP / C-ECHO-RSP command set with its group length."""
    body = b""
    if sop_class:
        body += _element(0x00000002, sop_class.encode())
    body += _element(0x00000100, struct.pack("<H", command_field))
    body += _element(0x00000120, struct.pack("<H", message_id))
    body += _element(0x00000800, struct.pack("<H", 0x0101))
    body += _element(0x00000900, struct.pack("<H", status))
    if error_comment:
        body += _element(0x00000902, _comment_text(error_comment).encode("ascii"))
    if sop_instance:
        body += _element(0x00001000, sop_instance.encode())
    return _element(0x00000000, struct.pack("<L", len(body))) + body


def file_meta(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    implementation_class_uid: str,
    implementation_version: str,
    source_ae: str,
) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (PS3.10 7.1), Explicit VR LE."""

    def el(elem: int, vr: bytes, value: bytes, pad: bytes = b"\0") -> bytes:
        if len(value) % 2:
            value += pad
        if vr in (b"OB",):
            return (
                struct.pack("<HH", 0x0002, elem)
                + vr
                + b"\0\0"
                + struct.pack("<L", len(value))
                + value
            )
        return struct.pack("<HH", 0x0002, elem) + vr + struct.pack("<H", len(value)) + value

    body = el(0x0001, b"OB", b"\x00\x01")
    body += el(0x0002, b"UI", sop_class.encode())
    body += el(0x0003, b"UI", sop_instance.encode())
    body += el(0x0010, b"UI", transfer_syntax.encode())
    body += el(0x0012, b"UI", implementation_class_uid.encode())
    body += el(0x0013, b"SH", implementation_version.encode()[:16], b" ")
    if source_ae:
        body += el(0x0016, b"AE", source_ae.encode("ascii", "replace")[:16], b" ")
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body
