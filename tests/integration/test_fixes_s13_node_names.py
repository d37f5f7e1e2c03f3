"""Remote node names are unique regardless of case in the index itself (migration 0010), so
two concurrent creates of "Main PACS" and "main pacs" on PostgreSQL give one 201 and one
409 (outside probe 31: both were created), on SQLite as on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.index import db
from server.index.models import RemoteNode
from tests.support.lucent import LucentServer
from tests.support.postgres_races import admin_session, pair, postgres_server

ROUNDS = 12


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LucentServer]]:
    with postgres_server(tmp_path_factory.mktemp("s13-names")) as both:
        yield both


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'i.sqlite3'}"
    else:
        url = request.getfixturevalue("pg")[0]
    eng = db.make_engine(url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def _node(name: str) -> RemoteNode:
    return RemoteNode(name=name, ae_title="S13", host="127.0.0.1", port=104)


def test_node_names_differing_only_by_case_are_refused_by_the_index(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        s.add(_node("S13 Main PACS"))
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(_node("s13 main pacs"))
    with Session(engine) as s, s.begin():
        s.add(_node("S13 Main PACS 2"))  # another name is fine


def test_migration_0010_tells_apart_names_an_older_index_holds_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    eng = db.make_engine(url)
    with eng.begin() as conn:
        cfg = db.alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        for name in ("Main PACS", "main pacs", "MAIN PACS", "Other"):
            conn.execute(
                text(
                    "INSERT INTO remote_nodes (name, ae_title, host, port, query_retrieve, "
                    "store_target, storage_commitment, tls, timeout) "
                    "VALUES (:n, 'S13', '127.0.0.1', 104, 1, 1, 0, 0, 30)"
                ),
                {"n": name},
            )
    db.migrate(eng)
    with Session(eng) as s:
        names = [n.name for n in s.scalars(select(RemoteNode).order_by(RemoteNode.id))]
    eng.dispose()
    assert names == ["Main PACS", "main pacs (2)", "MAIN PACS (3)", "Other"]


@pytest.mark.postgres
def test_concurrent_creates_of_names_differing_by_case_answer_201_and_409(
    pg: tuple[str, LucentServer],
) -> None:
    wrong = []
    with admin_session(pg[1]) as c1, admin_session(pg[1]) as c2:
        for rnd in range(ROUNDS):
            body = {"ae_title": "S13C", "host": "127.0.0.1", "port": 104}
            a, b = pair(
                lambda r=rnd, x=body: c1.post("/api/v1/nodes", json=dict(x, name=f"Main PACS {r}")),
                lambda r=rnd, x=body: c2.post("/api/v1/nodes", json=dict(x, name=f"main pacs {r}")),
            )
            codes = sorted((a.status_code, b.status_code))
            if codes != [201, 409]:
                wrong.append((rnd, codes))
            else:
                lost = a if a.status_code == 409 else b
                assert "exists" in lost.json()["detail"], lost.text
        names = [n["name"].lower() for n in c1.get("/api/v1/nodes").json()]
    assert wrong == [], f"concurrent creates differing by case (expected 201 + 409): {wrong}"
    for rnd in range(ROUNDS):
        assert names.count(f"main pacs {rnd}") == 1


def test_sqlite_clash_on_the_folded_name_is_told_as_a_node_clash(tmp_path: Path) -> None:
    """SQLite names the index, not a column, in its refusal: the 409 says which clash."""
    from server.api.app import conflict

    eng = db.make_engine(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    db.migrate(eng)
    with Session(eng) as s, s.begin():
        s.add(_node("Main PACS"))
    with pytest.raises(IntegrityError) as caught, Session(eng) as s, s.begin():
        s.add(_node("MAIN PACS"))
    eng.dispose()
    assert conflict(caught.value) == (
        "a node with this name exists (created or changed by another request at the same time)"
    )
