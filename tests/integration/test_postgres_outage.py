"""The server while its index database is down, frozen or misconfigured (probe 12).

Found on PostgreSQL by an outside tester: a C-STORE failed during an outage left its archive
objects behind, and start-up recovery re-indexed them (instances the sender was told were
not stored, versions it had corrected since); every API route answered a bare 500 with a
traceback in the log; a silent database port hung start-up and requests; a wrong password
was answered with "restore it from a backup"; create-admin and rebuild-index printed a
118-line traceback; check-config said "OK" without contacting the database.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.exc import DatabaseError

from server import config
from server.accounts import users
from server.api.app import create_app
from server.context import ServerContext
from server.index import db
from server.index.models import Instance
from tests.data import bad_inputs, samples
from tests.support.lucent import LucentServer
from tests.support.postgres import PG_BIN, TemporaryPostgres, postgres_available

CT = "1.2.840.10008.5.1.4.1.1.2"
ADMIN = ("admin", "correct-horse-battery")


@pytest.fixture(scope="module")
def pg() -> Iterator[TemporaryPostgres]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    cluster = TemporaryPostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        _cont(cluster)
        cluster.stop()


def _stop(pg: TemporaryPostgres) -> None:
    done = pg._run([str(PG_BIN / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast", "-w", "stop"])
    assert done.returncode == 0, done.stderr


def _start(pg: TemporaryPostgres) -> None:
    done = pg._pg_ctl_start()
    assert done.returncode == 0, done.stderr


def _postmaster(pg: TemporaryPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().split()[0])


def _cont(pg: TemporaryPostgres) -> None:
    with contextlib.suppress(OSError, ValueError, AssertionError):
        os.kill(_postmaster(pg), signal.SIGCONT)


def _settings(tmp_path: Path, url: str | None = None) -> config.Settings:
    data: dict[str, Any] = {
        "server": {"data_dir": str(tmp_path / "data")},
        "archive": {"min_free_mb": 1},
        "accounts": {"retention_interval_minutes": 0.0},
        "pools": [{"name": "DEFAULT", "ae_title": "LUCENT", "port": 0}],
    }
    if url:
        data["index"] = {"database_url": url}
    return config.parse(data)


def _objects(ctx: ServerContext) -> set[str]:
    """Archive objects with content (prepared, still empty files are not objects)."""
    root = ctx.settings.archive_dir
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.stat().st_size}


def _indexed(ctx: ServerContext) -> list[str]:
    with ctx.Session() as session:
        return list(session.scalars(select(Instance.sop_instance_uid).order_by(Instance.id)))


# --------------------------------------------------------------------- 1. no orphan objects


@pytest.mark.postgres
def test_a_store_failed_by_a_database_outage_leaves_no_object(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    """The known-series shortcut let a connection error through without removing the
    instance's objects: recovery re-indexed them at the next start (probe 12)."""
    ctx = ServerContext(_settings(tmp_path, pg.create_database("outage_store")), migrate=True)
    try:
        first, lost, corrected, later = samples.ct_series(4)
        assert ctx.store(bad_inputs.part10_of(first), pool="DEFAULT").ok  # the series is known now
        kept = _objects(ctx)
        _stop(pg)
        try:
            for ds in (lost, corrected):
                result = ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT")
                assert not result.ok, result
        finally:
            _start(pg)
        # The objects of a store whose commit outcome is unknown stay until recovery
        # (the row might have been committed); recovery removes them, none is re-indexed.
        assert len(ctx.storage.doubtful()) <= 2
        report = ctx.recover()
        assert report.recovered == 0
        assert _objects(ctx) == kept  # nothing of the refused instances remains
        assert ctx.storage.doubtful() == set()
        assert _indexed(ctx) == [first.SOPInstanceUID]
        assert ctx.store(bad_inputs.part10_of(later), pool="DEFAULT").ok  # served again, no restart
        assert _indexed(ctx) == [first.SOPInstanceUID, later.SOPInstanceUID]
    finally:
        ctx.close()


