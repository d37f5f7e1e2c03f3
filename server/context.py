"""ServerContext: owns index, archive and keys; ``store()`` is the ONE ingest path.

C-STORE, STOW-RS and imports all call ``store()``. Order of a store (Conformance 4.1.3.1,
4.1.3.2): free-space check → header walk → the pixel object is sealed and written while the
data set is parsed and validated → the metadata object (which alone makes the pair an
instance recovery would index) is written only once the instance is accepted → both durable
→ index commit → status. A 0000 status therefore always means both the blobs and the index
row survive a kill -9, and a refused instance leaves nothing (its pixel object is removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from lucent.dicom import instance as dicom_instance
from lucent.net import status
from server.accounts import audit
from server.accounts.quotas import QuotaGuard
from server.archive import crypto, recovery
from server.archive.incoming import IncomingObjects
from server.archive.storage import RESERVED_KINDS, FileSystemStorage, new_key
from server.config import Settings
from server.index import db
from server.index.known_series import KnownSeriesWriter
from server.index.models import Instance, Series, Study
from server.index.outage_log import OutageLog
from server.index.records import (
    InstanceRecord,
    Outcome,
    ParentCache,
    display_attributes,
    record_instance,
    record_placeholder,
)

log = logging.getLogger("lucent.store")


@dataclass(frozen=True)
class StoreResult:
    status: int
    reason: str = ""
    sop_instance_uid: str = ""
    action: str = ""
    study_uid: str = ""
    patient_id: str = ""
    #: a placeholder row records the refusal (server.index.records.record_placeholder);
    #: refusals without one (A700 low disk, quota, duplicate rejected) left nothing
    placeholder: bool = False

    @property
    def ok(self) -> bool:
        return self.status == status.SUCCESS


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class _PixelWrite:
    """A pixel object being sealed and written ahead of the parse; ``durable`` waits."""

    base: str
    span: tuple[int, int]
    durable: Callable[[], None]


class ArchiveReadError(Exception):
    """An indexed object could not be read back (missing blob or failed authentication).

    Its text names the instance, the object (metadata or pixel) and the reason, and never
    a server path: it is what API callers are told (outside probe 48: the 500 detail
    carried "[Errno 2] No such file or directory: '/…/archive/f4/f4b1….p'"). The path is
    in the server log line ``ServerContext`` writes for it."""

    def __init__(self, sop_instance_uid: str, kind: str, reason: str, key: str = "") -> None:
        where = f"{kind} object " if kind else ""
        super().__init__(f"instance {sop_instance_uid}: {where}{reason}")
        self.sop_instance_uid = sop_instance_uid
        #: "metadata" or "pixel"; "" when no object was read (an instance without pixels)
        self.kind = kind
        self.reason = reason
        #: the archive object's storage key: set when the object is damaged or missing
        self.key = key


def _unreadable_reason(exc: Exception) -> str:
    """Why an object could not be read, in words without a server path."""
    if isinstance(exc, FileNotFoundError):
        return "is missing from the archive (deleted or lost)"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    text = str(exc).removeprefix("archive object ")
    if text == "failed authentication":
        return "failed authentication (damaged or altered since it was archived)"
    return text if text.startswith(("is ", "sealed ")) else f"is damaged ({text})"


@dataclass
class Requestor:
    """Who the reads of this request or association are for, for the Security Alert an
    unreadable archive object raises: the API's middleware sets one per request (the
    address) and authentication fills in the user; mutable, so that a name filled in later
    is seen by reads in copies of the context (FastAPI runs sync routes in threads)."""

    user: str = ""
    address: str = ""


#: The requestor of the reads on this context (None: the server's own work, or unknown).
requestor: ContextVar[Requestor | None] = ContextVar("lucent_requestor", default=None)


class DamageReports:
    """How often an unreadable archive object is reported (PS3.15 A.5.3.11 Security Alert
    and one ERROR log line): once per object per ``REPEAT_S`` seconds and process, and at
    most ``BURST`` objects per ``REPEAT_S`` in all. A C-GET, C-MOVE or viewer retrying a
    study of 500 damaged objects must not write 500 records and lines each time, for
    ever; the reads not reported one by one are counted and the count goes into the next
    report. Every failed read still answers its caller with the reason."""

    REPEAT_S = 600.0
    BURST = 50

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._window_start = -1e18
        self._in_window = 0
        self._held = 0

    def admit(self, key: str) -> tuple[bool, int, bool]:
        """(report this read?, failed reads not reported since the last report, is this
        the last report the burst limit allows in this window?)"""
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.REPEAT_S:
                self._window_start, self._in_window = now, 0
                self._last = {k: t for k, t in self._last.items() if now - t < self.REPEAT_S}
            if now - self._last.get(key, -1e18) < self.REPEAT_S or self._in_window >= self.BURST:
                self._held += 1
                return False, 0, False
            self._last[key] = now
            self._in_window += 1
            held, self._held = self._held, 0
            return True, held, self._in_window == self.BURST


class StartupError(Exception):
    """The data directory cannot be served (unwritable archive, damaged index): say why."""


class ServerContext:
    """Per-process handle on the archive and the index; safe to use from many threads."""

    def __init__(self, settings: Settings, *, migrate: bool = False) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = db.make_engine(settings.database_url)
        if migrate:
            try:
                db.migrate(self.engine)
            except DBAPIError as exc:
                self.engine.dispose()
                raise StartupError(self._index_failure(exc, "opened")) from exc
        self.Session = db.sessions(self.engine)
        self.WriteSession = db.writer_sessions(self.engine)
        # Ingest rows commit without a WAL fsync: their blobs are durable and self-describing,
        # so start-up recovery rebuilds any row a power loss took (server.archive.recovery).
        self.IngestSession = db.ingest_sessions(self.engine)
        self._known_series = KnownSeriesWriter(db.ingest_engine(self.engine))
        self._commit_lock = db.commit_lock(self.engine)
        self._remote_index = self.engine.dialect.name != "sqlite"
        self.storage = FileSystemStorage(settings.archive_dir, sync=settings.archive.sync_writes)
        self._parents = ParentCache()
        self._disk_full_logged = -1e9
        # the wire status of an instance refused in an outage, named in the log as sent
        self._outage = OutageLog(log, f"refusing instances (0x{status.PROCESSING_FAILURE:04X})")
        self.keys = crypto.KeyRing.load_or_create(
            settings.key_file,
            archive_in_use=not settings.key_file.exists() and self.storage.has_objects(),
        )
        self._check_key_location()
        # accounts: quota per user/group/pool, admission shared by all processes (issue 4)
        self.quotas = QuotaGuard(self.WriteSession, self.Session, settings.data_dir)
        # the audit trail's key and head anchor, outside the database (every process)
        audit.configure(self.WriteSession, settings.data_dir)
        self.damage_reports = DamageReports()

    def _check_key_location(self) -> None:
        archive = self.settings.archive_dir.resolve()
        key = self.settings.key_file.resolve()
        if archive in key.parents:
            raise crypto.KeyError_(
                f"the key file {key} must not live inside the archive folder {archive}"
            )

    def warm_up(self, pool: str) -> None:
        """Pay one-time costs before the first association, not during it: SQLAlchemy
        compiles each statement on its first use, and the first store of a fresh worker
        took ~35 ms, ~30 of them compiling (quota check, the ORM upserts of a new series,
        the fast insert). A synthetic instance goes through the index path in a transaction
        that is rolled back: nothing is written. The archive starts preparing its stock of
        empty files (``archive.prepared_objects``)."""
        self.storage.prepare(self.settings.archive.prepared_objects)
        with self.quotas.admit(pool, None, 0):
            pass
        crypto.seal(self.keys, b"", b"")
        self._index_probe(pool)

    def preflight(self) -> None:
        """Refuse to start on an archive or index that cannot take data: with a read-only
        archive or a damaged index the server announced "running", answered every C-STORE
        with C0FF and logged a failure twice a second for ever (outside probe)."""
        probe = self.settings.archive_dir / ".write-check"
        try:
            self.settings.archive_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"lucent")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise StartupError(
                f"the archive folder {self.settings.archive_dir} cannot be written: {exc}"
            ) from exc
        try:
            if self.engine.dialect.name == "sqlite":
                # pages the probe below does not touch can be damaged too: the server
                # announced "running" on such an index and failed every store (outside
                # probe). quick_check reads every page once: seconds for a large index.
                with self.engine.connect() as conn:
                    verdict = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
                if verdict != "ok":
                    raise StartupError(
                        f"the index database is damaged ({verdict}): restore it from a "
                        "backup, or move it aside and run `lucent-server rebuild-index` to "
                        "rebuild it from the archive"
                    )
            self._index_probe(self.settings.pools[0].name)
            self._check_key_ring()
        except DBAPIError as exc:
            raise StartupError(self._index_failure(exc, "used")) from exc

    def _check_key_ring(self, sample: int = 16) -> None:
        """Refuse to start when archived objects the index references are sealed with keys
        the key file lacks: a valid key file of another install (a wrong backup restored)
        started silently, every archived instance answered 500 and new instances were
        sealed under keys that the right file lacks in turn (outside probe 20). The oldest
        and newest objects are checked: rotation keeps every old key in the file, so a
        right file holds all of them."""
        with self.Session() as session:
            keys = [
                *session.scalars(select(Instance.meta_key).order_by(Instance.id).limit(sample)),
                *session.scalars(
                    select(Instance.meta_key).order_by(Instance.id.desc()).limit(sample)
                ),
            ]
        missing: dict[str, int] = {}
        for key in dict.fromkeys(keys):
            try:
                with self.storage.open(key) as f:
                    key_id = crypto.header_key_id(f.read(crypto.HEADER_MAX))
            except (OSError, crypto.IntegrityError):
                continue  # a missing or damaged object is reported where it is read
            if key_id not in self.keys.keys:
                missing[key_id] = missing.get(key_id, 0) + 1
        if missing:
            checked = len(dict.fromkeys(keys))
            raise StartupError(
                f"the key file {self.settings.key_file} lacks the master key(s) "
                f"{', '.join(sorted(missing))} that archived objects are sealed with "
                f"({sum(missing.values())} of {checked} checked): it belongs to another "
                "archive or is an old copy. Restore the right key file from your backup. "
                "Nothing was changed."
            )

    def _index_failure(self, exc: DBAPIError, verb: str) -> str:
        """Why the index cannot be opened or used, and what to do. A connection problem
        (credentials, network, a missing database) is not a damaged index: advising a
        restore from backup there was dangerous (probe 12)."""
        url = self.settings.database_url
        reason = db.unavailable(exc)
        if reason is not None and self.engine.dialect.name != "sqlite":
            return db.connection_advice(url, reason)
        detail = " ".join(str(exc.orig).split())
        if self.engine.dialect.name != "sqlite":
            return (
                f"the index database cannot be {verb} ({detail}): check the PostgreSQL server "
                "log and the rights of the database user named in [index] database_url"
            )
        return (
            f"the index database cannot be {verb} ({detail}): restore it from a backup, or "
            "move it aside and run `lucent-server rebuild-index` to rebuild it from the archive"
        )

    def _index_probe(self, pool: str) -> None:
        """One synthetic instance through the index path, rolled back: nothing is written."""
        ds = Dataset()
        ds.PatientID, ds.PatientName = "~warm-up", "~warm-up"
        ds.StudyInstanceUID = ds.SeriesInstanceUID = ds.SOPInstanceUID = "2.25.0"
        ds.SOPClassUID, ds.Modality, ds.InstanceNumber = "1.2.840.10008.5.1.4.1.1.7", "OT", 1
        rec = InstanceRecord(
            dataset=ds,
            transfer_syntax="1.2.840.10008.1.2.1",
            lossy=False,
            meta_key="",
            pixel_key=None,
            pixel_offset=0,
            size=0,
            sha256="0" * 64,
            pool=pool,
            source_ae="",
            attrs={},
        )
        with self._commit_lock, self.IngestSession() as session:
            session.begin()
            try:
                outcome = record_instance(session, rec, self.settings.archive.duplicate_policy)
                session.flush()
                self._known_series.prepare(rec, outcome.series_pk or 0)
            finally:
                session.rollback()

    def close(self) -> None:
        self.storage.close()
        self._known_series.close()
        self.engine.dispose()
        self._commit_lock.close()

    # ------------------------------------------------------------------ ingest
    def store(
        self,
        data: bytes,
        *,
        pool: str,
        source: str = "",
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        owner: int | None = None,
        sha256: str | None = None,
        incoming: IncomingObjects | None = None,
    ) -> StoreResult:
        """Validate, seal and index one Part-10 byte string; return the DICOM status.

        ``owner`` is the user storing through the API (STOW, imports): quotas of that user,
        their groups and the pool are checked before anything is written (issue 4, A701).
        ``sha256``: the hex digest of ``data`` when the caller hashed it while receiving (the
        Store SCP does, between PDUs), so it is not computed again while the sender waits.
        ``incoming``: the objects the Store SCP wrote while the instance arrived
        (``incoming_objects``); adopted when they fit, removed otherwise.
        """
        try:
            with self.quotas.admit(pool, owner, len(data), expected_sop_instance) as refusal:
                if refusal is not None:
                    return StoreResult(status.OUT_OF_RESOURCES_QUOTA, refusal)
                result = self._store(
                    data,
                    pool,
                    source,
                    expected_sop_class,
                    expected_sop_instance,
                    owner,
                    sha256,
                    incoming,
                )
                if result.ok and owner is not None:
                    self.quotas.record_owner(result.sop_instance_uid, owner, len(data))
                if result.action:  # the index answered: an outage (if any) is over
                    self._outage.available()
                return result
        except Exception as exc:  # never let one instance take the listener down
            reason = db.unavailable(exc)
            if reason is None:
                log.exception("store failed")
                return StoreResult(status.PROCESSING_FAILURE, f"internal error: {exc}")
            # one line per outage (and a reminder), not a traceback per instance: the
            # sender gets C0FF (Conformance 4.2.3.6, PS3.4 B.2.3), the log says the same
            self._outage.unavailable(reason)
            return StoreResult(status.PROCESSING_FAILURE, f"index database unavailable: {reason}")
        finally:
            if incoming is not None and not incoming.claimed:
                incoming.abandon()

    def incoming_objects(self, dataset_start: int, transfer_syntax: str) -> IncomingObjects | None:
        """Objects to write an instance into while it arrives (server.archive.incoming);
        None when the archive disk is near its floor (the normal path refuses with A700)."""
        floor = self.settings.archive.min_free_mb * 1024 * 1024
        if self.storage.free_bytes() < floor + (64 << 20):
            return None
        return IncomingObjects(
            self.keys, self.storage, dataset_start=dataset_start, transfer_syntax=transfer_syntax
        )

    def _store(
        self,
        data: bytes,
        pool: str,
        source: str,
        expected_sop_class: str | None,
        expected_sop_instance: str | None,
        owner: int | None = None,
        sha256: str | None = None,
        incoming: IncomingObjects | None = None,
    ) -> StoreResult:
        min_free = self.settings.archive.min_free_mb * 1024 * 1024
        # what the instance's pixel object already took while it arrived is not counted twice
        free = self.storage.free_bytes() + (incoming.written if incoming is not None else 0)
        if free - 2 * len(data) < min_free:
            reason = f"archive disk has less than {self.settings.archive.min_free_mb} MB free"
            if time.monotonic() - self._disk_full_logged > 60:
                # IT must see that the archive refuses data, not only the sender (A700)
                self._disk_full_logged = time.monotonic()
                log.error("%s: refusing instances with A700 until space is freed", reason)
            return StoreResult(status.OUT_OF_RESOURCES, reason)
        framed = dicom_instance.frame(
            data, max_inflated=self.settings.archive.max_inflated_mb * 1024 * 1024
        )
        if isinstance(framed, dicom_instance.Refusal):
            return self._refuse(framed, pool, source, expected_sop_class, expected_sop_instance)
        # The pixel object (nearly all of the bytes) is sealed and flushed while the data set
        # is parsed and validated: the walk's span is a hint, checked against the parse below.
        early: _PixelWrite | None = None
        hint = framed.pixel_hint
        if (
            incoming is not None
            and owner is None
            and framed.data is data
            and incoming.fits(len(data), hint)
        ):
            assert incoming.base is not None
            incoming.claimed = True
            early = _PixelWrite(incoming.base, incoming.span, incoming.durable)
        elif hint is not None and hint[1] > hint[0]:
            early = self._start_pixels(framed.data, hint)
        parsed = dicom_instance.parse_framed(framed, expected_sop_class, expected_sop_instance)
        if isinstance(parsed, dicom_instance.Refusal):
            if early is not None:
                self._abandon(early)
            return self._refuse(parsed, pool, source, expected_sop_class, expected_sop_instance)
        if early is not None and early.span != (parsed.pixel_start, parsed.pixel_end):
            log.info("pixel span hint %s differs from the parse: written again", early.span)
            self._abandon(early)
            early = None
        if parsed.file_bytes is not data:  # inflated: the stored bytes are not those hashed
            sha256 = None
        return self._archive(parsed, pool, source, owner, early, sha256)

    def _refuse(
        self,
        refusal: dicom_instance.Refusal,
        pool: str,
        source: str,
        expected_sop_class: str | None,
        expected_sop_instance: str | None,
    ) -> StoreResult:
        # File the placeholder under what the C-STORE request said when the data set itself
        # lacks (or garbles) its identity.
        ids = dict(refusal.ids)
        if expected_sop_instance and "SOPInstanceUID" not in ids:
            ids["SOPInstanceUID"] = expected_sop_instance
        if expected_sop_class and "SOPClassUID" not in ids:
            ids["SOPClassUID"] = expected_sop_class
        refusal = dicom_instance.Refusal(refusal.status, refusal.reason, ids)
        written = self._placeholder(refusal, pool, source)
        sop_uid = ids.get("SOPInstanceUID", "")
        return StoreResult(refusal.status, refusal.reason, sop_uid, placeholder=written)

    def _start_pixels(self, raw: bytes, span: tuple[int, int]) -> _PixelWrite:
        """Seal and write the Pixel Data value into a prepared object (see
        server.archive.storage); without its metadata object it is never indexed, and
        recovery removes it after a crash."""
        base = self.storage.reserve()
        start, end = span
        pixels = memoryview(raw)[start:end]
        durable = self.storage.start_put_all(
            [(new_key("p", base), partial(crypto.seal, self.keys, pixels))], reserved=True
        )
        return _PixelWrite(base, span, durable)

    def _abandon(self, write: _PixelWrite) -> None:
        """Remove an instance's objects once their writes are over (refused, or failed)."""
        with contextlib.suppress(Exception):
            write.durable()
        for kind in RESERVED_KINDS:
            self.storage.delete(new_key(kind, write.base))

    def _archive(
        self,
        parsed: dicom_instance.Parsed,
        pool: str,
        source: str,
        owner: int | None,
        early: _PixelWrite | None,
        sha256: str | None = None,
    ) -> StoreResult:
        raw = parsed.file_bytes
        start, end = parsed.pixel_start, parsed.pixel_end
        if end > start:
            pixel_write = early or self._start_pixels(raw, (start, end))
            base, wait_pixels = pixel_write.base, pixel_write.durable
        else:  # the rare objects without pixels are new files (not prepared ones)
            pixel_write, base, wait_pixels = None, secrets.token_hex(16), _nothing
        meta_key = new_key("m", base)
        pixel_key = new_key("p", base) if pixel_write else None
        label = recovery.Label(pool, source, start, pixel_key is not None, owner).encode()
        # The small metadata object is written on this thread once the hash and the index
        # values are done: by then the pixel write has had its head start, and one thread
        # hand-over less per instance is CPU (futex wake-ups) saved with many associations.
        ds = parsed.dataset
        try:
            try:
                digest = sha256 or _sha256_hex(raw)
                attrs = display_attributes(ds)
                meta = crypto.seal(self.keys, raw[:start] + raw[end:], label)
                self.storage.put_here(meta_key, meta, reserved=pixel_write is not None)
            finally:
                wait_pixels()
        except BaseException:
            if pixel_write is not None:
                self._abandon(pixel_write)
            else:
                self.storage.delete(meta_key)
            raise
        rec = InstanceRecord(
            dataset=ds,
            transfer_syntax=parsed.transfer_syntax,
            lossy=parsed.lossy,
            meta_key=meta_key,
            pixel_key=pixel_key,
            pixel_offset=start,
            size=len(raw),
            sha256=digest,
            pool=pool,
            source_ae=source,
            attrs=attrs,
        )
        try:
            outcome = self._commit(rec)
        except BaseException as exc:
            # Not answered 0000, so nothing of it may stay: recovery would index these
            # objects at the next start (probe 12: whatever the commit raised, e.g. a
            # connection error on PostgreSQL from the known-series shortcut). But a
            # connection lost during COMMIT leaves the outcome unknown: the row may be
            # there, and deleting its objects would lose an archived instance (a resend
            # under "keep" would then be answered "kept"). Those objects stay, marked
            # doubtful: recovery removes them unless a row references them.
            if self._remote_index and isinstance(exc, Exception) and db.unavailable(exc):
                with contextlib.suppress(OSError):
                    self.storage.note_doubtful(base)
            else:
                for key in (meta_key, pixel_key):
                    if key:
                        with contextlib.suppress(Exception):
                            self.storage.delete(key)
            raise
        for key in outcome.obsolete_keys:
            self.storage.delete(key)
        sop_uid = str(ds.SOPInstanceUID)
        if outcome.action == "conflict":
            ids = dicom_instance.read_ids(ds)
            written = self._placeholder(
                dicom_instance.Refusal(status.UID_CONFLICT, outcome.reason, ids), pool, source
            )
            return StoreResult(
                status.UID_CONFLICT, outcome.reason, sop_uid, outcome.action, placeholder=written
            )
        if outcome.action == "rejected-duplicate":
            return StoreResult(
                status.DUPLICATE_REJECTED,
                "an instance with this SOP Instance UID is already archived",
                sop_uid,
                outcome.action,
            )
        return StoreResult(
            status.SUCCESS,
            "",
            sop_uid,
            outcome.action,
            study_uid=str(ds.StudyInstanceUID),
            patient_id=str(ds.get("PatientID", "") or ""),
        )

    def _commit(self, rec: InstanceRecord) -> Outcome:
        """Commit the index row; retry races between workers creating the same parents."""
        series_uid = str(rec.dataset.SeriesInstanceUID)
        series_pk = self._parents.lookup(rec.dataset, rec.pool)
        if series_pk is not None:
            with self._commit_lock:
                if self._known_series.write(rec, series_pk):
                    return Outcome("stored", [])
                if self.settings.archive.duplicate_policy == "replace":
                    obsolete = self._known_series.replace(rec, series_pk)
                    if obsolete is not None:
                        return Outcome("replaced", obsolete, series_pk)
            self._parents.forget(series_uid)  # duplicate or vanished series: full path
        for attempt in range(8):
            try:
                with self._commit_lock, self.IngestSession() as session, session.begin():
                    outcome = record_instance(
                        session,
                        rec,
                        self.settings.archive.duplicate_policy,
                        refuse_conflicts=self.settings.archive.uid_conflict == "refuse",
                    )
                if outcome.series_pk is not None:
                    self._parents.remember(rec.dataset, outcome.series_pk, outcome.pool)
                return outcome
            except (IntegrityError, OperationalError, StaleDataError) as exc:
                # StaleDataError: the series or study row loaded went while this waited for
                # its lock (a study deleted meanwhile, retention.delete_study): a fresh
                # try files the instance into a new study.
                if attempt == 7 or (self._remote_index and db.unavailable(exc) is not None):
                    raise  # a server that is down or frozen: retrying only makes the caller wait
                log.debug("index commit retry %d: %s", attempt + 1, exc)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _placeholder(self, refusal: dicom_instance.Refusal, pool: str, source: str) -> bool:
        """Record a refused instance as a placeholder; whether one was written."""
        log.warning("refused instance from %s: %s (0x%04X)", source, refusal.reason, refusal.status)
        for attempt in range(5):
            try:
                with self.WriteSession() as session, session.begin():
                    record_placeholder(
                        session,
                        ds=None,
                        ids=refusal.ids,
                        status=refusal.status,
                        reason=refusal.reason,
                        pool=pool,
                        source_ae=source,
                    )
                return True
            except (IntegrityError, OperationalError):
                if attempt == 4:
                    log.exception("could not record placeholder")
                time.sleep(0.01 * (attempt + 1))
        return False

    # ------------------------------------------------------------------ reading
    def instance_bytes(self, inst: Instance) -> bytes:
        """The decrypted Part-10 bytes of an archived instance, reassembled."""
        return self._read_current(inst, self._instance_bytes)

    def metadata_bytes(self, inst: Instance) -> bytes:
        """The Part-10 bytes of an instance with an empty Pixel Data value: only the small
        metadata object is read and decrypted (WADO-RS metadata, QIDO includefield read a
        whole study's worth of them). Its Pixel Data element keeps its tag and VR; a native
        value's length becomes 0, an encapsulated one is left as an empty sequence."""
        return self._read_current(inst, self._metadata_bytes)

    def pixel_bytes(self, inst: Instance) -> bytes:
        """The decrypted Pixel Data value alone (its own sealed object; no metadata read)."""
        return self._read_current(inst, self._pixel_bytes)

    def _read_current(self, inst: Instance, read: Callable[[Instance], bytes]) -> bytes:
        """``read(inst)``, once more from the instance's current row when its object is gone.

        A re-sent instance (duplicate policy "replace") removes the superseded objects just
        after its commit, while a reader may still hold the old row: WADO-RS, the volume
        route and C-GET/C-MOVE sub-operations failed with 500 or a failed sub-operation for
        an instance that never left the archive (outside probe 31).

        An object the current row still names that is missing or fails authentication is
        damage (or tampering): reported here, the one place every reader (API, DICOMweb,
        share links, C-GET/C-MOVE, sends, perfusion) goes through (``_report_unreadable``).
        One whose instance was deleted meanwhile is not."""
        try:
            return read(inst)
        except ArchiveReadError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                self._report_unreadable(inst, exc)
                raise
            current = self.find_instance(inst.sop_instance_uid)
            if current is None:
                raise  # deleted while it was being read: no damage
            if (current.meta_key, current.pixel_key) == (inst.meta_key, inst.pixel_key):
                self._report_unreadable(inst, exc)
                raise
            try:
                return read(current)
            except ArchiveReadError as again:
                self._report_unreadable(current, again)
                raise

    def _report_unreadable(self, inst: Instance, exc: ArchiveReadError) -> None:
        """One ERROR line (instance, object, reason, where it lives) and one Security Alert
        (PS3.15 A.5.3.11, EventID 110113, outcome 8 serious failure) naming the instance
        and the reason. A damaged, altered or deleted archive object was audited as a
        successful access only (the access record is written when the access is
        authorised, before the read) and not logged at all (outside probe 48): a clinic's
        IT could not see tampering or disk damage. How often: ``DamageReports``. Never
        raises: the reader answers its caller with the reason either way."""
        if not exc.key:
            return  # nothing was damaged (an instance without pixel data)
        report, held, last = self.damage_reports.admit(exc.key)
        if not report:
            return
        try:
            cause = exc.__cause__
            where = self.storage.location(exc.key)
            log.error(
                "archive object unreadable: instance %s, %s object %s (%s): %s",
                inst.sop_instance_uid,
                exc.kind,
                exc.key,
                where,
                f"{exc.reason}: {cause}" if cause is not None else exc.reason,
            )
            detail = (
                f"archive object unreadable: instance {inst.sop_instance_uid}, {exc.kind} "
                f"object {exc.key} {exc.reason}"
            )
            if held:
                detail += (
                    f"; {held} other failed read(s) of damaged objects since the last such "
                    "alert were not recorded one by one"
                )
            if last:
                repeat = int(DamageReports.REPEAT_S // 60)
                detail += (
                    f"; {DamageReports.BURST} damaged objects reported within {repeat} "
                    "minutes: further ones are counted into the next alert"
                )
            objects = [{"type": "instance", "id": inst.sop_instance_uid}]
            study = self._study_of(inst)
            if study:
                objects.insert(0, {"type": "study", "id": study})
            who = requestor.get() or Requestor()
            audit.record(
                self.WriteSession,
                audit.Entry(
                    "archive-damage",
                    audit.SERIOUS_FAILURE,
                    who.user,
                    who.address,
                    objects,
                    detail,
                ),
            )
        except Exception:  # reporting must never hide the read's own error
            log.exception("could not report the unreadable archive object %s", exc.key)

    def _study_of(self, inst: Instance) -> str:
        with self.Session() as session:
            found = session.scalars(
                select(Study.study_uid)
                .join(Series, Series.study_pk == Study.id)
                .where(Series.id == inst.series_pk)
            ).first()
        return found or ""

    def _open(self, inst: Instance, kind: str, key: str) -> bytes:
        """One sealed object of ``inst``, decrypted; ArchiveReadError when it is missing,
        unreadable or fails authentication."""
        try:
            return crypto.open_(self.keys, self.storage.get(key))
        except (OSError, crypto.IntegrityError) as exc:
            reason = _unreadable_reason(exc)
            raise ArchiveReadError(inst.sop_instance_uid, kind, reason, key) from exc

    def _instance_bytes(self, inst: Instance) -> bytes:
        meta = self._open(inst, "metadata", inst.meta_key)
        if not inst.pixel_key:
            return meta
        pixels = self._open(inst, "pixel", inst.pixel_key)
        start = inst.pixel_offset
        return meta[:start] + pixels + meta[start:]

    def _metadata_bytes(self, inst: Instance) -> bytes:
        meta = self._open(inst, "metadata", inst.meta_key)
        start = inst.pixel_offset
        if not inst.pixel_key or start < 4 or meta[start - 4 : start] == b"\xff\xff\xff\xff":
            return meta
        return meta[: start - 4] + b"\0\0\0\0" + meta[start:]

    def _pixel_bytes(self, inst: Instance) -> bytes:
        if not inst.pixel_key:
            raise ArchiveReadError(inst.sop_instance_uid, "", "has no pixel data")
        return self._open(inst, "pixel", inst.pixel_key)

    def find_instance(self, sop_uid: str) -> Instance | None:
        with self.Session() as session:
            return session.scalars(
                select(Instance).where(Instance.sop_instance_uid == sop_uid)
            ).first()

    def recover(self) -> recovery.Report:
        """Re-index or remove archive objects no index row references (start-up, and
        ``rebuild-index``): see ``server.archive.recovery``."""
        return recovery.recover(self)

    def archive_root(self) -> Path:
        return self.settings.archive_dir
