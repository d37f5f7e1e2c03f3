"""A full disk under the index answers 507 Insufficient Storage, as the README promises,
wherever the API writes (outside probe 29: POST /auth/login answered a bare 500 with
SQLite's "database or disk is full")."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from server.accounts import audit
from server.api import app as app_mod
from tests.integration.test_accounts_support import ADMIN, make_app


def _fill_the_index(ctx: Any) -> None:
    """Real SQLite, really full: no page beyond the current size (max_page_count gives
    the same SQLITE_FULL a full disk does), and the audit table's last page filled up."""

    @event.listens_for(ctx.engine, "connect")
    def _cap(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages}")
        cur.close()

    ctx.engine.dispose()
    # ever smaller records once a large one no longer fits: the last page's leftover took
    # a login's short audit record after the schema grew (migrations 0011, 0012)
    words = 40
    for i in range(20_000):
        try:
            audit.record(ctx.WriteSession, audit.Entry("query", detail="filler " * words + str(i)))
        except DBAPIError as exc:
            assert "database or disk is full" in str(exc.orig)
            if words == 0:
                return
            words //= 2
    raise AssertionError("the index never filled up")


def test_login_on_a_full_disk_answers_507(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        assert app.login(*ADMIN).status_code == 200
        _fill_the_index(app.ctx)
        answer = app.login(*ADMIN)
        assert answer.status_code == 507, answer.text
        assert "insufficient storage" in answer.json()["detail"]
        assert "disk" in answer.json()["detail"]


def test_a_full_disk_while_writing_a_file_is_507_too() -> None:
    exc = OSError(errno.ENOSPC, "No space left on device", "/var/lib/lucent/x")
    assert app_mod.disk_full(exc) == "the disk is full (/var/lib/lucent/x)"
    assert app_mod.disk_full(OSError(errno.EACCES, "Permission denied")) is None