@pytest.mark.postgres
def test_objects_of_a_commit_with_unknown_outcome_stay_when_the_row_made_it(
    pg: TemporaryPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection can die after PostgreSQL committed, before it said so: deleting the
    objects then left an indexed instance without its data (review of acfaac4)."""
    from sqlalchemy.exc import OperationalError

    ctx = ServerContext(_settings(tmp_path, pg.create_database("outage_commit")), migrate=True)
    try:
        first, second = samples.ct_series(2)
        assert ctx.store(bad_inputs.part10_of(first), pool="DEFAULT").ok
        original = ctx._commit

        def commit_then_lose_the_answer(rec: Any) -> Any:
            original(rec)  # the row is in
            raise OperationalError(None, None, Exception("server closed the connection"))

        monkeypatch.setattr(ctx, "_commit", commit_then_lose_the_answer)
        assert not ctx.store(bad_inputs.part10_of(second), pool="DEFAULT").ok
        monkeypatch.undo()
        assert _indexed(ctx) == [first.SOPInstanceUID, second.SOPInstanceUID]
        assert ctx.recover().recovered == 0
        with ctx.Session() as session:
            inst = session.scalars(
                select(Instance).where(Instance.sop_instance_uid == second.SOPInstanceUID)
            ).one()
            session.expunge(inst)
        back = ctx.instance_bytes(inst)  # its data is still there
        assert dcmread(io.BytesIO(back)).SOPInstanceUID == second.SOPInstanceUID
    finally:
        ctx.close()


def test_a_store_whose_index_commit_fails_leaves_no_object_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on SQLite, for an error the commit retries do not cover (a damaged file)."""
    ctx = ServerContext(_settings(tmp_path), migrate=True)
    try:
        first, second = samples.ct_series(2)
        assert ctx.store(bad_inputs.part10_of(first), pool="DEFAULT").ok
        kept = _objects(ctx)

        def broken(*_: object, **__: object) -> None:
            raise DatabaseError("COMMIT", {}, sqlite3.DatabaseError("disk image is malformed"))

        monkeypatch.setattr(ctx._known_series, "write", broken)
        monkeypatch.setattr("server.context.record_instance", broken)
        assert not ctx.store(bad_inputs.part10_of(second), pool="DEFAULT").ok
        assert _objects(ctx) == kept
        monkeypatch.undo()
        assert ctx.recover().recovered == 0
        assert _indexed(ctx) == [first.SOPInstanceUID]
    finally:
        ctx.close()


# --------------------------------------------------------------------- 2. API: a fast 503


@pytest.fixture
def api(pg: TemporaryPostgres, tmp_path: Path) -> Iterator[tuple[ServerContext, TestClient]]:
    # the connect timeout can be set in the URL (libpq's own parameter): 3 s keeps this short
    url = pg.create_database(f"outage_api_{time.monotonic_ns()}") + "?connect_timeout=3"
    ctx = ServerContext(_settings(tmp_path, url), migrate=True)
    with ctx.WriteSession() as session, session.begin():
        users.create_user(session, ADMIN[0], ADMIN[1], role="administrator")
    try:
        with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
            yield ctx, client
    finally:
        ctx.close()


def _timed_get(client: TestClient, path: str, headers: dict[str, str]) -> tuple[Any, float]:
    """The request in a thread, so a hang fails the test instead of stalling it."""
    box: list[Any] = []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: box.append(client.get(path, headers=headers)))
    worker.daemon = True
    worker.start()
    worker.join(40)
    assert box, f"GET {path} still waiting after 40 s"
    return box[0], time.monotonic() - start


