"""Malformed or unusual A-ASSOCIATE-RQs get a definite answer at once (PS3.8 9.3, 9.3.4),
whichever receive path the association would take. Outside probe: a presentation context
with an even ID or without a transfer syntax, sent with a user-identity item (which hands
the association to pynetdicom), crashed pynetdicom's acceptor thread and the caller waited
for minutes; a protocol version error was rejected as "application context not supported";
C-ECHO responses ignored the caller's maximum PDU length."""

from __future__ import annotations

import socket
import struct

import pytest

from lucent.net import upper_layer as ul
from tests.support.lucent import LucentServer

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
EXPLICIT = "1.2.840.10008.1.2.1"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _request(
    called: str,
    contexts: list[tuple[int, str, list[str]]],
    *,
    version: int = 1,
    max_pdu: int = 16384,
    user_identity: bool = False,
    identity_type: int = 1,
) -> bytes:
    items = _item(0x10, ul.APPLICATION_CONTEXT.encode())
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, s.encode()) for s in syntaxes)
        items += _item(0x20, bytes([cid, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu))
    if user_identity:  # username, no response requested
        user += _item(
            0x58, bytes([identity_type, 0]) + struct.pack(">H", 5) + b"alice" + b"\x00\x00"
        )
    items += _item(0x50, user)
    body = struct.pack(">HH", version, 0) + called.ljust(16).encode()
    body += b"PROBE".ljust(16) + b"\0" * 32 + items
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _answer(server: LucentServer, request: bytes) -> tuple[int, bytes, socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    header = sock.recv(6, socket.MSG_WAITALL)
    assert len(header) == 6, "no answer to the association request"
    (length,) = struct.unpack(">L", header[2:])
    return header[0], sock.recv(length, socket.MSG_WAITALL), sock


@pytest.mark.parametrize("identity", [False, True], ids=["fast", "pynetdicom"])
@pytest.mark.parametrize(
    "contexts",
    [[(2, CT, [EXPLICIT])], [(1, CT, []), (3, FIND, [EXPLICIT])]],
    ids=["even-id", "no-transfer-syntax"],
)
def test_malformed_presentation_contexts_are_aborted_at_once(
    server: LucentServer, identity: bool, contexts: list[tuple[int, str, list[str]]]
) -> None:
    kind, body, sock = _answer(server, _request(server.ae_title, contexts, user_identity=identity))
    sock.close()
    assert kind == ul.A_ABORT, (kind, body)


def test_protocol_version_rejection_names_the_protocol_version(server: LucentServer) -> None:
    kind, body, sock = _answer(
        server, _request(server.ae_title, [(1, VERIFICATION, [EXPLICIT])], version=2)
    )
    sock.close()
    assert kind == ul.A_ASSOCIATE_RJ
    assert tuple(body[1:4]) == (1, 2, 2)  # permanent, service-provider (ACSE), version


@pytest.mark.parametrize("identity", [False, True], ids=["fast", "pynetdicom"])
@pytest.mark.parametrize("version", [0x0003, 0xFFFF])
def test_only_bit_0_of_the_protocol_version_is_tested(
    server: LucentServer, identity: bool, version: int
) -> None:
    """PS3.8 9.3.2: the fast path accepted 0x0003 / 0xFFFF, pynetdicom (a handed-over
    association) rejected them (1, 2, 2) (outside probe 23)."""
    request = _request(
        server.ae_title, [(1, VERIFICATION, [EXPLICIT])], version=version, user_identity=identity
    )
    kind, body, sock = _answer(server, request)
    sock.close()
    assert kind == ul.A_ASSOCIATE_AC, (kind, body[:4])


def test_an_undefined_user_identity_type_is_aborted_at_once(server: LucentServer) -> None:
    """Type 9 (PS3.7 D.3.3.7.1 defines 1-5) left the socket silent until the ACSE timeout on
    the pynetdicom path (outside probe 23); it is an invalid parameter value: A-ABORT."""
    request = _request(
        server.ae_title, [(1, VERIFICATION, [EXPLICIT])], user_identity=True, identity_type=9
    )
    kind, body, sock = _answer(server, request)
    sock.close()
    assert kind == ul.A_ABORT, (kind, body)


def test_echo_response_respects_the_callers_maximum_pdu_length(server: LucentServer) -> None:
    kind, _, sock = _answer(
        server, _request(server.ae_title, [(1, VERIFICATION, [EXPLICIT])], max_pdu=70)
    )
    assert kind == ul.A_ASSOCIATE_AC
    command = ul.command_set(
        [(0x00000002, VERIFICATION.encode()), (0x00000100, ul.us(0x0030)),
         (0x00000110, ul.us(1)), (0x00000800, ul.us(0x0101))]
    )  # fmt: skip
    sock.sendall(ul.p_data(1, command, command=True))
    received = b""
    while True:
        header = sock.recv(6, socket.MSG_WAITALL)
        (length,) = struct.unpack(">L", header[2:])
        assert header[0] == ul.P_DATA_TF and length <= 70, length
        pdv = sock.recv(length, socket.MSG_WAITALL)
        received += pdv[6:]
        if pdv[5] & 2:
            break
    sock.close()
    assert ul.command_uint(ul.parse_command(received), 0x00000900) == 0


@pytest.mark.parametrize("identity", [False, True], ids=["fast", "pynetdicom"])
def test_a_pdu_claiming_4_gb_is_answered_with_an_a_abort(
    server: LucentServer, identity: bool
) -> None:
    """PS3.8 9.2, Evt19 -> AA-8: an A-ABORT before the transport closes. The pynetdicom
    path (Query/Retrieve, user identity) closed the connection without one (outside probe
    42); the storage fast path answered A-ABORT already."""
    request = _request("LUCENT", [(1, VERIFICATION, [EXPLICIT])], user_identity=identity)
    kind, _, sock = _answer(server, request)
    with sock:
        assert kind == 0x02  # A-ASSOCIATE-AC
        sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\x00" * 64)
        answer = sock.recv(10, socket.MSG_WAITALL)
    assert answer[:1] == b"\x07", answer  # A-ABORT
    assert answer[8] == 2  # source: service provider
