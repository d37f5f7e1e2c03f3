"""The buffered PDU reader our own upper layer code uses (lucent.net.transport.PduReader):
PDUs split across reads, larger than its buffer, or malformed, over a real socket pair."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from lucent.net import transport


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _send_slowly(sock: socket.socket, data: bytes, step: int) -> threading.Thread:
    """Send in small pieces so PDU headers and bodies straddle the reader's reads."""

    def run() -> None:
        for i in range(0, len(data), step):
            sock.sendall(data[i : i + step])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_pdus_split_across_reads_and_larger_than_the_buffer() -> None:
    bodies = [bytes([i % 251]) * n for i, n in enumerate((0, 1, 5, 700, 3000, 64, 9000, 2))]
    stream = b"".join(_pdu(4, b) for b in bodies) + _pdu(5, b"\0" * 4)
    a, b = socket.socketpair()
    with a, b:
        sender = _send_slowly(a, stream, 333)
        reader = transport.PduReader(b, limit=1 << 20, size=1024)  # 9000 > the buffer
        got = []
        for _ in bodies:
            pdu_type, body = reader.next()
            assert pdu_type == 4
            got.append(bytes(body))  # a view: copied before the next read
        assert got == bodies
        assert reader.next()[0] == 5
        sender.join()


def test_unknown_type_over_limit_and_early_close_are_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_pdu(9, b"xx"))
        with pytest.raises(ValueError, match="unknown PDU type"):
            transport.PduReader(b, limit=100).next()
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">BBL", 4, 0, 0xFFFFFFF0))  # claims ~4 GB: nothing allocated
        with pytest.raises(ValueError, match="limit"):
            transport.PduReader(b, limit=1 << 20).next()
    a, b = socket.socketpair()
    with b:
        a.sendall(_pdu(4, b"abc")[:5])
        a.close()
        with pytest.raises(ConnectionError):
            transport.PduReader(b, limit=100).next()
