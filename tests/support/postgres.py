"""A throwaway PostgreSQL 15 cluster for tests that need the real database (issue 2: "tested
against a real PostgreSQL server that the test set-up installs and starts").

Why a private cluster instead of the Debian service: every pytest-xdist worker gets its own
data folder, port and Unix socket folder, so workers never share state or lock files, and
nothing is left behind. PostgreSQL refuses to run as root, so when we are root the server
binaries run as the ``postgres`` system user (``runuser``) in a folder that user owns.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests.support.peers import LOOPBACK, PeerError, free_port

__all__ = ["PG_BIN", "TemporaryPostgres", "postgres_available", "running_cluster"]

#: Binaries of Debian's postgresql-15 (``LUCENT_PG_BIN`` overrides).
PG_BIN = Path(os.environ.get("LUCENT_PG_BIN", "/usr/lib/postgresql/15/bin"))
_OS_USER = "postgres"


def postgres_available() -> bool:
    """True when initdb/pg_ctl exist (so tests can skip with a reason instead of failing)."""
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


class TemporaryPostgres:
    """Start a private PostgreSQL cluster on a free loopback port; remove it on exit.

    ``with TemporaryPostgres() as url:`` yields a SQLAlchemy URL
    ``postgresql+psycopg://lucent:<password>@127.0.0.1:<port>/lucent``. The object also
    offers ``dsn`` (libpq form, for psycopg) and ``create_database()`` for a fresh database
    per test without a new cluster. Durability is switched off (fsync, full page writes):
    the cluster is thrown away, and tests should be fast.
    """

    def __init__(
        self,
        *,
        dbname: str = "lucent",
        user: str = "lucent",
        password: str | None = None,
        host: str = LOOPBACK,
        start_timeout: float = 60.0,
    ) -> None:
        self.dbname = dbname
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.host = host
        self.port = 0
        self.start_timeout = start_timeout
        self.root: Path | None = None

    # ---- paths and commands

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "postgres.log"

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database."""
        return self.url_for(self.dbname)

    @property
    def dsn(self) -> str:
        """libpq connection string of the default database (``psycopg.connect(dsn)``)."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname}"
        )

    @staticmethod
    def _as_owner(cmd: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", _OS_USER, "--", *cmd]
        return cmd

    def _run(self, cmd: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PGPASSWORD=self.password, LC_ALL="C")
        return subprocess.run(
            self._as_owner(cmd),
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ---- life cycle

    def _make_root(self) -> Path:
        # /tmp, not TMPDIR or pytest's tmp_path: those may sit in a root-only (0700) folder
        # that the postgres user cannot traverse.
        base = "/tmp" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="lucent-pg-", dir=base))
        (root / "sock").mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, _OS_USER, _OS_USER)
            shutil.chown(root / "sock", _OS_USER, _OS_USER)
        root.chmod(0o700)
        return root

    def _initdb(self) -> None:
        assert self.root is not None
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, _OS_USER, _OS_USER)
        pwfile.chmod(0o600)
        done = self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],  # fmt: skip
            timeout=120,
        )
        pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PeerError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = " ".join(
            [
                f"-c listen_addresses={self.host}",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
                "-c shared_buffers=32MB",
            ]
        )
        return self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "start",
            ],  # fmt: skip
            timeout=self.start_timeout + 10,
        )

    def start(self) -> str:
        """initdb, start on a free port (a new one if the port was taken), create the database."""
        if not postgres_available():
            raise PeerError(f"PostgreSQL binaries not found in {PG_BIN} (Debian 'postgresql')")
        self.root = self._make_root()
        try:
            self._initdb()
            last = ""
            for _ in range(3):
                self.port = free_port(self.host)
                done = self._pg_ctl_start()
                if done.returncode == 0:
                    break
                last = self._log_tail() or done.stderr
            else:
                raise PeerError(f"PostgreSQL did not start: {last}")
            self.create_database(self.dbname)
            atexit.register(self.stop)  # never leave a postmaster behind an interrupted run
        except BaseException:
            self.stop()
            raise
        return self.url

    def create_database(self, dbname: str, locale: str | None = None) -> str:
        """Create another database in this cluster (with ``locale`` as its collation and
        character classes, e.g. "en_US.utf8" as most installations have); returns its
        SQLAlchemy URL."""
        options = ["--locale", locale, "--template", "template0"] if locale else []
        done = self._run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                *options,
                dbname,
            ]  # fmt: skip
        )
        if done.returncode != 0:
            raise PeerError(f"createdb {dbname} failed: {done.stderr.strip()}")
        return self.url_for(dbname)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return ""

    def stop(self) -> None:
        """Stop the server at once (the data is thrown away) and delete its folder."""
        atexit.unregister(self.stop)
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            done = self._run(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                timeout=60,
            )
            if done.returncode != 0:
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl cannot stop it: SIGKILL the postmaster of *our* cluster."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 9)
            time.sleep(0.2)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def running_cluster() -> Iterator[TemporaryPostgres]:
    """A started cluster for a module-scoped fixture (``yield from running_cluster()``);
    fails the test, with the remedy, where PostgreSQL is not installed."""
    if not postgres_available():
        import pytest

        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    cluster = TemporaryPostgres()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
