"""One server per index database, and an index belongs to one archive (probe 58).

A second server with its own data directory, archive and key file on the same PostgreSQL
database started without complaint: it listed the first server's studies, answered 500 on
WADO-RS for them, and a C-STORE to it of an instance the first server held made the first
server answer 500 "metadata object is missing" for it. Now the main ``run`` process holds
a session-level advisory lock on a PostgreSQL index, and the index records the archive it
belongs to: a second server is refused while the first runs (and starts once it stopped,
kill -9 too), and an index of another archive is refused at any start, SQLite included.
Real servers, a real PostgreSQL cluster, real SQLite files.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import single_instance
from server.index import db
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import REPO, LucentServer
from tests.support.postgres import PG_BIN, TemporaryPostgres, running_cluster
from tests.support.postgres_races import admin_session, connect

REFUSED_IN_USE = "is in use by another Lucent server"
OTHER_ARCHIVE = "belongs to another archive"


@pytest.fixture(scope="module")
def pg() -> Iterator[TemporaryPostgres]:
    yield from running_cluster()


def _on(url: str, workdir: Path, **archive: str) -> LucentServer:
    settings: dict[str, dict[str, object]] = {"index": {"database_url": url}}
    if archive:
        settings["archive"] = dict(archive)
    return LucentServer(workdir, settings=settings)


def _run_refused(srv: LucentServer, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``run`` that must end by itself (a refusal); one that starts is stopped and fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "run", "--config", str(srv.config_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the second server started instead of being refused:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _lock_holders(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_released(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _lock_holders(url):
        assert time.monotonic() < deadline, "the index lock outlived its server"
        time.sleep(0.1)


def _studies(srv: LucentServer) -> int:
    with admin_session(srv) as client:
        answer = client.get("/api/v1/studies", params={"limit": 1})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


@pytest.mark.postgres
def test_a_second_server_on_the_same_postgres_database_is_refused_while_the_first_runs(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    url = pg.create_database("probe58_twin")
    first = _on(url, tmp_path / "first")
    ct = samples.write_ct_series(tmp_path / "ct", n=2, rows=16, cols=16)
    twin = _on(url, tmp_path / "twin")  # its own data_dir, archive, key file, ports
    first.start()
    try:
        assert storescu("127.0.0.1", first.port, first.ae_title, ct).returncode == 0
        assert first.proc is not None
        for command in ("run", "rebuild-index", "rotate-key"):
            done = _run_refused(twin) if command == "run" else twin.cli(command)
            assert done.returncode == 1, (command, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            message = done.stderr.strip().splitlines()[-1]
            assert REFUSED_IN_USE in message, (command, done.stderr)
            # the holder, as PostgreSQL and its index_owner row name it
            assert f"pid {first.proc.pid} on " in message, message
            assert f"data_dir {first.data_dir}" in message, message
            assert "connected from 127.0.0.1" in message, message
            assert pg.password not in message
        # refused before anything touched its data: no key file, no archive id were made
        assert not (twin.data_dir / "keys" / "master.keys").exists()
        assert not (twin.data_dir / "keys" / "master.keys.archive-id").exists()
        # check-config runs beside the server: a note, not an error
        done = first.cli("check-config")
        assert done.returncode == 0, done.stderr
        assert "note: the index database is in use by a running server (" in done.stdout
        assert f"pid {first.proc.pid} on " in done.stdout, done.stdout
        assert _lock_holders(url) == 1
        assert first.proc.poll() is None  # the first server is unharmed
        assert _studies(first) == 1
    finally:
        first.stop()
    _wait_released(url)


@pytest.mark.postgres
def test_a_standby_on_the_same_database_and_archive_starts_once_the_first_stopped(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    """A second server for the same archive (another data_dir: a standby) waits its turn:
    refused while the first runs, started after a stop and after a kill -9."""
    url = pg.create_database("probe58_standby")
    first = _on(url, tmp_path / "first")
    ct = samples.write_ct_series(tmp_path / "ct", n=2, rows=16, cols=16)
    first.start()
    try:
        assert storescu("127.0.0.1", first.port, first.ae_title, ct).returncode == 0
        standby = _on(
            url,
            tmp_path / "standby",
            path=str(first.data_dir / "archive"),
            key_file=str(first.data_dir / "keys" / "master.keys"),
        )
        done = _run_refused(standby)
        assert done.returncode == 1 and REFUSED_IN_USE in done.stderr, done.stderr
        assert first.proc is not None and f"pid {first.proc.pid} on " in done.stderr
    finally:
        first.stop()
    _wait_released(url)
    standby.start()  # a clean stop released the database
    try:
        assert _studies(standby) == 1
        assert _lock_holders(url) == 1
        done = _run_refused(first)  # the other way round now
        assert done.returncode == 1 and REFUSED_IN_USE in done.stderr, done.stderr
        assert standby.proc is not None and f"pid {standby.proc.pid} on " in done.stderr
        assert f"data_dir {standby.data_dir}" in done.stderr, done.stderr
    finally:
        standby.kill()  # kill -9: PostgreSQL ends its session, and with it the lock
    _wait_released(url)  # (the next start would succeed: shown above after a clean stop)


@pytest.mark.postgres
def test_a_twin_with_another_archive_is_refused_after_the_first_stopped(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    """The sequential case: the first server stopped, the twin (its own archive) would take
    over its index all the same."""
    url = pg.create_database("probe58_sequential")
    first = _on(url, tmp_path / "first")
    ct = samples.write_ct_series(tmp_path / "ct", n=2, rows=16, cols=16)
    with first:
        assert storescu("127.0.0.1", first.port, first.ae_title, ct).returncode == 0
    _wait_released(url)
    twin = _on(url, tmp_path / "twin")
    for command in ("run", "rebuild-index"):
        done = _run_refused(twin) if command == "run" else twin.cli(command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        message = done.stderr.strip().splitlines()[-1]
        assert OTHER_ARCHIVE in message and "Nothing was changed" in message, message
        assert "[archive] path" in message and "another database" in message, message
        assert pg.password not in message
    done = twin.cli("check-config")  # the same refusal
    assert done.returncode == 2 and OTHER_ARCHIVE in done.stderr, done.stdout + done.stderr
    assert not (twin.data_dir / "keys" / "master.keys").exists()  # nothing was made


def _copy_index(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _files(srv: LucentServer) -> dict[str, bytes]:
    """The data directory's files and their contents, but for the pid note and the SQLite
    shared-memory files (a read-only look at the index makes those)."""
    return {
        str(p.relative_to(srv.data_dir)): p.read_bytes()
        for p in sorted(srv.data_dir.rglob("*"))
        if p.is_file() and p.name != "server.lock" and not p.name.endswith(("-wal", "-shm"))
    }


def test_a_sqlite_index_copied_next_to_another_archive_is_refused(tmp_path: Path) -> None:
    first = LucentServer(tmp_path / "first")
    ct = samples.write_ct_series(tmp_path / "ct", n=2, rows=16, cols=16)
    with first:
        assert storescu("127.0.0.1", first.port, first.ae_title, ct).returncode == 0
    other = LucentServer(tmp_path / "other")
    with other:  # an installation of its own
        pass
    fresh = LucentServer(tmp_path / "fresh")  # never started: no archive, no key file yet
    for srv in (other, fresh):
        _copy_index(first.data_dir / "index.sqlite3", srv.data_dir / "index.sqlite3")
        before = _files(srv)
        done = _run_refused(srv)
        assert done.returncode == 2, done.stdout + done.stderr
        message = done.stderr.strip().splitlines()[-1]
        assert OTHER_ARCHIVE in message and str(srv.data_dir / "index.sqlite3") in message
        assert "Nothing was changed" in message, message
        done = srv.cli("check-config")
        assert done.returncode == 2 and OTHER_ARCHIVE in done.stderr, done.stdout + done.stderr
        assert _files(srv) == before  # refused before anything was made or changed


def test_an_index_without_a_recorded_archive_adopts_it_silently(tmp_path: Path) -> None:
    """An installation from before the check (no archive recorded, no id file) starts as
    before and records its archive; its next start compares."""
    srv = LucentServer(tmp_path / "srv")
    with srv:
        pass
    index = srv.data_dir / "index.sqlite3"
    id_file = srv.data_dir / "keys" / "master.keys.archive-id"
    recorded = id_file.read_text().strip()
    with sqlite3.connect(index) as conn:
        assert conn.execute("SELECT archive_id FROM index_owner").fetchall() == [(recorded,)]
        conn.execute("DELETE FROM index_owner")  # as an index made before migration 0015
    id_file.unlink()
    with srv:
        pass
    adopted = id_file.read_text().strip()
    assert adopted and adopted != recorded
    with sqlite3.connect(index) as conn:
        assert conn.execute("SELECT archive_id FROM index_owner").fetchall() == [(adopted,)]


@pytest.mark.postgres
def test_the_lock_is_taken_again_when_postgres_restarts(
    pg: TemporaryPostgres, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ends the lock with its session: a restart of the database left the
    running server without it, and a second server could start beside it."""
    url = pg.create_database("probe58_relock")
    monkeypatch.setattr(db, "INDEX_LOCK_CHECK_S", 0.2, raising=False)
    lock = db.lock_index(url)
    assert lock is not None
    try:
        assert _lock_holders(url) == 1
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w", "stop"]
        assert pg._run(stop).returncode == 0
        assert pg._pg_ctl_start().returncode == 0
        deadline = time.monotonic() + 30
        while True:
            try:
                if _lock_holders(url) == 1:
                    break
            except Exception:  # PostgreSQL still starting
                pass
            assert time.monotonic() < deadline, "the lock was not taken again"
            time.sleep(0.2)
        with pytest.raises(single_instance.AlreadyRunning):
            db.lock_index(url)  # a second server is refused again
        assert "index database lock was lost with its connection: taken again" in caplog.text
    finally:
        lock.close()
    _wait_released(url)
