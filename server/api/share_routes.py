"""Second-opinion share links (FAQ: "a temporary link to studies or series ... protected
against unauthorized access with a PIN") and the small web viewer they open.

A link names exactly one study or series. Its token (256 bits) and PIN are shown once to
the creator and stored only as hashes. Opening ``/share/{token}`` in a browser shows a PIN
form; the right PIN sets an HttpOnly cookie scoped to that link's path, which unlocks the
frame list and the rendered frames of that study/series only — no other route accepts it.
Wrong PINs are counted and audited; after ``share_pin_attempts`` the link is blocked.
"""

from __future__ import annotations

import io
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import select

from lucent.api import account_schemas as acs
from lucent.dicom import pixels
from server.accounts import audit, links, rights, users
from server.accounts.clock import now
from server.accounts.login import digest, new_token
from server.api import reset_page
from server.api.auth import Caller, access, audit_caller, client_address, get_caller
from server.api.params import RowId
from server.context import ServerContext
from server.index.account_models import ShareLink, ShareSession
from server.index.models import Instance, Series, Study, User

router = APIRouter(tags=["share links"])
# This router carries the server's browser pages outside /api/v1: the mailed reset link's too.
router.include_router(reset_page.router)
COOKIE = "lucent_share"
_PAGE = (Path(__file__).parent / "web" / "share.html").read_text(encoding="utf-8")


def _ctx(request: Request) -> ServerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _share_out(s: ShareLink, creator: str, readable: bool) -> acs.ShareOut:
    """One link as listed; what names the images (UIDs, note) only for those who may read
    them: clinic IT sees and revokes every link, but reads no patient data (rights.py)."""
    return acs.ShareOut(
        id=s.id,
        study_uid=s.study_uid if readable else "",
        series_uid=s.series_uid if readable else "",
        created_at=s.created_at,
        expires_at=s.expires_at,
        max_views=s.max_views,
        views=s.views,
        revoked=s.revoked,
        note=s.note if readable else "",
        creator=creator,
        pool=s.pool,
    )


@router.post("/api/v1/shares", response_model=acs.ShareCreated, status_code=201)
def create_share(
    body: acs.ShareIn, request: Request, caller: Caller = Depends(get_caller)
) -> acs.ShareCreated:
    """Create a link; the URL and PIN are in this answer only (tell the PIN separately)."""
    ctx = _ctx(request)
    limit_h = ctx.settings.accounts.share_max_days * 24
    if not 0 < body.expires_hours <= limit_h:
        raise HTTPException(422, f"expires_hours must be between 0 and {limit_h:g}")
    if body.max_views is not None and body.max_views < 1:
        raise HTTPException(422, "max_views must be at least 1")
    with ctx.Session() as db:
        study = db.scalars(select(Study).where(Study.study_uid == body.study_uid)).first()
        if study is None or not access(request, caller).allows(study.pool, "share"):
            raise HTTPException(404, f"study {body.study_uid} not found")
        if body.series_uid:
            series = db.scalars(
                select(Series).where(
                    Series.series_uid == body.series_uid, Series.study_pk == study.id
                )
            ).first()
            if series is None:
                raise HTTPException(404, f"series {body.series_uid} not found in this study")
        pool = study.pool
    token = new_token()
    pin = f"{secrets.randbelow(10**6):06d}"
    stamp = now()
    with ctx.WriteSession() as db, db.begin():
        link = ShareLink(
            token_hash=digest(token),
            creator_pk=caller.user_id,
            study_uid=body.study_uid,
            series_uid=body.series_uid,
            pool=pool,
            pin_hash=users.hash_secret(pin),
            note=body.note[:256],
            created_at=stamp,
            expires_at=stamp + timedelta(hours=body.expires_hours),
            max_views=body.max_views,
            views=0,
            pin_failures=0,
            revoked=False,
        )
        db.add(link)
        db.flush()
        link_id, expires = link.id, link.expires_at
    links.warn_if_guessed(ctx.settings, "share link")
    base = links.public_base(ctx.settings)
    audit_caller(
        ctx,
        "share-create",
        caller,
        [{"type": "study", "id": body.study_uid}, {"type": "share", "id": str(link_id)}],
        f"series {body.series_uid}" if body.series_uid else "whole study",
    )
    return acs.ShareCreated(id=link_id, url=f"{base}/share/{token}", pin=pin, expires_at=expires)


