"""Storage quotas per user, group and pool (FAQ: "the storage space can be set arbitrarily per
account / group"); checked in ``ServerContext.store`` before anything is written.

A refusal is DICOM 0xA701 (Out of Resources, A700 range) on C-STORE and HTTP 507 on STOW-RS.
Data stored through the API by a user (STOW, imports) counts against that user and their
groups (``instance_owners``); everything in a pool counts against the pool's quota, which is
the one that applies to C-STORE from modalities. The Store SCP runs in several worker
processes, so admission is one atomic check-and-reserve across processes (``_Ledger``); the
reservation covers the instance until its index row is committed, so parallel stores in
any process cannot overshoot together.
"""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from server.index.account_models import GroupMember, InstanceOwner, Quota, UserGroup
from server.index.models import Instance, User


class _Ledger:
    """Quota reservations shared by every process of this server (the DICOM workers and the
    API): a small SQLite file in the data folder. ``BEGIN IMMEDIATE`` makes check-and-reserve
    one atomic step across processes; each row names its process, so a worker killed in the
    middle of a store leaves no reservation behind for longer than the next admission.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with closing(self._connect()) as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS reservations (token TEXT NOT NULL, kind TEXT NOT NULL,"
                " subject TEXT NOT NULL, size INTEGER NOT NULL, pid INTEGER NOT NULL,"
                " at REAL NOT NULL)"
            )
            con.execute("CREATE INDEX IF NOT EXISTS ix_subject ON reservations (kind, subject)")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def connection(self) -> sqlite3.Connection:
        """One connection per thread and process (never one inherited through fork)."""
        held = getattr(self._local, "held", None)
        if held is None or held[0] != os.getpid():
            held = (os.getpid(), self._connect())
            self._local.held = held
        return held[1]  # type: ignore[no-any-return]

    @staticmethod
    def purge_stale(con: sqlite3.Connection) -> None:
        """Drop reservations of processes that died and any older than an hour."""
        con.execute("DELETE FROM reservations WHERE at < ?", (time.time() - 3600,))
        for (pid,) in con.execute("SELECT DISTINCT pid FROM reservations").fetchall():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                con.execute("DELETE FROM reservations WHERE pid = ?", (pid,))
            except PermissionError:
                pass  # alive, someone else's


class QuotaGuard:
    """Admission control for all processes; usage is read from the index when a quota applies.

    A store is admitted only if, for every quota that applies, the bytes in the index plus
    the bytes reserved by stores still under way (in any process) plus its own size fit.
    Its reservation is released after its index row is committed, so it is never counted
    zero times in between — at worst twice, for a moment, which can only refuse, not admit.
    """

    def __init__(
        self, session_factory: Any, reader: Any = None, data_dir: Path | None = None
    ) -> None:
        self._sessions = session_factory
        self._reader = reader or session_factory
        self._ledger = _Ledger(data_dir / "quota-reservations.sqlite3") if data_dir else None
        self._marker = data_dir / "quotas.changed" if data_dir else None
        self._lock = threading.Lock()  # only without a data folder: one process, threads
        self._pending: dict[tuple[str, str], int] = {}
        self._any: tuple[object, bool] | None = None

    def _stamp(self) -> object:
        if self._marker is None:
            return int(time.monotonic() / 2.0)  # no shared marker: look again every 2 s
        try:
            st = self._marker.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _quotas_exist(self) -> bool:
        """Cheap per store: the index is asked again only when a quota was changed (by any
        process: ``forget_cache`` replaces the marker file, every process stats it)."""
        stamp = self._stamp()
        if self._any is not None and self._any[0] == stamp:
            return self._any[1]
        with self._reader() as db:
            known = db.scalars(select(Quota.id).limit(1)).first() is not None
        self._any = (stamp, known)
        return known

    def forget_cache(self) -> None:
        """Call after quotas change: every process re-reads them at its next store."""
        self._any = None
        if self._marker is not None:
            # one name per call: two API threads changing quotas at once shared the
            # pid-named file and the second rename failed with a 500 (probe 31 test)
            tmp = self._marker.with_name(f"{self._marker.name}.{secrets.token_hex(8)}.tmp")
            tmp.write_text(secrets.token_hex(8))
            os.replace(tmp, self._marker)  # a new inode: no mtime-resolution blind spot

    def _subjects(
        self, db: Any, pool: str, owner: int | None, sop_uid: str | None = None
    ) -> list[tuple[str, str, int, int]]:
        """(kind, subject, limit, used) for every quota that applies to this store.

        ``used`` leaves out the copy a resend of ``sop_uid`` replaces (it goes when the new
        one is indexed), so only the net change is admitted: a resend at a nearly full
        quota was refused though it would have freed as much as it took."""
        out: list[tuple[str, str, int, int]] = []
        rows = {(q.kind, q.subject): q.limit_bytes for q in db.scalars(select(Quota))}
        if not rows:
            return out
        if ("pool", pool) in rows:
            used = db.scalar(select(func.sum(Instance.size)).where(Instance.pool == pool)) or 0
            if sop_uid:
                used -= (
                    db.scalar(
                        select(Instance.size).where(
                            Instance.sop_instance_uid == sop_uid, Instance.pool == pool
                        )
                    )
                    or 0
                )
            out.append(("pool", pool, rows[("pool", pool)], int(used)))
        if owner is None:
            return out
        # the owner row of the copy a resend replaces (record_owner rewrites it)
        mine = db.get(InstanceOwner, sop_uid) if sop_uid else None
        user = db.get(User, owner)
        if user is not None and ("user", user.username) in rows:
            used = db.scalar(
                select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk == owner)
            )
            used = int(used or 0) - (mine.size if mine is not None and mine.user_pk == owner else 0)
            out.append(("user", user.username, rows[("user", user.username)], used))
        groups = db.execute(
            select(UserGroup.id, UserGroup.name)
            .join(GroupMember, GroupMember.group_pk == UserGroup.id)
            .where(GroupMember.user_pk == owner)
        ).all()
        for gid, name in groups:
            if ("group", name) not in rows:
                continue
            members = select(GroupMember.user_pk).where(GroupMember.group_pk == gid)
            used = int(
                db.scalar(
                    select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk.in_(members))
                )
                or 0
            )
            if mine is not None and mine.user_pk in set(db.scalars(members)):
                used -= mine.size
            out.append(("group", name, rows[("group", name)], used))
        return out

    @staticmethod
    def _refusal(kind: str, subject: str, limit: int) -> str:
        mb = limit / (1024 * 1024)
        return (
            f"storage quota of {kind} '{subject}' ({mb:.1f} MB) would be exceeded; "
            "ask your clinic IT for more space or delete data"
        )

    @contextmanager
    def admit(
        self, pool: str, owner: int | None, size: int, sop_uid: str | None = None
    ) -> Iterator[str | None]:
        """Yield a refusal reason, or None with ``size`` reserved until the block ends.
        ``sop_uid``: the instance's SOP Instance UID when the sender named it (C-STORE
        request, STOW file meta): an archived copy it replaces is not counted."""
        if not self._quotas_exist():
            yield None
            return
        if self._ledger is None:
            with self._admit_local(pool, owner, size, sop_uid) as reason:
                yield reason
            return
        con = self._ledger.connection()
        token = secrets.token_hex(16)
        reason: str | None = None
        con.execute("BEGIN IMMEDIATE")  # the cross-process admission lock
        try:
            self._ledger.purge_stale(con)
            # read the index under the lock: a release (after its commit) cannot slip between
            with self._reader() as db:
                subjects = self._subjects(db, pool, owner, sop_uid)
            for kind, subject, limit, used in subjects:
                (pending,) = con.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM reservations WHERE kind=? AND subject=?",
                    (kind, subject),
                ).fetchone()
                if used + int(pending) + size > limit:
                    reason = self._refusal(kind, subject, limit)
                    break
            else:
                con.executemany(
                    "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                    [(token, k, s, size, os.getpid(), time.time()) for k, s, _, _ in subjects],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        try:
            yield reason
        finally:
            if reason is None and subjects:
                con.execute("DELETE FROM reservations WHERE token = ?", (token,))

    @contextmanager
    def _admit_local(
        self, pool: str, owner: int | None, size: int, sop_uid: str | None
    ) -> Iterator[str | None]:
        """Without a data folder (one process only): reservations in memory."""
        with self._lock:
            with self._reader() as db:
                subjects = self._subjects(db, pool, owner, sop_uid)
            reason = None
            for kind, subject, limit, used in subjects:
                if used + self._pending.get((kind, subject), 0) + size > limit:
                    reason = self._refusal(kind, subject, limit)
                    break
            else:
                for kind, subject, _, _ in subjects:
                    self._pending[(kind, subject)] = self._pending.get((kind, subject), 0) + size
        try:
            yield reason
        finally:
            if reason is None:
                with self._lock:
                    for kind, subject, _, _ in subjects:
                        left = self._pending.get((kind, subject), 0) - size
                        if left > 0:
                            self._pending[(kind, subject)] = left
                        else:
                            self._pending.pop((kind, subject), None)

    def record_owner(self, sop_uid: str, owner: int, size: int) -> None:
        """Count a stored instance against its owner (replaced duplicates keep one row)."""
        with self._sessions() as db, db.begin():
            row = db.get(InstanceOwner, sop_uid)
            if row is None:
                try:
                    with db.begin_nested():
                        db.add(InstanceOwner(sop_instance_uid=sop_uid, user_pk=owner, size=size))
                except IntegrityError:
                    pass
            else:
                row.user_pk, row.size = owner, size


def usage(db: Any, kind: str, subject: str) -> int:
    """Bytes currently counted against a quota subject."""
    if kind == "pool":
        return int(db.scalar(select(func.sum(Instance.size)).where(Instance.pool == subject)) or 0)
    if kind == "user":
        user = db.scalars(select(User).where(User.username == subject)).first()
        if user is None:
            return 0
        stmt = select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk == user.id)
        return int(db.scalar(stmt) or 0)
    group = db.scalars(select(UserGroup).where(UserGroup.name == subject)).first()
    if group is None:
        return 0
    members = select(GroupMember.user_pk).where(GroupMember.group_pk == group.id)
    stmt = select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk.in_(members))
    return int(db.scalar(stmt) or 0)


def set_limit(db: Any, kind: str, subject: str, limit_bytes: int | None) -> None:
    """Set (or with None remove) one quota in one statement. An upsert rather than "read,
    then insert or update": two admins setting the first quota of a subject at once both
    read no row and both inserted, and the second answered 500 (uq_quota_subject on
    PostgreSQL: probe 31). The last write wins, as it does on SQLite."""
    if limit_bytes is None:
        db.execute(delete(Quota).where(Quota.kind == kind, Quota.subject == subject))
        return
    dialect = db.get_bind().dialect.name
    upsert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:  # pragma: no cover - the index runs on SQLite or PostgreSQL only
        raise RuntimeError(f"quotas: no upsert for the {dialect} index")
    stmt = upsert(Quota).values(kind=kind, subject=subject, limit_bytes=limit_bytes)
    db.execute(
        stmt.on_conflict_do_update(
            index_elements=[Quota.kind, Quota.subject],
            set_={"limit_bytes": stmt.excluded.limit_bytes},
        )
    )


MB = 2**20
"""A quota's unit: the API takes ``limit_mb`` in MB of 1,048,576 bytes and lists
``limit_bytes`` (what ``limit_mb * MB`` makes)."""

MAX_LIMIT_MB = (2**63 - 1) // MB
"""The largest quota the index stores: ``limit_bytes`` is a signed 64-bit integer."""


def limit_bytes(limit_mb: float) -> int | str:
    """A quota of ``limit_mb`` MB in bytes, or why it is none a clinic could mean.

    Whole MB from 1 up, or 0 (nothing may be stored: an account that only reads). A
    fraction of a MB was taken and stored as a byte count nobody typed (0.5 became
    524288 bytes, 1e-6 one byte, smaller than any image), so it is refused, not rounded:
    an administrator who typed 1.5 meant something the list would not show.
    """
    if not math.isfinite(limit_mb) or limit_mb < 0 or limit_mb > MAX_LIMIT_MB:
        return f"limit_mb must be a whole number of MB from 0 to {MAX_LIMIT_MB}"
    if limit_mb != int(limit_mb):
        return (
            f"limit_mb must be a whole number of MB (1 MB = {MB} bytes), not {limit_mb:g}: "
            "1 or more limits the storage space, 0 allows none, null removes the quota"
        )
    return int(limit_mb) * MB
