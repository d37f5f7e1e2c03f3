"""A durable spool for DICOM audit records not written yet (PS3.15 A.5.3, IHE ATNA).

A storage association's "DICOM Instances Transferred" record is written at its end
(``audit_trail.Received``). Killed mid-association, or with the index database down at
that moment, the record was lost although every instance answered 0000 was archived and
indexed (probe 58). So each association's pending record lives in a small JSON file under
``data_dir/audit-spool`` from its first instance on: written atomically (temporary file,
rename; in the page cache, which a kill -9 leaves: no fsync), refreshed at most every
``REFRESH_SECONDS``, removed once the record is in the trail. A record that cannot be
written (database down) is kept there as a finished record (with fsync) and written by the
worker's spool thread as soon as the database answers again, with one log line per outage.

Files belong to one worker process ("owner": pid and a random token, never a received
string), which holds an exclusive lock on ``<owner>.lock`` while it lives. Another worker
(after a restart, or at the next server start) that can take that lock knows the owner is
gone and writes its files: finished records as they were, the state of an association cut
off mid-way as a record with a minor-failure outcome that lists only what the index holds,
i.e. the instances of that caller in that pool from the association's first instance on,
stored before this process started (the spool may be a few instances behind the index).
Another association of the same caller into the same pool at the same time would be counted
too; the record says how the count was found.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from server.accounts import audit
from server.accounts.clock import now
from server.context import ServerContext
from server.index.models import Instance, Patient, Series, Study
from server.single_instance import lock_fd

log = logging.getLogger("lucent.dimse")

FOLDER = "audit-spool"
#: an association's pending record is rewritten at most this often (plus at its first one)
REFRESH_SECONDS = 2.0
#: how often the spool thread retries records that could not be written
RETRY_SECONDS = 5.0
CUT_OFF = "association cut off: server stopped before the association ended"


def _reason(exc: BaseException) -> str:
    """One line about a failed write (a database error's first line, no traceback)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0][:200]}" if text else type(inner).__name__


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


class Spool:
    """This worker's spool: pending records of its associations, and the retry of records
    the database did not take (its own, and those of workers that are gone)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.folder = ctx.settings.data_dir / FOLDER
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        #: recovered associations count what the index holds up to here: this process
        #: started after their owner had ended
        self.started = now()
        self._seq = itertools.count(1)
        fd = os.open(self.folder / f"{self.owner}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        lock_fd(fd)
        self._lock_fd = fd
        #: own files holding finished records the database did not take
        self._failed: set[Path] = set()
        self._failed_lock = threading.Lock()
        self._sweeping = threading.Lock()  # one writer of spooled records at a time
        self._down = False  # one log line per outage
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- files

    def new_path(self) -> Path:
        return self.folder / f"{self.owner}.{next(self._seq)}.json"

    def save(self, path: Path, state: dict[str, Any], durable: bool = True) -> None:
        """Atomically (temporary file, rename). ``durable``: fsync, and the folder synced
        when the file is new, so a power cut cannot lose it either. The pending state of an
        association in progress is not: a kill -9 leaves the page cache, and the first
        instance of every association (one per association for many modalities) paid
        ~0.5 ms of fsyncs for it; a finished record the database did not take is."""
        new = not path.exists()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(state, separators=(",", ":")).encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if new and durable:
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def save_quietly(self, path: Path, state: dict[str, Any], durable: bool = True) -> bool:
        try:
            self.save(path, state, durable)
        except OSError as exc:
            log.warning("could not write the audit spool file %s: %s", path.name, exc)
            return False
        return True

    @staticmethod
    def discard(path: Path | None) -> None:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    # ----------------------------------------------------------------- writing

    def record(self, entries: list[audit.Entry], path: Path | None = None) -> bool:
        """Write ``entries`` to the trail; when the database does not take them they are
        spooled (at ``path``, replacing an association's pending state) and retried."""
        try:
            audit.record(self.ctx.WriteSession, *entries)
        except Exception as exc:  # noqa: BLE001 - auditing must never break a DICOM operation
            target = path or self.new_path()
            state = {"ended": _stamp(now()), "entries": [asdict(e) for e in entries]}
            kept = self.save_quietly(target, state)
            if kept:
                with self._failed_lock:
                    self._failed.add(target)
            self._failed_once(exc, kept)
            return False
        self.discard(path)
        self._written_again()
        if self._failed:
            self._wake.set()
        return True

    def _failed_once(self, exc: BaseException, kept: bool) -> None:
        if self._down:
            return
        self._down = True
        where = f"kept in {self.folder}, written when it answers again" if kept else "LOST"
        log.error("could not write DICOM audit record(s) (%s): %s", _reason(exc), where)

    def _written_again(self) -> None:
        if self._down:
            self._down = False
            log.warning("DICOM audit records are written again")

    # ----------------------------------------------------------------- retry

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-spool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the thread must keep retrying
                log.exception("audit spool sweep failed")
            self._wake.wait(RETRY_SECONDS)
            self._wake.clear()

    def sweep(self) -> None:
        """Write what this process could not write, and what workers that are gone left."""
        with self._sweeping:
            with self._failed_lock:
                failed = sorted(self._failed)
            for path in failed:
                if not self._write_file(path, self._load(path), cut_off=False):
                    return
                with self._failed_lock:
                    self._failed.discard(path)
            owners = {p.name.split(".", 1)[0] for p in self.folder.iterdir()}
            for owner in sorted(owners - {self.owner}):
                if not self._recover_owner(owner):
                    return

    @staticmethod
    def _load(path: Path) -> dict[str, Any] | None:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("unreadable audit spool file %s left in place: %s", path.name, exc)
            return None
        return state if isinstance(state, dict) else None

    def _recover_owner(self, owner: str) -> bool:
        """False when the database did not take the records (retry later)."""
        lock = self.folder / f"{owner}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True
        try:
            try:
                lock_fd(fd)
            except OSError:
                return True  # that worker is alive: its associations are its own
            for tmp in self.folder.glob(f"{owner}.*.tmp"):
                self.discard(tmp)
            for path in sorted(self.folder.glob(f"{owner}.*.json")):
                state = self._load(path)
                if state is None and path.exists():
                    continue
                if not self._write_file(path, state, cut_off=True):
                    return False
            if not any(self.folder.glob(f"{owner}.*.json")):
                self.discard(lock)
            return True
        finally:
            os.close(fd)

    def _write_file(self, path: Path, state: dict[str, Any] | None, *, cut_off: bool) -> bool:
        if state is None:
            return True
        try:
            if "entries" in state:
                entries = [audit.Entry(**e) for e in state["entries"]]
                late = f" (written late: the index database was unavailable at {state['ended']})"
                for entry in entries:
                    entry.detail += late
                audit.record(self.ctx.WriteSession, *entries)
            elif cut_off:
                with audit.chained(self.ctx.WriteSession) as db:
                    for entry in self._cut_off_entries(db, state):
                        audit.append(db, entry)
            else:
                return True
        except Exception as exc:  # noqa: BLE001
            self._failed_once(exc, True)
            return False
        self._written_again()
        self.discard(path)
        if cut_off:
            log.warning("wrote the audit record of an association that was cut off (%s)", path.name)
        return True

    def _cut_off_entries(self, db: DbSession, state: dict[str, Any]) -> list[audit.Entry]:
        """The record of an association whose worker ended before it did: the instances
        the index holds for it (``Spool`` docstring), and what the spool knew."""
        caller, address, pool = str(state["calling_ae"]), str(state["address"]), str(state["pool"])
        began = datetime.fromisoformat(state["started"])
        spooled: dict[str, list[Any]] = state.get("studies", {})
        query = (
            select(Study.study_uid, Patient.patient_id, func.count(Instance.id))
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(
                func.trim(Instance.source_ae) == caller.strip(),
                Instance.pool == pool,
                Instance.received_at <= self.started,
            )
            .group_by(Study.study_uid, Patient.patient_id)
        )
        first_id = None
        if state.get("first_uid"):
            first_id = db.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == state["first_uid"])
            )
        if first_id is not None:  # a primary key range: the rows stored since then
            query = query.where(Instance.id >= first_id)
        elif spooled:
            query = query.where(
                Study.study_uid.in_(list(spooled)),
                Instance.received_at >= began - timedelta(seconds=1),
            )
        else:
            query = query.where(Instance.id < 0)
        held = {uid: (patient, int(n)) for uid, patient, n in db.execute(query)}
        counted = sum(int(n) for _, n in spooled.values())
        in_index = sum(n for _, n in held.values())
        missing = sum(max(int(n) - held.get(uid, ("", 0))[1], 0) for uid, (_, n) in spooled.items())
        note = f"; {CUT_OFF} (it began {_stamp(began)}); counted from the index"
        if in_index > counted - missing:
            note += (
                f": {in_index - (counted - missing)} stored after the spool's last update "
                f"({state.get('updated', '?')})"
            )
        if missing:
            note += f"; {missing} counted on the association are not in the index"
        entries = [
            audit.Entry(
                "receive",
                audit.MINOR_FAILURE,
                caller,
                address,
                [{"type": "study", "id": uid}, {"type": "patient", "id": patient}],
                f"{n} instance(s) received into pool {pool}{note}",
            )
            for uid, (patient, n) in held.items()
        ]
        if not entries and counted:
            entries.append(
                audit.Entry(
                    "receive",
                    audit.MINOR_FAILURE,
                    caller,
                    address,
                    [{"type": "pool", "id": pool}],
                    f"0 instance(s) received into pool {pool}{note}",
                )
            )
        refusals: dict[str, int] = state.get("refusals", {})
        if state.get("refused"):
            entries.append(
                audit.Entry(
                    "receive",
                    audit.MINOR_FAILURE,
                    caller,
                    address,
                    [{"type": "pool", "id": pool}],
                    f"{state['refused']} instance(s) refused: "
                    + "; ".join(f"{n} {kind}" for kind, n in refusals.items())
                    + f"; {CUT_OFF} (it began {_stamp(began)})",
                )
            )
        return entries


_current: Spool | None = None


def install(ctx: ServerContext) -> Spool | None:
    """This process's spool (a DICOM worker's), with its retry thread running; None when
    the data folder cannot hold one (records are then written as before, or lost)."""
    global _current
    try:
        spool = Spool(ctx)
    except OSError as exc:
        log.error("no DICOM audit spool in %s: %s", ctx.settings.data_dir / FOLDER, exc)
        return None
    spool.start()
    _current = spool
    return spool


def current() -> Spool | None:
    return _current


def uninstall(spool: Spool | None) -> None:
    global _current
    if spool is None:
        return
    spool.stop()
    if _current is spool:
        _current = None


def pending_state(
    calling_ae: str,
    address: str,
    pool: str,
    started: datetime,
    first_uid: str,
    studies: dict[str, tuple[str, int]],
    refused: int,
    refusals: dict[str, int],
) -> dict[str, Any]:
    """The spooled state of an association still in progress."""
    return {
        "calling_ae": calling_ae,
        "address": address,
        "pool": pool,
        "started": started.isoformat(),
        "updated": _stamp(now()),
        "first_uid": first_uid,
        "studies": {uid: [patient, n] for uid, (patient, n) in studies.items()},
        "refused": refused,
        "refusals": dict(refusals),
    }
