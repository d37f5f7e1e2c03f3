"""Transport security (issue 4): `lucent-server make-cert` makes a pair that the API serves
HTTPS with when bound beyond loopback, that LucentClient trusts with verify=<cert>, and that
DCMTK accepts for DICOM TLS in both roles (serverAuth + clientAuth)."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from lucent.api.client import LucentClient
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, REPO, LucentServer
from tests.support.peers import end_process, free_port


def _make_cert(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "make-cert", "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("certs")
    done = _make_cert(out, "--host", "lucent.clinic.test", "--host", "10.1.2.3", "--days", "30")
    assert done.returncode == 0, done.stderr
    assert "tls_cert" in done.stdout and "[dimse]" in done.stdout
    return out / "lucent.crt", out / "lucent.key"


def test_make_cert_names_uses_and_key_mode(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert_path, key_path = pair
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"lucent.clinic.test", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 <= lifetime.days <= 31
    # never silently replaces an installed key
    again = _make_cert(cert_path.parent)
    assert again.returncode == 1 and "--force" in again.stderr
    assert _make_cert(tmp_path / "bad", "--days", "0").returncode == 2


class TlsServer(LucentServer):
    """The real server with [api] on HTTPS; readiness is probed over TLS with the pair."""

    def __init__(self, workdir: Path, cert: Path, key: Path, bind: str = "0.0.0.0") -> None:
        self.cert = cert
        api = {"bind_address": bind, "tls_cert": str(cert), "tls_key": str(key)}
        super().__init__(workdir, workers=1, settings={"api": api})

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def _api_up(self) -> bool:
        try:
            r = httpx.get(f"{self.api_url}/api/v1/status", timeout=2, verify=str(self.cert))
            return r.status_code in (200, 401)
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def server(
    pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsServer]:
    with TlsServer(tmp_path_factory.mktemp("tls-api"), *pair) as srv:
        yield srv


def test_api_beyond_loopback_serves_https_only(server: TlsServer) -> None:
    with LucentClient(server.api_url, verify=str(server.cert)) as api:
        assert api.login(ADMIN_USER, ADMIN_PASSWORD).token
        assert api.me().username == ADMIN_USER
    # the same port does not speak plain HTTP: no login over an unencrypted connection
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{server.api_port}/api/v1/auth/login",
            json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
            timeout=5,
        )
    # and a client that does not trust the certificate refuses the server
    with pytest.raises(httpx.ConnectError), LucentClient(server.api_url) as stranger:
        stranger.login(ADMIN_USER, ADMIN_PASSWORD)


def test_api_on_all_ipv6_addresses_takes_ipv4_clients_too(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """[api] bind_address "::" listened on IPv6 only (asyncio binds it so): IPv4 clients got
    "connection refused" although [dimse]'s "::" takes both (outside probe 25)."""
    with TlsServer(tmp_path / "v6", *pair, bind="::") as srv:
        for host in ("127.0.0.1", "[::1]"):
            url = f"https://{host}:{srv.api_port}"
            with LucentClient(url, verify=str(srv.cert)) as api:
                assert api.login(ADMIN_USER, ADMIN_PASSWORD).token, host


def test_config_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[api]\nbind_address = "0.0.0.0"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "server", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2 and "without TLS" in done.stderr


def _echo(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aec", "TLSSCP", *tls, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_pair_works_for_dicom_tls_in_both_roles(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """DCMTK storescp requires a trusted client certificate; echoscu presents the same pair:
    the SCP uses it for serverAuth, the SCU for clientAuth (PS3.15 B.1)."""
    cert, key = (str(p) for p in pair)
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "-aet", "TLSSCP", "+tls", key, cert, "+cf", cert,
         "--require-peer-cert", "-od", str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        trusted = _echo(port, "+tls", key, cert, "+cf", cert)
        for _ in range(50):  # storescp may still be binding its port
            if trusted.returncode == 0 or "TLS" in trusted.stderr:
                break
            time.sleep(0.2)
            trusted = _echo(port, "+tls", key, cert, "+cf", cert)
        assert trusted.returncode == 0, trusted.stderr
        untrusting = _echo(port, "+tls", key, cert)  # SCU without the cert as its CA
        assert untrusting.returncode != 0 and "certificate verify failed" in untrusting.stderr
        anonymous = _echo(port, "+tla", "+cf", cert)  # SCU without a certificate of its own
        assert anonymous.returncode != 0
    finally:
        end_process(scp)
