"""Who may query and retrieve: Q/R is open only to configured remote nodes whose
``inbound_query_retrieve`` is on (issue 2, secure default ``dimse.restrict_query_retrieve``;
the node's ``query_retrieve`` is our outbound role and grants nothing here, probe 37);
storage stays open to every caller (Conformance 4.2.3.5).

A node matches by AE title and by address: the host configured for it must resolve to the
caller's address (IPv4, IPv6, or IPv4 mapped into IPv6).

While the index database is down nobody can be told apart: ``IndexUnavailable`` is raised,
and the association is rejected as transient (PS3.8 9.3.4) or the request answered with a
failure status, never aborted (probe 58).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from sqlalchemy import select

from lucent.net.scu import unbracketed
from server.context import ServerContext
from server.dimse import audit_trail
from server.index import db
from server.index.models import RemoteNode
from server.index.outage_log import OutageLog

log = logging.getLogger("lucent.dimse")


class IndexUnavailable(Exception):
    """The index database cannot say who may query and retrieve (``db.unavailable``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"index database unavailable: {reason}")
        self.reason = reason


#: One line when an outage starts (a reminder every few minutes), one when the index answers
#: again: findscu retrying every second logged a traceback each time.
_outage = OutageLog(log, "Query/Retrieve refused meanwhile")


def index_outage(exc: BaseException) -> str | None:
    """The reason when ``exc`` is an index database outage (logged once per outage, as
    the caller check logs it), else None: a Q/R request that fails on it answers a failure
    status naming the outage, not a traceback per request."""
    if isinstance(exc, IndexUnavailable):
        return exc.reason
    reason = db.unavailable(exc)
    if reason is not None:
        _outage.unavailable(reason)
    return reason


def query_retrieve_caller(
    ctx: ServerContext, ae_title: str, address: str
) -> RemoteNode | bool | None:
    """The configured node the caller is, True when Q/R is open to all, None when refused
    (logged and audited). ``IndexUnavailable`` while the index database is down."""
    ae_title = ae_title.strip()
    try:
        with ctx.Session() as session:
            nodes = list(session.scalars(select(RemoteNode).where(RemoteNode.ae_title == ae_title)))
    except Exception as exc:
        reason = db.unavailable(exc)
        if reason is None:
            raise
        _outage.unavailable(reason)
        raise IndexUnavailable(reason) from exc
    _outage.available()
    for node in nodes:
        if node.inbound_query_retrieve and same_host(node.host, address):
            return node
    if not ctx.settings.dimse.restrict_query_retrieve:
        return True
    log.warning("Q/R refused for %s at %s: not a configured remote node", ae_title, address)
    audit_trail.refused(
        ctx, ae_title, str(address), "Query/Retrieve refused: not a configured remote node"
    )
    return None


def same_host(configured: str, address: str) -> bool:
    """True when the configured host name or address resolves to ``address``."""
    try:
        peer = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if peer.version == 6 and peer.ipv4_mapped:  # type: ignore[union-attr]
        peer = peer.ipv4_mapped  # type: ignore[union-attr]
    try:
        infos = socket.getaddrinfo(unbracketed(configured), None)  # "[::1]" as typed
    except OSError:
        return False
    return any(ipaddress.ip_address(i[4][0].split("%", 1)[0]) == peer for i in infos)
