"""Race tests on a real PostgreSQL index: a server on its own cluster, admin sessions, two
requests released together, a raw connection beside the server's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import make_url

from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer
from tests.support.postgres import TemporaryPostgres, postgres_available


@contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, LucentServer]]:
    """(database URL, running server on it)."""
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        srv = LucentServer(workdir, settings={"index": {"database_url": url}})
        srv.start()
        try:
            yield url, srv
        finally:
            srv.stop()


def connect(url: str) -> psycopg.Connection[Any]:
    """A psycopg connection (autocommit) to the database of a SQLAlchemy URL."""
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
        autocommit=True,
    )  # fmt: skip


def admin_session(srv: LucentServer) -> httpx.Client:
    r = httpx.post(
        f"{srv.api_url}/api/v1/auth/login",
        json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return httpx.Client(
        base_url=srv.api_url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=60
    )


def pair(
    fa: Callable[[], httpx.Response], fb: Callable[[], httpx.Response]
) -> tuple[httpx.Response, httpx.Response]:
    """Both requests at once (released together by a barrier)."""
    barrier = threading.Barrier(2)
    out: list[Any] = [None, None]

    def run(i: int, f: Callable[[], httpx.Response]) -> None:
        barrier.wait()
        try:
            out[i] = f()
        except Exception as exc:  # reported by the assertion below
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate((fa, fb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        assert isinstance(r, httpx.Response), repr(r)
    return out[0], out[1]
