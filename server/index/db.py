"""Engine creation and schema migration for the index (SQLite WAL by default, PostgreSQL by URL)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, select
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from server import config, single_instance
from server.index import folding
from server.index.models import IndexOwner

log = logging.getLogger("lucent.index")

if os.name == "posix":
    import fcntl

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: PostgreSQL bounds (libpq parameters; the database URL may set its own, e.g.
#: ``?connect_timeout=30``). Without them a port that accepted TCP and never answered, or
#: a frozen server, hung start-up and every API request (probe 12). The statement and lock
#: limits are generous: every statement of ingest, API and recovery takes well under a
#: second; migrations lift both (``migrate``), since building an index on a large table
#: may take longer.
PG_CONNECT_TIMEOUT_S = 10
PG_STATEMENT_TIMEOUT_MS = 300_000
PG_LOCK_TIMEOUT_MS = 60_000
#: A peer that stops acknowledging our packets (a cut network) ends the connection after
#: this long instead of the kernel's ~15 minutes of retransmissions (Linux; ignored elsewhere).
PG_TCP_USER_TIMEOUT_MS = 30_000
#: TCP keepalive probes (libpq ``keepalives_*``): a database host that went away (powered
#: off, cut off) after acknowledging a query leaves nothing unacknowledged for the timeout
#: above, and the wait for its answer lasted the system default of ~2 hours; with probes
#: after 30 s idle, every 10 s, 3 unanswered, it fails after about a minute. (A frozen
#: PostgreSQL on a live host still answers them: README.)
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                 "keepalives_count": 3}  # fmt: skip


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and full fsync on commit.

    WAL lets the API read while DICOM workers write; ``synchronous=FULL`` makes a committed
    row survive power loss. The ingest path alone commits with ``synchronous=NORMAL`` (see
    ``ingest_sessions``): its rows survive a kill -9 as soon as they are committed, and after a
    power loss start-up recovery re-indexes them from their fsynced, self-describing blobs.

    A URL of another database, or none at all, is a ``ConfigError`` naming what is supported
    (it was a SQLAlchemy traceback, outside probe 29).
    """
    problem = config.database_url_problem(url)
    if problem:
        raise config.ConfigError(problem)
    try:
        return _make_engine(url)
    except (ArgumentError, ImportError) as exc:  # e.g. postgresql+psycopg2 not installed
        raise config.ConfigError(
            f"[index] database_url: cannot load its database driver ({exc}): "
            f"{config.SUPPORTED_DATABASES}"
        ) from exc


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # We issue BEGIN ourselves (below), as SQLAlchemy's pysqlite recipe advises.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            _record.info["synchronous"] = "FULL"
            cur.execute("PRAGMA foreign_keys=ON")
            # DICOM matching is case-sensitive unless asked otherwise (PostgreSQL LIKE is too).
            cur.execute("PRAGMA case_sensitive_like=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
            dbapi_conn.create_function(
                folding.SQLITE_FUNCTION, 1, folding.fold_text, deterministic=True
            )

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # Writers take the lock up front: a deferred transaction that read first fails at
            # once with SQLITE_BUSY when another process committed meanwhile (WAL snapshot).
            options = conn.get_execution_options()
            # The safety level can only change outside a transaction, so it is set here, and
            # only when it differs from what this pooled connection last used.
            wanted = "NORMAL" if options.get("sqlite_fast_commit", False) else "FULL"
            if conn.info.get("synchronous") != wanted:
                conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
                conn.info["synchronous"] = wanted
            immediate = options.get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args=_server_connect_args(url),
    )
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "first_connect")
        def _collations(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # folding.folded folds with the ICU root collation; a PostgreSQL built without
            # ICU has none, and every case-insensitive search would fail (review).
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")
            engine.dialect.lucent_icu = cur.fetchone() is not None  # type: ignore[attr-defined]
            cur.close()
            if not engine.dialect.lucent_icu:  # type: ignore[attr-defined]
                log.warning(
                    "PostgreSQL has no ICU collation: case-insensitive text matching folds "
                    "by the database locale"
                )

    return engine


def _server_connect_args(url: str) -> dict[str, object]:
    """Timeouts for a PostgreSQL connection, unless the URL sets them itself (SQLAlchemy
    lets ``connect_args`` win over the URL's query, so only absent keys are added)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return {}
    wanted: dict[str, object] = {
        "connect_timeout": PG_CONNECT_TIMEOUT_S,
        "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
        **PG_KEEPALIVES,
        "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} "
        f"-c lock_timeout={PG_LOCK_TIMEOUT_MS}",
    }
    return {k: v for k, v in wanted.items() if k not in parsed.query}


#: SQLSTATE classes and codes that say "the database cannot serve now", not "this request is
#: wrong": connection exception, insufficient resources, operator intervention (shutdown,
#: starting up, statement timeout), lock timeout, system error.
_UNAVAILABLE_STATES = ("08", "53", "57", "58", "55P03", "3D000", "28")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")


def unavailable(exc: BaseException) -> str | None:
    """The driver's reason, on one line, when ``exc`` says the index database cannot be
    reached or cannot answer now (down, frozen, refused, shutting down, timed out, locked);
    None for anything else (a bug, a constraint: those are not outages)."""
    if isinstance(exc, PoolTimeout):
        return f"no free database connection ({exc})"
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    reason = " ".join(str(orig).split()) or type(orig).__name__
    if type(orig).__module__.startswith("sqlite3"):
        lowered = reason.lower()
        return reason if any(m in lowered for m in _SQLITE_UNAVAILABLE) else None
    if exc.connection_invalidated or exc.statement is None:
        return reason  # connecting failed, or the connection was lost
    state = getattr(orig, "sqlstate", None)
    if state is None:
        # psycopg raises OperationalError/InterfaceError without a SQLSTATE when the
        # connection itself failed (closed, consuming input failed)
        return reason if type(orig).__name__ in ("OperationalError", "InterfaceError") else None
    return reason if str(state).startswith(_UNAVAILABLE_STATES) else None


#: SQLSTATEs of a transaction PostgreSQL rolled back to settle a conflict with a concurrent
#: one (class 40, transaction rollback): running it again normally succeeds.
_ROLLED_BACK_STATES = {
    "40P01": "deadlock detected",
    "40001": "serialization failure",
}


def rolled_back(exc: BaseException) -> str | None:
    """What PostgreSQL said, when it rolled ``exc``'s transaction back to resolve a conflict
    with a concurrent transaction (deadlock 40P01, serialization failure 40001); None for
    anything else. Neither request is wrong and the database is up: the request may be
    repeated (the API answers 503 with Retry-After, not 500)."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    what = _ROLLED_BACK_STATES.get(str(state)) if state else None
    if what is None:
        return None
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else what
    return f"{what} (SQLSTATE {state}: {first})"


def connection_advice(url: str, reason: str) -> str:
    """What to check, after the driver's reason, when connecting to the index failed:
    a credential or network problem, not a damaged database (probe 12: a wrong password
    was answered with "restore it from a backup")."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    lowered = reason.lower()
    if (
        "authentication failed" in lowered
        or "no password supplied" in lowered
        or ("role" in lowered and "does not exist" in lowered)
    ):
        what = (
            "authentication failed: check the user name and password in [index] database_url "
            "and the user's entry in PostgreSQL"
        )
    elif "database" in lowered and "does not exist" in lowered:
        what = (
            f"the database '{parsed.database}' does not exist on {where}: create it "
            "(createdb, or CREATE DATABASE) or correct its name in [index] database_url"
        )
    elif "pg_hba.conf" in lowered:
        what = f"the server at {where} refuses this client: allow it in pg_hba.conf"
    elif "timeout" in lowered or "timed out" in lowered:
        what = (
            f"no answer from {where} in time: check that this is the PostgreSQL server and "
            "that it is running, not frozen or behind a firewall that drops packets"
        )
    else:
        what = (
            f"unreachable: check that PostgreSQL is running and accepts TCP connections at "
            f"{where} (listen_addresses, firewall) and that [index] database_url names it"
        )
    shown = parsed.render_as_string(hide_password=True)
    return f"cannot connect to the index database {shown}: {what} ({reason})"


class CommitLock:
    """Serialises ingest commits of every thread and process on one SQLite index.

    SQLite's busy handler polls a held write lock with sleeps of 1, 2, 5, 10 ... ms; with
    several associations over several worker processes those sleeps, not work, set the
    pace. A blocked ``flock`` wakes the moment the lock is free. PostgreSQL locks rows and
    needs none of this (``path=None``: a no-op).
    """

    def __init__(self, path: Path | None) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if path is not None and os.name == "posix":
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def commit_lock(engine: Engine) -> CommitLock:
    """The ingest commit lock for this engine's database (a file beside a SQLite index)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return CommitLock(Path(str(url.database) + ".ingest-lock"))
    return CommitLock(None)


def sessions(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    """Sessions for reading and ordinary writes."""
    return sessionmaker(engine, expire_on_commit=False)


def writer_sessions(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    """Sessions for the ingest path: on SQLite they take the write lock at BEGIN."""
    return sessionmaker(engine.execution_options(sqlite_immediate=True), expire_on_commit=False)


def ingest_engine(engine: Engine) -> Engine:
    """The engine view the ingest path commits through: write lock at BEGIN and, on SQLite,
    ``synchronous=NORMAL``, so the lock is not held across a WAL fsync. Only rows that start-up
    recovery can rebuild from the archive (``server.archive.recovery``) go through it."""
    return engine.execution_options(sqlite_immediate=True, sqlite_fast_commit=True)


def ingest_sessions(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(ingest_engine(engine), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    # alembic loads here, not with the module: DICOM workers and most commands never
    # migrate, and it cost ~0.5 s of every process start
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def newer_revision_message(exc: BaseException) -> str | None:
    """What to do when the index names a schema revision this version does not know: a
    newer Lucent made it (a software rollback). Alembic said only "Can't locate revision
    identified by '0042'" in a traceback (outside probe 29). None for any other error."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    found = re.search(r"Can't locate revision identified by '([^']*)'", str(exc))
    if not isinstance(exc, CommandError) or found is None:
        return None
    return _newer_revision(found.group(1), ScriptDirectory.from_config(alembic_config("sqlite://")))


def _newer_revision(revision: str, script: Any) -> str:
    ours = ", ".join(script.get_heads())
    return (
        f"the index database was made by a newer version of Lucent (schema revision "
        f"'{revision}'; this version knows up to '{ours}'). Install that newer "
        "version again, or restore the index (and archive) from a backup made with this "
        "version. Nothing was changed."
    )


def unknown_revision_message(revisions: list[str]) -> str | None:
    """``newer_revision_message``'s text for schema revisions read from an index's
    ``alembic_version`` table, when one of them is not a revision of this version; None
    when all are known. ``lucent-server check-config`` reads the table without migrating:
    it said "OK" for an index a newer Lucent had made, which ``run`` then refused."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    known = {rev.revision for rev in script.walk_revisions()}
    for revision in revisions:
        if revision not in known:
            return _newer_revision(revision, script)
    return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (alembic, from the first table on).

    On SQLite, foreign keys are off while migrating: alembic's batch mode rebuilds a table
    (copy, drop, rename), and dropping ``patients`` under ``foreign_keys=ON`` failed on any
    index that held a study, so an upgraded site could not start (outside probe 29). The
    references are checked before the migration commits instead (``foreign_key_check``).
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw: Any = conn.connection.driver_connection
        if sqlite:  # outside any transaction, or SQLite ignores it
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # the serving limits (make_engine) must not cut a long migration short
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
                cfg.attributes["connection"] = conn
                from alembic import command

                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(
                            f"migration left {len(broken)} broken reference(s), first: "
                            f"{tuple(broken[0])}; nothing was changed"
                        )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


# ------------------------------------------------------------------ one server per index
#: Key of the session-level advisory lock a server holds on a PostgreSQL index (probe 58),
#: a constant derived from "lucent-index" (63 bits: positive as a bigint). pg_locks shows a
#: bigint key as classid (high 32 bits) and objid (low 32 bits) with objsubid 1.
INDEX_LOCK_KEY = int.from_bytes(hashlib.sha256(b"lucent-index").digest()[:8], "big") >> 1
_HOLDER_SQL = (
    "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start"
    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND l.classid = {INDEX_LOCK_KEY >> 32} AND l.objid = {INDEX_LOCK_KEY & 0xFFFFFFFF}"
)


def holder_name(pid: int | None = None, host: str | None = None) -> str:
    """The lock connection's ``application_name``: what a refused second server (and
    pg_stat_activity) shows. PostgreSQL keeps 63 bytes of it."""
    name = f"lucent-server pid {pid or os.getpid()} on {host or socket.gethostname()}"
    return name.encode("utf-8")[:63].decode("utf-8", "ignore")


#: How often a server checks that it still holds the index lock (seconds).
INDEX_LOCK_CHECK_S = 10.0


class IndexLock:
    """The advisory lock on a PostgreSQL index, held by its own connection (autocommit:
    an idle session, no open transaction) for the life of the server. PostgreSQL releases
    it when that session ends: ``close()``, the process's end (kill -9 too: the kernel
    closes the socket) or a lost connection.

    A lost connection (PostgreSQL restarted, a cut network) left the server running without
    the lock, and a second server could start beside it: a keeper thread checks the
    session every ``INDEX_LOCK_CHECK_S`` and takes the lock again on a new connection;
    when another server took it meanwhile, that is logged as an error (once a minute)."""

    def __init__(self, engine: Engine, conn: Connection) -> None:
        self._engine = engine
        self._conn: Connection | None = conn
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._keeper = threading.Thread(
            target=self._keep, args=(INDEX_LOCK_CHECK_S,), name="lucent-index-lock", daemon=True
        )
        self._keeper.start()

    def close(self) -> None:
        self._stop.set()
        held = self._guard.acquire(timeout=5)  # a check on a frozen database may hang
        try:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                finally:
                    self._engine.dispose()
        finally:
            if held:
                self._guard.release()

    def _keep(self, every: float) -> None:
        lost_since: float | None = None
        told = 0.0
        while not self._stop.wait(every):
            with self._guard:
                if self._stop.is_set():
                    return
                if self._still_held():
                    continue
                taken, holder = self._take_again()
            now = time.monotonic()
            if taken:
                log.warning("the index database lock was lost with its connection: taken again")
                lost_since = None
            elif holder is not None and now - told >= 60:
                told = now
                log.error(
                    "another Lucent server holds the index database now (%s): this server "
                    "lost the lock with its connection; stop one of them",
                    holder,
                )
            elif holder is None and lost_since is None:
                lost_since = now
                log.warning("the index database lock was lost with its connection; retrying")

    def _still_held(self) -> bool:
        conn = self._conn
        if conn is None or conn.invalidated or conn.closed:
            return False
        try:
            conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:  # the session is gone, and the lock with it
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None
            return False

    def _take_again(self) -> tuple[bool, str | None]:
        """(taken, who holds it instead); (False, None) while the database is away."""
        try:
            conn = self._engine.connect()
        except Exception:
            return False, None
        try:
            if conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({INDEX_LOCK_KEY})").scalar():
                self._conn = conn
                return True, None
            holder = index_holder(conn) or "a process PostgreSQL does not name to this user"
        except Exception:
            holder = None
        conn.close()
        return False, holder


def lock_index(url: str) -> IndexLock | None:
    """Take the index database for this process: a second server on the same PostgreSQL
    database (its own folders, so the folder locks of ``server.single_instance`` did not
    meet) started, listed the first server's studies and took over its instances (probe
    58). ``single_instance.AlreadyRunning`` names the holder (its pid and host, address and
    data directory, as far as PostgreSQL shows them). None for SQLite: the folder lock of
    the index file's folder is its lock. A connection failure is a ``DBAPIError``."""
    problem = config.database_url_problem(url)
    if problem:
        raise config.ConfigError(problem)
    if make_url(url).get_backend_name() != "postgresql":
        return None
    args = _server_connect_args(url)
    args["application_name"] = holder_name()
    try:
        engine = create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=args
        )
    except (ArgumentError, ImportError) as exc:
        raise config.ConfigError(
            f"[index] database_url: cannot load its database driver ({exc}): "
            f"{config.SUPPORTED_DATABASES}"
        ) from exc
    try:
        conn = engine.connect()
    except BaseException:
        engine.dispose()
        raise
    try:
        taken = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({INDEX_LOCK_KEY})").scalar()
        if not taken:
            holder = index_holder(conn) or "a process PostgreSQL does not name to this user"
            shown = make_url(url).render_as_string(hide_password=True)
            raise single_instance.AlreadyRunning(
                f"the index database {shown} is in use by another Lucent server "
                f"({holder}); one server per index database: stop that server, or give this "
                "one its own database in [index] database_url"
            )
    except BaseException:
        conn.close()
        engine.dispose()
        raise
    return IndexLock(engine, conn)


def index_holder(conn: Connection) -> str | None:
    """Who holds the index lock, in words ("pid 4242 on host-a, connected from 10.0.0.5
    since ..., data_dir /srv/lucent"), or None when nobody does. The pid and host come from
    the holder's application_name, the data directory from the ``index_owner`` row it wrote
    at its start (shown only when that row names the same pid and host)."""
    row = conn.exec_driver_sql(_HOLDER_SQL).first()
    if row is None:
        return None
    _, application, address, since = row
    parts = [str(application).removeprefix("lucent-server ") if application else "unknown pid"]
    parts.append(f"connected from {address}" if address else "connected over a local socket")
    if since is not None:
        parts[-1] += f" since {since:%Y-%m-%d %H:%M:%S %Z}".rstrip()
    try:
        if conn.exec_driver_sql("SELECT to_regclass('index_owner')").scalar() is not None:
            owner = conn.exec_driver_sql(
                "SELECT holder_pid, holder_host, holder_data_dir FROM index_owner WHERE id = 1"
            ).first()
            if owner is not None and application == holder_name(owner[0], owner[1]):
                parts.append(f"data_dir {owner[2]}")
    except DBAPIError:  # the name is a courtesy: the refusal stands without it
        pass
    return ", ".join(parts)


def index_in_use(conn: Connection) -> str | None:
    """``index_holder`` for check-config, on a connection it has open anyway (PostgreSQL)."""
    try:
        return index_holder(conn) or None
    except DBAPIError:
        return None


def recorded_archive_id(url: str) -> str | None:
    """The archive id an index records, read without changing anything (a SQLite file
    read-only, and not created when missing); None when it records none (a new index, or
    one made before migration 0015)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return None
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            return None
        raw = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            named = raw.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'index_owner'"
            ).fetchone()
            if named is None:
                return None
            row = raw.execute("SELECT archive_id FROM index_owner WHERE id = 1").fetchone()
            return None if row is None else str(row[0])
        finally:
            raw.close()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return recorded_archive_id_on(conn)
    finally:
        engine.dispose()


def recorded_archive_id_on(conn: Connection) -> str | None:
    """``recorded_archive_id`` on an open PostgreSQL connection."""
    if conn.exec_driver_sql("SELECT to_regclass('index_owner')").scalar() is None:
        return None
    value = conn.exec_driver_sql("SELECT archive_id FROM index_owner WHERE id = 1").scalar()
    return None if value is None else str(value)


def own_index(engine: Engine, archive_id: str, data_dir: Path) -> None:
    """Record ``archive_id`` as the archive of this (migrated) index unless one is recorded
    already (the caller compared them before anything was changed), and this process as
    the server that opened it (named in a second server's refusal)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    holder = {
        "holder_host": socket.gethostname()[:255],
        "holder_pid": os.getpid(),
        "holder_data_dir": str(data_dir),
        "holder_since": now,
    }
    with engine.begin() as conn:
        exists = conn.execute(select(IndexOwner.id).where(IndexOwner.id == 1)).first()
        table = IndexOwner.__table__
        if exists is None:
            conn.execute(
                table.insert().values(id=1, archive_id=archive_id, created_at=now, **holder)
            )
        else:
            conn.execute(table.update().where(table.c.id == 1).values(**holder))
