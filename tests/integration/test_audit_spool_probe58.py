"""Received instances are audited also when the association never ended normally (probe 58).

The Store SCP wrote its "DICOM Instances Transferred" record (DCM 110104, PS3.15 A.5.3) only
when the association ended: after a kill -9 of the server mid-association, or with the index
database down at that moment, every instance answered 0000 was archived and indexed but no
record said who had sent it. The pending record is now spooled in the data folder
(server.dimse.audit_spool) and written after the restart, or when the database is back.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env
from tests.support.postgres import PG_BIN, TemporaryPostgres, postgres_available

CT = "1.2.840.10008.5.1.4.1.1.2"
SUCCESS = "Received Store Response (Success)"


def _files(tmp_path: Path, n: int) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "send"
    folder.mkdir()
    return [
        samples.write(
            samples.make_instance(
                CT, study_uid=study, series_uid=series, instance_number=i + 1, rows=16, cols=16
            ),
            folder / f"{i:05d}.dcm",
        )
        for i in range(n)
    ]


def _send(srv: LucentServer, caller: str, files: list[Path]) -> subprocess.Popen[str]:
    """One association for all files (storescu's default), in the background."""
    return subprocess.Popen(
        [dcmtk_tool("storescu"), "-v", "-aet", caller, "-aec", srv.ae_title, "-to", "30",
         "127.0.0.1", str(srv.port), *[str(f) for f in files]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dicom_env(True),
    )  # fmt: skip


def _wait(what: str, predicate: Callable[[], bool], timeout: float, srv: LucentServer) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}\n{srv.log_tail()}")


def _token(srv: LucentServer) -> dict[str, str]:
    client = srv.client()
    try:
        return {"Authorization": f"Bearer {client.token}"}
    finally:
        client.close()


def _received_records(srv: LucentServer, auth: dict[str, str], caller: str) -> list[Any]:
    r = httpx.get(
        f"{srv.api_url}/api/v1/audit",
        params={"event_id": "110104", "user": caller, "limit": 5000},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [rec for rec in r.json() if "refused" not in rec["detail"]]


def _audited(records: list[Any]) -> int:
    """Instances the records say were received (as the tester's auditgap.py reads them)."""
    return sum(int(re.match(r"(\d+)", rec["detail"]).group(1)) for rec in records)  # type: ignore[union-attr]


def _sqlite_count(srv: LucentServer, caller: str) -> int:
    try:
        conn = sqlite3.connect(f"{(srv.data_dir / 'index.sqlite3').as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM instances WHERE source_ae = ?", (caller,)
            ).fetchone()[0]
        )
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def test_kill_9_mid_association_is_audited_after_the_restart(tmp_path: Path) -> None:
    caller = "KILLSND"
    files = _files(tmp_path, 1500)
    srv = LucentServer(tmp_path / "srv", workers=2)
    srv.start()
    try:
        sender = _send(srv, caller, files)
        # well past the first spool write, and (probably) between two refreshes
        _wait("instances indexed", lambda: _sqlite_count(srv, caller) >= 60, 60, srv)
        time.sleep(0.3)
        assert sender.poll() is None, "storescu ended before the kill: send more files"
        srv.kill()
        out, _ = sender.communicate(timeout=60)
        answered = out.count(SUCCESS)
        assert 0 < answered < len(files), out[-2000:]
        indexed = _sqlite_count(srv, caller)
        assert indexed >= answered
        srv.start()
        auth = _token(srv)
        _wait(
            "the association's 110104 record",
            lambda: bool(_received_records(srv, auth, caller)),
            30,
            srv,
        )
        records = _received_records(srv, auth, caller)
        # every instance answered 0000 is in the record, and each one the index holds (the
        # start-up recovery may have indexed one more, archived but not answered yet),
        # with an outcome that says the association did not end normally
        indexed = _sqlite_count(srv, caller)
        assert answered <= indexed <= answered + 2
        assert _audited(records) == indexed, records
        assert all(rec["outcome"] == 4 for rec in records), records
        assert all("association cut off" in rec["detail"] for rec in records), records
        assert not list((srv.data_dir / "audit-spool").glob("*.json"))
        # written once: a later restart finds nothing left to write
        srv.stop()
        srv.start()
        auth = _token(srv)
        time.sleep(3)
        assert _audited(_received_records(srv, auth, caller)) == indexed
    finally:
        srv.stop()


def test_a_record_the_sqlite_index_refuses_at_release_is_written_later(tmp_path: Path) -> None:
    """The index takes the instances but not the record (here: a trigger that fails every
    audit insert, as a full or locked database would): the record is kept and written when
    the database takes it again, without a traceback per attempt."""
    caller = "DOWNSND"
    files = _files(tmp_path, 20)
    with LucentServer(tmp_path / "srv", workers=1) as srv:
        auth = _token(srv)
        db = sqlite3.connect(srv.data_dir / "index.sqlite3", timeout=30)
        db.execute(
            "CREATE TRIGGER probe58_down BEFORE INSERT ON audit_records "
            "BEGIN SELECT RAISE(ABORT, 'database unavailable (test)'); END"
        )
        db.commit()
        sender = _send(srv, caller, files)
        out, _ = sender.communicate(timeout=120)
        assert out.count(SUCCESS) == len(files), out[-2000:]
        _wait(
            "the failure to be logged",
            lambda: "could not write DICOM audit record(s)" in srv.log_tail(200),
            20,
            srv,
        )
        time.sleep(6)  # a retry or two while the database still refuses
        db.execute("DROP TRIGGER probe58_down")
        db.commit()
        db.close()
        _wait(
            "the spooled record",
            lambda: bool(_received_records(srv, auth, caller)),
            30,
            srv,
        )
        [record] = _received_records(srv, auth, caller)
        assert _audited([record]) == len(files) == _sqlite_count(srv, caller)
        assert record["outcome"] == 0 and "written late" in record["detail"], record
        log = srv.log_path.read_text()
        assert log.count("could not write DICOM audit record(s)") == 1, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert not list((srv.data_dir / "audit-spool").glob("*.json"))


@pytest.mark.postgres
def test_postgres_down_during_the_association_is_audited_when_it_is_back(
    tmp_path: Path,
) -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    caller = "PGDSND"
    files = _files(tmp_path, 1500)
    pg = TemporaryPostgres()
    with pg as pg_url:
        srv = LucentServer(
            tmp_path / "srv", workers=1, settings={"index": {"database_url": pg_url}}
        )
        engine = create_engine(pg_url, pool_pre_ping=True)

        def indexed() -> int:
            try:
                with engine.connect() as conn:
                    return int(
                        conn.execute(
                            text("SELECT count(*) FROM instances WHERE source_ae = :c"),
                            {"c": caller},
                        ).scalar_one()
                    )
            except Exception:  # noqa: BLE001 - not there yet
                return 0

        srv.start()
        try:
            auth = _token(srv)
            sender = _send(srv, caller, files)
            _wait("instances indexed", lambda: indexed() >= 60, 60, srv)
            engine.dispose()
            # fast, not immediate: the test cluster runs without fsync and synchronous
            # commit, so a crash stop could lose commits the server had answered 0000
            done = pg._run([str(PG_BIN / "pg_ctl"), "-D", str(pg.data_dir), "-m", "fast",
                            "-w", "stop"])  # fmt: skip
            assert done.returncode == 0, done.stderr
            try:
                out, _ = sender.communicate(timeout=300)
                answered = out.count(SUCCESS)
                assert 0 < answered < len(files), out[-2000:]
                _wait(
                    "the failure to be logged",
                    lambda: "could not write DICOM audit record(s)" in srv.log_tail(300),
                    60,
                    srv,
                )
            finally:
                assert pg._pg_ctl_start().returncode == 0
            stored = indexed()
            assert stored >= answered
            _wait("the spooled record", lambda: bool(_received_records(srv, auth, caller)), 60, srv)
            records = _received_records(srv, auth, caller)
            assert _audited(records) == stored, records
            assert all("written late" in rec["detail"] for rec in records), records
            log = srv.log_path.read_text()
            assert log.count("could not write DICOM audit record(s)") == 1, log[-3000:]
        finally:
            srv.stop()
            engine.dispose()
