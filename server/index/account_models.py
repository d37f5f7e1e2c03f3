"""Index tables for accounts and access (issue 4): groups, pool grants, login sessions,
throttling, devices, PIN challenges, password resets, share links, hidden data, quotas,
ingest ownership and the audit trail.

The ``users`` table of ``server.index.models`` stays as it is; per-user security state lives
in ``user_security`` beside it, so this module only adds tables (migration 0003).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.index.models import Base


class UserGroup(Base):
    """A group of users (e.g. a department); rights and quotas may be set per group (FAQ)."""

    __tablename__ = "user_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")


class GroupMember(Base):
    __tablename__ = "group_members"

    group_pk: Mapped[int] = mapped_column(ForeignKey("user_groups.id"), primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class PoolGrant(Base):
    """Rights (read, send, share, delete) of one user or one group on one pool ('*' = all)."""

    __tablename__ = "pool_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_pk: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    group_pk: Mapped[int | None] = mapped_column(
        ForeignKey("user_groups.id"), nullable=True, index=True
    )
    pool: Mapped[str] = mapped_column(String(64))
    rights: Mapped[str] = mapped_column(String(128))  # comma-separated


class UserSecurity(Base):
    """Per-user security state kept beside ``users``: lockout, second factor, quota."""

    __tablename__ = "user_security"

    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    pin_login: Mapped[bool] = mapped_column(Boolean, default=False)
    quota_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: Set by someone other than the owner (migration 0008): usable only to set a new one.
    password_one_time: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class LoginThrottle(Base):
    """Failed logins per account name ('user:NAME') or per client address ('addr:IP').

    Keyed by the name typed, not by a user row, so unknown names lock out exactly like real
    ones and the lockout does not reveal who exists.
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime)


class LoginSession(Base):
    """A bearer session: only the SHA-256 of the token is stored; expiry, idle and revocation."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_pk: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id"), nullable=True, index=True
    )
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Device(Base):
    """A device identity registered at first login (IT FAQ: device approval)."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_pk", "identity_hash", name="uq_device_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    identity_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # approved/revoked
    created_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class PinChallenge(Base):
    """A PIN mailed at login (FAQ: "PINs ... will be sent by mail"): expiry, attempt limit."""

    __tablename__ = "pin_challenges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_pk: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    pin_hash: Mapped[str] = mapped_column(String(256))
    address: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class PasswordReset(Base):
    """A single-use, expiring password-reset link (only the token hash is stored)."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class ShareLink(Base):
    """A temporary link to one study or series, protected by a PIN (FAQ: second opinion)."""

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    creator_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    pool: Mapped[str] = mapped_column(String(64), default="")
    pin_hash: Mapped[str] = mapped_column(String(256))
    note: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    max_views: Mapped[int | None] = mapped_column(Integer, nullable=True)
    views: Mapped[int] = mapped_column(Integer, default=0)
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ShareSession(Base):
    """Access granted by a share link after the right PIN: a cookie token, stored hashed."""

    __tablename__ = "share_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    link_pk: Mapped[int] = mapped_column(ForeignKey("share_links.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class HiddenItem(Base):
    """A study or series one user has hidden (FAQ: "Show hidden data" restores it)."""

    __tablename__ = "hidden_items"
    __table_args__ = (UniqueConstraint("user_pk", "level", "uid", name="uq_hidden_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    level: Mapped[str] = mapped_column(String(8))  # "study" or "series"
    uid: Mapped[str] = mapped_column(String(64))
    hidden_at: Mapped[datetime] = mapped_column(DateTime)


class Quota(Base):
    """Storage space per account, group or pool (FAQ: "set arbitrarily per account / group")."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("kind", "subject", name="uq_quota_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # user / group / pool
    subject: Mapped[str] = mapped_column(String(128))  # user name, group name or pool name
    limit_bytes: Mapped[int] = mapped_column(BigInteger)


class InstanceOwner(Base):
    """Who stored an instance (STOW/import by a user), for per-user and per-group quotas."""

    __tablename__ = "instance_owners"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class AuditRecord(Base):
    """One audit event (PS3.15 A.5 vocabulary), chained by SHA-256 so edits are detectable."""

    __tablename__ = "audit_records"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_event", "event_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    event_id: Mapped[str] = mapped_column(String(16))  # e.g. "110114"
    event_type: Mapped[str] = mapped_column(String(16), default="")  # e.g. "110122"
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    outcome: Mapped[int] = mapped_column(Integer)  # 0 4 8 12
    user: Mapped[str] = mapped_column(String(128), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    objects: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
