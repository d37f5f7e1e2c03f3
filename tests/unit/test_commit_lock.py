"""The ingest commit lock: one writer at a time across threads and processes on a SQLite
index (each process opens its own descriptor, as two instances here do), none on
PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from server.index import db


def test_a_second_holder_waits_until_the_first_releases(tmp_path: Path) -> None:
    path = tmp_path / "index.db.ingest-lock"
    first, second = db.CommitLock(path), db.CommitLock(path)  # two "processes"
    order: list[str] = []
    entered = threading.Event()

    def other() -> None:
        with second:
            order.append("second in")
            entered.set()

    with first:
        order.append("first in")
        worker = threading.Thread(target=other)
        worker.start()
        assert not entered.wait(0.3)  # blocked while the first holds the lock
        order.append("first out")
    assert entered.wait(10)
    worker.join(10)
    assert order == ["first in", "first out", "second in"]
    first.close()
    second.close()


def test_threads_of_one_process_are_serialised_too(tmp_path: Path) -> None:
    lock = db.CommitLock(tmp_path / "x.ingest-lock")
    inside, most = [0], [0]
    guard = threading.Lock()

    def work() -> None:
        for _ in range(50):
            with lock:
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.0002)  # a commit's worth: others must wait, not overlap
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1
    lock.close()


def test_lock_file_sits_beside_a_sqlite_index_and_postgresql_needs_none(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'index.db'}")
    lock = db.commit_lock(engine)
    with lock:
        pass
    assert (tmp_path / "index.db.ingest-lock").exists()
    lock.close()
    pg = create_engine("postgresql+psycopg://u:p@127.0.0.1:1/x")
    assert db.commit_lock(pg)._fd is None
