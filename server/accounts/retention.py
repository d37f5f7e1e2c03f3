"""Deleting studies: by a user with the delete right, or by the retention sweep per pool.

FAQ: "Timestamp for automatic deletion"; issue 4: "Retention: per data pool, automatic
deletion after a configured time; a deletion is audited and leaves no blob behind". The
index rows go first, in one fully synced transaction that also writes a tombstone per
archive object; then the blobs go, then the tombstones. A crash in between leaves
unreferenced blobs with tombstones, which start-up recovery removes rather than re-indexes.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from server.accounts import audit
from server.accounts.clock import now
from server.index import records
from server.index.account_models import InstanceOwner, ShareLink
from server.index.models import (
    ArchiveTombstone,
    Instance,
    Series,
    Study,
)

log = logging.getLogger("lucent.retention")


def delete_study(ctx: Any, study_uid: str, *, user: str, address: str, event: str) -> int:
    """Remove one study (rows, then blobs); returns the number of instances removed."""
    with ctx.WriteSession() as db, db.begin():
        study = db.scalars(select(Study).where(Study.study_uid == study_uid)).first()
        if study is None:
            return -1
        series_pks = list(db.scalars(select(Series.id).where(Series.study_pk == study.id)))
        series_uids = list(db.scalars(select(Series.series_uid).where(Series.study_pk == study.id)))
        insts = list(db.scalars(select(Instance).where(Instance.series_pk.in_(series_pks))))
        keys = [k for i in insts for k in (i.meta_key, i.pixel_key) if k]
        sops = [i.sop_instance_uid for i in insts]
        patient_pk, pool = study.patient_pk, study.pool
        db.execute(delete(InstanceOwner).where(InstanceOwner.sop_instance_uid.in_(sops)))
        db.execute(delete(Instance).where(Instance.series_pk.in_(series_pks)))
        db.execute(delete(Series).where(Series.id.in_(series_pks)))
        records.forget_hidden(db, study_uids=[study_uid], series_uids=series_uids)
        db.execute(update(ShareLink).where(ShareLink.study_uid == study_uid).values(revoked=True))
        db.delete(study)
        stamp = now()
        bases = {k.split(".")[0] for k in keys}
        db.add_all(ArchiveTombstone(base=b, created_at=stamp) for b in bases)
        db.flush()
        records.drop_patient_if_unused(db, patient_pk)
    remove_objects(ctx, keys, series_uids)
    audit.record(
        ctx.WriteSession,
        audit.Entry(
            event,
            audit.SUCCESS,
            user,
            address,
            [{"type": "study", "id": study_uid}, {"type": "pool", "id": pool}],
            f"{len(sops)} instance(s) deleted",
        ),
    )
    return len(sops)


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
