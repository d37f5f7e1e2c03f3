"""A self-signed certificate and key for a test or small install (issue 4, transport security).

One pair serves both the API (``[api] tls_cert/tls_key``) and DICOM TLS (``[dimse]``): the
extended key usage names serverAuth *and* clientAuth, because in DICOM TLS (PS3.15 B.1,
BCP 195 profile) the same node is a server as SCP and a client as SCU, and OpenSSL checks
the purpose of a peer certificate against its EKU. Subject alternative names list every host
name and address the peers use, plus 127.0.0.1, ::1 and localhost, since TLS clients check
the SAN, not the common name. The key is an ECDSA P-256 key (TLS 1.2/1.3 ECDHE-ECDSA suites,
accepted by DCMTK and Python's ssl) written 0600 from the start, never world-readable.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALWAYS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path
    hosts: tuple[str, ...]
    not_after: dt.datetime


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write_private(path: Path, data: bytes) -> None:
    """Create with mode 0600 at open time: no moment where another user could read the key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_TRUNC
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_self_signed(
    out_dir: Path, hosts: list[str] | None = None, days: int = 365, stem: str = "lucent"
) -> CertPair:
    """Write ``<stem>.crt`` (PEM certificate) and ``<stem>.key`` (PEM key, 0600) to out_dir.

    Peers trust it by configuring the certificate file itself as their CA file.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    wanted = [h.strip() for h in (hosts or []) if h.strip()]
    all_hosts = list(dict.fromkeys([*wanted, *ALWAYS]))  # keep order, drop repeats
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lucent"),
            x509.NameAttribute(NameOID.COMMON_NAME, all_hosts[0][:64]),
        ]
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # small clock skew between peers
    end = start + dt.timedelta(days=days)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_san(all_hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, tuple(all_hosts), end)
