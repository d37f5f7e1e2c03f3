"""FastAPI app factory: the local API the desktop apps use, plus DICOMweb under /dicom-web."""

from __future__ import annotations

import ipaddress
import math
import re

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from sqlalchemy import select

from lucent.api import schemas
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
from server.api.auth import BasicCache, Caller, authorize, get_caller, require_admin
from server.api.params import RowId
from server.context import ServerContext
from server.index.models import RemoteNode

nodes_router = APIRouter(prefix="/api/v1/nodes", tags=["remote nodes"])


def _node_out(n: RemoteNode) -> schemas.RemoteNodeOut:
    return schemas.RemoteNodeOut(
        id=n.id,
        name=n.name,
        ae_title=n.ae_title,
        host=n.host,
        port=n.port,
        query_retrieve=n.query_retrieve,
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


def _checked(body: schemas.RemoteNodeIn) -> schemas.RemoteNodeIn:
    """What the schema leaves open but an association needs (found with the API fuzzer).

    Node timeouts were taken as sent: 1e300 s or NaN broke pynetdicom's socket setup (the
    C-ECHO then reported a misleading "aborted"), a negative or NaN one made it wait 30 s
    for a silent host, and one of days held the synchronous C-ECHO request for days.
    """
    if not (math.isfinite(body.timeout) and 0 < body.timeout <= MAX_NODE_TIMEOUT):
        raise HTTPException(422, f"timeout must be more than 0 and at most {MAX_NODE_TIMEOUT:g} s")
    if not body.host.strip():
        raise HTTPException(422, "host must not be empty")
    if not valid_host(body.host.strip()):
        raise HTTPException(
            422, f"host '{body.host[:80]}' is not an IP address or a valid host name (RFC 1123)"
        )
    return body


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def valid_host(host: str) -> bool:
    """An IPv4/IPv6 literal (brackets allowed) or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


@nodes_router.post("", response_model=schemas.RemoteNodeOut, status_code=201)
def add_node(
    body: schemas.RemoteNodeIn, request: Request, _: Caller = Depends(require_admin)
) -> schemas.RemoteNodeOut:
    ctx: ServerContext = request.app.state.ctx
    _checked(body)
    with ctx.Session() as db, db.begin():
        if db.scalars(select(RemoteNode).where(RemoteNode.name == body.name)).first():
            raise HTTPException(409, f"a node named '{body.name}' exists")
        node = RemoteNode(**body.model_dump())
        db.add(node)
        db.flush()
        return _node_out(node)


@nodes_router.put("/{node_id}", response_model=schemas.RemoteNodeOut)
def update_node(
    node_id: RowId, body: schemas.RemoteNodeIn, request: Request, _: Caller = Depends(require_admin)
) -> schemas.RemoteNodeOut:
    """Edit a node (issue 3: "editable through the API")."""
    ctx: ServerContext = request.app.state.ctx
    _checked(body)
    with ctx.Session() as db, db.begin():
        node = db.get(RemoteNode, node_id)
        if node is None:
            raise HTTPException(404, "no such node")
        clash = db.scalars(select(RemoteNode).where(RemoteNode.name == body.name)).first()
        if clash is not None and clash.id != node_id:
            raise HTTPException(409, f"a node named '{body.name}' exists")
        for key, value in body.model_dump().items():
            setattr(node, key, value)
        db.flush()
        return _node_out(node)


@nodes_router.delete("/{node_id}", status_code=204)
def delete_node(node_id: RowId, request: Request, _: Caller = Depends(require_admin)) -> None:
    ctx: ServerContext = request.app.state.ctx
    with ctx.Session() as db, db.begin():
        node = db.get(RemoteNode, node_id)
        if node is None:
            raise HTTPException(404, "no such node")
        db.delete(node)


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(
        title="Lucent server API",
        version="1",
        description="Local API of the Lucent server; DICOMweb (QIDO/WADO/STOW) under /dicom-web.",
        # Accounts: every route passes the rights check of server.accounts.rights.POLICY.
        dependencies=[Depends(authorize)],
    )
    app.state.ctx = ctx
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
