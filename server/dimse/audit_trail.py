"""Audit records for DICOM network activity (PS3.15 A.5, IHE ATNA secure node).

The API audits its own routes; these are the DIMSE counterparts: instances received per
association and study ("DICOM Instances Transferred", action C), queries and retrievals by
remote nodes, refused Q/R callers and refused TLS peers. Records are written once per
association or operation, never per instance, so ingest speed is unaffected; a failure to
write one is logged and never fails the DICOM operation. In a DICOM worker a record the
database does not take, and the pending record of an association in progress, are kept in
the durable audit spool (``server.dimse.audit_spool``) until they are written (probe 58).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lucent.net import status
from server.accounts import audit
from server.accounts.clock import now
from server.context import ServerContext, StoreResult
from server.dimse import audit_spool

log = logging.getLogger("lucent.dimse")


def _record(ctx: ServerContext, *entries: audit.Entry) -> None:
    if not entries:
        return
    spool = audit_spool.current()
    if spool is not None and spool.ctx is ctx:
        spool.record(list(entries))  # kept and retried when the database does not take them
        return
    try:
        audit.record(ctx.WriteSession, *entries)
    except Exception:  # noqa: BLE001 - auditing must never break a DICOM operation
        log.exception("could not write DICOM audit record(s)")


def refusal_kind(result: StoreResult) -> str:
    """What a refused instance left behind, for the association's audit record. Every
    refusal was "see placeholders", also those that write none (outside probe 48): an
    A700 for low disk space writes nothing, a duplicate rejected keeps the archived copy."""
    if result.placeholder:
        return "placeholder written (see placeholders)"
    if result.status == status.OUT_OF_RESOURCES:
        return "low disk space (A700), nothing written"
    if result.status == status.OUT_OF_RESOURCES_QUOTA:
        return "over quota (A701), nothing written"
    if result.status == status.DUPLICATE_REJECTED:
        return "duplicate rejected (A910), the archived copy kept"
    return f"failed (0x{result.status:04X}), nothing written"


@dataclass
class Received:
    """Instances stored on one association, grouped per study.

    In a DICOM worker the pending record is spooled from the first instance on, and
    refreshed at most every ``audit_spool.REFRESH_SECONDS`` (one small atomic file write;
    nothing per instance but a clock read), so a server killed mid-association still leaves
    a record of what it had answered 0000 (probe 58)."""

    calling_ae: str
    address: str
    pool: str
    studies: dict[str, tuple[str, int]] = field(default_factory=dict)
    refused: int = 0
    #: refusals by what became of them (``refusal_kind``), in the order first seen
    refusals: dict[str, int] = field(default_factory=dict)
    started: datetime = field(default_factory=now)
    #: the association's first stored instance: where its rows begin in the index
    first_uid: str = ""
    _spool_path: Path | None = field(default=None, init=False, repr=False)
    _spooled_at: float = field(default=0.0, init=False, repr=False)

    def add(self, result: StoreResult) -> None:
        if not result.ok or not result.study_uid:
            self.refused += 1
            kind = refusal_kind(result)
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
        else:
            patient, count = self.studies.get(result.study_uid, (result.patient_id, 0))
            self.studies[result.study_uid] = (patient, count + 1)
            if not self.first_uid:
                self.first_uid = result.sop_instance_uid
        if self._spool_path is None or time.monotonic() - self._spooled_at >= (
            audit_spool.REFRESH_SECONDS
        ):
            self._spool()

    def _spool(self) -> None:
        spool = audit_spool.current()
        if spool is None:
            return
        if self._spool_path is None:
            self._spool_path = spool.new_path()
        state = audit_spool.pending_state(
            self.calling_ae,
            self.address,
            self.pool,
            self.started,
            self.first_uid,
            self.studies,
            self.refused,
            self.refusals,
        )
        spool.save_quietly(self._spool_path, state, durable=False)  # kill -9 safe, no fsync
        self._spooled_at = time.monotonic()

    def flush(self, ctx: ServerContext) -> None:
        """One record per study, at the end of the association."""
        entries = [
            audit.Entry(
                "receive",
                audit.SUCCESS,
                self.calling_ae,
                self.address,
                [{"type": "study", "id": uid}, {"type": "patient", "id": patient}],
                f"{count} instance(s) received into pool {self.pool}",
            )
            for uid, (patient, count) in self.studies.items()
        ]
        if self.refused:
            entries.append(
                audit.Entry(
                    "receive",
                    audit.MINOR_FAILURE,
                    self.calling_ae,
                    self.address,
                    [{"type": "pool", "id": self.pool}],
                    f"{self.refused} instance(s) refused: "
                    + "; ".join(f"{n} {kind}" for kind, n in self.refusals.items()),
                )
            )
        self.studies.clear()
        self.refused = 0
        self.refusals.clear()
        path, self._spool_path = self._spool_path, None
        spool = audit_spool.current()
        if spool is not None and spool.ctx is ctx:
            if entries:
                spool.record(entries, path)  # replaces the pending state when not written
            else:
                spool.discard(path)
            return
        audit_spool.Spool.discard(path)
        _record(ctx, *entries)


def query(ctx: ServerContext, calling_ae: str, address: str, level: str, keys: str, n: int) -> None:
    if not ctx.settings.audit.data_access:
        return
    _record(
        ctx,
        audit.Entry(
            "query",
            audit.SUCCESS,
            calling_ae,
            address,
            [{"type": "query", "id": keys[:200]}],
            f"C-FIND at {level} level: {n} match(es)",
        ),
    )


def retrieve(
    ctx: ServerContext,
    calling_ae: str,
    address: str,
    operation: str,
    destination: str,
    studies: Iterable[str],
    count: int,
) -> None:
    objects = [{"type": "study", "id": uid} for uid in sorted(set(studies))][:50]
    _record(
        ctx,
        audit.Entry(
            "send",
            audit.SUCCESS,
            calling_ae,
            address,
            objects,
            f"{operation} of {count} instance(s) to {destination}",
        ),
    )


def refused(ctx: ServerContext, calling_ae: str, address: str, what: str) -> None:
    _record(ctx, audit.Entry("refused", audit.MINOR_FAILURE, calling_ae, address, [], what))


def tls_refused(ctx: ServerContext, address: str, pool: str, reason: str) -> None:
    _record(
        ctx,
        audit.Entry(
            "node-auth",
            audit.MINOR_FAILURE,
            "",
            address,
            [{"type": "pool", "id": pool}],
            f"DICOM TLS handshake refused: {reason}",
        ),
    )