@router.get("/api/v1/shares", response_model=list[acs.ShareOut])
def list_shares(request: Request, caller: Caller = Depends(get_caller)) -> list[acs.ShareOut]:
    """The caller's own links (administrators and clinic IT: all links)."""
    acc = access(request, caller)
    with _ctx(request).Session() as db:
        stmt = select(ShareLink, User.username).join(User, User.id == ShareLink.creator_pk)
        if not caller.is_admin:
            stmt = stmt.where(ShareLink.creator_pk == caller.user_id)
        rows = db.execute(stmt.order_by(ShareLink.id)).all()
        return [_share_out(s, name, acc.allows(s.pool, "read")) for s, name in rows]


@router.delete("/api/v1/shares/{share_id}", status_code=204)
def revoke_share(share_id: RowId, request: Request, caller: Caller = Depends(get_caller)) -> None:
    ctx = _ctx(request)
    with ctx.WriteSession() as db, db.begin():
        link = db.get(ShareLink, share_id)
        if link is None or (link.creator_pk != caller.user_id and not caller.is_admin):
            raise HTTPException(404, "no such share link")
        link.revoked = True
    audit_caller(ctx, "share-revoke", caller, [{"type": "share", "id": str(share_id)}], "")


# ------------------------------------------------------------------ the public side
def _usable(db: Any, link: ShareLink | None, ctx: ServerContext) -> str:
    """Why a link cannot be used ('' = usable)."""
    if link is None:
        return "This link is not valid."
    if link.revoked:
        return "This link has been withdrawn."
    if link.expires_at <= now():
        return "This link has expired."
    if link.pin_failures >= ctx.settings.accounts.share_pin_attempts:
        return "This link is blocked after too many wrong PINs."
    if not _creator_may_share(db, link, ctx):
        return "This link is no longer valid; ask the sender for a new one."
    return ""


def _creator_may_share(db: Any, link: ShareLink, ctx: ServerContext) -> bool:
    """A link shares what its creator may share, for as long as they may: it stops when the
    account is disabled or loses the share or read right on the pool (it went on opening
    for up to share_max_days: probe 7). Checked on every use, so it follows grants, groups
    and roles as they are now."""
    creator = db.get(User, link.creator_pk)
    if creator is None or not creator.enabled:
        return False
    pools = [p.name for p in ctx.settings.pools]
    acc = rights.pool_access(db, creator.id, creator.role, pools)
    return acc.allows(link.pool, "share") and acc.allows(link.pool, "read")


def _link(db: Any, token: str) -> ShareLink | None:
    return db.scalars(select(ShareLink).where(ShareLink.token_hash == digest(token))).first()


@router.get("/share/{token}", response_class=HTMLResponse)
def share_page(token: str, request: Request) -> HTMLResponse:
    ctx = _ctx(request)
    with ctx.Session() as db:
        problem = _usable(db, _link(db, token), ctx)
    page = _PAGE.replace("{{PROBLEM}}", problem)
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    }
    return HTMLResponse(page, status_code=410 if problem else 200, headers=headers)


class PinIn(BaseModel):
    pin: str


