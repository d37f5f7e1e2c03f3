"""Storage quotas per user, group and pool (FAQ: "the storage space can be set arbitrarily per
account / group"); checked in ``ServerContext.store`` before anything is written.

A refusal is DICOM 0xA701 (Out of Resources, A700 range) on C-STORE and HTTP 507 on STOW-RS.
Data stored through the API by a user (STOW, imports) counts against that user and their
groups (``instance_owners``); everything in a pool counts against the pool's quota, which is
the one that applies to C-STORE from modalities. A reservation held under a lock covers the
instance until its index row is committed, so parallel stores cannot overshoot together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server.index.account_models import GroupMember, InstanceOwner, Quota, UserGroup
from server.index.models import Instance, User


class QuotaGuard:
    """Admission control for one process; usage is read from the index when a quota applies."""

    def __init__(self, session_factory: Any) -> None:
        self._sessions = session_factory
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}
        self._any: tuple[float, bool] = (0.0, False)

    def _quotas_exist(self) -> bool:
        stamp, known = self._any
        if time.monotonic() - stamp < 2.0:
            return known
        with self._sessions() as db:
            known = db.scalars(select(Quota.id).limit(1)).first() is not None
        self._any = (time.monotonic(), known)
        return known

    def forget_cache(self) -> None:
        self._any = (0.0, False)

    def _subjects(self, db: Any, pool: str, owner: int | None) -> list[tuple[str, str, int, int]]:
        """(kind, subject, limit, used) for every quota that applies to this store."""
        out: list[tuple[str, str, int, int]] = []
        rows = {(q.kind, q.subject): q.limit_bytes for q in db.scalars(select(Quota))}
        if ("pool", pool) in rows:
            used = db.scalar(select(func.sum(Instance.size)).where(Instance.pool == pool)) or 0
            out.append(("pool", pool, rows[("pool", pool)], int(used)))
        if owner is None:
            return out
        user = db.get(User, owner)
        if user is not None and ("user", user.username) in rows:
            used = db.scalar(
                select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk == owner)
            )
            out.append(("user", user.username, rows[("user", user.username)], int(used or 0)))
        groups = db.execute(
            select(UserGroup.id, UserGroup.name)
            .join(GroupMember, GroupMember.group_pk == UserGroup.id)
            .where(GroupMember.user_pk == owner)
        ).all()
        for gid, name in groups:
            if ("group", name) not in rows:
                continue
            members = select(GroupMember.user_pk).where(GroupMember.group_pk == gid)
            used = db.scalar(
                select(func.sum(InstanceOwner.size)).where(InstanceOwner.user_pk.in_(members))
            )
            out.append(("group", name, rows[("group", name)], int(used or 0)))
        return out

    @contextmanager
    def admit(self, pool: str, owner: int | None, size: int) -> Iterator[str | None]:
        """Yield a refusal reason, or None with ``size`` reserved until the block ends."""
        if not self._quotas_exist():
            yield None
            return
        with self._lock:
            with self._sessions() as db:
                subjects = self._subjects(db, pool, owner)
            for kind, subject, limit, used in subjects:
                pending = self._pending.get((kind, subject), 0)
                if used + pending + size > limit:
                    mb = limit / (1024 * 1024)
                    reason = (
                        f"storage quota of {kind} '{subject}' ({mb:.1f} MB) would be exceeded; "
                        "ask your clinic IT for more space or delete data"
                    )
                    break
            else:
                reason = None
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
