"""Start-up messages an installer acts on (outside probe 35): the banner said "AE LUCENT on
all addresses of localhost port 11112" where getfqdn() is "localhost" (/etc/hosts maps the
host name to 127.0.0.1 only), which is no name a modality can use; and "[api]: port 8750 is
in use" did not say which config file to edit."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server import cli, config


def test_a_localhost_fqdn_gives_way_to_the_host_name_and_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli.socket, "getfqdn", lambda *_: "localhost")
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "reading-room-1")
    monkeypatch.setattr(cli, "primary_address", lambda: "10.20.30.40")
    settings = config.parse(
        {"api": {"bind_address": "0.0.0.0", "tls_cert": "c.pem", "tls_key": "k.pem"}}
    )
    text = "\n".join(cli.banner(settings, Path("server.toml")))
    assert "localhost" not in text, text
    assert "API:       https://reading-room-1:8750/api/v1" in text
    assert "listening on all addresses, e.g. 10.20.30.40" in text
    assert "AE LUCENT on all addresses of reading-room-1 (e.g. 10.20.30.40) port 11112" in text


def test_a_real_name_is_kept_and_the_address_is_left_out_when_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli.socket, "getfqdn", lambda *_: "ws1.clinic.example")
    monkeypatch.setattr(cli, "primary_address", lambda: None)
    text = "\n".join(cli.banner(config.parse({}), Path("server.toml")))
    assert "AE LUCENT on all addresses of ws1.clinic.example port 11112" in text


def test_the_primary_address_is_no_loopback_address() -> None:
    address = cli.primary_address()
    assert address is None or not address.startswith("127.")


def test_a_port_in_use_names_the_config_file_to_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder, socket.socket() as other:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        other.bind(("127.0.0.1", 0))
        free = other.getsockname()[1]
        path = tmp_path / "server.toml"
        path.write_text(
            f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
            f'[dimse]\nbind_address = "127.0.0.1"\n[api]\nport = {busy}\n'
            f'[[pools]]\nname = "DEFAULT"\nae_title = "LUCENT"\nport = {free}\n'
        )
        other.close()
        assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"[api]: port {busy} is in use" in err
    assert f"another port in {path}" in err and "[api] port" in err