@router.post("/share/{token}/pin")
def share_pin(token: str, body: PinIn, request: Request, response: Response) -> dict[str, Any]:
    """Check the PIN; the right one opens a viewing session (cookie) and counts one view."""
    ctx = _ctx(request)
    address = client_address(request)
    session_token = ""
    with ctx.WriteSession() as db, db.begin():
        link = _link(db, token)
        problem = _usable(db, link, ctx)
        if link is not None and link.max_views is not None and link.views >= link.max_views:
            problem = problem or "This link has been used as often as allowed."
        ok = False
        if not problem and link is not None:
            if users.check_secret(link.pin_hash, body.pin.strip()):
                ok = True
                link.views += 1
                session_token = new_token()
                db.add(
                    ShareSession(
                        token_hash=digest(session_token),
                        link_pk=link.id,
                        expires_at=min(link.expires_at, now() + timedelta(hours=4)),
                    )
                )
            else:
                link.pin_failures += 1
                left = ctx.settings.accounts.share_pin_attempts - link.pin_failures
                problem = (
                    f"Wrong PIN. {left} attempt(s) left."
                    if left > 0
                    else "Wrong PIN. This link is now blocked."
                )
        objects = [{"type": "share", "id": str(link.id)}] if link else []
        if link is not None:
            objects.append({"type": "study", "id": link.study_uid})
    audit.record(
        ctx.WriteSession,
        audit.Entry(
            "share-pin",
            audit.SUCCESS if ok else audit.MINOR_FAILURE,
            "share-link",
            address,
            objects,
            "PIN accepted" if ok else problem,
        ),
    )
    if not ok:
        raise HTTPException(401 if link is not None and "Wrong PIN" in problem else 410, problem)
    response.set_cookie(
        COOKIE,
        session_token,
        httponly=True,
        samesite="strict",
        path=f"/share/{token}",
        secure=request.url.scheme == "https",
    )
    return {"ok": True}


def _viewing(request: Request, token: str) -> ShareLink:
    """The link a valid viewing cookie belongs to; the cookie only opens its own link."""
    ctx = _ctx(request)
    cookie = request.cookies.get(COOKIE, "")
    with ctx.Session() as db:
        link = _link(db, token)
        if _usable(db, link, ctx) or link is None or not cookie:
            raise HTTPException(401, "enter the PIN first")
        sess = db.scalars(
            select(ShareSession).where(ShareSession.token_hash == digest(cookie))
        ).first()
        if sess is None or sess.link_pk != link.id or sess.expires_at <= now():
            raise HTTPException(401, "enter the PIN first")
        db.expunge(link)
        return link


def _frames(ctx: ServerContext, link: ShareLink) -> list[Instance]:
    with ctx.Session() as db:
        stmt = (
            select(Instance)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_uid == link.study_uid, Instance.pixel_key.is_not(None))
            .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        )
        if link.series_uid:
            stmt = stmt.where(Series.series_uid == link.series_uid)
        return list(db.scalars(stmt))


@router.get("/share/{token}/content")
def share_content(token: str, request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    link = _viewing(request, token)
    found = _frames(ctx, link)
    audit.record(
        ctx.WriteSession,
        audit.Entry(
            "share-use",
            audit.SUCCESS,
            "share-link",
            client_address(request),
            [{"type": "share", "id": str(link.id)}, {"type": "study", "id": link.study_uid}],
            f"{len(found)} image(s) viewed",
        ),
    )
    images = []
    for i in found:
        a = i.attrs or {}
        wc, ww = a.get("WindowCenter"), a.get("WindowWidth")
        images.append(
            {
                "rows": i.rows,
                "columns": i.columns,
                "window_center": float(wc[0]) if wc else None,
                "window_width": float(ww[0]) if ww else None,
            }
        )
    return {"images": images, "note": link.note}


@router.get("/share/{token}/frames/{index}", response_class=Response)
def share_frame(
    token: str,
    index: int,
    request: Request,
    wc: float | None = None,
    ww: float | None = None,
) -> Response:
    """One image of the shared study/series as PNG, windowed (PS3.3 C.11.2.1.2)."""
    ctx = _ctx(request)
    link = _viewing(request, token)
    found = _frames(ctx, link)
    if not 0 <= index < len(found):
        raise HTTPException(404, "no such image")
    ds = pixels.read(ctx.instance_bytes(found[index]))
    if wc is None or ww is None:
        arr = pixels.render(ds, 0)
    else:
        values = pixels.modality_lut(ds, pixels.decode_frame(ds, 0))
        invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        arr = pixels.window_to_8bit(values, wc, ww, invert=invert)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})
