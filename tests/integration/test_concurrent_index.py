"""Races between index writers on a real PostgreSQL server (READ COMMITTED), made
deterministic: two real sessions, the second started in a thread and let run only once
PostgreSQL shows it waiting for a lock the first one holds (outside probe 31)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from server import config
from server.accounts import retention
from server.context import ServerContext
from server.index import db, records
from server.index.known_series import KnownSeriesWriter
from server.index.models import Instance, Series
from server.index.records import InstanceRecord, Outcome, record_instance
from tests.data import bad_inputs, samples
from tests.support.postgres import TemporaryPostgres, running_cluster

pytestmark = pytest.mark.postgres

SOP = "2.25.31000001"


@pytest.fixture(scope="module")
def pg() -> Iterator[TemporaryPostgres]:
    yield from running_cluster()


@pytest.fixture()
def engine(pg: TemporaryPostgres, request: pytest.FixtureRequest) -> Iterator[Engine]:
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    pg.create_database(name)
    eng = db.make_engine(pg.url_for(name))
    db.migrate(eng)
    yield eng
    eng.dispose()


def _record(
    patient: str, series: str, keys: str, sha: str, sop: str = SOP, number: int = 1
) -> InstanceRecord:
    ds = Dataset()
    ds.PatientID, ds.PatientName = patient, f"{patient}^Test"
    ds.StudyInstanceUID = "2.25.3100" + str(sum(map(ord, patient)))
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.SOPClassUID, ds.Modality, ds.InstanceNumber = "1.2.840.10008.5.1.4.1.1.7", "OT", number
    return InstanceRecord(
        dataset=ds,
        transfer_syntax="1.2.840.10008.1.2.1",
        lossy=False,
        meta_key=f"{keys}.m",
        pixel_key=f"{keys}.p",
        pixel_offset=0,
        size=10,
        sha256=sha * 64,
        pool="DEFAULT",
        source_ae="TEST",
        attrs={},
    )


def _commit(engine: Engine, rec: InstanceRecord) -> Outcome:
    with Session(engine) as session, session.begin():
        return record_instance(session, rec, "replace")


def _waiting(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        )


def run_blocked(engine: Engine, work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``work`` in a thread and return once it waits for a row lock (or has ended)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # reported by the test
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while _waiting(engine) == 0 and thread.is_alive():
        assert time.monotonic() < deadline, "the second writer never waited for the first"
        time.sleep(0.01)
    return thread, result


def test_resend_racing_another_patients_copy_is_replaced_entirely(engine: Engine) -> None:
    """Copy A (patient A) is archived; A is re-sent (same content, new keys) while a copy of
    the same SOP Instance naming patient B commits first. The row must be A's re-send
    entirely; it was filed under B's series with A's keys and B's sha256."""
    series_a, series_b = "2.25.311", "2.25.312"
    _commit(engine, _record("PA", series_a, "k0", "a"))
    _commit(engine, _record("PA", series_a, "kx", "x", sop="2.25.31000002", number=2))
    with Session(engine) as b_session:
        b_session.begin()
        b_outcome = record_instance(b_session, _record("PB", series_b, "kb", "b"), "replace")
        b_session.flush()
        thread, result = run_blocked(
            engine, lambda: _commit(engine, _record("PA", series_a, "k1", "a"))
        )
        b_session.commit()
    thread.join(30)
    assert not thread.is_alive()
    [a_outcome] = result
    assert isinstance(a_outcome, Outcome), a_outcome
    assert b_outcome.obsolete_keys == ["k0.m", "k0.p"]
    # the re-send replaced B's copy: B's objects are the ones to delete, not k0 again
    assert a_outcome.obsolete_keys == ["kb.m", "kb.p"]
    with Session(engine) as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == SOP)).one()
        series_uid = session.get(Series, row.series_pk).series_uid  # type: ignore[union-attr]
    assert (series_uid, row.meta_key, row.pixel_key, row.sha256) == (
        series_a,
        "k1.m",
        "k1.p",
        "a" * 64,
    )


