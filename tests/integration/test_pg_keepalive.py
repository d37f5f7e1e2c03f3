"""PostgreSQL connections of the index carry TCP keepalives (``server.index.db``): a
database host that went away after acknowledging a query (power off, cut cable) left the
waiting request hanging for the system's ~2 h keepalive default, since nothing was left
unacknowledged for ``tcp_user_timeout`` to end. Read from the real socket of a real
connection; a URL's own values still win."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from server.index import db
from tests.support.postgres import TemporaryPostgres, running_cluster

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[TemporaryPostgres]:
    yield from running_cluster()


def _socket_options(url: str) -> tuple[int, int, int, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            fd = conn.connection.driver_connection.pgconn.socket  # type: ignore[union-attr]
            sock = socket.socket(fileno=socket.dup(fd))
            try:
                return (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                )
            finally:
                sock.close()
    finally:
        engine.dispose()


def test_index_connections_probe_a_silent_database_host(pg: TemporaryPostgres) -> None:
    url = pg.create_database("keepalive")
    on, idle, interval, count = _socket_options(url)
    assert on and (idle, interval, count) == (30, 10, 3)


def test_the_database_url_keeps_its_own_keepalive_values(pg: TemporaryPostgres) -> None:
    url = pg.create_database("keepalive_own") + "?keepalives_idle=120"
    _, idle, interval, _ = _socket_options(url)
    assert (idle, interval) == (120, 10)
