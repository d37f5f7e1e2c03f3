"""Audit trail with the DICOM audit vocabulary (PS3.15 A.5), append-only and hash-chained.

Every record carries the SHA-256 of its predecessor and of its own canonical content, so
altering, inserting or removing one stored record breaks the chain at that point
(``verify``). The database additionally refuses UPDATE and DELETE on the table (migration
0003 triggers). Records export as DICOM audit messages (PS3.15 A.5.1 schema, derived from
RFC 3881) for an Audit Record Repository (IHE ATNA).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree import ElementTree as ET

from sqlalchemy import Select, Text, cast, func, select
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


def _append(db: DbSession, entry: Entry) -> AuditRecord:
    event_id, event_type, action = EVENTS[entry.event]
    last = db.scalars(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
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
    rec.hash = _digest(prev, rec.at, _content(rec))
    db.add(rec)
    db.flush()
    return rec


def record(session_factory: object, *entries: Entry) -> None:
    """Append at the end of the chain, in a transaction of its own, under the chain lock."""
    with _lock, session_factory() as db, db.begin():  # type: ignore[operator]
        for entry in entries:
            _append(db, entry)
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


def verify(records: Iterable[AuditRecord]) -> Broken | None:
    """The first record whose link or content does not match, or None for an intact chain."""
    prev = GENESIS
    for rec in records:
        if rec.prev_hash != prev:
            return Broken(rec.id, "link to the previous record does not match")
        if _digest(prev, rec.at, _content(rec)) != rec.hash:
            return Broken(rec.id, "content does not match its hash")
        prev = rec.hash
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
    "query": ("2", "3", "1.2.840.10008.5.1.4.1.2.2.1", "DCM", "Study Root Query/Retrieve"),
    "pool": ("2", "13", "110182", "DCM", "Node ID"),
}


def _code(parent: ET.Element, tag: str, code: str, system: str, meaning: str) -> None:
    ET.SubElement(
        parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": meaning}
    )


def to_xml(rec: AuditRecord, source_id: str) -> ET.Element:
    """One DICOM audit message (PS3.15 A.5.1) for a stored record."""
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
    participant = {"UserID": rec.user or "anonymous", "UserIsRequestor": "true"}
    if rec.address:
        participant |= {"NetworkAccessPointID": rec.address, "NetworkAccessPointTypeCode": "2"}
    ET.SubElement(msg, "ActiveParticipant", participant)
    ET.SubElement(
        msg,
        "ActiveParticipant",
        {"UserID": source_id, "UserIsRequestor": "false", "AlternativeUserID": "lucent-server"},
    )
    source = ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server Process")
    for obj in rec.objects or []:
        kind = obj.get("type", "")
        type_code, role, id_code, system, meaning = _OBJECT_TYPES.get(
            kind, ("2", "13", "12", "RFC-3881", "URI")
        )
        po = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": obj.get("id", ""),
                "ParticipantObjectTypeCode": type_code,
                "ParticipantObjectTypeCodeRole": role,
            },
        )
        _code(po, "ParticipantObjectIDTypeCode", id_code, system, meaning)
    return msg


def export_xml(records: Iterable[AuditRecord], source_id: str) -> bytes:
    """Audit messages wrapped in one document (each element is a complete AuditMessage)."""
    root = ET.Element("AuditMessages")
    for rec in records:
        root.append(to_xml(rec, source_id))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