def test_known_series_replaces_race_for_the_obsolete_keys(engine: Engine) -> None:
    """Two re-sends of one instance through the known-series shortcut at once: the second
    one must name the first one's objects obsolete (they were orphaned, and the original
    objects deleted twice)."""
    series = "2.25.321"
    outcome = _commit(engine, _record("PK", series, "k0", "a"))
    assert outcome.series_pk is not None
    writer = KnownSeriesWriter(db.ingest_engine(engine))
    with engine.connect() as first:
        first.begin()
        first.execute(
            text("SELECT id FROM instances WHERE sop_instance_uid = :s FOR UPDATE"), {"s": SOP}
        )
        # the row as the first re-send leaves it, not yet committed
        first.execute(
            text(
                "UPDATE instances SET meta_key = 'k1.m', pixel_key = 'k1.p'"
                " WHERE sop_instance_uid = :s"
            ),
            {"s": SOP},
        )
        thread, result = run_blocked(
            engine, lambda: writer.replace(_record("PK", series, "k2", "c"), outcome.series_pk or 0)
        )
        first.commit()
    thread.join(30)
    assert not thread.is_alive()
    writer.close()
    assert result == [["k1.m", "k1.p"]]
    with Session(engine) as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == SOP)).one()
    assert (row.meta_key, row.pixel_key, row.sha256) == ("k2.m", "k2.p", "c" * 64)


@pytest.fixture()
def ctx(engine: Engine, tmp_path: Path) -> Iterator[ServerContext]:
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "index": {"database_url": engine.url.render_as_string(hide_password=False)},
        }
    )
    context = ServerContext(settings, migrate=True)
    yield context
    context.close()


def _instances(ctx: ServerContext) -> list[Instance]:
    with ctx.Session() as session:
        return list(session.scalars(select(Instance)))


def test_delete_study_takes_an_instance_committed_while_it_runs(ctx: ServerContext) -> None:
    """A store that has written its row into the study (not yet committed) when the delete
    starts: the delete waits for it and deletes (and tombstones) it with the study. It read
    the keys first and deleted by series later: the row committed in between went without a
    tombstone, or the series delete failed its foreign key (500), outside probe 31."""
    study = samples.ct_series(4)
    for ds in study[:3]:
        assert ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT").ok
    [series_pk] = {i.series_pk for i in _instances(ctx)}
    late = _record("PL", str(study[0].SeriesInstanceUID), "0f" * 16, "d", sop="2.25.31000009")
    with Session(ctx.engine) as ingest, ingest.begin():
        ingest.execute(insert(Instance).values(**records.known_series_values(late, series_pk)))
        thread, result = run_blocked(
            ctx.engine,
            lambda: retention.delete_study(
                ctx, str(study[0].StudyInstanceUID), user="t", address="", event="delete"
            ),
        )
    thread.join(30)
    assert not thread.is_alive()
    assert result == [4], result
    assert _instances(ctx) == []
    assert list(ctx.storage.keys()) == []


def test_a_store_racing_a_delete_lands_in_a_fresh_study(
    ctx: ServerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store (of a process that has not cached the series) that loaded the study's rows
    just before the delete locked them: it waited, its rows were gone (StaleDataError) and
    the instance was refused with an internal error; now it is filed again, into a new
    study."""
    study = samples.ct_series(2)
    assert ctx.store(bad_inputs.part10_of(study[0]), pool="DEFAULT").ok
    other = ServerContext(ctx.settings)  # another worker: a cold series cache
    inside, release = threading.Event(), threading.Event()
    drop = records.drop_patient_if_unused

    def held(session: Session, patient_pk: int) -> None:
        drop(session, patient_pk)
        inside.set()
        assert release.wait(30)

    monkeypatch.setattr(records, "drop_patient_if_unused", held)
    deleting = threading.Thread(
        target=retention.delete_study,
        args=(ctx, str(study[0].StudyInstanceUID)),
        kwargs={"user": "t", "address": "", "event": "delete"},
        daemon=True,
    )
    try:
        deleting.start()
        assert inside.wait(30)
        monkeypatch.setattr(records, "drop_patient_if_unused", drop)
        thread, result = run_blocked(
            ctx.engine, lambda: other.store(bad_inputs.part10_of(study[1]), pool="DEFAULT")
        )
        release.set()
        deleting.join(30)
        thread.join(30)
        assert not thread.is_alive() and not deleting.is_alive()
        [stored] = result
        assert stored.ok, stored
        [row] = _instances(ctx)
        assert row.sop_instance_uid == str(study[1].SOPInstanceUID)
        assert ctx.instance_bytes(row)  # its objects are there
        assert len(list(ctx.storage.keys())) == 2
    finally:
        release.set()
        other.close()
