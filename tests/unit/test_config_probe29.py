"""What clinic IT operations met (outside probe 29): numeric settings never range-checked,
pools sharing an AE title, a mistyped --config path written with defaults, and other
configuration gaps that passed check-config and then broke the running server."""

from __future__ import annotations

import math
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from server import config

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, home: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``python -m server`` in a real process, HOME (the default config and data) in tmp."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def _free_ports() -> str:
    """Config text that gives the API and the pool free loopback ports."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return (
        f'[dimse]\nbind_address = "127.0.0.1"\n[api]\nport = {ports[0]}\n'
        f'[[pools]]\nname = "DEFAULT"\nae_title = "LUCENT"\nport = {ports[1]}\n'
    )


# -- 2: every number finite and in a documented range ----------------------------------------


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("accounts", "lockout_seconds", -1.0),  # switched login back-off off
        ("accounts", "lockout_seconds", math.nan),  # failed logins answered 500
        ("accounts", "lockout_seconds", math.inf),
        ("accounts", "pin_minutes", 0.0),
        ("accounts", "pin_minutes", -1.0),
        ("accounts", "reset_minutes", 0.0),
        ("accounts", "share_max_days", -1.0),
        ("accounts", "share_pin_attempts", 0),
        ("accounts", "address_max_failures", 0),
        ("accounts", "retention_interval_minutes", math.nan),  # the thread died
        ("accounts", "retention_interval_minutes", math.inf),
        ("accounts", "retention_interval_minutes", -1.0),
        ("accounts", "idle_minutes", math.nan),
        ("pacs", "retry_backoff_seconds", -1.0),
        ("pacs", "retry_backoff_seconds", math.nan),
        ("pacs", "commitment_wait_seconds", -1.0),
        ("pacs", "commitment_retry_seconds", 0.0),
        ("audit", "syslog_retry_max_seconds", 0.0),
        ("audit", "syslog_retry_max_seconds", math.nan),
        ("perfusion", "scan_seconds", math.nan),  # the main process spun
        ("perfusion", "scan_seconds", math.inf),
        ("perfusion", "quiet_seconds", math.nan),
        ("perfusion", "lookback_minutes", -5.0),
        ("perfusion", "max_concurrent", 1000),
        ("perfusion", "min_confidence", math.nan),
        ("dimse", "workers", 10000),
        ("dimse", "network_timeout", math.inf),
        ("archive", "max_inflated_mb", 0),
    ],
)
def test_numbers_out_of_range_are_refused_with_the_key(
    section: str, key: str, value: float
) -> None:
    with pytest.raises(config.ConfigError, match=rf"\[{section}\] {key} must be"):
        config.parse({section: {key: value}})


def test_a_pool_number_out_of_range_names_the_pool() -> None:
    with pytest.raises(config.ConfigError, match=r"\[\[pools\]\] 'A': retention_days must be"):
        config.parse({"pools": [{"name": "A", "port": 4000, "retention_days": -1}]})


def test_the_longest_lockout_cannot_be_shorter_than_the_first() -> None:
    data = {"accounts": {"lockout_seconds": 100.0, "lockout_max_seconds": 10.0}}
    with pytest.raises(config.ConfigError, match="lockout_max_seconds must be >= lockout_seconds"):
        config.parse(data)


def test_range_ends_and_small_test_values_stay_valid() -> None:
    low = {k: (b.low if not b.above else b.low + 0.1) for k, b in config.RANGES.items()}
    high = {k: b.high for k, b in config.RANGES.items()}
    for values in (low, high):
        data: dict[str, Any] = {}
        for dotted, value in values.items():
            section, key = dotted.split(".")
            if key == "lockout_max_seconds":
                value = max(value, values["accounts.lockout_seconds"])
            default = config.setting_default(section, key)
            value = int(value) if isinstance(default, int) else float(value)
            if section == "pools":
                data.setdefault("pools", [{"name": "A", "port": 4000}])[0][key] = value
            else:
                data.setdefault(section, {})[key] = value
        config.parse(data)


def test_every_numeric_setting_has_a_range() -> None:
    numeric = {
        key
        for key in config.setting_keys()
        if isinstance(config.setting_default(*key.split(".")), int | float)
        and not isinstance(config.setting_default(*key.split(".")), bool)
    }
    assert numeric - set(config.RANGES) - config.CHECKED_ELSEWHERE == set()
    assert set(config.RANGES) <= numeric


def test_the_sample_states_each_range_where_it_documents_the_key() -> None:
    lines = config.SAMPLE_CONFIG.read_text().splitlines()
    section = ""
    for i, line in enumerate(lines):
        header = re.match(r"^\[\[?(\w+)\]\]?", line)
        if header:
            section = header.group(1)
        match = re.match(r"^(\w+)\s*=", line)
        bound = config.RANGES.get(f"{section}.{match.group(1)}") if match else None
        if bound is None:
            continue
        j, comment = i - 1, []
        while j >= 0 and lines[j].startswith("#"):
            comment.append(lines[j])
            j -= 1
        assert bound.text() in " ".join(comment), f"{section}.{match.group(1)}: {bound.text()}"


def test_sample_defaults_lie_in_their_ranges() -> None:
    config.parse(tomllib.loads(config.SAMPLE_CONFIG.read_text()))


def test_check_config_refuses_nan_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[accounts]\nlockout_seconds = nan\n'
    )
    for command in ("check-config", "run"):
        result = _cli(command, "--config", str(path), home=tmp_path)
        assert result.returncode == 2, result
        err = result.stderr.decode()
        assert "[accounts] lockout_seconds must be above 0" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


# -- 4: the key file's folder keeps its mode when it exists --------------------------------

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX modes")


@posix_only
def test_creating_the_key_file_leaves_an_existing_folder_alone(tmp_path: Path) -> None:
    """key_file = "/etc/lucent.keys" made /etc 0700."""
    from server.archive import crypto

    shared = tmp_path / "etc"
    shared.mkdir()
    shared.chmod(0o755)
    crypto.KeyRing.load_or_create(shared / "lucent.keys")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "lucent.keys").stat().st_mode) == 0o600


@posix_only
def test_a_key_folder_we_create_is_private(tmp_path: Path) -> None:
    from server.archive import crypto

    old = os.umask(0o022)
    try:
        crypto.KeyRing.load_or_create(tmp_path / "new" / "keys" / "master.keys")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "keys").stat().st_mode) == 0o700


# -- 5: an explicit --config must exist; only the default location is created ----------------


@pytest.mark.parametrize(
    "command", [["run"], ["create-admin", "--username", "x", "--password-stdin"], ["rotate-key"]]
)
def test_a_mistyped_config_path_is_an_error_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo" / "sever.toml"
    result = _cli(*command, "--config", str(missing), home=tmp_path, stdin=b"pw-12345678\n")
    err = result.stderr.decode()
    assert result.returncode == 2 and f"no config file at {missing}" in err, err
    assert "Traceback" not in err
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / ".local").exists()  # the default data directory was not used


def test_the_default_location_is_still_created_on_first_start(tmp_path: Path) -> None:
    result = _cli(
        "create-admin", "--username", "first", "--password-stdin", home=tmp_path,
        stdin=b"pw-12345678\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    written = tmp_path / ".config" / "lucent" / "server.toml"
    assert written.read_text() == config.SAMPLE_CONFIG.read_text()
    assert (tmp_path / ".local" / "share" / "lucent" / "index.sqlite3").is_file()


# -- 6: two pools, one AE title ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first,second,message",
    [
        ("LUCENT", "LUCENT", "same ae_title 'LUCENT'"),
        ("LUCENT", "LUCENT ", "same ae_title 'LUCENT'"),
        ("LUCENT", " LUCENT", "same ae_title 'LUCENT'"),
        ("LUCENT", "lucent", "only by case"),
    ],
)
def test_two_pools_with_one_ae_title_are_refused(first: str, second: str, message: str) -> None:
    pools = [
        {"name": "A", "ae_title": first, "port": 4000},
        {"name": "B", "ae_title": second, "port": 4001},
    ]
    with pytest.raises(config.ConfigError, match=message):
        config.parse({"pools": pools})


def test_check_config_refuses_pools_sharing_an_ae_title(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[pools]]\nname = "A"\nae_title = "LUCENT"\nport = 4000\n'
        '[[pools]]\nname = "B"\nae_title = "LUCENT "\nport = 4001\n'
    )
    result = _cli("check-config", "--config", str(path), home=tmp_path)
    assert result.returncode == 2 and "'B' and 'A' have the same ae_title" in result.stderr.decode()


@pytest.mark.parametrize("name", ["", "  "])
def test_a_pool_needs_a_name(name: str) -> None:
    with pytest.raises(config.ConfigError, match=r"\[\[pools\]\] name must not be empty"):
        config.parse({"pools": [{"name": name, "port": 4000}]})


# -- 7: an unsupported index URL is one line, not a traceback ---------------------------------

BAD_URLS = ["not a url", "bogus://x", "mysql://u:secret@db.example/lucent"]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", ["check-config", "run", "create-admin", "rebuild-index"])
def test_an_unsupported_database_url_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, command: str
) -> None:
    from server import cli

    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[index]\ndatabase_url = "{url}"\n'
    )
    args = [command, "--config", str(path)]
    if command == "create-admin":
        args += ["--username", "x", "--password-stdin"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "only SQLite" in err and "PostgreSQL" in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_a_driver_that_is_not_installed_is_a_config_error() -> None:
    from server.index import db

    with pytest.raises(config.ConfigError, match="cannot load its database driver"):
        db.make_engine("postgresql+nosuchdriver://u@127.0.0.1/x")


def test_check_config_refuses_a_bogus_url_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path}/data"\n[index]\ndatabase_url = "bogus://x"\n'
    )
    result = _cli("check-config", "--config", str(path), home=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err and "only SQLite" in err, err


# -- 8: an index made by a newer version -------------------------------------------------------


def test_an_index_made_by_a_newer_version_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from server import cli

    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{_free_ports()}')
    made = _cli("create-admin", "--config", str(path), "--username", "a", "--password-stdin",
                home=tmp_path, stdin=b"pw-12345678\n")  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    index = tmp_path / "data" / "index.sqlite3"
    with sqlite3.connect(index) as conn:  # what a later Lucent leaves after a rollback
        conn.execute("UPDATE alembic_version SET version_num = '0042'")
    result = _cli("create-admin", "--config", str(path), "--username", "b", "--password-stdin",
                  home=tmp_path, stdin=b"pw-12345678\n")  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err, err
    assert "made by a newer version of Lucent" in err and "'0042'" in err and "backup" in err
    for command in ("run", "rebuild-index"):
        assert cli.main([command, "--config", str(path)]) == 2
        assert "newer version of Lucent" in capsys.readouterr().err
    with sqlite3.connect(index) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042",)]


# -- 9: the banner names addresses a client can use --------------------------------------------


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_the_banner_names_this_machine_for_a_wildcard_api_address(bind: str) -> None:

    from server import cli

    settings = config.parse(
        {"api": {"bind_address": bind, "tls_cert": "c.pem", "tls_key": "k.pem"}}
    )
    text = "\n".join(cli.banner(settings, Path("server.toml")))
    assert "0.0.0.0" not in text and "[::]" not in text
    name = cli.machine_name()  # the host name where getfqdn() is "localhost" (probe 35)
    host = f"[{name}]" if ":" in name else name
    assert f"API:       https://{host}:8750/api/v1" in text
    assert "all addresses" in text


def test_the_banner_says_a_loopback_dicom_listener_is_this_machine_only(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{_free_ports()}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "run", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        out = b""
        while b"Data:" not in out:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
    finally:
        os.killpg(proc.pid, 15)
        proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    dicom = next(line for line in text.splitlines() if "DICOM:" in line)
    assert "on 127.0.0.1 port" in dicom and "modalities on other machines cannot reach" in dicom


# -- 11, 12: create-admin's stdin and the help texts ------------------------------------------


def test_a_password_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    result = _cli("create-admin", "--config", str(path), "--username", "a", "--password-stdin",
                  home=tmp_path, stdin=b"pass\xff\xfeword\n")  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err and "not UTF-8" in err, err


@pytest.mark.parametrize(
    "command", ["run", "create-admin", "rotate-key", "rebuild-index", "check-config"]
)
def test_every_config_option_and_password_stdin_have_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from server import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--config PATH config file; it must exist" in text
    if command == "create-admin":
        assert "--password-stdin read the password from the first line of standard input" in text


# -- 13: smaller validation gaps ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data,message",
    [
        ({"accounts": {"public_url": "http://:"}}, "public_url"),
        ({"accounts": {"public_url": "https://host:port"}}, "public_url"),
        ({"audit": {"source_id": ""}}, "source_id must not be empty"),
        ({"audit": {"source_id": "   "}}, "source_id must not be empty"),
    ],
)
def test_small_gaps_are_refused_with_the_key(data: dict, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse(data)


def test_a_public_url_with_host_and_port_stays_valid() -> None:
    s = config.parse({"accounts": {"public_url": "https://lucent.clinic.example:8443/x"}})
    assert s.accounts.public_url.endswith("/x")


@pytest.mark.parametrize("key", ["work_dir", "index"])
def test_plaintext_patient_data_inside_the_archive_is_refused(tmp_path: Path, key: str) -> None:
    inside = tmp_path / "data" / "archive" / "plain"
    data: dict[str, Any] = {"server": {"data_dir": str(tmp_path / "data")}}
    if key == "work_dir":
        data["perfusion"] = {"work_dir": str(inside)}
        message = r"\[perfusion\] work_dir .* must not live inside the archive folder"
    else:
        data["index"] = {"database_url": f"sqlite:///{inside / 'index.sqlite3'}"}
        message = r"\[index\] database_url .* must not live inside the archive folder"
    with pytest.raises(config.ConfigError, match=message):
        config.parse(data)


@pytest.mark.parametrize(
    "text,key",
    [
        ('[pacs]\ntls_ca_file = "{missing}"\n', "[pacs] tls_ca_file"),
        ('[audit]\nsyslog_host = "127.0.0.1"\nsyslog_ca_file = "{missing}"\n', "syslog_ca_file"),
        (
            '[audit]\nsyslog_host = "127.0.0.1"\nsyslog_cert = "{missing}"\n'
            'syslog_key = "{missing}"\n',
            "[audit] syslog_cert",
        ),
    ],
)
def test_missing_ca_and_syslog_files_stop_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    from server import cli

    path = tmp_path / "server.toml"
    missing = tmp_path / "nonexistent.pem"
    body = text.replace("{missing}", str(missing))
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{body}')
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert key in err and "nonexistent.pem" in err


@pytest.mark.parametrize("host", ["bad host", "a/b", "-x.example", "x" * 64 + ".example", ""])
def test_make_cert_refuses_a_host_that_is_no_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    from server import cli

    assert cli.main(["make-cert", "--out", str(tmp_path / "c"), f"--host={host}"]) == 2
    assert "--host" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_make_cert_takes_names_addresses_and_wildcards(tmp_path: Path) -> None:
    from server import cli

    hosts = ["pacs.clinic.example", "*.clinic.example", "10.0.0.5", "fe80::1", "ws-7"]
    args = ["make-cert", "--out", str(tmp_path / "c")]
    for host in hosts:
        args += ["--host", host]
    assert cli.main(args) == 0
