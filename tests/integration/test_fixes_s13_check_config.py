"""``lucent-server check-config`` refuses an index made by a newer version of Lucent (a
schema revision it does not know) with the message ``run`` gives and a non-zero exit; it
said "OK", and the next start refused (outside probe). SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server.index import db
from tests.support.peers import free_port
from tests.support.postgres import TemporaryPostgres, postgres_available
from tests.support.postgres_races import connect

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[dimse]\nbind_address = "127.0.0.1"\n'
        f'[api]\nport = {free_port()}\n[[pools]]\nname = "DEFAULT"\nae_title = "LUCENT"\n'
        f"port = {free_port()}\n{extra}"
    )
    return config


def _cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(config.parent)}
    return subprocess.run(
        [sys.executable, "-m", "server", *args, "--config", str(config)],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _refused_like_run(config: Path) -> None:
    done = _cli(config, "check-config")
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    run = _cli(config, "run")
    assert run.returncode == 2, run.stdout
    message = run.stderr.strip().splitlines()[-1].removeprefix("lucent-server: ")
    assert "made by a newer version of Lucent" in message and "'0042'" in message, message
    assert done.stderr.strip().endswith(message), (done.stderr, message)  # word for word


def test_check_config_refuses_a_sqlite_index_made_by_a_newer_version(tmp_path: Path) -> None:
    config = _config(tmp_path)
    made = _cli(config, "create-admin", "--username", "a", "--password-stdin",
                stdin="pw-12345678\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    ok = _cli(config, "check-config")
    assert ok.returncode == 0 and "schema revision" in ok.stdout, ok.stdout + ok.stderr
    index = tmp_path / "data" / "index.sqlite3"
    with sqlite3.connect(index) as conn:  # what a later Lucent leaves after a rollback
        conn.execute("UPDATE alembic_version SET version_num = '0042'")
    _refused_like_run(config)
    with sqlite3.connect(index) as conn:  # check-config changed nothing
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042",)]


@pytest.mark.postgres
def test_check_config_refuses_a_postgres_index_made_by_a_newer_version(tmp_path: Path) -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        engine = db.make_engine(url)
        db.migrate(engine)
        engine.dispose()
        config = _config(tmp_path, f'[index]\ndatabase_url = "{url}"\n')
        ok = _cli(config, "check-config")
        assert ok.returncode == 0 and "schema revision" in ok.stdout, ok.stdout + ok.stderr
        with connect(url) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '0042'")
        _refused_like_run(config)
        with connect(url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042",)]


def _refused_as_unversioned(config: Path) -> None:
    done = _cli(config, "check-config")
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "of Lucent's tables but no schema revision" in done.stderr, done.stderr
    assert "rebuild-index" in done.stderr, done.stderr
    run = _cli(config, "run")  # run refuses too: check-config must not have said OK
    assert run.returncode == 2, run.stdout
    assert "already exists" in run.stderr, run.stderr


def test_check_config_refuses_a_sqlite_index_whose_revision_row_is_lost(tmp_path: Path) -> None:
    """s18 note: tables but an empty alembic_version passed as "OK, no schema yet", and the
    next start stopped on "table ... already exists"."""
    config = _config(tmp_path)
    made = _cli(config, "create-admin", "--username", "a", "--password-stdin",
                stdin="pw-12345678\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    index = tmp_path / "data" / "index.sqlite3"
    with sqlite3.connect(index) as conn:
        conn.execute("DELETE FROM alembic_version")
    _refused_as_unversioned(config)


def test_check_config_accepts_a_sqlite_file_with_only_other_tables(tmp_path: Path) -> None:
    config = _config(tmp_path)
    index = tmp_path / "data" / "index.sqlite3"
    index.parent.mkdir(parents=True)
    with sqlite3.connect(index) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    ok = _cli(config, "check-config")
    assert ok.returncode == 0 and "no schema yet" in ok.stdout, ok.stdout + ok.stderr


@pytest.mark.postgres
def test_check_config_refuses_a_postgres_index_whose_revision_row_is_lost(
    tmp_path: Path,
) -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        config = _config(tmp_path, f'[index]\ndatabase_url = "{url}"\n')
        with connect(url) as conn:  # another program's table in a shared database: fine
            conn.execute("CREATE TABLE clinic_notes (id integer PRIMARY KEY)")
        ok = _cli(config, "check-config")
        assert ok.returncode == 0 and "empty: the first start" in ok.stdout, ok.stdout + ok.stderr
        engine = db.make_engine(url)
        db.migrate(engine)
        engine.dispose()
        with connect(url) as conn:
            conn.execute("DELETE FROM alembic_version")
        _refused_as_unversioned(config)
