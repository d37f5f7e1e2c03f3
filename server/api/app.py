"""FastAPI app factory: the local API the desktop apps use, plus DICOMweb under /dicom-web."""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import re
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from lucent.api import schemas
from lucent.net import scu
from server import context as server_context
from server.accounts.retention import RetentionThread
from server.api import (
    account_routes,
    archive_routes,
    audit_routes,
    dicomweb,
    pacs_routes,
    perfusion_routes,
    share_routes,
)
from server.api.auth import (
    BasicCache,
    Caller,
    audit_caller,
    authorize,
    get_caller,
    require_admin,
)
from server.api.body_limit import BodyLimit
from server.api.head import HeadAsGet
from server.api.params import RowId
from server.context import ArchiveReadError, ServerContext
from server.index import db as index_db
from server.index import folding
from server.index.models import RemoteNode

log = logging.getLogger("lucent.api")

nodes_router = APIRouter(prefix="/api/v1/nodes", tags=["remote nodes"])


def _node_out(n: RemoteNode) -> schemas.RemoteNodeOut:
    return schemas.RemoteNodeOut(
        id=n.id,
        name=n.name,
        ae_title=n.ae_title,
        host=n.host,
        port=n.port,
        query_retrieve=n.query_retrieve,
        inbound_query_retrieve=n.inbound_query_retrieve,
        store_target=n.store_target,
        storage_commitment=n.storage_commitment,
        tls=n.tls,
        timeout=n.timeout,
    )


@nodes_router.get("", response_model=list[schemas.RemoteNodeOut])
def list_nodes(request: Request, _: Caller = Depends(get_caller)) -> list[schemas.RemoteNodeOut]:
    ctx: ServerContext = request.app.state.ctx
    with ctx.Session() as db:
        return [_node_out(n) for n in db.scalars(select(RemoteNode).order_by(RemoteNode.name))]


#: Longest association/connection timeout a node may have (as NodeOptionsIn.dimse_timeout).
MAX_NODE_TIMEOUT = 3600.0


