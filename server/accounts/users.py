"""Users and login sessions: Argon2id password hashes, random bearer tokens stored hashed."""

from __future__ import annotations

import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from server.accounts import passwords
from server.accounts.rights import ROLES  # noqa: E402
from server.index.models import User
from server.index.records import now

_hasher = PasswordHasher()  # argon2-cffi defaults: Argon2id, RFC 9106 low-memory profile
# Verified against when the user does not exist, so timing does not reveal user names.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(ValueError):
    """A refused account operation, with a message safe to show the caller."""


#: An addr-spec of plain ASCII (RFC 5322 3.4.1 dot-atom, host name labels as RFC 1123).
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def checked_email(address: str) -> str:
    """The address as stored ('' = none), or AccountError.

    Mail headers are built from it: "x\r\nBcc: evil@x" was stored, and every mail to it
    then failed (a password reset answered 500; probe 7).
    """
    address = address.strip()
    if address and (len(address) > 254 or not _EMAIL.fullmatch(address)):
        raise AccountError(
            f"e-mail address {address[:80]!r} is not valid: one name@host in ASCII, without "
            "spaces, line breaks or display name"
        )
    return address


def normalise(username: str) -> str:
    """User names compare case-insensitively (the FAQ records that case once mattered)."""
    return username.strip().casefold()


def create_user(
    db: DbSession,
    username: str,
    password: str,
    *,
    role: str = "radiologist",
    display_name: str = "",
    email: str = "",
) -> User:
    name = normalise(username)
    if not name or len(name) > 128:
        raise AccountError("user name must be 1-128 characters")
    if any(c in name for c in "/\\?#%") or not name.isprintable():
        # names travel in URL paths (/users/{username}): "ops/night" was created by
        # create-admin and could then be neither read, changed nor unlocked (outside probe)
        raise AccountError("user name must not contain / \\ ? # % or control characters")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    refused = passwords.problem(password, name)
    if refused:
        raise AccountError(refused)
    email = checked_email(email)
    if db.scalars(select(User).where(User.username == name)).first() is not None:
        raise AccountError(f"user '{name}' already exists")
    user = User(
        username=name,
        display_name=display_name or username.strip(),
        email=email,
        password_hash=_hasher.hash(password),
        role=role,
        enabled=True,
        created_at=now(),
    )
    db.add(user)
    db.flush()
    return user


def authenticate(db: DbSession, username: str, password: str) -> User | None:
    """The enabled user with this password, or None (same cost whether or not they exist)."""
    user = db.scalars(select(User).where(User.username == normalise(username))).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or not user.enabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def count_users(db: DbSession) -> int:
    return len(list(db.scalars(select(User.id))))


def find(db: DbSession, username: str, *, lock: bool = False) -> User | None:
    """The account, or None. ``lock=True`` (for a change) takes the row lock first: on
    PostgreSQL under READ COMMITTED two admins changing one account at once otherwise both
    read it, and their edits interleave (grants ended as the union of both: probe 31)."""
    stmt = select(User).where(User.username == normalise(username))
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return db.scalars(stmt).first()


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def set_password(user: User, password: str) -> None:
    """Issue 4 "password change", under the same policy as account creation."""
    refused = passwords.problem(password, user.username)
    if refused:
        raise AccountError(refused)
    user.password_hash = _hasher.hash(password)


def hash_secret(secret: str) -> str:
    """Argon2id hash of a short secret (login PIN, share-link PIN)."""
    return _hasher.hash(secret)


def check_secret(hashed: str, secret: str) -> bool:
    try:
        return _hasher.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
