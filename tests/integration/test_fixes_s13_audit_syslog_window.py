"""Audit forwarding loses nothing when the collector hangs and then dies (probe 34).

A real TLS collector on loopback (RFC 5425 octet counting) stops reading; the forwarder
writes 30 records into the connection (``sendall`` succeeds: they sit in socket buffers);
the collector dies with them unread; a new collector comes up. Every record must reach it,
each carrying its id in the structured data so that the repeats can be told apart.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.accounts import audit, syslog
from server.accounts.certs import make_self_signed
from server.config import AuditSection
from server.index import db

SD = re.compile(rb'\[audit@32473 recordId="(\d+)"( resent="1")?\]')


class Collector:
    """One TLS listener; ``hang`` accepts and never reads, else frames are read and kept."""

    def __init__(self, port: int, cert: Path, key: Path, *, hang: bool) -> None:
        self.hang = hang
        self.ids: list[int] = []
        self.resent: list[int] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.conns: list[ssl.SSLSocket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except OSError:
                return
            self.conns.append(conn)
            if not self.hang:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: ssl.SSLSocket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b" " in buf:
                length, rest = buf.split(b" ", 1)
                if len(rest) < int(length):
                    break
                msg, buf = rest[: int(length)], rest[int(length) :]
                m = SD.search(msg)
                assert m is not None, msg[:200]
                (self.resent if m.group(2) else self.ids).append(int(m.group(1)))

    def die(self) -> None:
        """kill -9: the listening socket and the connections close, unread bytes are lost."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        self.sock.close()
        self.thread.join(5)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.conns.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[object]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    db.migrate(engine)
    yield db.writer_sessions(engine)
    engine.dispose()


def _add(sessions: object, n: int, tag: str) -> None:
    for i in range(n):
        audit.record(sessions, audit.Entry("config-change", detail=f"{tag} {i}"))


def test_records_written_into_a_hung_collector_that_dies_are_sent_again(
    tmp_path: Path, trail: object
) -> None:
    pair = make_self_signed(tmp_path / "tls", ["127.0.0.1"], stem="collector")
    port = _free_port()
    settings = AuditSection(
        syslog_host="127.0.0.1", syslog_port=port, syslog_ca_file=str(pair.cert)
    )
    fwd = syslog.AuditForwarder(trail, settings, tmp_path / "audit-forward.json")
    hung = Collector(port, pair.cert, pair.key, hang=True)
    try:
        _add(trail, 30, "while hung")
        assert fwd.forward_pending() == 30  # sendall succeeded: the bytes are in buffers
        hung.die()
        time.sleep(0.3)
        fresh = Collector(port, pair.cert, pair.key, hang=False)
        _add(trail, 5, "after")
        for _ in range(5):
            try:
                if fwd.forward_pending() == 0:
                    break
            except OSError:
                fwd._close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(set(fresh.ids + fresh.resent)) < 35:
            time.sleep(0.1)
        got = set(fresh.ids) | set(fresh.resent)
        assert got >= set(range(1, 36)), sorted(set(range(1, 36)) - got)
        # the repeats say so: the 30 written into the dead connection came again
        assert set(fresh.resent) == set(range(1, 31))
        assert set(fresh.ids) == set(range(31, 36))
    finally:
        fwd._close()
        hung.die()
        with_fresh = locals().get("fresh")
        if with_fresh is not None:
            with_fresh.die()


def test_a_restart_sends_the_window_again(tmp_path: Path, trail: object) -> None:
    """The cursor file keeps the window: a new process starts with the records the old one
    may have left in its buffers (its connection closed with the process)."""
    pair = make_self_signed(tmp_path / "tls", ["127.0.0.1"], stem="collector")
    port = _free_port()
    settings = AuditSection(
        syslog_host="127.0.0.1", syslog_port=port, syslog_ca_file=str(pair.cert)
    )
    state = tmp_path / "audit-forward.json"
    hung = Collector(port, pair.cert, pair.key, hang=True)
    first = syslog.AuditForwarder(trail, settings, state)
    _add(trail, 10, "before restart")
    assert first.forward_pending() == 10
    first._close()
    hung.die()
    fresh = Collector(port, pair.cert, pair.key, hang=False)
    try:
        second = syslog.AuditForwarder(trail, settings, state)
        assert second.forward_pending() == 10  # nothing new, the window is sent again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(fresh.resent) < 10:
            time.sleep(0.1)
        assert sorted(fresh.resent) == list(range(1, 11))
        second._close()
    finally:
        fresh.die()
