"""/api/v1/audit: list and filter the audit trail, verify its hash chain, export DICOM audit
XML (PS3.15 A.5). Reading the trail is itself audited (110101 Audit Log Used).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from lucent.api import account_schemas as acs
from server.accounts import audit
from server.api.auth import Caller, audit_caller, get_caller
from server.api.params import Offset
from server.context import ServerContext
from server.index.account_models import AuditRecord

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def _ctx(request: Request) -> ServerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _out(r: AuditRecord) -> acs.AuditOut:
    return acs.AuditOut(
        id=r.id,
        at=r.at,
        event_id=r.event_id,
        event_name=audit.EVENT_IDS.get(r.event_id, ""),
        event_type=r.event_type,
        action=r.action,
        outcome=r.outcome,
        user=r.user,
        address=r.address,
        objects=r.objects or [],
        detail=r.detail,
    )


def _find(
    request: Request,
    event_id: str,
    user: str,
    outcome: int | None,
    since: datetime | None,
    until: datetime | None,
    object_id: str,
    offset: int,
    limit: int,
) -> list[AuditRecord]:
    with _ctx(request).Session() as db:
        return list(
            audit.search(
                db,
                event_id=event_id,
                user=user,
                outcome=outcome,
                since=since,
                until=until,
                object_id=object_id,
                offset=offset,
                limit=limit,
            )
        )


def _used(request: Request, caller: Caller, detail: str) -> None:
    audit_caller(_ctx(request), "audit-read", caller, [], detail)


@router.get("", response_model=list[acs.AuditOut])
def list_audit(
    request: Request,
    event_id: str = Query("", description="e.g. 110114 User Authentication"),
    user: str = "",
    outcome: int | None = Query(None, ge=0, le=255, description="0 success, 4, 8, 12 failures"),
    since: datetime | None = None,
    until: datetime | None = None,
    object_id: str = Query("", description="a study UID, user name, device id ..."),
    offset: Offset = 0,
    limit: int = Query(200, ge=1, le=5000),
    caller: Caller = Depends(get_caller),
) -> list[acs.AuditOut]:
    rows = _find(request, event_id, user, outcome, since, until, object_id, offset, limit)
    _used(request, caller, "listed")
    return [_out(r) for r in rows]


@router.get("/export", response_class=Response)
def export_audit(
    request: Request,
    event_id: str = "",
    user: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(5000, ge=1, le=100000),
    caller: Caller = Depends(get_caller),
) -> Response:
    """DICOM audit messages (PS3.15 A.5.1) as XML, for an ATNA audit record repository."""
    rows = _find(request, event_id, user, None, since, until, "", 0, limit)
    with _ctx(request).Session() as db:
        patients = audit.patients_for(db, rows)
    body = audit.export_xml(rows, _ctx(request).settings.audit.source_id, patients)
    _used(request, caller, "exported")
    return Response(body, media_type="application/xml")


@router.get("/verify", response_model=acs.AuditVerifyOut)
def verify_audit(request: Request, caller: Caller = Depends(get_caller)) -> acs.AuditVerifyOut:
    """Walk the whole hash chain; the first altered, inserted or removed record is named.
    The head anchor (outside the database) is read first, so records appended meanwhile
    are simply newer than it; removed newest records and a recomputed chain are reported."""
    ctx = _ctx(request)
    anchor = audit.anchor_for(ctx.WriteSession)
    head = anchor.read() if anchor is not None else None
    with ctx.Session() as db:
        rows = list(db.scalars(select(AuditRecord).order_by(AuditRecord.id)))
        broken = audit.verify(rows, anchor, head)
    _used(request, caller, "verified")
    return acs.AuditVerifyOut(
        intact=broken is None,
        records=len(rows),
        broken_at=broken.record_id if broken else None,
        reason=broken.reason if broken else "",
    )
