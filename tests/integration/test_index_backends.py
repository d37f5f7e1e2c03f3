"""The index on SQLite and on a real PostgreSQL server; migrations match the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydicom.uid import generate_uid
from sqlalchemy import create_engine

from server.index import db
from server.index.models import Base
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
