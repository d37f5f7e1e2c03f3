"""Start-up recovery: the archive is the source of truth, the index can be rebuilt from it.

Every metadata object carries an authenticated clear-text label (pool, sender, pixel offset,
owner, time; no patient data). A blob that no index row references was either

- written by a store whose index commit was lost (a kill -9 between the two, or a power loss
  after an ingest commit that skipped the WAL fsync): it is re-indexed, so every instance
  answered 0000 is back, with its pool and owner;
- deleted by a user or the retention sweep after its rows went (a tombstone says so), half
  written, damaged, or superseded by a newer copy of the same instance: it is removed.

``lucent-server rebuild-index`` runs the same pass over an empty database, to rebuild a lost or
damaged index from the archive and the key file alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from lucent.dicom import instance as dicom_instance
from server.archive import crypto
from server.index.models import ArchiveTombstone, Instance
from server.index.records import InstanceRecord, now, record_instance

if TYPE_CHECKING:
    from server.context import ServerContext

log = logging.getLogger("lucent.recovery")

LABEL_VERSION = 1


@dataclass(frozen=True)
class Label:
    """What the index needs beyond the data set itself to re-file an instance."""

    pool: str
    source: str
    pixel_offset: int
    has_pixels: bool
    owner: int | None = None
    at: str = field(default_factory=lambda: now().isoformat())

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": LABEL_VERSION,
                "pool": self.pool,
                "source": self.source,
                "offset": self.pixel_offset,
                "pixels": self.has_pixels,
                "owner": self.owner,
                "at": self.at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Label | None:
        """The label, or None for an unlabelled (older) object or one this version can't read."""
        if not raw:
            return None
        try:
            d: dict[str, Any] = json.loads(raw)
            if d.get("v") != LABEL_VERSION:
                return None
            owner = d.get("owner")
            return cls(
                pool=str(d["pool"]),
                source=str(d.get("source", "")),
                pixel_offset=int(d["offset"]),
                has_pixels=bool(d["pixels"]),
                owner=int(owner) if owner is not None else None,
                at=str(d["at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Report:
    recovered: int = 0
    removed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    """Objects that failed authentication or parsing: moved to ``quarantine/``, not deleted."""
    unknown_keys: dict[str, int] = field(default_factory=dict)
    """Objects sealed with master keys the key file lacks, by key id: left where they are."""

    def removed_because(self, reason: str, count: int = 1) -> None:
        self.removed += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count


#: Why an orphan could not be filed that says the object itself is damaged (or we cannot
#: read it): it may be the only copy of an acknowledged instance, so it is kept aside.
_QUARANTINE_REASONS = ("unreadable", "unlabelled", "not a valid instance", "pixel offset mismatch")


def recover(ctx: ServerContext) -> Report:
    """Re-index or remove every archive object no index row references.

    Run before any listener accepts data, so nothing in flight is touched.
    """
    report = Report()
    half_written, unused = ctx.storage.sweep_temporary()
    if half_written:
        report.removed_because("half-written", half_written)
    if unused:  # files prepared for stores that never came: routine after a kill -9
        log.info("archive recovery: %d prepared but unused file(s) removed", unused)
    with ctx.Session() as session:
        referenced = set(session.scalars(select(Instance.meta_key)))
        referenced.update(k for k in session.scalars(select(Instance.pixel_key)) if k is not None)
        tombstones = set(session.scalars(select(ArchiveTombstone.base)))
    # Stores whose commit outcome was unknown (a lost PostgreSQL connection): the sender
    # was not answered 0000, so unless their row made it, they go, not back into the index.
    doubtful = ctx.storage.doubtful()
    orphans: dict[str, set[str]] = {}
    for key in list(ctx.storage.keys()):
        if key not in referenced:
            base, _, kind = key.partition(".")
            orphans.setdefault(base, set()).add(kind)
    for base, kinds in sorted(orphans.items()):
        if base not in tombstones:
            unknown = _unknown_key(ctx, base, kinds)
            if unknown:
                # a lost or replaced key file: never count these unreadable and remove them
                report.unknown_keys[unknown] = report.unknown_keys.get(unknown, 0) + len(kinds)
                continue
        if base in tombstones:
            reason: str | None = "deleted"
        elif base in doubtful:
            reason = "not acknowledged"
        else:
            reason = _reindex(ctx, base, kinds)
        if reason is None:
            report.recovered += 1
            continue
        if reason in _QUARANTINE_REASONS:
            for kind in kinds:
                moved = ctx.storage.quarantine(f"{base}.{kind}")
                log.error("archive object %s (%s) moved to %s", moved.name, reason, moved)
            report.quarantined += len(kinds)
            report.reasons[reason] = report.reasons.get(reason, 0) + len(kinds)
            continue
        for kind in kinds:
            ctx.storage.delete(f"{base}.{kind}")
        report.removed_because(reason, len(kinds))
    if tombstones:
        with ctx.WriteSession() as session, session.begin():
            session.execute(delete(ArchiveTombstone))
    if doubtful:
        ctx.storage.forget_doubtful()
    if report.recovered or report.removed or report.quarantined:
        log.warning(
            "archive recovery: %d instance(s) re-indexed, %d object(s) removed, "
            "%d moved to quarantine %s",
            report.recovered,
            report.removed,
            report.quarantined,
            report.reasons,
        )
    if report.unknown_keys:
        log.error(
            "archive recovery: %d object(s) are sealed with master keys the key file %s "
            "lacks (%s): left in place and not indexed; restore the key file and run "
            "`lucent-server rebuild-index`",
            sum(report.unknown_keys.values()),
            ctx.settings.key_file,
            ", ".join(sorted(report.unknown_keys)),
        )
    return report


def _unknown_key(ctx: ServerContext, base: str, kinds: set[str]) -> str:
    """The master key id an orphan was sealed with when the key ring lacks it, else ""."""
    for kind in sorted(kinds):
        try:
            with ctx.storage.open(f"{base}.{kind}") as f:
                head = f.read(crypto.HEADER_MAX)
            key_id = crypto.header_key_id(head)
        except (OSError, crypto.IntegrityError):
            continue  # damaged: _reindex says so
        return "" if key_id in ctx.keys.keys else key_id
    return ""


def _reindex(ctx: ServerContext, base: str, kinds: set[str]) -> str | None:
    """File one orphaned instance again; returns None when done, else why it was dropped."""
    if "m" not in kinds:
        return "pixel data without metadata"
    try:
        raw_label, meta = crypto.open_labelled(ctx.keys, ctx.storage.get(f"{base}.m"))
    except (OSError, crypto.IntegrityError) as exc:
        log.warning("archive object %s.m unreadable: %s", base, exc)
        return "unreadable"
    label = Label.decode(raw_label)
    if label is None:
        return "unlabelled"
    pixel_key = f"{base}.p" if label.has_pixels else None
    raw = meta
    if pixel_key:
        if "p" not in kinds:
            return "pixel data missing"
        try:
            pixels = crypto.open_(ctx.keys, ctx.storage.get(pixel_key))
        except (OSError, crypto.IntegrityError) as exc:
            log.warning("archive object %s unreadable: %s", pixel_key, exc)
            return "unreadable"
        raw = meta[: label.pixel_offset] + pixels + meta[label.pixel_offset :]
    parsed = dicom_instance.parse(
        raw, max_inflated=ctx.settings.archive.max_inflated_mb * 1024 * 1024
    )
    if isinstance(parsed, dicom_instance.Refusal):
        return "not a valid instance"
    if pixel_key and parsed.pixel_start != label.pixel_offset:
        return "pixel offset mismatch"
    sop_uid = str(parsed.dataset.SOPInstanceUID)
    existing = ctx.find_instance(sop_uid)
    if existing is not None and _newer_or_same(existing, label, ctx):
        return "superseded"
    # "keep"/"reject": the archived copy stays, as the store in flight would have decided
    # (outside probe 33: a resend cut off by a kill -9 replaced a kept copy)
    keeping = ctx.settings.archive.duplicate_policy != "replace"
    if existing is not None and keeping and _readable(existing, ctx):
        return "duplicate kept"
    ds = parsed.dataset
    rec = InstanceRecord(
        dataset=ds,
        transfer_syntax=parsed.transfer_syntax,
        lossy=parsed.lossy,
        meta_key=f"{base}.m",
        pixel_key=pixel_key,
        pixel_offset=label.pixel_offset if pixel_key else 0,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        pool=label.pool,
        source_ae=label.source,
    )
    with ctx.WriteSession() as session, session.begin():
        outcome = record_instance(session, rec, "replace")
    for key in outcome.obsolete_keys:
        ctx.storage.delete(key)
    if label.owner is not None:
        ctx.quotas.record_owner(sop_uid, label.owner, len(raw))
    log.info("re-indexed %s from archive object %s (pool %s)", sop_uid, base, label.pool)
    return None


def _readable(existing: Instance, ctx: ServerContext) -> bool:
    """Are the indexed copy's objects there?"""
    return all(ctx.storage.exists(k) for k in (existing.meta_key, existing.pixel_key) if k)


def _newer_or_same(existing: Instance, label: Label, ctx: ServerContext) -> bool:
    """True when the indexed copy is readable and not older than the orphaned one."""
    if not _readable(existing, ctx):
        return False
    try:
        return existing.received_at >= datetime.fromisoformat(label.at)
    except ValueError:
        return True
