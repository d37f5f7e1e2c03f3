"""The SCU's own association, byte for byte over a socket pair (no network, no peer process).

What a real peer cannot show us on demand: how a data set is cut into P-DATA fragments for a
given maximum PDU length, that the fragments carry the bytes unchanged, what happens when the
peer aborts instead of answering, and how the read-ahead of the send behaves.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from lucent.net import direct, scu
from lucent.net import upper_layer as ul

CT = "1.2.840.10008.5.1.4.1.1.2"


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", _read_exact(sock, 6))
    return pdu_type, _read_exact(sock, length)


def _read_message(sock: socket.socket) -> tuple[list[tuple[int, int, int]], bytes, bytes]:
    """One command + data set: [(PDU length, context, control)], command bytes, data bytes."""
    seen: list[tuple[int, int, int]] = []
    command, data = bytearray(), bytearray()
    while True:
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == ul.P_DATA_TF
        for ctx, control, fragment in ul.iter_pdvs(memoryview(body)):
            seen.append((len(body), ctx, control))
            (command if control & 1 else data).extend(fragment)
            if control == 0x02:
                return seen, bytes(command), bytes(data)


@pytest.fixture
def pair() -> Iterator[tuple[direct.DirectAssociation, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    accept = ul.AssociateAccept({1: (ul.ACCEPTANCE, scu.EXPLICIT_LE)}, max_pdu=4096)
    assoc = direct.DirectAssociation(ours, accept, 5.0)
    yield assoc, theirs
    ours.close()
    theirs.close()


def _answer_store(theirs: socket.socket, status: int, comment: str = "") -> threading.Thread:
    def run() -> None:
        _, command, _ = _read_message(theirs)
        cmd = ul.parse_command(command)
        rsp = ul.response(
            0x8001, ul.command_uint(cmd, 0x00000110) or 0, status,
            sop_class=CT, sop_instance=ul.command_uid(cmd, 0x00001000), error_comment=comment,
        )  # fmt: skip
        theirs.sendall(ul.p_data(1, rsp, command=True))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("max_pdu", [4096, 16384, 0])
def test_data_set_goes_out_unchanged_in_fragments_within_the_max_pdu(max_pdu: int) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    accept = ul.AssociateAccept({1: (ul.ACCEPTANCE, scu.EXPLICIT_LE)}, max_pdu=max_pdu)
    assoc = direct.DirectAssociation(ours, accept, 5.0)
    payload = bytes(range(256)) * 2000 + b"tail"  # 512004 bytes
    got: dict[str, object] = {}

    def peer() -> None:
        got["seen"], got["command"], got["data"] = _read_message(theirs)
        rsp = ul.response(0x8001, 7, 0x0000, sop_class=CT, sop_instance="1.2.3")
        theirs.sendall(ul.p_data(1, rsp, command=True))

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    # a memoryview into a larger buffer, as the send path passes archived Part-10 bytes
    framed = memoryview(b"HEADER" + payload)[6:]
    answer = assoc.c_store(1, CT, "1.2.3", framed, 7)
    thread.join(5)
    ours.close()
    theirs.close()
    assert answer == direct.StoreAnswer(0x0000, "")
    assert got["data"] == payload
    seen = got["seen"]
    assert isinstance(seen, list)
    limit = max_pdu or direct.UNLIMITED_FRAGMENT + 6
    assert all(length <= limit for length, _, _ in seen)
    assert all(ctx == 1 for _, ctx, _ in seen)
    controls = [control for _, _, control in seen]
    assert controls[0] == 0x03  # the whole command, last fragment
    assert controls[1:-1] == [0x00] * (len(controls) - 2) and controls[-1] == 0x02
    cmd = ul.parse_command(got["command"])  # type: ignore[arg-type]
    assert ul.command_uint(cmd, 0x00000100) == direct.C_STORE_RQ
    assert ul.command_uint(cmd, 0x00000110) == 7
    assert ul.command_uint(cmd, 0x00000800) == 0x0000
    assert ul.command_uid(cmd, 0x00000002) == CT
    assert ul.command_uid(cmd, 0x00001000) == "1.2.3"


def test_store_answer_carries_status_and_comment(
    pair: tuple[direct.DirectAssociation, socket.socket],
) -> None:
    assoc, theirs = pair
    thread = _answer_store(theirs, 0xA700, "disk full")
    answer = assoc.c_store(1, CT, "1.2.3.4", b"\x08\x00\x16\x00\x00\x00\x00\x00", 1)
    thread.join(5)
    assert answer == direct.StoreAnswer(0xA700, "disk full")
    assert assoc.is_open


def test_an_abort_instead_of_an_answer_closes_the_association(
    pair: tuple[direct.DirectAssociation, socket.socket],
) -> None:
    assoc, theirs = pair

    def peer() -> None:
        _read_message(theirs)
        theirs.sendall(ul.abort(2, 0))

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    with pytest.raises(direct.DirectError) as err:
        assoc.c_store(1, CT, "1.2.3.4", b"\0" * 10_000, 1)
    thread.join(5)
    assert err.value.kind == "aborted" and not assoc.is_open


def test_an_answer_to_another_request_is_a_protocol_error(
    pair: tuple[direct.DirectAssociation, socket.socket],
) -> None:
    assoc, theirs = pair

    def peer() -> None:
        _read_message(theirs)
        theirs.sendall(ul.p_data(1, ul.response(0x8001, 99, 0x0000), command=True))

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    with pytest.raises(direct.DirectError, match="another message"):
        assoc.c_store(1, CT, "1.2.3.4", b"\0" * 10, 1)
    thread.join(5)


def test_a_response_split_over_pdus_is_reassembled(
    pair: tuple[direct.DirectAssociation, socket.socket],
) -> None:
    """Command and data set in several fragments each, as a peer with a small PDU sends."""
    assoc, theirs = pair
    command = ul.command_set(
        [(0x00000100, ul.us(0x8020)), (0x00000120, ul.us(3)), (0x00000800, ul.us(0)),
         (0x00000900, ul.us(0xFF00))]
    )  # fmt: skip
    identifier = b"\x10\x00\x10\x00PN\x08\x00Doe^Jane" * 50
    for chunk, control in ((command[:10], 1), (command[10:], 3)):
        theirs.sendall(ul.p_data(1, chunk, command=True, last=bool(control & 2)))
    for start in range(0, len(identifier), 100):
        last = start + 100 >= len(identifier)
        theirs.sendall(ul.p_data(1, identifier[start : start + 100], command=False, last=last))
    rsp, data = assoc._receive_message()
    assert (rsp.command_field, rsp.responded_id, rsp.status, rsp.has_data) == (
        0x8020, 3, 0xFF00, True,
    )  # fmt: skip
    assert data == identifier


# --------------------------------------------------------------------------- responses


def test_parse_response_reads_the_fields_an_scu_needs() -> None:
    rsp = ul.parse_response(ul.response(0x8001, 7, 0xB000, sop_class=CT, error_comment="coerced"))
    assert rsp == ul.Response(0x8001, 7, 0xB000, "coerced", False)
    with_data = ul.command_set(
        [(0x00000100, ul.us(0x8020)), (0x00000120, struct.pack("<L", 9)),
         (0x00000800, ul.us(0x0000)), (0x00000900, ul.us(0xFF01))]
    )  # fmt: skip
    assert ul.parse_response(with_data) == ul.Response(0x8020, 9, 0xFF01, "", True)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x00\x01\x02\x00\x00\x00\x01\x80",  # group 0001
        b"\x00\x00\x00\x01\x40\x00\x00\x00\x01\x80",  # value runs past the end
        ul.command_set([(0x00000900, ul.us(0))]),  # no Command Field
        struct.pack("<HHL", 0, 0x0100, 3) + b"\x01\x80\x00",  # a 3-byte US
    ],
)
def test_parse_response_refuses_malformed_commands(raw: bytes) -> None:
    with pytest.raises(ul.ProtocolError):
        ul.parse_response(raw)


# --------------------------------------------------------------------------- read-ahead


def _items(n: int, loads: list[int], fail: int = -1) -> list[scu.Outgoing]:
    def load(i: int) -> bytes:
        loads.append(i)
        if i == fail:
            raise OSError(f"object {i} is gone")
        return f"bytes of {i}".encode()

    return [
        scu.Outgoing(CT if i % 5 else "1.2.3.unsupported", f"1.2.{i}", scu.EXPLICIT_LE,
                     lambda i=i: load(i))
        for i in range(n)
    ]  # fmt: skip


def test_read_ahead_keeps_order_and_reports_failures_per_instance() -> None:
    loads: list[int] = []
    items = _items(12, loads, fail=3)
    got = list(scu._prefetched(items, lambda it: it.sop_class_uid == CT))
    assert [it.sop_instance_uid for it, _ in got] == [it.sop_instance_uid for it in items]
    for i, (_, raw) in enumerate(got):
        if i % 5 == 0:
            assert raw is None  # not wanted: never read
        elif i == 3:
            assert isinstance(raw, OSError) and "gone" in str(raw)
        else:
            assert raw == f"bytes of {i}".encode()
    assert sorted(loads) == [i for i in range(12) if i % 5]


def test_read_ahead_stops_when_the_send_stops() -> None:
    loads: list[int] = []
    reads = scu._prefetched(_items(100, loads), lambda it: True)
    next(reads)
    reads.close()
    assert len(loads) <= scu.PREFETCH + 1  # the one handed out and the one read ahead


def _item(sop_class: str, syntax: str) -> scu.Outgoing:
    return scu.Outgoing(sop_class, "1.2.3", syntax, lambda: b"")


def test_compressed_proposal_offers_the_lossless_syntaxes_we_can_encode() -> None:
    """Conformance 4.2.4.2 with a node's propose_compressed: uncompressed first, then the
    stored syntax as is, then the lossless syntaxes we transcode to — never a lossy one
    that nothing is stored in (a peer taking only Deflated, JPEG-LS or JPEG 2000 lossless
    "accepted none of the proposed presentation contexts")."""
    jpeg = "1.2.840.10008.1.2.4.50"
    got = scu.store_contexts([_item(CT, scu.EXPLICIT_LE), _item(CT, jpeg)], compressed=True)
    assert [cx.transfer_syntax for cx in got] == [
        list(scu.UNCOMPRESSED),
        [jpeg],
        ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
         "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57"],
    ]  # fmt: skip
    assert [cx.transfer_syntax for cx in scu.store_contexts([_item(CT, jpeg)])] == [
        list(scu.UNCOMPRESSED)
    ]


def test_compressed_proposal_keeps_within_128_contexts_by_priority() -> None:
    classes = [f"1.2.840.10008.5.1.4.1.1.{i}" for i in range(100)]
    items = [_item(c, "1.2.840.10008.1.2.4.80") for c in classes]
    got = scu.store_contexts(items, compressed=True)
    assert len(got) == 128
    assert all(cx.transfer_syntax == list(scu.UNCOMPRESSED) for cx in got[:100])
    assert all(cx.transfer_syntax == ["1.2.840.10008.1.2.4.80"] for cx in got[100:])
    with pytest.raises(ValueError, match="128"):
        scu.store_contexts([_item(f"1.2.3.{i}", scu.EXPLICIT_LE) for i in range(129)])
