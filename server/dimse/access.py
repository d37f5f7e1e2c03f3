"""Who may query and retrieve: Q/R is open only to configured remote nodes whose
``inbound_query_retrieve`` is on (issue 2, secure default ``dimse.restrict_query_retrieve``;
the node's ``query_retrieve`` is our outbound role and grants nothing here, probe 37);
storage stays open to every caller (Conformance 4.2.3.5).

A node matches by AE title and by address: the host configured for it must resolve to the
caller's address (IPv4, IPv6, or IPv4 mapped into IPv6).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from sqlalchemy import select

from lucent.net.scu import unbracketed
from server.context import ServerContext
from server.dimse import audit_trail
from server.index.models import RemoteNode

log = logging.getLogger("lucent.dimse")


def query_retrieve_caller(
    ctx: ServerContext, ae_title: str, address: str
) -> RemoteNode | bool | None:
    """The configured node the caller is, True when Q/R is open to all, None when refused
    (logged and audited)."""
    ae_title = ae_title.strip()
    with ctx.Session() as session:
        nodes = list(session.scalars(select(RemoteNode).where(RemoteNode.ae_title == ae_title)))
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
