"""Deleting studies: by a user with the delete right, or by the retention sweep per pool.

FAQ: "Timestamp for automatic deletion"; issue 4: "Retention: per data pool, automatic
deletion after a configured time; a deletion is audited and leaves no blob behind". The
index rows go first, in one fully synced transaction that also writes a tombstone per
archive object and the audit record (110105) of the deletion; then the blobs go, then the
tombstones. A crash in between leaves unreferenced blobs with tombstones, which start-up
recovery removes rather than re-indexes — and the deletion is audited whatever happens:
the record was written after the objects were removed, in a transaction of its own, so a
kill -9 in between deleted a study without a trace (probe 34).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from server.accounts import audit
from server.accounts.clock import now
from server.index import db as index_db
from server.index import records
from server.index.account_models import InstanceOwner, ShareLink
from server.index.models import (
    ArchiveTombstone,
    Instance,
    Patient,
    Series,
    Study,
)

log = logging.getLogger("lucent.retention")


def delete_study(ctx: Any, study_uid: str, *, user: str, address: str, event: str) -> int:
    """Remove one study (rows, then blobs); returns the number of instances removed.

    Instances may arrive while the study is deleted (outside probe 31, PostgreSQL): the
    instance keys were read in one statement and the rows deleted by series in another, so
    rows committed in between went without a tombstone (their objects stayed, and start-up
    recovery brought the deleted study back), or the series delete failed its foreign key
    (500). Now the study and series rows are locked first: a store that already wrote into
    them is waited for and deleted with the study, one that comes later waits and then files
    into a fresh study (its foreign key fails, ``ServerContext._commit`` takes the full path
    again). The instance rows are deleted with RETURNING, so exactly the keys of the rows
    deleted are tombstoned. A deadlock with a store (or a row that still appeared) is
    retried."""
    for attempt in range(_ATTEMPTS):
        try:
            found = _delete_rows(ctx, study_uid, user=user, address=address, event=event)
            break
        except (IntegrityError, OperationalError, StaleDataError) as exc:
            if attempt == _ATTEMPTS - 1 or index_db.unavailable(exc) is not None:
                raise
            log.info("study %s: delete retried after a concurrent store: %s", study_uid, exc)
            time.sleep(0.02 * (attempt + 1))
    if found is None:
        return -1
    keys, sops, series_uids, _pool = found
    remove_objects(ctx, keys, series_uids)
    return len(sops)


_ATTEMPTS = 8


def _delete_rows(
    ctx: Any, study_uid: str, *, user: str, address: str, event: str
) -> tuple[list[str], list[str], list[str], str] | None:
    """One try of ``delete_study``'s transaction: (keys, SOP UIDs, series UIDs, pool). The
    audit record commits with the rows and tombstones (one transaction, ``audit.chained``)."""
    with audit.chained(ctx.WriteSession) as db:
        study = db.scalars(
            select(Study)
            .where(Study.study_uid == study_uid)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if study is None:
            return None
        locked = db.execute(
            select(Series.id, Series.series_uid)
            .where(Series.study_pk == study.id)
            .order_by(Series.id)
            .with_for_update()
        ).all()
        series_pks = [row.id for row in locked]
        series_uids = [row.series_uid for row in locked]
        gone = db.execute(
            delete(Instance)
            .where(Instance.series_pk.in_(series_pks))
            .returning(Instance.sop_instance_uid, Instance.meta_key, Instance.pixel_key)
        ).all()
        keys = [k for row in gone for k in (row.meta_key, row.pixel_key) if k]
        sops = [row.sop_instance_uid for row in gone]
        patient_pk, pool = study.patient_pk, study.pool
        patient = db.get(Patient, patient_pk)
        for i in range(0, len(sops), 500):
            chunk = sops[i : i + 500]
            db.execute(delete(InstanceOwner).where(InstanceOwner.sop_instance_uid.in_(chunk)))
        db.execute(delete(Series).where(Series.id.in_(series_pks)))
        records.forget_hidden(db, study_uids=[study_uid], series_uids=series_uids)
        db.execute(update(ShareLink).where(ShareLink.study_uid == study_uid).values(revoked=True))
        db.delete(study)
        stamp = now()
        bases = {k.split(".")[0] for k in keys}
        db.add_all(ArchiveTombstone(base=b, created_at=stamp) for b in bases)
        db.flush()
        objects = [{"type": "study", "id": study_uid}, {"type": "pool", "id": pool}]
        # PS3.15 A.5.3.5 DICOM Study Deleted: the Patient participant object is mandatory
        objects.append({"type": "patient", "id": patient.patient_id if patient else ""})
        audit.append(
            db,
            audit.Entry(
                event, audit.SUCCESS, user, address, objects, f"{len(sops)} instance(s) deleted"
            ),
        )
        records.drop_patient_if_unused(db, patient_pk)
    return keys, sops, series_uids, pool


def sweep(ctx: Any) -> list[str]:
    """Delete every study older than its pool's ``retention_days`` (by last update)."""
    deleted: list[str] = []
    for pool in ctx.settings.pools:
        if pool.retention_days <= 0:
            continue
        cutoff = now() - timedelta(days=pool.retention_days)
        with ctx.Session() as db:
            uids = list(
                db.scalars(
                    select(Study.study_uid).where(
                        Study.pool == pool.name, Study.updated_at < cutoff
                    )
                )
            )
        for uid in uids:
            if delete_study(ctx, uid, user="retention", address="", event="retention") >= 0:
                deleted.append(uid)
    if deleted:
        log.info("retention removed %d study(ies)", len(deleted))
    return deleted


class RetentionThread(threading.Thread):
    """Runs ``sweep`` every ``retention_interval_minutes`` while the server runs."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(name="retention", daemon=True)
        self.ctx = ctx
        self.stop_event = threading.Event()

    def run(self) -> None:
        interval = self.ctx.settings.accounts.retention_interval_minutes * 60
        while not self.stop_event.wait(interval):
            try:
                sweep(self.ctx)
            except Exception:  # keep sweeping on the next round
                log.exception("retention sweep failed")


def remove_objects(ctx: Any, keys: list[str], series_uids: list[str]) -> None:
    """After the rows are gone (tombstones committed with them): the blobs, then their
    tombstones, and the ingest path's cached series primary keys."""
    for key in keys:
        ctx.storage.delete(key)
    _clear_tombstones(ctx, keys)
    for uid in series_uids:
        ctx._parents.forget(uid)


def _clear_tombstones(ctx: Any, keys: list[str]) -> None:
    """The blobs are gone: their tombstones are no longer needed (start-up clears leftovers)."""
    bases = sorted({k.split(".")[0] for k in keys})
    try:
        with ctx.WriteSession() as db, db.begin():
            for i in range(0, len(bases), 500):
                chunk = bases[i : i + 500]
                db.execute(delete(ArchiveTombstone).where(ArchiveTombstone.base.in_(chunk)))
    except Exception:  # harmless: recovery at the next start removes them
        log.warning("could not clear %d archive tombstone(s)", len(bases), exc_info=True)
