"""What clinic IT and installers met (probe 16): settings that passed check-config and then
broke the running server, files readable by everyone, a lock that covered only data_dir, a
make-cert snippet that did not load, SIGTERM tracebacks, set-up and display gaps."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import UID

from lucent.dicom import uids
from lucent.net import commitment
from server import cli, config, single_instance

ROOT = Path(__file__).resolve().parents[2]
LONG_UID = ".".join(map(str, range(1, 30)))  # 77 characters (probe 16)


def _sample() -> dict[str, Any]:
    return tomllib.loads(config.SAMPLE_CONFIG.read_text())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# -- 1, 3, 5, 6: refused at load, with the key ------------------------------------------------


@pytest.mark.parametrize(
    "data,message",
    [
        # 1: pynetdicom refused these in every DICOM worker, restarted forever
        (
            {"dimse": {"implementation_class_uid": ".".join(map(str, range(1, 30)))}},
            "implementation_class_uid",
        ),  # fmt: skip
        ({"dimse": {"implementation_class_uid": "1.2.3."}}, "implementation_class_uid"),
        ({"dimse": {"implementation_class_uid": "1.02.3"}}, "implementation_class_uid"),
        ({"dimse": {"implementation_version_name": "VERSIÓN"}}, "implementation_version_name"),
        ({"dimse": {"implementation_version_name": "A\\B"}}, "implementation_version_name"),
        ({"dimse": {"implementation_version_name": "   "}}, "implementation_version_name"),
        ({"dimse": {"implementation_version_name": "X" * 17}}, "implementation_version_name"),
        # 2: no room for a unique suffix
        ({"server": {"uid_root": "1." + "2" * 40}}, "uid_root"),
        # 3: ports 1-65535, the API not on a pool port
        ({"api": {"port": 70000}}, r"\[api\] port"),
        ({"api": {"port": 11112}}, r"\[api\] port 11112"),
        (
            {
                "dimse": {"tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca_file": "ca.pem"},
                "pools": [{"name": "A", "port": 4000, "tls_port": 8750}],
            },
            r"\[api\] port 8750",
        ),
        ({"pools": [{"name": "A", "port": 65536}]}, "'A': port"),
        ({"pools": [{"name": "A", "port": 4000, "tls_port": 70000}]}, "'A': tls_port"),
        ({"smtp": {"port": 0}}, r"\[smtp\] port"),
        ({"smtp": {"port": 70000}}, r"\[smtp\] port"),
        ({"audit": {"syslog_port": 70000}}, r"\[audit\] syslog_port"),
        # 5: values that make no sense
        ({"api": {"session_minutes": 0}}, "session_minutes"),
        ({"api": {"session_minutes": -5}}, "session_minutes"),
        ({"accounts": {"idle_minutes": 0}}, "idle_minutes"),
        ({"api": {"basic_auth_cache_seconds": -1}}, "basic_auth_cache_seconds"),
        ({"dimse": {"max_find_results": -1}}, "max_find_results"),
        ({"pacs": {"move_retries": -1}}, "move_retries"),
        ({"pacs": {"commitment_max_attempts": 0}}, "commitment_max_attempts"),
        ({"pacs": {"calling_ae_title": "  "}}, "calling_ae_title"),
        ({"pacs": {"calling_ae_title": "A\\B"}}, "calling_ae_title"),
        # 4: float settings take ints and floats, int settings still refuse floats
        ({"dimse": {"network_timeout": "2.5"}}, "network_timeout must be float"),
        ({"dimse": {"max_pdu": 4096.0}}, "max_pdu must be int"),
    ],
)
def test_unusable_values_are_refused_at_load_with_the_key(data: dict, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse(data)


def test_documented_zero_values_stay_valid() -> None:
    s = config.parse(
        {
            "dimse": {"max_find_results": 0},
            "api": {"basic_auth_cache_seconds": 0},
            "pacs": {"move_retries": 0, "store_retries": 0, "calling_ae_title": "SCU"},
            "pools": [{"name": "A", "port": 4000, "tls_port": 0}],
        }
    )
    assert s.dimse.max_find_results == 0 and s.pools[0].tls_port == 0


@pytest.mark.parametrize("key", ["network_timeout", "dimse_timeout", "acse_timeout"])
def test_float_timeouts_are_accepted(key: str) -> None:
    assert getattr(config.parse({"dimse": {key: 2.5}}).dimse, key) == 2.5
    assert getattr(config.parse({"dimse": {key: 3}}).dimse, key) == 3.0


def test_the_key_file_inside_the_archive_is_refused_at_load(tmp_path: Path) -> None:
    data = {
        "server": {"data_dir": str(tmp_path)},
        "archive": {"key_file": str(tmp_path / "archive" / "keys" / "master.keys")},
    }
    with pytest.raises(config.ConfigError, match=r"\[archive\] key_file"):
        config.parse(data)


# -- 2: one normalised UID root for every UID maker -------------------------------------------


def test_a_uid_root_without_its_dot_works_for_every_uid_maker() -> None:
    s = config.parse({"server": {"uid_root": "1.2.3"}})
    assert s.server.uid_root == "1.2.3."
    for uid in (
        commitment.new_transaction_uid(s.server.uid_root),
        commitment.new_transaction_uid("1.2.3"),  # the library is safe on its own too
        uids.make_uid("1.2.3"),
    ):
        assert uid.startswith("1.2.3.") and UID(uid).is_valid


def test_the_longest_uid_root_leaves_a_unique_suffix() -> None:
    root = "1." + "2" * (config.UID_ROOT_MAX - 2)
    s = config.parse({"server": {"uid_root": root}})
    uid = commitment.new_transaction_uid(s.server.uid_root)
    # pydicom draws the suffix below 10**(64 - len(prefix)): 23 digits of randomness here,
    # printed shorter when it happens to be small (1 draw in 10 has 22 digits or fewer)
    assert UID(uid).is_valid and uid.startswith(root + ".")
    assert 64 - len(root + ".") >= 23


@pytest.mark.parametrize(
    "text,key",
    [
        ("[api]\nport = 0\n", "[api] port"),
        ('[[pools]]\nname = "A"\nport = 0\n', "[[pools]] 'A': port"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_listening_server_needs_fixed_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, command: str
) -> None:
    """Port 0 listened on a random port while the banner said 0; in-process uses without a
    listener (tests) may keep it, so only check-config and run refuse it."""
    path = _write(tmp_path, text)
    assert cli.main([command, "--config", str(path)]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "data" / "index.sqlite3").exists()


# -- 6: check-config and run name the bind address ------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{text}')
    return path


@pytest.mark.parametrize("address", ["999.1.1.1", "192.0.2.1"])
def test_check_config_refuses_a_bind_address_this_machine_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str
) -> None:
    path = _write(tmp_path, f'[dimse]\nbind_address = "{address}"\n')
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[dimse] bind_address" in err and address in err and "port in use" not in err


def test_run_names_the_bind_address_not_a_busy_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[dimse]\nbind_address = "999.1.1.1"\n')
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[dimse] bind_address" in err and "port in use" not in err
    assert not (tmp_path / "data" / "index.sqlite3").exists()  # refused before migrations


@pytest.mark.parametrize("which", ["api", "pool"])
def test_a_busy_port_stops_run_before_migrations_and_check_config_notes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    """A taken API port printed the "running" banner, then uvicorn's bind error, exit 3."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            free = other.getsockname()[1]
        api, pool = (busy, free) if which == "api" else (free, busy)
        path = _write(
            tmp_path,
            f'[dimse]\nbind_address = "127.0.0.1"\n[api]\nport = {api}\n'
            f'[[pools]]\nname = "DEFAULT"\nae_title = "LUCENT"\nport = {pool}\n',
        )
        assert cli.main(["check-config", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"port {busy} is in use" in out and f"port {free}" not in out
        assert cli.main(["run", "--config", str(path)]) == 2
        captured = capsys.readouterr()
        label = "[api]" if which == "api" else "pool DEFAULT"
        assert f"{label}: port {busy} is in use" in captured.err
        assert "running" not in captured.out
    assert not (tmp_path / "data" / "index.sqlite3").exists()  # refused before migrations


@pytest.mark.parametrize("section", ["api", "dimse"])
def test_unusable_tls_files_stop_check_config_and_run_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str
) -> None:
    """A missing [api] TLS file passed check-config and failed after the "running" banner
    with "[Errno 2] No such file or directory", naming no file (outside probe 25)."""
    missing = tmp_path / "nope.crt"
    text = f'[{section}]\ntls_cert = "{missing}"\ntls_key = "{tmp_path / "nope.key"}"\n'
    if section == "api":
        text += 'bind_address = "127.0.0.1"\n'
    else:
        text += "tls_require_client_cert = false\n"
    path = _write(tmp_path, text)
    for command in ("check-config", "run"):
        assert cli.main([command, "--config", str(path)]) == 2, command
        captured = capsys.readouterr()
        assert f"[{section}]" in captured.err and "nope" in captured.err, captured.err
        assert "running" not in captured.out
    assert not (tmp_path / "data" / "index.sqlite3").exists()


# -- 7: make-cert's snippet loads ------------------------------------------------------------


def test_make_cert_snippet_merged_into_the_sample_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["make-cert", "--out", str(tmp_path / "certs")]) == 0
    out = capsys.readouterr().out
    snippet = out.split("Add to the server config:\n", 1)[1].split("\n\n", 1)[0]
    extra = tomllib.loads(textwrap.dedent(snippet))
    settings = config.parse(_merge(_sample(), extra))
    assert settings.dimse.tls_cert and settings.api.tls_cert
    assert settings.dimse.tls_require_client_cert  # still mutual TLS, with a CA file


