"""The base URL of the links we hand out: mailed password-reset links and share links.

Never taken from the request: its Host header is whatever the client sends, so an
unauthenticated ``POST /auth/password-reset`` with ``Host: evil.example`` had a valid reset
token mailed under the attacker's host, one click from being handed over (probe 7).
"""

from __future__ import annotations

import logging
import socket

from server.config import Settings

log = logging.getLogger("lucent.accounts")

_WILDCARDS = ("", "0.0.0.0", "::")


def public_base(settings: Settings) -> str:
    """``[accounts] public_url`` when set; else the API's own configured address.

    That is where this server answers (https when ``[api] tls_cert`` is set); a wildcard
    bind address names no host, so this machine's fully qualified name stands in for it.
    """
    if settings.accounts.public_url:
        return settings.accounts.public_url.rstrip("/")
    scheme = "https" if settings.api.tls_cert else "http"
    host = settings.api.bind_address
    if host in _WILDCARDS:
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal (RFC 3986 3.2.2)
    return f"{scheme}://{host}:{settings.api.port}"


_warned: set[str] = set()


def warn_if_guessed(settings: Settings, what: str) -> None:
    """Tell the log when a link had to be built without ``public_url``: users elsewhere may
    not reach the API's bind address (e.g. 127.0.0.1), and only clinic IT can fix that."""
    if not settings.accounts.public_url and what not in _warned:
        _warned.add(what)  # once per kind of link and process: it was one line per link
        log.warning(
            "%s built with %s because [accounts] public_url is empty; set public_url to the "
            "address users reach this server at",
            what,
            public_base(settings),
        )
