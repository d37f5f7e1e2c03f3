"""TLS contexts for DICOM associations (PS3.15 Annex B, BCP 195 profile).

One place decides the protocol floor (TLS 1.2), the cipher suites and certificate checks for
both directions, so the Store SCP and every SCU behave alike:

- Only TLS 1.2 and 1.3, forward-secret AEAD suites (the BCP 195 non-downgrading profile that
  DCMTK uses by default); no compression, no renegotiation.
- The SCP presents our certificate and, when asked to, requires a client certificate signed
  by the trusted file (mutual authentication, as IHE ATNA "secure node" expects).
- The SCU verifies the peer against the trusted file and presents our certificate when we
  have one.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# BCP 195 (RFC 9325) recommended suites for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL.
BCP195_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)


class TlsConfigError(ValueError):
    """A certificate, key or trust file that cannot be used, with the path in the message."""


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    for label, path in (("certificate", cert), ("private key", key)):
        if not Path(path).expanduser().is_file():
            raise TlsConfigError(f"TLS {label} file not found: {path}")
    try:
        ctx.load_cert_chain(str(Path(cert).expanduser()), str(Path(key).expanduser()))
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from exc


def _load_trust(ctx: ssl.SSLContext, ca_file: str) -> None:
    path = Path(ca_file).expanduser()
    if not path.is_file():
        raise TlsConfigError(f"TLS trusted certificates file not found: {ca_file}")
    try:
        ctx.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load trusted certificates from {ca_file}: {exc}") from exc


def server_context(
    cert: str, key: str, ca_file: str = "", *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """Context for our DICOM TLS listeners."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(ctx, cert, key)
    if ca_file:
        _load_trust(ctx, ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise TlsConfigError("requiring client certificates needs a trusted certificates file")
    return ctx


def client_context(ca_file: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """Context for associations we open (PACS query, retrieve, send, commitment).

    Without ``ca_file`` the system trust store is used; host names are always checked.
    """
    ctx = _harden(ssl.create_default_context())
    if ca_file:
        _load_trust(ctx, ca_file)
    if cert and key:
        _load_chain(ctx, cert, key)
    return ctx


def peer_subject(sock: ssl.SSLSocket) -> str:
    """The verified peer's common name, for logs and audit ('' when it sent no certificate)."""
    cert = sock.getpeercert()
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""