# -- 8: SIGTERM at any moment ------------------------------------------------------------------


def test_sigterm_while_the_app_is_created_exits_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler that turns SIGTERM into KeyboardInterrupt was installed before create_app
    and the perfusion start, which ran outside the try/finally: traceback, exit 130."""
    import uvicorn

    from server.api import app as app_mod
    from server.api import perfusion_routes
    from server.dimse import listener

    closed: list[str] = []

    class Ctx:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        preflight = recover = lambda self: None  # noqa: E731

        def close(self) -> None:
            closed.append("ctx")

    class Workers:
        def __init__(self, *a: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            closed.append("workers")

    def create_app(ctx: Any) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # the service manager stops us right now
        return object()

    monkeypatch.setattr(cli, "ServerContext", Ctx)
    monkeypatch.setattr(listener, "WorkerPool", Workers)
    monkeypatch.setattr(listener, "check_ports_free", lambda s: None)
    monkeypatch.setattr(app_mod, "create_app", create_app)
    monkeypatch.setattr(perfusion_routes, "start", lambda app: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served after SIGTERM"))
    path = _write(tmp_path, "")
    args = argparse.Namespace(config=str(path), first_run_admin=False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        rc = cli.cmd_run(args)
        # and leaves SIGTERM as it found it: left ignored, every program the process started
        # later ignored it too (DCMTK storescp outlived its tests in CI)
        after = signal.getsignal(signal.SIGTERM)
    except KeyboardInterrupt:
        pytest.fail("SIGTERM escaped cmd_run as KeyboardInterrupt (exit 130)")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 0 and closed == ["workers", "ctx"]
    assert after == previous, after


# -- 9: private files ----------------------------------------------------------------------------

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_the_generated_config_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cfg" / "server.toml"
    monkeypatch.setattr(config, "default_config_path", lambda: path)
    config.load()
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700


@posix_only
def test_index_and_quota_ledger_are_created_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = config.parse({"server": {"data_dir": str(data)}})
    lock = cli._lock(settings)
    try:
        assert _mode(data) == 0o700
        cli._private_files(settings)
    finally:
        lock.close()
    index, quota = data / "index.sqlite3", data / "quota-reservations.sqlite3"
    assert _mode(index) == 0o600 and _mode(quota) == 0o600
    con = sqlite3.connect(index)  # an empty file is a new database; WAL inherits its mode
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    assert _mode(index.with_name("index.sqlite3-wal")) == 0o600
    con.close()


@posix_only
def test_an_older_install_is_tightened_but_not_the_admins_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    ours = data / "index.sqlite3"
    ours.write_bytes(b"")
    ours.chmod(0o644)
    elsewhere = tmp_path / "db" / "lucent.sqlite3"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"")
    elsewhere.chmod(0o640)
    cli._private_files(config.parse({"server": {"data_dir": str(data)}}))
    assert _mode(ours) == 0o600 and _mode(data) == 0o755  # the folder exists: left alone
    other = config.parse(
        {"server": {"data_dir": str(data)}, "index": {"database_url": f"sqlite:///{elsewhere}"}}
    )
    cli._private_files(other)
    assert _mode(elsewhere) == 0o640


# -- 10: every folder of the data is locked -----------------------------------------------------


def test_a_second_server_sharing_the_archive_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "archive"
    first = single_instance.acquire(tmp_path / "a", [("archive folder", shared)])
    try:
        with pytest.raises(single_instance.AlreadyRunning, match="archive folder") as caught:
            single_instance.acquire(tmp_path / "b", [("archive folder", shared)])
        assert f"pid {os.getpid()}" in str(caught.value)
        if os.name != "nt":  # the archive folder holds objects only: no lock file in it
            assert list(shared.iterdir()) == []
        single_instance.acquire(tmp_path / "b").close()  # b released its own lock
    finally:
        first.close()


def test_a_second_server_sharing_the_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a" / "index.sqlite3"
    one = config.parse({"server": {"data_dir": str(tmp_path / "a")}})
    two = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "b")},
            "archive": {"path": str(tmp_path / "b-archive")},
            "index": {"database_url": f"sqlite:///{db}"},
        }
    )
    first = cli._lock(one)
    try:
        with pytest.raises(single_instance.AlreadyRunning, match=str(os.getpid())):
            cli._lock(two)
    finally:
        first.close()
    cli._lock(two).close()  # free again once the first server is gone


def test_one_folder_named_twice_is_locked_once(tmp_path: Path) -> None:
    single_instance.acquire(tmp_path, [("archive folder", tmp_path)]).close()


# -- 11, 13: set-up and documentation -------------------------------------------------------------


def test_setup_installs_what_the_venv_step_needs() -> None:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    packages = re.search(r"SYSTEM_PACKAGES=\(([^)]*)\)", text)
    assert packages is not None
    assert {"python3", "python3-venv"} <= set(packages.group(1).split())


def test_readme_starts_with_the_two_commands_and_says_make_may_be_missing() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[3].startswith("make run ") and lines[4].startswith("make test ")
    assert "apt-get install -y make" in " ".join(lines[:12])


def test_readme_layout_names_only_folders_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n\n")[1]
    folders = re.findall(r"`([a-z_]+)/`", layout)
    assert folders and all((ROOT / f).is_dir() for f in folders), folders


def test_sample_does_not_promise_log_files_in_data_dir() -> None:
    text = config.SAMPLE_CONFIG.read_text()
    comment = text.split("data_dir =", 1)[0]
    assert "and logs" not in comment and "standard error" in comment


# -- 12: no display --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env,platform,ok",
    [
        ({}, "linux", False),
        ({"DISPLAY": ":99"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True),
        ({"QT_QPA_PLATFORM": "xcb"}, "linux", False),
        ({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}, "linux", True),
        ({"QT_QPA_PLATFORM": "wayland"}, "linux", False),
        ({}, "win32", True),
        ({}, "darwin", True),
    ],
)
def test_display_check(env: dict[str, str], platform: str, ok: bool) -> None:
    from workstation.__main__ import display_problem

    assert (display_problem(env, platform) is None) is ok


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland systems")
def test_workstation_without_display_says_so_before_qt() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    code = (
        "import sys; from workstation.__main__ import main; rc = main([]); "
        "print('qt' if 'PySide6' in sys.modules else 'no-qt'); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout.strip() == "no-qt"
    assert done.stderr.strip().splitlines() == [
        "lucent-workstation: needs a display: set DISPLAY or run under xvfb-run "
        "(e.g. xvfb-run lucent-workstation)"
    ]
