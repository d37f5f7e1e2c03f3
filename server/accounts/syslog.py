"""Audit forwarding to an audit record repository: RFC 5424 syslog over TLS (RFC 5425),
each message carrying one DICOM audit message (PS3.15 A.5.1) — the IHE ATNA transport.

Why it reads the stored trail instead of a queue of messages: the request path only wakes
the sender (``notify``, no I/O), records written by the DICOM worker processes are in the
same trail, and a collector that is down for hours costs no memory and loses nothing — the
sender resumes after the last record it handed to a live connection (a cursor file in the
data folder, so a restart resumes too). Delivery is at least once: a record may be sent
again after a broken connection, never skipped. The first start forwards the whole trail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import select as sql_select

from server.accounts import audit
from server.config import AuditSection
from server.index.account_models import AuditRecord

log = logging.getLogger("lucent.audit.syslog")

FACILITY_AUTHPRIV = 10  # RFC 5424 "security/authorization messages", as IHE ITI-20 asks
NOTICE, WARNING = 5, 4
MSGID = "DICOM+RFC3881"  # PS3.15 A.5: the DICOM audit message schema, derived from RFC 3881
BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: MSG-UTF8 starts with a BOM
BATCH = 200


def _hostname() -> str:
    """RFC 5424 HOSTNAME: 1-255 printable US-ASCII characters, else the NILVALUE."""
    name = socket.getfqdn() or socket.gethostname()
    clean = "".join(c for c in name if 33 <= ord(c) <= 126)[:255]
    return clean or "-"


def _timestamp(at: datetime) -> str:
    stamp = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def frame(rec: AuditRecord, source_id: str, hostname: str, procid: str = "-") -> bytes:
    """One record as an octet-counted (RFC 5425 4.3) RFC 5424 message."""
    severity = NOTICE if rec.outcome == audit.SUCCESS else WARNING
    header = (
        f"<{FACILITY_AUTHPRIV * 8 + severity}>1 {_timestamp(rec.at)} {hostname} "
        f"lucent {procid} {MSGID} -"
    )
    xml = ET.tostring(audit.to_xml(rec, source_id), encoding="unicode").encode("utf-8")
    message = header.encode("ascii") + b" " + BOM + xml
    return str(len(message)).encode("ascii") + b" " + message


class AuditForwarder:
    """Background sender with reconnect and back-off; one per server (the main process)."""

    def __init__(self, session_factory: Any, settings: AuditSection, state_file: Path) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._state_file = state_file
        self._hostname = _hostname()
        self._procid = str(os.getpid())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sock: ssl.SSLSocket | None = None
        self._thread: threading.Thread | None = None
        self._listener: Callable[[], None] = self._wake.set
        self.last_id = self._load_cursor()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        audit.listeners.append(self._listener)
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._listener in audit.listeners:
            audit.listeners.remove(self._listener)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def notify(self) -> None:
        """Called after an audit record is committed: wake the sender, never block."""
        self._wake.set()

    # ------------------------------------------------------------------ cursor
    def _load_cursor(self) -> int:
        try:
            return int(json.loads(self._state_file.read_text())["last_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _save_cursor(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_id": self.last_id}))
        os.replace(tmp, self._state_file)

    # ------------------------------------------------------------------ connection
    def _context(self) -> ssl.SSLContext:
        s = self._settings
        ctx = ssl.create_default_context(cafile=s.syslog_ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # BCP 195
        if s.syslog_cert:
            ctx.load_cert_chain(s.syslog_cert, s.syslog_key)
        return ctx

    def _connect(self) -> ssl.SSLSocket:
        s = self._settings
        raw = socket.create_connection((s.syslog_host, s.syslog_port), timeout=10)
        try:
            return self._context().wrap_socket(raw, server_hostname=s.syslog_host)
        except BaseException:
            raw.close()
            raise

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _alive(self, sock: ssl.SSLSocket) -> bool:
        """A collector never sends us data; a readable socket means it closed (or sent a TLS
        session ticket, which reading consumes). Checked before each batch so records are
        not written into a connection the collector has already dropped."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not sock.pending():
            return True
        sock.setblocking(False)
        try:
            return sock.recv(4096) != b""
        except ssl.SSLWantReadError:
            return True
        except (OSError, ssl.SSLError):
            return False
        finally:
            sock.settimeout(10)

    # ------------------------------------------------------------------ sending
    def _pending(self) -> list[AuditRecord]:
        with self._sessions() as db:
            stmt = (
                sql_select(AuditRecord)
                .where(AuditRecord.id > self.last_id)
                .order_by(AuditRecord.id)
                .limit(BATCH)
            )
            rows = list(db.scalars(stmt))
            for r in rows:
                db.expunge(r)
            return rows

    def forward_pending(self) -> int:
        """Send what the collector has not had yet; raises OSError when it is unreachable."""
        rows = self._pending()
        if not rows:
            return 0
        if self._sock is not None and not self._alive(self._sock):
            self._close()
        if self._sock is None:
            self._sock = self._connect()
            log.info(
                "audit forwarding connected to %s:%d",
                self._settings.syslog_host,
                self._settings.syslog_port,
            )
        try:
            for rec in rows:
                self._sock.sendall(
                    frame(rec, self._settings.source_id, self._hostname, self._procid)
                )
                self.last_id = rec.id
        finally:
            self._save_cursor()
        return len(rows)

    def _run(self) -> None:
        delay, failing = 1.0, False
        while not self._stop.is_set():
            try:
                sent = self.forward_pending()
            except Exception as exc:  # unreachable, TLS refused, DB busy: retry later
                self._close()
                if not failing:
                    log.warning("audit forwarding failed (will retry): %s", exc)
                failing = True
                self._stop.wait(delay)
                delay = min(delay * 2, max(1.0, self._settings.syslog_retry_max_seconds))
                continue
            if failing:
                log.info("audit forwarding resumed")
            delay, failing = 1.0, False
            if sent < BATCH:
                # other processes (DICOM workers) write records too: look again each second
                self._wake.wait(1.0)
                self._wake.clear()
