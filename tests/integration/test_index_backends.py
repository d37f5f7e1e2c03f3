"""The index on SQLite and on a real PostgreSQL server; migrations match the models."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from server.index import db, queries
from server.index.models import Base, Patient, Study
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.postgres import TemporaryPostgres, postgres_available


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        yield url


def _assert_migrations_match_models(url: str) -> None:
    engine = db.make_engine(url)
    db.migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    _assert_migrations_match_models(f"sqlite:///{tmp_path / 'i.sqlite3'}")


@pytest.mark.postgres
def test_postgres_migrations_match_models(pg_url: str) -> None:
    _assert_migrations_match_models(pg_url)


def _insert_row(conn: Any, table: str, fixed: dict[str, Any]) -> int:
    """A row with ``fixed`` values and a plain value in every other NOT NULL column, as the
    schema stood at an old revision."""
    values: dict[str, Any] = {}
    for _, name, kind, not_null, _, _ in conn.exec_driver_sql(f"PRAGMA table_info({table})"):
        if name == "id":
            continue
        if name in fixed:
            values[name] = fixed[name]
        elif not_null:
            kind = (kind or "").upper()
            values[name] = (
                0
                if "INT" in kind or "BOOL" in kind
                else datetime(2024, 1, 1)
                if "DATE" in kind or "TIME" in kind
                else "x"
            )
    columns = ", ".join(values)
    marks = ", ".join(f":{k}" for k in values)
    return conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values).lastrowid


@pytest.mark.parametrize("revision", ["0003", "0006"])
def test_sqlite_index_with_studies_upgrades(tmp_path: Path, revision: str) -> None:
    """An index of an older release that holds studies migrates to head with its rows: the
    table rebuilds of alembic's batch mode failed on ``foreign_keys=ON`` (outside probe 29)
    and the server then refused to start."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = db.make_engine(url)
    cfg = db.alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    with engine.begin() as conn:
        patient = _insert_row(
            conn, "patients", {"patient_id": "OLD-1", "issuer": "", "name": "Old^One"}
        )
        _insert_row(
            conn, "studies", {"patient_pk": patient, "study_uid": "1.2.3.4", "pool": "DEFAULT"}
        )
    db.migrate(engine)
    with Session(engine) as session:
        assert list(session.scalars(select(Study.study_uid))) == ["1.2.3.4"]
        assert list(session.scalars(select(Patient.patient_id))) == ["OLD-1"]
    with engine.connect() as conn:  # foreign keys are on again for the server
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def _assert_dotted_i_refolded(url: str) -> None:
    """Migration 0009 re-folds names indexed with the old fold (İ kept, ı upper-cased to I),
    and a folded search then finds them from lower-case Turkish input."""
    engine = db.make_engine(url)
    cfg = db.alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0008")
        conn.execute(
            text(
                "INSERT INTO patients (patient_id, issuer, name, name_folded, birth_date, sex,"
                " created_at) VALUES ('TR1', '', :name, :old, '', '', CURRENT_TIMESTAMP)"
            ),
            {"name": "ÇİÇEK^Alı", "old": "ÇİÇEK^ALI"},
        )
    db.migrate(engine)
    with Session(engine) as session:
        [folded] = session.execute(select(Patient.name_folded)).scalars()
        assert folded == "ÇIÇEK^ALI"
        found = session.execute(
            select(Patient.patient_id).where(
                queries._name_clause(queries.Filter(patient_name="çiçek*"))  # type: ignore[arg-type]
            )
        ).scalars()
        assert list(found) == ["TR1"]
        # descriptions fold in SQL (folding.folded): the same on both back-ends
        in_sql = session.execute(
            select(Patient.patient_id).where(
                queries.match_text(Patient.name, "çiçek^ALI", fold=True)  # type: ignore[arg-type]
            )
        ).scalars()
        assert list(in_sql) == ["TR1"]
    engine.dispose()


def test_sqlite_migration_refolds_dotted_i(tmp_path: Path) -> None:
    _assert_dotted_i_refolded(f"sqlite:///{tmp_path / 'i.sqlite3'}")


@pytest.mark.postgres
def test_postgres_migration_refolds_dotted_i(tmp_path: Path) -> None:
    with TemporaryPostgres() as url:
        _assert_dotted_i_refolded(url)


@pytest.mark.postgres
def test_server_on_postgres_stores_and_queries(pg_url: str, tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv", settings={"index": {"database_url": pg_url}})
    srv.start()
    try:
        study = generate_uid()
        files = [
            samples.write(
                samples.make_instance(
                    "1.2.840.10008.5.1.4.1.1.2",
                    patient_id="PG-1",
                    patient_name="Łukasz^Żółć",
                    study_uid=study,
                    instance_number=i + 1,
                ),
                tmp_path / f"{i}.dcm",
            )
            for i in range(5)
        ]
        assert storescu("127.0.0.1", srv.port, srv.ae_title, files).returncode == 0
        api = srv.client()
        found = api.studies(patient_name="łukasz")
        assert [s.study_uid for s in found] == [study]
        assert found[0].instance_count == 5 and found[0].patient_name == "Łukasz^Żółć"
        assert api.studies(patient_name="łukasz*", case_insensitive=False) == []
    finally:
        srv.stop()
    engine = create_engine(pg_url)
    engine.dispose()