@pytest.mark.postgres
def test_api_answers_503_while_the_database_is_down_and_recovers(
    pg: TemporaryPostgres,
    api: tuple[ServerContext, TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx, client = api
    r = client.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/api/v1/patients", headers=headers).status_code == 200
    _stop(pg)
    try:
        caplog.clear()
        for path in ("/api/v1/patients", "/dicom-web/studies", "/api/v1/auth/me"):
            r, took = _timed_get(client, path, headers)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["detail"].startswith("index database unavailable: "), r.text
            assert took < 10, (path, took)
        r = client.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 503
        assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
        lines = [rec for rec in caplog.records if "index database unavailable" in rec.getMessage()]
        assert len(lines) == 1  # one line per outage, not one per request
    finally:
        _start(pg)
    r = client.get("/api/v1/patients", headers=headers)  # no restart needed
    assert r.status_code == 200, r.text


@pytest.mark.postgres
def test_api_answers_503_in_bounded_time_when_the_database_is_frozen(
    pg: TemporaryPostgres, api: tuple[ServerContext, TestClient]
) -> None:
    """kill -STOP of the postmaster: a new connection waited for ever (requests > 50 s)."""
    ctx, client = api
    r = client.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    ctx.engine.dispose()  # every request needs a new connection
    os.kill(_postmaster(pg), signal.SIGSTOP)
    try:
        r, took = _timed_get(client, "/api/v1/patients", headers)
        assert r.status_code == 503 and "index database unavailable" in r.json()["detail"]
        assert took < 15, took
    finally:
        _cont(pg)
    r = client.get("/api/v1/patients", headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.postgres
def test_postgres_sessions_have_timeouts_and_migrations_do_not(
    pg: TemporaryPostgres, tmp_path: Path
) -> None:
    """A lock or a runaway query must not hold a request for ever; a long migration must not
    be cut off by those limits."""
    engine = db.make_engine(pg.create_database("outage_timeouts"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() not in ("0", None)
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() not in ("0", None)
        seen: list[tuple[str, str]] = []
        from alembic import command  # db.migrate imports it when it migrates

        real = command.upgrade

        def upgrade(cfg: Any, revision: str) -> None:
            conn = cfg.attributes["connection"]
            seen.append(
                (
                    conn.exec_driver_sql("SHOW statement_timeout").scalar(),
                    conn.exec_driver_sql("SHOW lock_timeout").scalar(),
                )
            )
            real(cfg, revision)

        command.upgrade = upgrade  # type: ignore[assignment]
        try:
            db.migrate(engine)
        finally:
            command.upgrade = real  # type: ignore[assignment]
        assert seen == [("0", "0")]
    finally:
        engine.dispose()


# --------------------------------------------------------------------- 3. CLI: one clear line


def _wrong_password_url(pg: TemporaryPostgres) -> str:
    return f"postgresql+psycopg://{pg.user}:wrong-{pg.password}@{pg.host}:{pg.port}/{pg.dbname}"


@pytest.mark.postgres
def test_cli_names_a_connection_problem_in_one_line(pg: TemporaryPostgres, tmp_path: Path) -> None:
    srv = LucentServer(
        tmp_path / "srv", settings={"index": {"database_url": _wrong_password_url(pg)}}
    )
    done = srv.cli("run")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "authentication failed" in done.stderr and "password" in done.stderr
    assert "backup" not in done.stderr and "rebuild-index" not in done.stderr
    for args, stdin in (
        (("create-admin", "--username", "x", "--password-stdin"), "a-long-password\n"),
        (("rebuild-index",), ""),
        (("check-config",), ""),
    ):
        done = srv.cli(*args, stdin=stdin)
        assert done.returncode != 0, (args, done.stdout)
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) <= 3, (args, done.stderr)
        assert "authentication failed" in done.stderr, (args, done.stderr)
    missing = f"postgresql+psycopg://{pg.user}:{pg.password}@{pg.host}:{pg.port}/nosuchdb"
    srv = LucentServer(tmp_path / "nodb", settings={"index": {"database_url": missing}})
    done = srv.cli("run")
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr[-2000:]
    assert "backup" not in done.stderr


@pytest.mark.postgres
def test_check_config_contacts_the_database(pg: TemporaryPostgres, tmp_path: Path) -> None:
    url = pg.create_database("outage_check")
    srv = LucentServer(tmp_path / "ok", settings={"index": {"database_url": url}})
    done = srv.cli("check-config")
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "connected" in done.stdout
    with socket.socket() as s:  # nothing listens here
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = f"postgresql+psycopg://{pg.user}:{pg.password}@127.0.0.1:{closed}/lucent"
    srv = LucentServer(tmp_path / "refused", settings={"index": {"database_url": refused}})
    done = srv.cli("check-config")
    assert done.returncode == 2 and "cannot connect" in done.stderr, done.stderr
    assert "OK" not in done.stdout


def test_check_config_of_a_sqlite_index_does_not_create_it(tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv")
    done = srv.cli("check-config")
    assert done.returncode == 0 and "OK" in done.stdout
    assert not (srv.data_dir / "index.sqlite3").exists()


def test_start_against_a_silent_database_port_ends_in_bounded_time(tmp_path: Path) -> None:
    """A port that accepts TCP and never answers hung `run` for ever: the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://lucent:pw@127.0.0.1:{port}/lucent"
        srv = LucentServer(tmp_path / "srv", settings={"index": {"database_url": url}})
        start = time.monotonic()
        done = srv.cli("run")
        took = time.monotonic() - start
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot connect" in done.stderr and "Traceback" not in done.stderr
    assert took < 60, took
