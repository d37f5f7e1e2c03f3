"""Lockout and back-off after failed logins, per account name and per client address.

Issue 4: "lockout and back-off after repeated failures (per account and per client
address), with an audit event". After ``max_failures`` failures for a name (or
``address_max_failures`` from one address) the key is locked for ``lockout_seconds``,
doubling with every further failure up to ``lockout_max_seconds``. Unknown user names are
counted the same way, so a lockout never tells an attacker whether a user exists.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from server.accounts.clock import now
from server.config import AccountsSection
from server.index.account_models import LoginThrottle


def keys(username: str, address: str) -> tuple[str, str]:
    return f"user:{username.strip().casefold()}"[:300], f"addr:{address}"[:300]


def locked_for(db: DbSession, *names: str) -> int:
    """Seconds until every given key is unlocked (0 = none locked)."""
    wait = 0.0
    stamp = now()
    for name in names:
        row = db.get(LoginThrottle, name)
        if row is not None and row.locked_until is not None and row.locked_until > stamp:
            wait = max(wait, (row.locked_until - stamp).total_seconds())
    return int(wait) + (1 if wait else 0)


def fail(db: DbSession, settings: AccountsSection, user_key: str, addr_key: str) -> bool:
    """Count one failure on both keys ('' = not that one); True when this locked one."""
    locked = False
    stamp = now()
    for name, limit in (
        (user_key, settings.max_failures),
        (addr_key, settings.address_max_failures),
    ):
        if not name:
            continue
        row = db.get(LoginThrottle, name)
        if row is None:
            row = LoginThrottle(key=name, failures=0, last_failure_at=stamp)
            db.add(row)
        elif (stamp - row.last_failure_at).total_seconds() > settings.lockout_max_seconds:
            row.failures = 0  # old failures are forgiven after the longest lockout
        row.failures += 1
        row.last_failure_at = stamp
        if row.failures >= limit:
            power = row.failures - limit
            seconds = min(
                settings.lockout_seconds * (2 ** min(power, 30)), settings.lockout_max_seconds
            )
            row.locked_until = stamp + timedelta(seconds=seconds)
            locked = True
    db.flush()
    return locked


def clear(db: DbSession, name: str) -> bool:
    """Forget a key's failures and lock; False when it had none."""
    row = db.get(LoginThrottle, name)
    if row is None:
        return False
    db.delete(row)
    return True


def active(db: DbSession) -> list[LoginThrottle]:
    """Login lockouts in force now, accounts and addresses (for clinic IT to see and clear)."""
    rows = db.scalars(
        select(LoginThrottle)
        .where(LoginThrottle.locked_until > now())
        .order_by(LoginThrottle.locked_until.desc())
    )
    return [r for r in rows if r.key.startswith(("user:", "addr:"))]


def allow(db: DbSession, key: str, limit: int, window_seconds: float) -> bool:
    """Count one event on ``key``; False once more than ``limit`` fall in one window.

    A fixed window that starts with its first event (kept in ``last_failure_at``); used for
    password-reset mails under keys of their own ('reset-user:NAME', 'reset-addr:IP'),
    which neither lock logins nor show up among the lockouts.
    """
    stamp = now()
    row = db.get(LoginThrottle, key[:300])
    if row is None:
        row = LoginThrottle(key=key[:300], failures=0, last_failure_at=stamp)
        db.add(row)
    elif (stamp - row.last_failure_at).total_seconds() >= window_seconds:
        row.failures = 0
        row.last_failure_at = stamp
    row.failures += 1
    db.flush()
    return row.failures <= limit
