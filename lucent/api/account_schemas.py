"""API schemas for accounts and access (issue 4): users, groups, grants, devices, quotas,
hidden data, share links and audit records. Shared by the server and the typed client.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PinRequest(BaseModel):
    challenge: str
    pin: str


class PasswordChange(BaseModel):
    old_password: str
    new_password: str


class ResetRequest(BaseModel):
    username: str


class ResetConfirm(BaseModel):
    token: str
    new_password: str


class UserIn(BaseModel):
    username: str
    password: str
    role: str = "radiologist"
    display_name: str = ""
    email: str = ""
    pin_login: bool = False
    grants: dict[str, list[str]] = Field(
        default_factory=dict, description="pool name (or '*') → rights"
    )


class UserPatch(BaseModel):
    role: str | None = None
    display_name: str | None = None
    email: str | None = None
    enabled: bool | None = None
    pin_login: bool | None = None
    password: str | None = None


class UserOut(BaseModel):
    username: str
    display_name: str
    email: str
    role: str
    enabled: bool
    pin_login: bool
    groups: list[str]
    grants: dict[str, list[str]]


class GroupIn(BaseModel):
    name: str
    description: str = ""


class GroupOut(BaseModel):
    name: str
    description: str
    members: list[str]
    grants: dict[str, list[str]]


class LockoutOut(BaseModel):
    kind: str = Field(description="user | address")
    subject: str = Field(description="the user name typed, or the client address")
    failures: int
    locked_until: datetime


class SessionOut(BaseModel):
    id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str
    device: str
    current: bool


class DeviceOut(BaseModel):
    id: int
    username: str
    name: str
    status: str = Field(description="pending | approved | revoked")
    created_at: datetime
    decided_by: str
    last_seen_at: datetime | None


class DevicePatch(BaseModel):
    name: str


class QuotaIn(BaseModel):
    kind: str = Field(description="user | group | pool")
    subject: str
    limit_mb: float | None = Field(
        description=(
            "whole MB of 1,048,576 bytes: 1 or more limits the space, 0 allows none, "
            "null removes the quota; fractions are refused (422)"
        )
    )


class QuotaOut(BaseModel):
    kind: str
    subject: str
    limit_bytes: int
    used_bytes: int


class HiddenIn(BaseModel):
    level: str = Field(description="study | series")
    uid: str


class HiddenOut(BaseModel):
    level: str
    uid: str
    hidden_at: datetime


class ShareIn(BaseModel):
    study_uid: str
    series_uid: str = ""
    expires_hours: float = 72.0
    max_views: int | None = None
    note: str = ""


class ShareCreated(BaseModel):
    id: int
    url: str = Field(description="the link; shown once")
    pin: str = Field(description="the PIN; shown once, tell it the expert separately")
    expires_at: datetime


class ShareOut(BaseModel):
    id: int
    study_uid: str = Field(description="empty for callers who may not read the pool")
    series_uid: str = Field(description="empty for callers who may not read the pool")
    created_at: datetime
    expires_at: datetime
    max_views: int | None
    views: int
    revoked: bool
    note: str = Field(description="empty for callers who may not read the pool")
    creator: str = ""
    pool: str = ""


class AuditOut(BaseModel):
    id: int
    at: datetime
    event_id: str
    event_name: str
    event_type: str
    action: str
    outcome: int
    user: str
    address: str
    objects: list[dict[str, str]]
    detail: str


class AuditVerifyOut(BaseModel):
    intact: bool
    records: int
    broken_at: int | None = None
    reason: str = ""


class RetentionOut(BaseModel):
    deleted_studies: list[str]


class RevokedOut(BaseModel):
    revoked: int = Field(description="how many sessions ended")


class AcceptedOut(BaseModel):
    detail: str
