"""Deletions are audited in the transaction that deletes (a kill -9 between the row delete
and the audit record left a deleted study without a trace), and the audit chain is anchored
outside the database: removing the newest records or recomputing the chain is reported
(probe 34)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from server.accounts import audit, retention
from server.index.account_models import AuditRecord
from tests.integration.test_accounts_support import ct_bytes, make_app


class Killed(BaseException):
    """Stands in for kill -9 right after the rows were committed."""


def test_a_deletion_killed_before_its_objects_are_removed_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_app(tmp_path) as app:
        assert app.store(ct_bytes(tmp_path, study_uid="1.2.826.34.1", patient_id="PAT34")) == 0

        def killed(*_args: object) -> None:
            raise Killed

        monkeypatch.setattr(retention, "remove_objects", killed)
        with pytest.raises(Killed):
            retention.delete_study(
                app.ctx, "1.2.826.34.1", user="admin", address="127.0.0.1", event="delete"
            )
        with app.ctx.Session() as db:
            rows = list(db.scalars(select(AuditRecord).where(AuditRecord.event_id == "110105")))
        assert len(rows) == 1, "the deletion committed without its audit record"
        [rec] = rows
        assert rec.user == "admin" and rec.action == "D"
        assert {"type": "study", "id": "1.2.826.34.1"} in rec.objects
        assert {"type": "patient", "id": "PAT34"} in rec.objects  # PS3.15 A.5.3.5


def _tamper(path: Path, *sql: tuple[str, tuple[object, ...]]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement, args in sql:
            con.execute(statement, args)
    finally:
        con.close()


def _records(path: Path) -> list[tuple[int, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT id, hash FROM audit_records ORDER BY id").fetchall()
    finally:
        con.close()


def test_removing_the_newest_audit_records_is_reported(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        for name in ("a", "b", "c", "d"):
            app.login(name, "wrong-password")
        admin = app.admin_client()
        assert admin.audit_verify().intact is True
        db_path = tmp_path / "data" / "index.sqlite3"
        top = _records(db_path)[-1][0]
        _tamper(db_path, ("DELETE FROM audit_records WHERE id > ?", (top - 3,)))
        result = admin.audit_verify()
        assert result.intact is False
        assert result.broken_at == top - 2 and "removed" in result.reason
        # later appends (the verify itself is audited) do not hide the removal
        admin.audit_verify()
        assert admin.audit_verify().intact is False


def test_a_chain_recomputed_with_the_published_algorithm_is_reported(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        for name in ("a", "b", "c"):
            app.login(name, "wrong-password")
        admin = app.admin_client()
        assert admin.audit_verify().intact is True
        db_path = tmp_path / "data" / "index.sqlite3"
        engine_rows: list[AuditRecord]
        with app.ctx.Session() as db:
            engine_rows = list(db.scalars(select(AuditRecord).order_by(AuditRecord.id)))
            for r in engine_rows:
                db.expunge(r)
        assert all(r.hash.startswith(audit.KEYED) for r in engine_rows)  # keyed from the start
        target = engine_rows[1]
        prev = engine_rows[0].hash
        updates = []
        for i, r in enumerate(engine_rows[1:]):
            content = dict(audit._content(r))
            if i == 0:
                content["user"] = "someone-else"
            link = audit._digest(prev, r.at, content)
            updates.append(
                ("UPDATE audit_records SET user=?, prev_hash=?, hash=? WHERE id=?",
                 (content["user"], prev, link, r.id))
            )  # fmt: skip
            prev = link
        _tamper(db_path, *updates)
        result = admin.audit_verify()
        assert result.intact is False and result.broken_at == target.id
        # the same rewrite with a guessed key ("k1" + HMAC) fails on the MAC as well
        assert audit.anchor_for(app.ctx.WriteSession) is not None


def test_plain_records_of_an_older_trail_still_verify_and_the_keyed_chain_links_to_them(
    tmp_path: Path,
) -> None:
    """Migration: a trail written before the key keeps its plain digests."""
    with make_app(tmp_path) as app:
        anchor = audit.anchor_for(app.ctx.WriteSession)
        assert anchor is not None
        url = next(k for k, v in audit._anchors.items() if v is anchor)

        def unkeyed(detail: str) -> None:  # as the version before the key wrote records
            del audit._anchors[url]
            try:
                audit.record(app.ctx.WriteSession, audit.Entry("config-change", detail=detail))
            finally:
                audit._anchors[url] = anchor

        unkeyed("old 1")
        unkeyed("old 2")
        audit.record(app.ctx.WriteSession, audit.Entry("config-change", detail="new"))
        links = [h for _, h in _records(tmp_path / "data" / "index.sqlite3")]
        assert [h.startswith(audit.KEYED) for h in links[:3]] == [False, False, True]
        admin = app.admin_client()
        assert admin.audit_verify().intact is True
        # a plain record after keyed ones: that is a recomputed chain, not a migration
        unkeyed("forged")
        with app.ctx.Session() as db:
            plain = db.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()
        assert plain is not None and not plain.hash.startswith(audit.KEYED)
        result = admin.audit_verify()
        assert result.intact is False and result.broken_at == plain.id
