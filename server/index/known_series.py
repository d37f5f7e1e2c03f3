"""The ingest fast path's index write: a new instance of a series this process has seen.

That write is two statements (check that no placeholder of a refused copy waits to be
superseded, then insert the instance row; a placeholder sends the instance down the full
path, which also removes the patient row the refusal leaves empty). Through SQLAlchemy's
Core it cost ~125 us of CPU per instance (pool checkout and return, events, cache lookups,
result objects), a tenth of the whole store.
On SQLite the statements are compiled once for the dialect, with SQLAlchemy's own bind
processors for the values (JSON, dates), and run on one DB-API connection the process keeps
for them: ~40 us. That connection is only used under the ingest commit lock, which already
serialises every ingest commit of the process. Other databases keep the Core path.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from pydicom import Dataset
from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from server.index.db import unavailable
from server.index.models import Event, Instance, Patient, Placeholder, Series, Study
from server.index.records import (
    INSERT_INSTANCE,
    InstanceRecord,
    known_series_values,
    now,
    patient_values,
    series_values,
    study_values,
)

# The replace path's statements, built once (building one per call cost more than running it).
_FIND = (
    select(Instance.id, Instance.meta_key, Instance.pixel_key)
    .where(
        Instance.sop_instance_uid == bindparam("sop_uid"), Instance.series_pk == bindparam("series")
    )
    .with_for_update()
)  # the keys read are the ones replaced (see records.record_instance)
#: Only the one bind parameter: a LIMIT compiles to two more, and the raw SQLite path then
#: failed every write (sent down the full path: 2.7x slower ingest, caught by bench/ingest.py).
_HAS_PLACEHOLDER = select(Placeholder.id).where(
    Placeholder.sop_instance_uid == bindparam("sop_uid")
)
_UPDATE = update(Instance).where(Instance.id == bindparam("row_id"))
_SERIES_COLUMNS = tuple(series_values(Dataset()))
_STUDY_COLUMNS = tuple(study_values(Dataset()))
_PATIENT_COLUMNS = tuple(patient_values(Dataset()))
#: What the parents' rows say now: a replacing copy that says otherwise (a corrected name,
#: modality or description) goes down the full path, which takes its values.
_PARENTS = (
    select(
        *(getattr(Series, c) for c in _SERIES_COLUMNS),
        *(getattr(Study, c) for c in _STUDY_COLUMNS),
        *(getattr(Patient, c) for c in _PATIENT_COLUMNS),
        Patient.patient_id,
    )
    .join(Study, Study.id == Series.study_pk)
    .join(Patient, Patient.id == Study.patient_pk)
    .where(Series.id == bindparam("series"))
)
_EVENT = insert(Event)
#: Is the cached series row still this series of this study? A study deleted through the
#: API (or by retention) leaves other processes' caches stale, and SQLite reuses the freed
#: row id for the next new series: an instance of the deleted study was filed under
#: another patient's series, answered 0000 (outside probe 20). The foreign key the cache
#: relied on cannot catch a reused id.
_SAME_SERIES = (
    select(Series.id)
    .join(Study, Study.id == Series.study_pk)
    .where(
        Series.id == bindparam("series"),
        Series.series_uid == bindparam("series_uid"),
        Study.study_uid == bindparam("study_uid"),
    )
)


class KnownSeriesWriter:
    """Writes a known series' new instance; ``write`` answers False when the full path
    must judge (a duplicate SOP Instance UID, a series deleted meanwhile, a database error).
    On PostgreSQL a database that is down or does not answer (``db.unavailable``) is
    raised instead: the full path could not judge either, and the caller removes the
    instance's objects before it answers the failure (``ServerContext._archive``).

    The caller holds the ingest commit lock (``server.index.db.commit_lock``)."""

    def __init__(self, engine: Engine) -> None:
        """``engine``: the ingest engine view (``db.ingest_engine``)."""
        self._engine = engine
        self._raw_capable = engine.dialect.name == "sqlite"
        self._insert: tuple[tuple[str, ...], str, list[tuple[str, Any]]] | None = None
        self._has_placeholder_sql = str(_HAS_PLACEHOLDER.compile(dialect=engine.dialect))
        same = _SAME_SERIES.compile(dialect=engine.dialect)
        assert list(same.positiontup or ()) in ([], ["series", "series_uid", "study_uid"])
        self._same_sql = str(same)
        self._connection: PoolProxiedConnection | None = None

    def write(self, rec: InstanceRecord, series_pk: int) -> bool:
        values = known_series_values(rec, series_pk)
        same = {
            "series": series_pk,
            "series_uid": str(rec.dataset.SeriesInstanceUID),
            "study_uid": str(rec.dataset.StudyInstanceUID),
        }
        if not self._raw_capable:
            try:
                with self._engine.begin() as conn:
                    if conn.execute(_SAME_SERIES, same).first() is None:
                        return False
                    if conn.execute(
                        _HAS_PLACEHOLDER, {"sop_uid": values["sop_instance_uid"]}
                    ).first():
                        return False  # a refusal to supersede: the full path tidies its patient
                    conn.execute(INSERT_INSTANCE, [values])
            except DBAPIError as exc:
                if unavailable(exc) is not None:
                    raise
                return False
            return True
        sql, params = self._insert_params(values)
        con = self._raw()
        cur = con.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(self._same_sql, (series_pk, same["series_uid"], same["study_uid"]))
            if cur.fetchone() is None:
                cur.execute("ROLLBACK")
                return False
            cur.execute(self._has_placeholder_sql, (values["sop_instance_uid"],))
            if cur.fetchone() is not None:  # a refusal to supersede: see above
                cur.execute("ROLLBACK")
                return False
            cur.execute(sql, params)
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.IntegrityError):
                self.close()  # a broken connection is not used again
            return False
        finally:
            cur.close()
        return True

    def replace(self, rec: InstanceRecord, series_pk: int) -> list[str] | None:
        """Duplicate policy "replace" for an instance already in this known series: the row
        takes the new copy's values, the replacement is recorded as an event; answers the
        old copy's archive keys, or None when the full path must judge (not in this series).

        A re-sent study went through the ORM path instance by instance: 4-5x slower than
        the first retrieve (outside probe). The parents are the cached ones, exactly as a
        new instance of the series is filed."""
        values = known_series_values(rec, series_pk)
        sop_uid = values.pop("sop_instance_uid")
        detail = {"sop_instance_uid": sop_uid, "source_ae": rec.source_ae, "pool": rec.pool}
        try:
            with self._engine.begin() as conn:
                old = conn.execute(_FIND, {"sop_uid": sop_uid, "series": series_pk}).first()
                if old is None:
                    return None
                if conn.execute(_HAS_PLACEHOLDER, {"sop_uid": sop_uid}).first():
                    return None  # a refusal to supersede: the full path tidies its patient
                if not self._parents_agree(conn, rec, series_pk):
                    return None  # corrected demographics or series data: the full path
                conn.execute(_UPDATE, {"row_id": old.id, **values})
                conn.execute(_EVENT, {"at": now(), "kind": "duplicate-replaced", "detail": detail})
        except DBAPIError as exc:
            if unavailable(exc) is not None and not self._raw_capable:
                raise
            return None
        return [k for k in (old.meta_key, old.pixel_key) if k]

    @staticmethod
    def _parents_agree(conn: Any, rec: InstanceRecord, series_pk: int) -> bool:
        row = conn.execute(_PARENTS, {"series": series_pk}).first()
        if row is None:
            return False
        ds = rec.dataset
        wanted = (
            *series_values(ds).values(),
            *study_values(ds).values(),
            *patient_values(ds).values(),
        )
        stated = tuple(row)[: len(wanted)]
        if not row.patient_id:  # a study's own row without an ID: its name is not refreshed
            n = len(_PATIENT_COLUMNS)
            return stated[:-n] == wanted[:-n]
        return stated == wanted

    def prepare(self, rec: InstanceRecord, series_pk: int) -> None:
        """Compile the statements and take the connection ahead of the first store."""
        if self._raw_capable:
            self._insert_params(known_series_values(rec, series_pk))
            self._raw()

    def _insert_params(self, values: dict[str, Any]) -> tuple[str, list[Any]]:
        keys = tuple(values)
        if self._insert is None or self._insert[0] != keys:
            compiled: Compiled = INSERT_INSTANCE.compile(
                dialect=self._engine.dialect, column_keys=list(keys)
            )
            processors = compiled._bind_processors  # SQLAlchemy's own value conversions
            order = [(name, processors.get(name)) for name in compiled.positiontup or ()]
            self._insert = (keys, str(compiled), order)
        _, sql, order = self._insert
        return sql, [fn(values[name]) if fn else values[name] for name, fn in order]

    def _raw(self) -> Any:
        """The DB-API connection, taken from the engine's pool (its connect-time pragmas:
        WAL, foreign keys, busy timeout) and set to the ingest path's synchronous=NORMAL."""
        if self._connection is None:
            connection = self._engine.raw_connection()
            connection.driver_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            connection.info["synchronous"] = "NORMAL"  # the begin event resets it on reuse
            self._connection = connection
        return self._connection.driver_connection

    def close(self) -> None:
        """Give the connection back to the pool (ServerContext.close, or after an error)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
