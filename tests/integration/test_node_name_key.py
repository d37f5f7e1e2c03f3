"""Remote node names are unique regardless of case by one fold on every database
(migration 0011): SQLite's lower() folds ASCII only, so "MÜNCHEN" and "münchen" were two
nodes on SQLite and one on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lucent.api import schemas
from lucent.api.client import ApiError, LucentClient
from server.index import db
from server.index.models import RemoteNode
from tests.support.postgres import TemporaryPostgres, postgres_available


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'i.sqlite3'}"
    value: str = request.getfixturevalue("pg_url")
    return value


def _node(name: str) -> RemoteNode:
    return RemoteNode(name=name, ae_title="S14", host="127.0.0.1", port=104)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("MÜNCHEN", "münchen"),
        ("Straße Klinik", "STRASSE KLINIK"),
        ("Zu\u0308rich", "Z\u00fcrich"),  # decomposed and composed ü
        ("İZMİR", "izmir"),
    ],
)
def test_names_differing_only_by_case_beyond_ascii_are_one_node(
    url: str, first: str, second: str
) -> None:
    engine = db.make_engine(url)
    db.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            s.execute(text("DELETE FROM remote_nodes WHERE ae_title = 'S14'"))
            s.add(_node(first))
        with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
            s.add(_node(second))
        with Session(engine) as s, s.begin():  # a rename into the clash is refused as well
            s.add(_node("S14 other"))
        with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
            other = s.scalars(select(RemoteNode).where(RemoteNode.name == "S14 other")).one()
            other.name = second
    finally:
        with Session(engine) as s, s.begin():
            s.execute(text("DELETE FROM remote_nodes WHERE ae_title = 'S14'"))
        engine.dispose()


def _insert_at_0010(url: str, names: list[str]) -> Engine:
    engine = db.make_engine(url)
    with engine.begin() as conn:
        cfg = db.alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
        for name in names:
            conn.execute(
                text(
                    "INSERT INTO remote_nodes (name, ae_title, host, port, query_retrieve, "
                    "store_target, storage_commitment, tls, timeout) "
                    "VALUES (:n, 'S14M', '127.0.0.1', 104, true, true, false, false, 30)"
                ),
                {"n": name},
            )
    return engine


def test_migration_0011_tells_apart_names_sqlite_held_twice(tmp_path: Path) -> None:
    engine = _insert_at_0010(
        f"sqlite:///{tmp_path / 'old.sqlite3'}",
        ["MÜNCHEN", "münchen", "Other", "Straße", "STRASSE"],
    )
    db.migrate(engine)
    with Session(engine) as s:
        rows = [(n.name, n.name_key) for n in s.scalars(select(RemoteNode).order_by(RemoteNode.id))]
    engine.dispose()
    assert rows == [
        ("MÜNCHEN", "münchen"),
        ("münchen (2)", "münchen (2)"),
        ("Other", "other"),
        ("Straße", "strasse"),
        ("STRASSE (5)", "strasse (5)"),
    ]


@pytest.mark.postgres
def test_migration_0011_fills_the_key_on_postgresql(pg_url: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a database of its own, migrated only to 0010
        conn.exec_driver_sql("CREATE DATABASE s14_at_0010")
    admin.dispose()
    url = make_url(pg_url).set(database="s14_at_0010").render_as_string(hide_password=False)
    engine = _insert_at_0010(url, ["Zürich Süd", "Other"])
    db.migrate(engine)
    with Session(engine) as s:
        rows = [(n.name, n.name_key) for n in s.scalars(select(RemoteNode).order_by(RemoteNode.id))]
    engine.dispose()
    assert rows == [("Zürich Süd", "zürich süd"), ("Other", "other")]


def test_api_refuses_a_second_node_differing_by_non_ascii_case(api: LucentClient) -> None:
    """The shared server (SQLite): the second create answers 409, not 201, and says the
    name exists (the route's own check folds as the index does; SQL lower() let it past
    to the index, whose 409 spoke of a request "at the same time")."""
    body = {"ae_title": "S14API", "host": "127.0.0.1", "port": 104}
    first = api.add_node(schemas.RemoteNodeIn(name="ÅLESUND S14", **body))
    try:
        with pytest.raises(ApiError) as caught:
            second = api.add_node(schemas.RemoteNodeIn(name="ålesund s14", **body))
            api.delete_node(second.id)
        assert caught.value.status == 409, caught.value
        assert "a node named 'ålesund s14' exists" in str(caught.value), caught.value
        assert "same time" not in str(caught.value)
    finally:
        api.delete_node(first.id)
