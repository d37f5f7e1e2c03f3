"""Command-line admin actions and server start/stop are in the audit trail (outside probe
29: create-admin, --first-run-admin, rotate-key, rebuild-index and the server's start and
stop left no record; an API user creation was audited as 110113/110136)."""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from server.accounts import audit
from server.index.account_models import AuditRecord
from tests.support.lucent import REPO, LucentServer


def _records(srv: LucentServer) -> list[AuditRecord]:
    engine = create_engine(f"sqlite:///{srv.data_dir / 'index.sqlite3'}")
    try:
        with Session(engine) as db:
            rows = list(db.scalars(select(AuditRecord).order_by(AuditRecord.id)))
            assert audit.verify(rows) is None  # the CLI's records are chained like the API's
            return rows
    finally:
        engine.dispose()


def _codes(rows: list[AuditRecord]) -> list[tuple[str, str]]:
    return [(r.event_id, r.event_type) for r in rows]


OPERATOR = f"os:{getpass.getuser()}"


def test_cli_actions_and_server_start_stop_are_audited(tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv", workers=1)
    with srv:  # create-admin, then run; leaving sends SIGTERM
        pass
    assert srv.proc is not None and srv.proc.returncode == 0
    rows = _records(srv)
    created, start, stop = rows[0], rows[-2], rows[-1]
    assert (created.event_id, created.event_type) == ("110113", "110136")  # as POST /users
    assert created.user == OPERATOR and created.objects == [{"type": "user", "id": "admin"}]
    assert "user created, role administrator" in created.detail and "create-admin" in created.detail
    assert _codes([start, stop]) == [("110100", "110120"), ("110100", "110121")]
    assert start.objects == [{"type": "pool", "id": "LUCENT"}] and start.user == OPERATOR
    assert "started" in start.detail and "stopped" in stop.detail

    again = srv.cli("create-admin", "--username", "admin", "--password-stdin", stdin="pw-1234\n")
    assert again.returncode == 1
    assert srv.cli("rotate-key").returncode == 0
    assert srv.cli("rebuild-index").returncode == 0
    refused, rotated, began, ended = _records(srv)[-4:]
    assert (refused.event_type, refused.outcome) == ("110136", audit.MINOR_FAILURE)
    assert _codes([rotated]) == [("110113", "110129")] and "rotated" in rotated.detail
    assert _codes([began, ended]) == [("110113", "110141"), ("110113", "110142")]
    assert "rebuild-index" in ended.detail and ended.outcome == audit.SUCCESS
    assert {r.user for r in (refused, rotated, began, ended)} == {OPERATOR}
    xml = audit.export_xml([start, rotated], "LUCENT").decode()
    assert 'csd-code="110120"' in xml and 'originalText="Application Start"' in xml


def test_first_run_admin_is_audited(tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv", workers=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "run", "--config", str(srv.config_path)]
        + ["--first-run-admin"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        out = b""
        assert proc.stdout is not None
        while b"Data:" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert b"password:" in out and b"Data:" in out, out.decode(errors="replace")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    rows = _records(srv)
    assert _codes(rows) == [("110113", "110136"), ("110100", "110120"), ("110100", "110121")]
    assert "--first-run-admin" in rows[0].detail and rows[0].user == OPERATOR
