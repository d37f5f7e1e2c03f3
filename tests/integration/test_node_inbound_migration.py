"""Migration 0012 splits a node's Q/R flag in two and keeps what every existing node did
(probe 37): ``query_retrieve`` stays our outbound role, ``inbound_query_retrieve`` (may it
query and retrieve from us) starts as the old flag was."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from server.index import db
from server.index.models import RemoteNode


def test_migration_0012_keeps_both_directions_as_they_were(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = db.make_engine(url)
    with engine.begin() as conn:
        cfg = db.alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
        for name, qr in (("open", True), ("closed", False)):
            conn.execute(
                text(
                    "INSERT INTO remote_nodes (name, name_key, ae_title, host, port, "
                    "query_retrieve, store_target, storage_commitment, tls, timeout) "
                    "VALUES (:n, :n, 'P37', '127.0.0.1', 104, :qr, true, false, false, 30)"
                ),
                {"n": name, "qr": qr},
            )
    db.migrate(engine)
    with Session(engine) as s:
        rows = [
            (n.name, n.query_retrieve, n.inbound_query_retrieve)
            for n in s.scalars(select(RemoteNode).order_by(RemoteNode.id))
        ]
    engine.dispose()
    assert rows == [("open", True, True), ("closed", False, False)]
