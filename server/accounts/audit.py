"""Audit trail with the DICOM audit vocabulary (PS3.15 A.5), append-only and hash-chained.

Every record carries the link of its predecessor and a digest of its own canonical content,
so altering, inserting or removing one stored record breaks the chain at that point
(``verify``). The database additionally refuses UPDATE and DELETE on the table (migration
0003 triggers). Records export as DICOM audit messages (PS3.15 A.5.1 schema, derived from
RFC 3881) for an Audit Record Repository (IHE ATNA).

Anchored outside the database (probe 34): a plain SHA-256 chain can be recomputed by
anyone who can edit the database, and removing the newest records leaves a valid chain. So
the digest is keyed — HMAC-SHA256 with a 256-bit key in ``data_dir/keys/audit.key`` (0600,
made at the first start, never in the database) — and every append also advances a head
anchor file, ``data_dir/audit-head.json`` (last id, its link, and a MAC over both), which
``verify`` compares with the table's end. A keyed link is stored as ``k1`` + the first 62
hex digits of the HMAC (the column holds 64 characters; a plain SHA-256 hex digest never
contains ``k``). Migration: records written before this change keep their plain digests
and are still verified as such; the first keyed record links to the last plain one, and no
plain record may follow a keyed one. An append that finds the table's end behind the
anchor (newest records removed, or the chain rewritten) keeps that finding in the anchor
file, so later appends cannot hide it.

Appends are serialised across processes (the DICOM workers write too): on SQLite by the
write transaction itself (``BEGIN IMMEDIATE``), on PostgreSQL by a transaction-scoped
advisory lock; within a process by ``_lock``. The anchor file is advanced after the commit,
under an exclusive file lock and only forwards, so it may lag the table (a crash between the
two) but is never ahead of it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import Select, Text, cast, func, select, text
from sqlalchemy.orm import Session as DbSession

from server.accounts.clock import now
from server.index.account_models import AuditRecord

# PS3.16 CID 400 "Audit Event ID" (DCM codes 110100-110114).
EVENT_IDS: dict[str, str] = {
    "110100": "Application Activity",
    "110101": "Audit Log Used",
    "110102": "Begin Transferring DICOM Instances",
    "110103": "DICOM Instances Accessed",
    "110104": "DICOM Instances Transferred",
    "110105": "DICOM Study Deleted",
    "110106": "Export",
    "110107": "Import",
    "110108": "Network Entry",
    "110109": "Order Record",
    "110110": "Patient Record",
    "110111": "Procedure Record",
    "110112": "Query",
    "110113": "Security Alert",
    "110114": "User Authentication",
}
# PS3.16 CID 401/402/403 event type codes used here.
EVENT_TYPES: dict[str, str] = {
    "110120": "Application Start",
    "110121": "Application Stop",
    "110122": "Login",
    "110123": "Logout",
    "110126": "Node Authentication",
    "110128": "Network Configuration",
    "110129": "Security Configuration",
    "110132": "Use of Restricted Function",
    "110133": "Audit Recording Stopped",
    "110135": "Object Security Attributes Changed",
    "110136": "Security Roles Changed",
    "110137": "User security Attributes Changed",
    "110141": "Local Service Operation Started",
    "110142": "Local Service Operation Stopped",
}
ACTIONS = ("C", "R", "U", "D", "E")  # Create, Read, Update, Delete, Execute
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12

# Short names used in code → (event id, event type, action).
EVENTS: dict[str, tuple[str, str, str]] = {
    "login": ("110114", "110122", "E"),
    "logout": ("110114", "110123", "E"),
    "pin": ("110114", "110122", "E"),
    "lockout": ("110113", "110132", "E"),
    "refused": ("110113", "110132", "E"),
    "device": ("110113", "110129", "U"),
    "user-change": ("110113", "110137", "U"),
    "roles-change": ("110113", "110136", "U"),
    "config-change": ("110113", "110129", "U"),
    "query": ("110112", "", "E"),
    "view": ("110103", "", "R"),
    "export": ("110106", "", "R"),
    "import": ("110107", "", "C"),
    "send": ("110104", "", "R"),
    "receive": ("110104", "", "C"),
    "node-auth": ("110113", "110126", "E"),
    "delete": ("110105", "", "D"),
    "share-create": ("110113", "110135", "C"),
    "share-use": ("110103", "", "R"),
    "share-pin": ("110114", "110122", "E"),
    "share-revoke": ("110113", "110135", "D"),
    "audit-read": ("110101", "", "R"),
    # audit forwarding: records that may not have reached the repository (syslog stall)
    "forward-gap": ("110113", "110133", "E"),
    "retention": ("110105", "", "D"),
    # PS3.15 A.5.3.1 Application Activity: the server process started or stopped
    "app-start": ("110100", "110120", "E"),
    "app-stop": ("110100", "110121", "E"),
    # PS3.15 A.5.3.11: an archive object that is missing or fails authentication when it
    # is read (damage or tampering; server.context reports it). CID 403 has no type for
    # an integrity violation: the reason is in the record's detail.
    "archive-damage": ("110113", "", "E"),
    # maintenance run on this machine with the server stopped (rebuild-index)
    "service-start": ("110113", "110141", "E"),
    "service-stop": ("110113", "110142", "E"),
}
GENESIS = "0" * 64
# Held from reading the chain's end until the commit, so two writers never fork the chain.
_lock = threading.RLock()
# Called (without arguments) after records are committed, e.g. to wake the syslog sender.
# They must not block: they run on the request path.
listeners: list[Callable[[], None]] = []


@dataclass
class Entry:
    """One event before it is stored; ``objects`` are (type, id) pairs like ('study', UID)."""

    event: str
    outcome: int = SUCCESS
    user: str = ""
    address: str = ""
    objects: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""


def _digest(prev: str, at: datetime, r: dict[str, object]) -> str:
    body = json.dumps({"prev": prev, "at": at.isoformat(), **r}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


KEYED = "k1"  # prefix of a keyed link (HMAC-SHA256, 62 hex digits kept)
_PG_LOCK = 0x4C55_4341  # pg_advisory_xact_lock id of the audit chain ("LUCA")
log = logging.getLogger("lucent.audit")


def _keyed(key: bytes, prev: str, at: datetime, r: dict[str, object]) -> str:
    body = json.dumps({"prev": prev, "at": at.isoformat(), **r}, sort_keys=True)
    return KEYED + hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:62]


@dataclass(frozen=True)
class Anchor:
    """The trail's key and head anchor file (outside the database) for one data folder."""

    key: bytes
    head: Path

    def _mac(self, rec_id: int, link: str, alarm: str) -> str:
        body = json.dumps([rec_id, link, alarm]).encode()
        return hmac.new(self.key, b"head" + body, hashlib.sha256).hexdigest()

    def read(self) -> dict[str, Any] | None:
        """The anchor as stored, or None when there is none yet; a damaged file (not JSON,
        wrong MAC) reads as ``{"bad": reason}``."""
        try:
            state = json.loads(self.head.read_text())
            rec_id, link, alarm = int(state["id"]), str(state["hash"]), str(state["alarm"])
            mac = str(state["mac"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"bad": f"the audit head anchor file cannot be read ({exc})"}
        if not hmac.compare_digest(mac, self._mac(rec_id, link, alarm)):
            return {"bad": "the audit head anchor file does not match its MAC"}
        return {"id": rec_id, "hash": link, "alarm": alarm}

    def advance(self, before: tuple[int, str], last: tuple[int, str]) -> None:
        """After a commit: ``before`` was the table's end when the append read it, ``last``
        the newest record written. Forward only; a table end behind the anchor is kept as
        an alarm."""
        lock_path = self.head.with_suffix(".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            alarm = ""
            if state is not None:
                if "bad" in state:
                    alarm = str(state["bad"])
                else:
                    alarm = str(state["alarm"])
                    if state["id"] >= last[0]:
                        return  # another process already anchored a newer record
                    if not alarm and (
                        state["id"] > before[0]
                        or (state["id"] == before[0] and state["hash"] != before[1])
                    ):
                        alarm = (
                            f"the trail ended at record {before[0]} when record "
                            f"{before[0] + 1} was appended, but record {state['id']} had been "
                            "anchored: the newest records were removed or the chain rewritten"
                        )
            body = {"id": last[0], "hash": last[1], "alarm": alarm}
            body["mac"] = self._mac(last[0], last[1], alarm)
            tmp = self.head.with_name(f"{self.head.name}.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps(body))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.head)


_anchors: dict[str, Anchor] = {}


def _url(bound: Any) -> str:
    engine = getattr(bound, "engine", bound)
    return str(getattr(engine, "url", ""))


def configure(session_factory: Any, data_dir: Path) -> Anchor:
    """Open (at the first start: make) the trail's key and anchor for the database behind
    ``session_factory``; every process of a server calls it (``ServerContext`` → quotas)."""
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    path = keys / "audit.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:  # this process made it: write it whole before anyone reads it (below)
        tmp = keys / f"audit.key.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        os.close(fd)
    for _ in range(100):  # another process may be writing it this very moment
        key = path.read_bytes()
        if len(key) == 32:
            break
        threading.Event().wait(0.05)
    else:
        raise ValueError(f"{path}: the audit key must be 32 bytes")
    anchor = Anchor(key, data_dir / "audit-head.json")
    bind = getattr(session_factory, "kw", {}).get("bind")
    _anchors[_url(bind)] = anchor
    return anchor


def anchor_for(bound: Any) -> Anchor | None:
    """The anchor configured for an engine, session or session factory's database."""
    if hasattr(bound, "get_bind"):
        bound = bound.get_bind()
    elif hasattr(bound, "kw"):
        bound = bound.kw.get("bind")
    return _anchors.get(_url(bound))


def _content(rec: AuditRecord) -> dict[str, object]:
    return {
        "event_id": rec.event_id,
        "event_type": rec.event_type,
        "action": rec.action,
        "outcome": rec.outcome,
        "user": rec.user,
        "address": rec.address,
        "objects": rec.objects,
        "detail": rec.detail,
    }


def append(db: DbSession, entry: Entry) -> AuditRecord:
    """Append inside the caller's transaction, which must come from ``chained`` (or
    ``record``): then the record commits with the caller's changes or not at all."""
    if "audit_chain" not in db.info:
        raise RuntimeError("audit.append needs a transaction from audit.chained()")
    return _append(db, entry)


def _append(db: DbSession, entry: Entry) -> AuditRecord:
    event_id, event_type, action = EVENTS[entry.event]
    chain = db.info.setdefault("audit_chain", {})
    if "before" not in chain and db.get_bind().dialect.name == "postgresql":
        # other processes (DICOM workers) append too: one chain end at a time
        db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    last = db.scalars(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    chain.setdefault("before", (last.id if last else 0, prev))
    anchor = anchor_for(db)
    rec = AuditRecord(
        at=now(),
        event_id=event_id,
        event_type=event_type,
        action=action,
        outcome=entry.outcome,
        user=entry.user[:128],
        address=entry.address[:64],
        objects=entry.objects,
        detail=entry.detail[:2000],
        prev_hash=prev,
        hash="",
    )
    if anchor is not None:
        rec.hash = _keyed(anchor.key, prev, rec.at, _content(rec))
    else:
        rec.hash = _digest(prev, rec.at, _content(rec))
    db.add(rec)
    db.flush()
    chain["last"] = (rec.id, rec.hash)
    return rec


@contextlib.contextmanager
def chained(session_factory: Any) -> Iterator[DbSession]:
    """A write transaction under the chain lock in which ``append`` writes audit records
    that commit atomically with the caller's other changes; the anchor advances and the
    listeners wake after the commit."""
    with _lock:
        with session_factory() as db, db.begin():
            db.info["audit_chain"] = {}
            yield db
            chain = dict(db.info.pop("audit_chain", {}))
            anchor = anchor_for(db)
        if "last" in chain and anchor is not None:
            _anchored(anchor, chain)
    if "last" in chain:
        _wake()


def _anchored(anchor: Anchor, chain: dict[str, Any]) -> None:
    try:
        anchor.advance(chain["before"], chain["last"])
    except OSError:  # the record is committed; verify reports a lagging anchor as such
        log.exception("could not advance the audit head anchor %s", anchor.head)


def record(session_factory: object, *entries: Entry) -> None:
    """Append at the end of the chain, in a transaction of its own, under the chain lock."""
    with chained(session_factory) as db:
        for entry in entries:
            _append(db, entry)


def _wake() -> None:
    for wake in list(listeners):
        try:
            wake()
        except Exception:  # a listener must never fail the audited action
            logging.getLogger("lucent.audit").exception("audit listener failed")


def local_operator() -> str:
    """Who ran a command on this machine: the operating-system account, marked so that it
    cannot be taken for a Lucent account of the same name. The user of every record the
    command line (create-admin, rotate-key, rebuild-index) and the server process write."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name (a container without passwd)
        name = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"os:{name}"


def user_created(role: str, grants: object, *, one_time: bool = False) -> str:
    """The detail of a "roles-change" record for a new account, the same from the API
    (POST /users) and the command line (create-admin, --first-run-admin)."""
    detail = f"user created, role {role}, grants {grants}"
    return detail + ", one-time password" if one_time else detail


def record_local(
    session_factory: object,
    event: str,
    objects: list[dict[str, str]],
    detail: str,
    outcome: int = SUCCESS,
) -> None:
    """One record of what was done on this machine (command line, server start and stop):
    the operating-system account as the user, no network address."""
    record(session_factory, Entry(event, outcome, local_operator(), "", objects, detail))


@dataclass(frozen=True)
class Broken:
    record_id: int
    reason: str


def verify(
    records: Iterable[AuditRecord],
    anchor: Anchor | None = None,
    head: dict[str, Any] | None = None,
) -> Broken | None:
    """The first record whose link or content does not match, or None for an intact chain.

    With the ``anchor`` (key and head file) keyed digests are checked too, and the table's
    end is compared with the ``head`` read from the anchor file *before* the records were
    read (so a concurrent append cannot look like a removal). Without it, keyed records are
    checked for their links only."""
    prev, keyed, last_id = GENESIS, False, 0
    links: dict[int, str] = {}
    for rec in records:
        if rec.prev_hash != prev:
            return Broken(rec.id, "link to the previous record does not match")
        if rec.hash.startswith(KEYED):
            keyed = True
            if anchor is not None and not hmac.compare_digest(
                _keyed(anchor.key, prev, rec.at, _content(rec)), rec.hash
            ):
                return Broken(
                    rec.id,
                    "content does not match its keyed hash (altered, or the chain "
                    "recomputed without the audit key)",
                )
        else:
            if keyed:
                return Broken(rec.id, "an unkeyed record after keyed ones: chain recomputed")
            if _digest(prev, rec.at, _content(rec)) != rec.hash:
                return Broken(rec.id, "content does not match its hash")
        prev, last_id = rec.hash, rec.id
        if head is not None and rec.id == head.get("id"):
            links[rec.id] = rec.hash
    if anchor is None:
        return None
    if head is None:
        if keyed:
            return Broken(last_id, "the audit head anchor file is missing")
        return None
    if "bad" in head:
        return Broken(last_id, str(head["bad"]))
    if head["alarm"]:
        return Broken(last_id, str(head["alarm"]))
    if head["id"] > last_id:
        return Broken(
            last_id + 1,
            f"records {last_id + 1} to {head['id']} are missing: the newest records were "
            "removed (the head anchor names the last one)",
        )
    if links.get(head["id"]) != head["hash"]:
        return Broken(head["id"], "the record named by the head anchor was rewritten")
    return None


def search(
    db: DbSession,
    *,
    event_id: str = "",
    user: str = "",
    outcome: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    object_id: str = "",
    offset: int = 0,
    limit: int = 200,
) -> Sequence[AuditRecord]:
    stmt = select(AuditRecord)
    if event_id:
        stmt = stmt.where(AuditRecord.event_id == event_id)
    if user:
        # user names are stored casefolded, AE titles of DICOM callers as sent
        stmt = stmt.where(func.lower(AuditRecord.user) == user.casefold())
    if outcome is not None:
        stmt = stmt.where(AuditRecord.outcome == outcome)
    if since is not None:
        stmt = stmt.where(AuditRecord.at >= since)
    if until is not None:
        stmt = stmt.where(AuditRecord.at <= until)
    if not object_id:
        return db.scalars(stmt.order_by(AuditRecord.id).offset(offset).limit(limit)).all()
    return _naming(db, stmt, object_id, offset, limit)


#: Records read per round while looking for those that name an object.
_BATCH = 1000


def _naming(
    db: DbSession, stmt: Select[tuple[AuditRecord]], object_id: str, offset: int, limit: int
) -> list[AuditRecord]:
    """The page of records that name ``object_id`` among their objects.

    Offset and limit count matching records, so the filter must come before paging: it was
    applied to the page afterwards, and the oldest 200 records rarely named the study asked
    for (probe 7). SQL narrows to records whose stored JSON text holds the quoted id
    (portable to SQLite and PostgreSQL; a superset: the text may be an object's type), then
    each candidate is checked exactly, reading in id order until the page is full.
    """
    needle = json.dumps(object_id)  # as the JSON column stores it, quotes included
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    stmt = stmt.where(cast(AuditRecord.objects, Text).like(pattern, escape="\\"))
    found: list[AuditRecord] = []
    skip = offset
    after = 0
    while len(found) < limit:
        batch = db.scalars(
            stmt.where(AuditRecord.id > after).order_by(AuditRecord.id).limit(_BATCH)
        ).all()
        for rec in batch:
            if not any(o.get("id") == object_id for o in rec.objects or []):
                continue
            if skip:
                skip -= 1
            elif len(found) < limit:
                found.append(rec)
        if len(batch) < _BATCH:
            break
        after = batch[-1].id
    return found


_OBJECT_TYPES = {
    # kind → (ParticipantObjectTypeCode, TypeCodeRole, IDTypeCode, code system, meaning)
    "study": ("2", "3", "110180", "DCM", "Study Instance UID"),
    "series": ("2", "3", "110180", "DCM", "Study Instance UID"),
    "patient": ("1", "1", "2", "RFC-3881", "Patient Number"),
    "user": ("1", "11", "11", "RFC-3881", "User Identifier"),
    "device": ("2", "13", "110182", "DCM", "Node ID"),
    "share": ("2", "13", "12", "RFC-3881", "URI"),
    "query": ("2", "3", "110181", "DCM", "SOP Class UID"),
    "pool": ("2", "13", "110182", "DCM", "Node ID"),
}
#: PS3.15 A.5.3.2-A.5.3.6: these messages must name the Patient (TypeCode 1, Role 1).
PATIENT_EVENTS = frozenset({"110103", "110104", "110105", "110106", "110107"})
#: PS3.15 A.5.3.12 Query: the participant object is the SOP Class queried. Both C-FIND and
#: QIDO-RS search the study root model; the transfer syntax of a C-FIND identifier is not
#: kept, so the one every association supports (Implicit VR Little Endian) is named.
QUERY_SOP_CLASS = "1.2.840.10008.5.1.4.1.2.2.1"
QUERY_TRANSFER_SYNTAX = "1.2.840.10008.1.2"
SOURCE_ROLE = ("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = ("110152", "DCM", "Destination Role ID")


def _code(parent: ET.Element, tag: str, code: str, system: str, meaning: str) -> None:
    ET.SubElement(
        parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": meaning}
    )


def patients_for(db: DbSession, records: Iterable[AuditRecord]) -> dict[str, str]:
    """Patient IDs of the studies named by records that must name a patient but do not
    (records written before they did, and API data-access records): study UID → ID."""
    from server.index.models import Patient, Study

    wanted = sorted(
        {
            o.get("id", "")
            for r in records
            if r.event_id in PATIENT_EVENTS
            and not any(o.get("type") == "patient" for o in r.objects or [])
            for o in r.objects or []
            if o.get("type") in ("study", "series") and o.get("id")
        }
    )
    found: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        rows = db.execute(
            select(Study.study_uid, Patient.patient_id)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(Study.study_uid.in_(wanted[i : i + 500]))
        ).all()
        found.update({uid: pid for uid, pid in rows})
    return found


def _roles(rec: AuditRecord) -> tuple[tuple[str, str, str] | None, tuple[str, str, str] | None]:
    """(requestor's role, server's role): PS3.15 A.5.3.4 Instances Transferred and A.5.3.12
    Query need the Source and Destination roles. Received (C) and queries: the requestor
    sends; sent (R): the server sends, to the requestor's destination."""
    if rec.event_id == "110112" or (rec.event_id == "110104" and rec.action == "C"):
        return SOURCE_ROLE, DESTINATION_ROLE
    if rec.event_id == "110104":
        return DESTINATION_ROLE, SOURCE_ROLE
    return None, None


def _participant(msg: ET.Element, attrs: dict[str, str], role: tuple[str, str, str] | None) -> None:
    ap = ET.SubElement(msg, "ActiveParticipant", attrs)
    if role is not None:
        _code(ap, "RoleIDCode", *role)


def _object(msg: ET.Element, kind: str, object_id: str) -> ET.Element:
    type_code, role, id_code, system, meaning = _OBJECT_TYPES.get(
        kind, ("2", "13", "12", "RFC-3881", "URI")
    )
    po = ET.SubElement(
        msg,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": object_id,
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _code(po, "ParticipantObjectIDTypeCode", id_code, system, meaning)
    return po


def _query_object(msg: ET.Element, query: str) -> None:
    """PS3.15 A.5.3.12: SOP Class UID as the ID, the query itself base64, the transfer
    syntax as a detail (type/value pair, value base64)."""
    po = _object(msg, "query", QUERY_SOP_CLASS)
    ET.SubElement(po, "ParticipantObjectQuery").text = base64.b64encode(
        query.encode("utf-8")
    ).decode("ascii")
    ET.SubElement(
        po,
        "ParticipantObjectDetail",
        {
            "type": "TransferSyntax",
            "value": base64.b64encode(QUERY_TRANSFER_SYNTAX.encode("ascii")).decode("ascii"),
        },
    )


def to_xml(rec: AuditRecord, source_id: str, patients: dict[str, str] | None = None) -> ET.Element:
    """One DICOM audit message (PS3.15 A.5.1) for a stored record; ``patients`` (study UID →
    Patient ID, ``patients_for``) completes records that do not name their patient."""
    msg = ET.Element("AuditMessage")
    ident = ET.SubElement(
        msg,
        "EventIdentification",
        {
            "EventActionCode": rec.action,
            "EventDateTime": rec.at.isoformat() + "Z",
            "EventOutcomeIndicator": str(rec.outcome),
        },
    )
    _code(ident, "EventID", rec.event_id, "DCM", EVENT_IDS.get(rec.event_id, ""))
    if rec.event_type:
        _code(ident, "EventTypeCode", rec.event_type, "DCM", EVENT_TYPES.get(rec.event_type, ""))
    if rec.detail:
        ET.SubElement(ident, "EventOutcomeDescription").text = rec.detail
    requestor_role, server_role = _roles(rec)
    participant = {"UserID": rec.user or "anonymous", "UserIsRequestor": "true"}
    if rec.address:
        participant |= {"NetworkAccessPointID": rec.address, "NetworkAccessPointTypeCode": "2"}
    _participant(msg, participant, requestor_role)
    _participant(
        msg,
        {"UserID": source_id, "UserIsRequestor": "false", "AlternativeUserID": "lucent-server"},
        server_role,
    )
    source = ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server Process")
    objects = list(rec.objects or [])
    if rec.event_id in PATIENT_EVENTS and not any(o.get("type") == "patient" for o in objects):
        ids = [
            (patients or {}).get(o.get("id", ""), "")
            for o in objects
            if o.get("type") in ("study", "series")
        ]
        for pid in dict.fromkeys(ids or [""]):  # mandatory: an unknown patient has no ID
            _object(msg, "patient", pid)
    queried = False
    for obj in objects:
        kind = obj.get("type", "")
        if kind == "query" and rec.event_id == "110112":
            _query_object(msg, obj.get("id") or rec.detail)  # an empty query: all
            queried = True
        else:
            _object(msg, kind, obj.get("id", ""))
    if rec.event_id == "110112" and not queried:  # a query within one study (its series)
        _query_object(msg, rec.detail)
    return msg


def export_xml(
    records: Iterable[AuditRecord], source_id: str, patients: dict[str, str] | None = None
) -> bytes:
    """Audit messages wrapped in one document (each element is a complete AuditMessage)."""
    root = ET.Element("AuditMessages")
    for rec in records:
        root.append(to_xml(rec, source_id, patients))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