#: Longest node name (the index column is String(64)).
MAX_NODE_NAME = 64
#: PS3.5 Table 6.2-1, AE: the default repertoire without backslash and control characters.
_AE_CHARS = re.compile(r"[\x20-\x5b\x5d-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _checked(body: schemas.RemoteNodeIn) -> schemas.RemoteNodeIn:
    """What the schema leaves open but an association needs (found with the API fuzzer and
    by driving the API as an outside client); returns the body as it is stored.

    Node timeouts were taken as sent: 1e300 s or NaN broke pynetdicom's socket setup (the
    C-ECHO then reported a misleading "aborted"), a negative or NaN one made it wait 30 s
    for a silent host, and one of days held the synchronous C-ECHO request for days.
    An AE title with a backslash, a control character or a non-ASCII letter, or one of
    blanks only, was stored and then failed (or matched nothing) on every association;
    leading and trailing spaces are not significant (PS3.5 6.2), so they are dropped. A
    host typed as "[::1]" was stored with its brackets and then failed as "unknown host".
    """
    name = body.name.strip()
    if not name:
        raise HTTPException(422, "name must not be empty")
    if len(name) > MAX_NODE_NAME or _CONTROL.search(name):
        raise HTTPException(
            422, f"name must be at most {MAX_NODE_NAME} characters, with no control characters"
        )
    ae_title = body.ae_title.strip(" ")
    if not ae_title:
        raise HTTPException(422, "ae_title must not be empty or blank")
    if len(ae_title) > 16 or not _AE_CHARS.fullmatch(ae_title):
        raise HTTPException(
            422,
            f"ae_title {body.ae_title[:40]!r} is not a DICOM AE title: at most 16 characters "
            "of printable ASCII, no backslash, no control characters (PS3.5 6.2, AE)",
        )
    if not (math.isfinite(body.timeout) and 0 < body.timeout <= MAX_NODE_TIMEOUT):
        raise HTTPException(422, f"timeout must be more than 0 and at most {MAX_NODE_TIMEOUT:g} s")
    host = body.host.strip()
    if not host:
        raise HTTPException(422, "host must not be empty")
    host = scu.unbracketed(host)
    if not valid_host(host):
        raise HTTPException(
            422,
            f"host '{body.host[:80]}' is not an IP address or a valid host name (RFC 1123); "
            "an IPv6 address may be written with or without brackets ([::1] or ::1)",
        )
    if "%" in host:
        # pynetdicom drops the zone of "fe80::1%eth0" when it connects (EINVAL): C-ECHO,
        # C-FIND and C-STORE worked, retrieve, commitment and C-MOVE to it failed with a
        # message blaming the peer (outside probe 25)
        raise HTTPException(
            422,
            f"host '{body.host[:80]}': a link-local IPv6 address with a zone is not supported "
            "for DICOM associations; use the node's global or unique local address, or a "
            "host name",
        )
    if not 1 <= body.port <= 65535:  # the schema says so too; kept next to its siblings
        raise HTTPException(422, "port must be 1-65535")
    return body.model_copy(update={"name": name, "ae_title": ae_title, "host": host})


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def valid_host(host: str) -> bool:
    """An IPv4/IPv6 literal (without brackets) or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if name.split(".")[-1].isdigit():
        return False  # "999.1.1.1": not an IPv4 address, and no top-level label is numeric
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


@nodes_router.post("", response_model=schemas.RemoteNodeOut, status_code=201)
def add_node(
    body: schemas.RemoteNodeIn, request: Request, caller: Caller = Depends(require_admin)
) -> schemas.RemoteNodeOut:
    ctx: ServerContext = request.app.state.ctx
    body = _checked(body)
    with ctx.WriteSession() as db, db.begin():
        if _name_taken(db, body.name):
            raise HTTPException(409, f"a node named '{body.name}' exists")
        node = RemoteNode(**body.model_dump())
        db.add(node)
        db.flush()
        out = _node_out(node)
    _audit_node(ctx, caller, "added", out.id, body.model_dump())
    return out


@nodes_router.put("/{node_id}", response_model=schemas.RemoteNodeOut)
def update_node(
    node_id: RowId,
    body: schemas.RemoteNodeIn,
    request: Request,
    caller: Caller = Depends(require_admin),
) -> schemas.RemoteNodeOut:
    """Edit a node (issue 3: "editable through the API")."""
    ctx: ServerContext = request.app.state.ctx
    body = _checked(body)
    with ctx.WriteSession() as db, db.begin():
        # the row lock first: two admins saving the same node at once each wrote only the
        # columns they changed from the row as they had read it, and on PostgreSQL the
        # node ended as a mix of both edits (AE of one, host of the other: probe 31)
        node = db.get(RemoteNode, node_id, with_for_update=True)
        if node is None:
            raise HTTPException(404, "no such node")
        if _name_taken(db, body.name, node_id):
            raise HTTPException(409, f"a node named '{body.name}' exists")
        for key, value in body.model_dump().items():
            setattr(node, key, value)
        db.flush()
        out = _node_out(node)
    _audit_node(ctx, caller, "changed", node_id, body.model_dump())
    return out


@nodes_router.delete("/{node_id}", status_code=204)
def delete_node(node_id: RowId, request: Request, caller: Caller = Depends(require_admin)) -> None:
    ctx: ServerContext = request.app.state.ctx
    with ctx.WriteSession() as db, db.begin():
        node = db.get(RemoteNode, node_id)
        if node is None:
            raise HTTPException(404, "no such node")
        gone = {"name": node.name, "ae_title": node.ae_title, "host": node.host, "port": node.port}
        db.delete(node)
    _audit_node(ctx, caller, "removed", node_id, gone)


def _name_taken(db: Session, name: str, other_than: int | None = None) -> bool:
    """Node names are unique regardless of case: "SINK" and "sink" in one list are two
    entries an administrator cannot tell apart when picking a target."""
    # the key the unique index holds (folded in Python: SQL lower() folds only ASCII on
    # SQLite, so "MÜNCHEN" slipped past this check to a misleading race 409)
    clash = db.scalars(
        select(RemoteNode).where(RemoteNode.name_key == folding.name_key(name))
    ).first()
    return clash is not None and clash.id != other_than


def _audit_node(
    ctx: ServerContext, caller: Caller, change: str, node_id: int, values: dict[str, Any]
) -> None:
    """Remote-node changes are configuration changes: who changed which node to what."""
    keys = ("name", "ae_title", "host", "port")
    shown = ", ".join(f"{k}={values[k]}" for k in keys if k in values)
    device = [{"type": "device", "id": str(values.get("ae_title", node_id))}]
    audit_caller(ctx, "config-change", caller, device, f"remote node {node_id} {change}: {shown}")


class DatabaseOutage:
    """503 "index database unavailable: <reason>" for a request the index could not serve
    (down, frozen past the connect timeout, shutting down, timed out). Before, every route
    answered a bare 500 and logged a traceback per request (probe 12). The log gets one
    line when an outage is first seen, and again after a quiet minute; errors that are not
    outages still reach the 500 handler with their traceback."""

    QUIET_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -1e9

    async def __call__(self, request: Request, exc: Exception) -> JSONResponse:
        full = disk_full(exc)
        if full is not None:
            return self._full(full)
        conflict = index_db.rolled_back(exc)
        if conflict is not None:
            return self._rolled_back(request, conflict)
        reason = index_db.unavailable(exc)
        if reason is None:
            raise exc
        now = time.monotonic()
        with self._lock:
            quiet, self._last = now - self._last > self.QUIET_S, now
        if quiet:
            log.error("index database unavailable, API answers 503: %s", reason)
        return JSONResponse(
            {"detail": f"index database unavailable: {reason}"},
            status_code=503,
            headers={"Retry-After": "10"},
        )

    #: Seconds a client waits before repeating a request PostgreSQL rolled back.
    RETRY_CONFLICT_S = 1

    def _rolled_back(self, request: Request, what: str) -> JSONResponse:
        """503 with Retry-After for a transaction PostgreSQL rolled back to settle a conflict
        with a concurrent one (``index_db.rolled_back``): a study delete that still
        deadlocked with arriving instances after its retries answered a bare 500 with
        DeadlockDetected (outside probe 31). The conflict is transient, not permanent (a
        409 would tell the client its request can never succeed): the same request,
        repeated, normally goes through. One warning line per request, no traceback."""
        log.warning(
            "%s %s: the index database rolled the request back, answered 503: %s",
            request.method,
            request.url.path,
            what,
        )
        return JSONResponse(
            {
                "detail": "the index database rolled this request back to resolve a conflict "
                f"with a concurrent request ({what}); it was not completed: try it again"
            },
            status_code=503,
            headers={"Retry-After": str(self.RETRY_CONFLICT_S)},
        )

    def _full(self, where: str) -> JSONResponse:
        """507 Insufficient Storage (RFC 4918 11.5), as the README promises and STOW-RS
        answers for a full archive: POST /auth/login on a full disk was a bare 500 with
        SQLite's "database or disk is full" (outside probe 29)."""
        now = time.monotonic()
        with self._lock:
            quiet, self._last = now - self._last > self.QUIET_S, now
        if quiet:
            log.error("disk full, API answers 507: %s", where)
        return JSONResponse(
            {"detail": f"insufficient storage: {where}; free disk space and try again"},
            status_code=507,
        )

    async def os_error(self, request: Request, exc: Exception) -> JSONResponse:
        full = disk_full(exc)
        if full is None:
            raise exc
        return self._full(full)


#: What a clash on a unique column means, by table (the names the index gives them).
_CLASHES = {
    "users": "a user with this name exists",
    "user_groups": "a group with this name exists",
    "remote_nodes": "a node with this name exists",
    "quotas": "a quota for this subject exists",
    "group_members": "the user is already a member of the group",
    "pool_grants": "the grant exists",
    "devices": "the device is already registered",
}
#: The table of a unique index on an expression, which SQLite names instead of a column.
_INDEX_TABLES = {"uq_remote_nodes_name_key": "remote_nodes"}


def conflict(exc: IntegrityError) -> str | None:
    """The 409 detail for a unique or foreign-key violation, None for another integrity
    error (a NOT NULL or CHECK violation is our bug and stays a 500)."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None)
    text = str(orig)
    if code == "23505" or text.startswith("UNIQUE constraint failed"):
        diag = getattr(orig, "diag", None)
        table = getattr(diag, "table_name", None) or text.partition(": ")[2].partition(".")[0]
        if table.startswith("index '"):  # SQLite: "UNIQUE constraint failed: index 'name'"
            table = _INDEX_TABLES.get(table.removeprefix("index '").rstrip("'"), "")
        what = _CLASHES.get(table or "", f"the {table or 'record'} exists")
        return f"{what} (created or changed by another request at the same time)"
    if code == "23503" or text.startswith("FOREIGN KEY constraint failed"):
        return "a record this change refers to was removed by another request; reload"
    return None


async def integrity_conflict(request: Request, exc: Exception) -> JSONResponse:
    """409 Conflict for a write that lost a race on a unique key: two admins creating the
    same user, node or group at once, or a concurrent delete. Every route's "already
    exists" check reads before it inserts, so on PostgreSQL (READ COMMITTED) both requests
    passed it and the second answered a bare 500 with UniqueViolation (probe 31); one
    handler here instead of a try/except in every route."""
    assert isinstance(exc, IntegrityError)
    detail = conflict(exc)
    if detail is None:
        raise exc
    return JSONResponse({"detail": detail}, status_code=409)


#: SQLite's SQLITE_FULL text and PostgreSQL's disk_full / out of disk space SQLSTATE.
_SQLITE_FULL = "database or disk is full"
_PG_DISK_FULL = "53100"


def disk_full(exc: BaseException) -> str | None:
    """Where the disk is full, when ``exc`` says so (the index database's disk, or a file
    the API writes: ENOSPC, EDQUOT); None for anything else."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if _SQLITE_FULL in str(orig).lower() or getattr(orig, "sqlstate", None) == _PG_DISK_FULL:
            return "the disk of the index database is full"
        return None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        name = f" ({exc.filename})" if exc.filename else ""
        return f"the disk is full{name}"
    return None


async def archive_unreadable(request: Request, exc: Exception) -> JSONResponse:
    """500 with the reason, for an archived instance whose object is missing or fails
    authentication, from any route: WADO-RS Retrieve Instance and Retrieve Metadata
    answered a bare "Internal Server Error" with a traceback in the log (outside probe 48).
    The reason names no server path; ``ServerContext`` has logged the object's path and
    written the Security Alert. 500 as /api/v1 answers: the damage is the server's."""
    assert isinstance(exc, ArchiveReadError)
    return JSONResponse({"detail": f"archive object unreadable: {exc}"}, status_code=500)


class RequestorScope:
    """ASGI middleware: the requestor of a request's archive reads (its address; the user
    once authentication has named one), for the Security Alert ``ServerContext`` writes
    when an archive object cannot be read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        who = server_context.Requestor(address=str(client[0]) if client else "")
        token = server_context.requestor.set(who)
        try:
            await self.app(scope, receive, send)
        finally:
            server_context.requestor.reset(token)


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="Lucent server API",
        version="1",
        description="Local API of the Lucent server; DICOMweb (QIDO/WADO/STOW) under /dicom-web.",
        # Accounts: every route passes the rights check of server.accounts.rights.POLICY.
        dependencies=[Depends(authorize)],
    )
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestorScope)
    app.state.ctx = ctx
    outage = DatabaseOutage()
    app.add_exception_handler(DBAPIError, outage)
    app.add_exception_handler(IntegrityError, integrity_conflict)
    app.add_exception_handler(PoolTimeout, outage)
    app.add_exception_handler(OSError, outage.os_error)
    app.add_exception_handler(ArchiveReadError, archive_unreadable)
    app.state.basic_cache = BasicCache(ctx.settings.api.basic_auth_cache_seconds)
    app.include_router(account_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(share_routes.router)
    app.include_router(archive_routes.router)
    app.include_router(nodes_router)
    app.include_router(dicomweb.router)
    app.include_router(pacs_routes.router)
    app.include_router(perfusion_routes.router)
    if ctx.settings.accounts.retention_interval_minutes > 0:
        app.router.on_startup.append(lambda: RetentionThread(ctx).start())
    return app
