"""Removing what an aborted perfusion evaluation left: result series and scratch folders.

An evaluation aborted because more images of its series arrived (seed FAQ: abort and
restart), cancelled by a user, or interrupted by a server stop must leave no result in the
archive: a stale full set next to the restarted one has the same Series Descriptions and
Numbers, and nothing tells a reader which one is current (outside probe 19).

``remove_series`` is the series-level twin of ``server.accounts.retention.delete_study``
(which removes whole studies; the results live in the *source* study, so it cannot be used):
the index rows go first, in one transaction that also writes a tombstone per archive
object, then the blobs, then the tombstones. A crash in between leaves tombstoned blobs that
start-up recovery removes rather than re-indexes. Audited as a deletion (110105).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from server.accounts import audit
from server.accounts.retention import remove_objects
from server.index.account_models import HiddenItem, InstanceOwner
from server.index.models import ArchiveTombstone, Instance, Series
from server.index.records import now

log = logging.getLogger("lucent.perfusion")

#: scratch folders of evaluations: ``run-<run id>`` (our own counter, never a UID)
RUN_FOLDER = re.compile(r"run-\d+")


def remove_series(ctx: Any, series_uids: list[str], *, detail: str) -> int:
    """Remove these series (rows, then blobs); returns the number of instances removed.

    Series that are not (or no longer) in the archive are skipped: calling it twice is safe.
    """
    if not series_uids:
        return 0
    with ctx.WriteSession() as db, db.begin():
        rows = db.execute(
            select(Series.id, Series.series_uid).where(Series.series_uid.in_(series_uids))
        ).all()
        if not rows:
            return 0
        series_pks = [r[0] for r in rows]
        found = [str(r[1]) for r in rows]
        insts = list(db.scalars(select(Instance).where(Instance.series_pk.in_(series_pks))))
        keys = [k for i in insts for k in (i.meta_key, i.pixel_key) if k]
        sops = [i.sop_instance_uid for i in insts]
        pools = sorted({i.pool for i in insts})
        for i in range(0, len(sops), 500):
            chunk = sops[i : i + 500]
            db.execute(delete(InstanceOwner).where(InstanceOwner.sop_instance_uid.in_(chunk)))
        db.execute(delete(Instance).where(Instance.series_pk.in_(series_pks)))
        db.execute(
            delete(HiddenItem).where((HiddenItem.level == "series") & HiddenItem.uid.in_(found))
        )
        db.execute(delete(Series).where(Series.id.in_(series_pks)))
        stamp = now()
        bases = {k.split(".")[0] for k in keys}
        db.add_all(ArchiveTombstone(base=b, created_at=stamp) for b in bases)
    remove_objects(ctx, keys, found)
    audit.record(
        ctx.WriteSession,
        audit.Entry(
            "delete",
            audit.SUCCESS,
            "perfusion",
            "",
            [{"type": "series", "id": uid} for uid in found]
            + [{"type": "pool", "id": p} for p in pools],
            f"{len(sops)} instance(s) deleted: {detail}",
        ),
    )
    return len(sops)


def remove_leftover_work(root: Path) -> list[str]:
    """Remove the scratch folders (``run-N``) of evaluations a crash or kill left behind.

    They hold the exported input as plain, unencrypted DICOM; ``_run`` removes its folder
    when it ends, which a kill -9 or a power cut never reaches. Only called at start-up,
    before any evaluation runs. Returns the names removed."""
    removed: list[str] = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return removed  # no scratch folder yet
    for path in entries:
        if RUN_FOLDER.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                log.error("perfusion: could not remove the leftover scratch folder %s", path)
            else:
                removed.append(path.name)
    return removed
