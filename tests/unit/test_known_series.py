"""The ingest fast path's index write (server.index.known_series): rows written on the raw
SQLite connection must read back exactly like the ORM path's, and anything unusual (a
duplicate, a series deleted meanwhile) must fall back to the full path. Real SQLite."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text

from server.context import ServerContext
from server.index import db
from server.index.known_series import KnownSeriesWriter
from server.index.models import Instance, Placeholder, Series
from tests.data import bad_inputs, samples

CT = "1.2.840.10008.5.1.4.1.1.2"


def _rows(ctx: ServerContext) -> list[Instance]:
    with ctx.Session() as session:
        return list(session.scalars(select(Instance).order_by(Instance.id)))


def test_rows_of_the_fast_path_read_back_like_the_orm_paths(ctx: ServerContext) -> None:
    series = samples.ct_series(3)
    # A refused copy of the third instance leaves a placeholder; the good copy removes it.
    broken = copy.deepcopy(series[2])
    del broken.Rows
    assert not ctx.store(bad_inputs.part10_of(broken), pool="DEFAULT").ok
    with ctx.Session() as session:
        assert session.scalars(select(Placeholder)).all()
    for ds in series:
        assert ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT").action == "stored"
    rows = _rows(ctx)
    assert [r.instance_number for r in rows] == [1, 2, 3]
    orm, *fast = rows  # the first instance created the series through the ORM
    for row in fast:
        assert row.series_pk == orm.series_pk
        assert type(row.received_at) is type(orm.received_at)
        assert row.received_at >= orm.received_at
        assert isinstance(row.attrs, dict) and row.attrs.keys() == orm.attrs.keys()
        assert row.lossy is False and row.frames == 1
        assert (row.rows, row.columns) == (orm.rows, orm.columns)
        assert len(row.sha256) == 64 and row.meta_key and row.pixel_key
    with ctx.Session() as session:
        assert session.scalars(select(Placeholder)).all() == []


def test_a_duplicate_and_a_vanished_series_take_the_full_path(ctx: ServerContext) -> None:
    series = samples.ct_series(4)
    for ds in series[:2]:
        ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT")
    again = ctx.store(bad_inputs.part10_of(series[1]), pool="DEFAULT")
    assert again.ok and again.action == "replaced"
    assert len(_rows(ctx)) == 2
    with ctx.WriteSession() as session, session.begin():
        session.execute(delete(Instance))
        session.execute(delete(Series))
    # This process still remembers the series: the fast write fails on its foreign key, and
    # the full path creates the series again.
    assert ctx.store(bad_inputs.part10_of(series[2]), pool="DEFAULT").action == "stored"
    assert ctx.store(bad_inputs.part10_of(series[3]), pool="DEFAULT").action == "stored"
    rows = _rows(ctx)
    assert [r.instance_number for r in rows] == [3, 4]
    assert rows[0].series_pk == rows[1].series_pk


def test_its_connection_goes_back_to_the_pool_with_full_sync(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    db.migrate(engine)
    writer = KnownSeriesWriter(db.ingest_engine(engine))
    raw = writer._raw()
    assert raw.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL while it holds it
    writer.close()
    with engine.begin() as conn:  # the pool's only connection: the one the writer held
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL again
        assert conn.execute(text("SELECT count(*) FROM instances")).scalar() == 0
    engine.dispose()


def test_warm_up_compiles_ahead_and_writes_nothing(ctx: ServerContext) -> None:
    """A worker warms up before its first association (server.dimse.listener): the synthetic
    instance it indexes is rolled back, so no patient, study, series or event remains."""
    ctx.warm_up("DEFAULT")
    with ctx.Session() as session:
        for table in ("patients", "studies", "series", "instances", "events", "placeholders"):
            assert session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    series = samples.ct_series(2)
    assert [ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT").action for ds in series] == [
        "stored"
    ] * 2
    assert [r.instance_number for r in _rows(ctx)] == [1, 2]


def test_a_study_deleted_by_another_process_never_files_a_late_instance_elsewhere(
    tmp_path: Path,
) -> None:
    """Outside probe 20: a DICOM worker remembered "series SA -> row 1"; the API process
    deleted study A; SQLite gave the freed row id 1 to Bob's new series; a late instance
    of Alice's series SA was then filed under Bob's series and answered 0000."""
    from server import config
    from server.accounts import retention

    settings = config.parse({"server": {"data_dir": str(tmp_path / "srv")}})
    worker = ServerContext(settings, migrate=True)
    api = ServerContext(settings)
    try:
        alice = samples.ct_series(4)
        for ds in alice[:3]:
            assert worker.store(bad_inputs.part10_of(ds), pool="DEFAULT").ok
        removed = retention.delete_study(
            api, str(alice[0].StudyInstanceUID), user="retention", address="", event="retention"
        )
        assert removed == 3
        bob = samples.ct_series(1)
        assert worker.store(bad_inputs.part10_of(bob[0]), pool="DEFAULT").ok
        late = worker.store(bad_inputs.part10_of(alice[3]), pool="DEFAULT")
        assert late.ok
        with worker.Session() as session:
            filed = {
                i.sop_instance_uid: (i.series.series_uid, i.series.study.patient.patient_id)
                for i in session.scalars(select(Instance))
            }
        assert filed[str(alice[3].SOPInstanceUID)] == (
            str(alice[3].SeriesInstanceUID),
            str(alice[3].PatientID),
        )
        assert filed[str(bob[0].SOPInstanceUID)] == (
            str(bob[0].SeriesInstanceUID),
            str(bob[0].PatientID),
        )
    finally:
        api.close()
        worker.close()


def test_later_instances_of_a_series_take_the_shortcut(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first instance of a series goes through the ORM path; a shortcut that
    silently failed (a statement with bind parameters it was not given) sent every one
    down the full path and made ingest 2.7x slower, with every result still right."""
    from server import context as context_module

    full_path = []
    real = context_module.record_instance

    def counted(*args: object, **kwargs: object) -> object:
        full_path.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(context_module, "record_instance", counted)
    for ds in samples.ct_series(4):
        assert ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT").action == "stored"
    assert len(full_path) == 1
