"""Audit forwarding to an audit record repository: RFC 5424 syslog over TLS (RFC 5425),
each message carrying one DICOM audit message (PS3.15 A.5.1) — the IHE ATNA transport.

Why it reads the stored trail instead of a queue of messages: the request path only wakes
the sender (``notify``, no I/O), records written by the DICOM worker processes are in the
same trail, and a collector that is down for hours costs no memory — the sender resumes from
a cursor file in the data folder, so a restart resumes too. The first start forwards the
whole trail.

Delivery is at least once, with a bounded window (probe 34). RFC 5425 has no application
acknowledgement: ``sendall`` returning only means the bytes reached our kernel, and a
collector that hangs (stops reading) and then dies takes everything still in the two
kernels' socket buffers with it. So the sender never trusts the last records it wrote: each
(re)connection — after a broken connection and at every start — first sends again the
records of the last ``RESEND_BYTES`` written before it (more than the socket buffers of both
ends hold on common systems), then the new ones. Each message carries the record's id in
its structured data (``[audit@32473 recordId="17"]``, ``resent="1"`` on a repeat), so the
repository can drop duplicates. Loss cannot be ruled out when a connection stalled (a send
timed out: the collector stopped reading at an unknown moment) after more than the window
had been written on it; the sender then appends an audit record (110113 Security Alert,
110133 Audit Recording Stopped) naming the ids that may not have reached the collector.
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
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import select as sql_select

from server.accounts import audit
from server.config import AuditSection
from server.index import db as index_db
from server.index.account_models import AuditRecord

log = logging.getLogger("lucent.audit.syslog")

FACILITY_AUTHPRIV = 10  # RFC 5424 "security/authorization messages", as IHE ITI-20 asks
NOTICE, WARNING = 5, 4
MSGID = "DICOM+RFC3881"  # PS3.15 A.5: the DICOM audit message schema, derived from RFC 3881
BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: MSG-UTF8 starts with a BOM
BATCH = 200
#: Bytes of the newest records sent again on each (re)connection: written into a connection
#: whose collector then died, they may have sat in socket buffers (ours: up to a few MB with
#: autotuning; the collector's receive buffer likewise) and be lost.
RESEND_BYTES = 4 * 1024 * 1024
#: SD-ID of our structured data element: name@enterprise number (RFC 5424 7.2.2). 32473 is
#: the number RFC 5612 reserves for examples; one constant to change once Lucent has its own.
SD_ID = "audit@32473"


def _hostname() -> str:
    """RFC 5424 HOSTNAME: 1-255 printable US-ASCII characters, else the NILVALUE."""
    name = socket.getfqdn() or socket.gethostname()
    clean = "".join(c for c in name if 33 <= ord(c) <= 126)[:255]
    return clean or "-"


def _timestamp(at: datetime) -> str:
    stamp = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def frame(
    rec: AuditRecord,
    source_id: str,
    hostname: str,
    procid: str = "-",
    *,
    resent: bool = False,
    patients: dict[str, str] | None = None,
) -> bytes:
    """One record as an octet-counted (RFC 5425 4.3) RFC 5424 message. The structured data
    names the record (its id in the trail) so that a repository can drop the copies that
    at-least-once delivery sends again (marked ``resent="1"``)."""
    severity = NOTICE if rec.outcome == audit.SUCCESS else WARNING
    repeat = ' resent="1"' if resent else ""
    sd = f'[{SD_ID} recordId="{rec.id}"{repeat}]'
    header = (
        f"<{FACILITY_AUTHPRIV * 8 + severity}>1 {_timestamp(rec.at)} {hostname} "
        f"lucent {procid} {MSGID} {sd}"
    )
    xml = ET.tostring(audit.to_xml(rec, source_id, patients), encoding="unicode").encode("utf-8")
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
        # the trail is written through write sessions (a stall's may-be-lost record)
        bind = getattr(session_factory, "kw", {}).get("bind")
        self._writer = index_db.writer_sessions(bind) if bind is not None else session_factory
        #: highest id written into a connection; ids up to ``settled_id`` were followed by
        #: more than RESEND_BYTES on the same connection and are not sent again
        self.last_id, self.settled_id = self._load_cursor()
        self._window: deque[tuple[int, int]] = deque()  # (id, bytes) after settled_id
        self._window_bytes = 0
        self._resent_upto = 0  # ids up to this one are being sent again
        self._conn_settled = self.settled_id  # settled_id when this connection opened
        self._patients: dict[str, str] = {}

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
    def _load_cursor(self) -> tuple[int, int]:
        """(last id sent, last id settled). A cursor file written before the resend window
        existed has no ``settled_id``: its last ``BATCH`` records are sent again."""
        try:
            state = json.loads(self._state_file.read_text())
            last = int(state["last_id"])
            settled = int(state.get("settled_id", max(0, last - BATCH)))
            return last, min(settled, last)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0, 0

    def _save_cursor(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_id": self.last_id, "settled_id": self.settled_id}))
        os.replace(tmp, self._state_file)

    def _sent(self, rec_id: int, size: int) -> None:
        """Remember a record written into the connection; older ones leave the window."""
        self.last_id = rec_id
        self._window.append((rec_id, size))
        self._window_bytes += size
        while self._window and self._window_bytes - self._window[0][1] >= RESEND_BYTES:
            old_id, old_size = self._window.popleft()
            self._window_bytes -= old_size
            self.settled_id = old_id

    def _rewind(self) -> None:
        """A new connection: everything after ``settled_id`` may have died in the buffers of
        the previous one (or of the previous process), so it is sent again first."""
        if self.last_id > self.settled_id:
            self._resent_upto = max(self._resent_upto, self.last_id)
            self.last_id = self.settled_id
        self._window.clear()
        self._window_bytes = 0
        self._conn_settled = self.settled_id

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
        """The next records, with ``_patients`` of those that do not name their patient."""
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
            self._patients = audit.patients_for(db, rows)
            return rows

    def forward_pending(self) -> int:
        """Send what the collector has not had yet; raises OSError when it is unreachable."""
        rows = self._pending()
        if not rows and (self._sock is not None or self.last_id <= self.settled_id):
            return 0
        if self._sock is not None and not self._alive(self._sock):
            self._close()
        if self._sock is None:
            self._sock = self._connect()
            self._rewind()
            rows = self._pending()
            log.info(
                "audit forwarding connected to %s:%d",
                self._settings.syslog_host,
                self._settings.syslog_port,
            )
        try:
            for rec in rows:
                data = frame(
                    rec,
                    self._settings.source_id,
                    self._hostname,
                    self._procid,
                    resent=rec.id <= self._resent_upto,
                    patients=self._patients,
                )
                self._sock.sendall(data)
                self._sent(rec.id, len(data))
        except TimeoutError:
            self._stalled()
            raise
        finally:
            self._save_cursor()
        return len(rows)

    def _stalled(self) -> None:
        """A send timed out: the collector stopped reading at some unknown moment. If more
        than the resend window was written on this connection, the records that left the
        window may still have been in its buffers: say so in the trail (PS3.15 A.5.3.11)."""
        if self.settled_id <= self._conn_settled:
            return
        first, last = self._conn_settled + 1, self.settled_id
        self._conn_settled = self.settled_id
        log.error("audit records %d-%d may not have reached the collector", first, last)
        with contextlib.suppress(Exception):  # the trail's own failure is logged there
            audit.record(
                self._writer,
                audit.Entry(
                    "forward-gap",
                    audit.MINOR_FAILURE,
                    audit.local_operator(),
                    "",
                    [{"type": "audit-records", "id": f"{first}-{last}"}],
                    f"audit records {first} to {last} may not have reached the audit record "
                    f"repository {self._settings.syslog_host}:{self._settings.syslog_port} "
                    "(the connection stalled; only the newest records were sent again)",
                ),
            )

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
