"""A transaction PostgreSQL rolls back to resolve a conflict with a concurrent one answers
503 with Retry-After and a message, never 500 (outside probe 31: a study delete that still
deadlocked with arriving instances after its retries answered 500 with DeadlockDetected).

The rollbacks are made by a trigger raising the SQLSTATE PostgreSQL raises for a real
deadlock (40P01) or serialization failure (40001): a true deadlock between the API and a
store depends on timing; the error the API has to answer is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydicom.uid import generate_uid

from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.postgres_races import admin_session, connect, postgres_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LucentServer]]:
    with postgres_server(tmp_path_factory.mktemp("s13-rollback")) as both:
        yield both


@pytest.fixture(scope="module")
def admin(pg: tuple[str, LucentServer]) -> Iterator[httpx.Client]:
    with admin_session(pg[1]) as client:
        yield client


def _raising_trigger(conn: psycopg.Connection[Any], table: str, when: str, state: str) -> None:
    """``when`` (e.g. "BEFORE DELETE") on ``table`` fails with SQLSTATE ``state``."""
    conn.execute(
        f"""
        CREATE OR REPLACE FUNCTION s13_fail() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION 's13 probe conflict' USING ERRCODE = '{state}';
        END $$ LANGUAGE plpgsql;
        DROP TRIGGER IF EXISTS s13_fail ON {table};
        CREATE TRIGGER s13_fail {when} ON {table} FOR EACH ROW EXECUTE FUNCTION s13_fail();
        """
    )


def _drop_trigger(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute(f"DROP TRIGGER IF EXISTS s13_fail ON {table}")


def test_study_delete_that_still_deadlocks_answers_503_with_retry_after(
    pg: tuple[str, LucentServer], admin: httpx.Client, tmp_path: Path
) -> None:
    url, server = pg
    study = generate_uid()
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", patient_id="S13-DL", study_uid=study)
    path = samples.write(ds, tmp_path / "ct.dcm")
    assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
    with connect(url) as conn:
        _raising_trigger(conn, "studies", "BEFORE DELETE", "40P01")
        try:
            r = admin.delete(f"/api/v1/studies/{study}")
        finally:
            _drop_trigger(conn, "studies")
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    detail = r.json()["detail"]
    assert "deadlock" in detail and "try it again" in detail, detail
    # nothing was removed, and the same request, repeated, goes through
    assert admin.get("/api/v1/studies", params={"patient_id": "S13-DL"}).json()["items"]
    assert admin.delete(f"/api/v1/studies/{study}").status_code == 204


def test_serialization_failure_answers_503_with_retry_after(
    pg: tuple[str, LucentServer], admin: httpx.Client
) -> None:
    base = {"name": "s13-serial", "ae_title": "S13S", "host": "127.0.0.1", "port": 104}
    node = admin.post("/api/v1/nodes", json=base)
    assert node.status_code == 201, node.text
    node_url = f"/api/v1/nodes/{node.json()['id']}"
    with connect(pg[0]) as conn:
        _raising_trigger(conn, "remote_nodes", "BEFORE UPDATE", "40001")
        try:
            r = admin.put(node_url, json=dict(base, port=105))
        finally:
            _drop_trigger(conn, "remote_nodes")
    assert r.status_code == 503, r.text
    assert r.headers.get("Retry-After", "").isdigit(), r.headers
    assert "serialization failure" in r.json()["detail"], r.text
    assert admin.put(node_url, json=dict(base, port=105)).json()["port"] == 105
