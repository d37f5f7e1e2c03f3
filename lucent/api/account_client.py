"""Typed calls for the account, device, session, share-link, quota, retention and audit
routes (issue 4).

Kept apart from ``client.py`` so the archive/PACS calls and these can grow independently;
``LucentClient`` inherits this mixin and supplies ``_request``/``_get`` (errors become
``ApiError``, 401 ``SessionExpired``). Every answer is parsed into an ``account_schemas``
model, so a server that drifts from the schema fails here, not deep in the admin console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from lucent.api import account_schemas as acs
from lucent.api import schemas

Grants = dict[str, list[str]]


class AccountsApi:
    """Mixin: every method goes through the host client's ``_request`` (errors become ApiError)."""

    token: str | None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _get(self, path: str, **params: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ login steps
    def login_device(
        self, username: str, password: str, device_id: str, device_name: str = ""
    ) -> schemas.LoginResponse:
        """Password step with a device identity (IT FAQ device approval).

        With a clinic PIN the answer has ``pin_required`` and a ``challenge`` and no token
        yet: pass the mailed PIN to :meth:`confirm_pin`.
        """
        body = schemas.LoginRequest(
            username=username, password=password, device_id=device_id, device_name=device_name
        )
        result = schemas.LoginResponse.model_validate(
            self._request("POST", "/api/v1/auth/login", json=body.model_dump()).json()
        )
        if result.token:
            self.token = result.token
        return result

    def confirm_pin(self, challenge: str, pin: str) -> schemas.LoginResponse:
        """Second step of the clinic login: the PIN from the mail (FAQ); keeps the token."""
        body = acs.PinRequest(challenge=challenge, pin=pin).model_dump()
        result = schemas.LoginResponse.model_validate(
            self._request("POST", "/api/v1/auth/pin", json=body).json()
        )
        self.token = result.token
        return result

    # ------------------------------------------------------------------ own account
    def change_password(self, old_password: str, new_password: str) -> None:
        """Every other session of the account ends; this one stays."""
        body = acs.PasswordChange(old_password=old_password, new_password=new_password)
        self._request("POST", "/api/v1/auth/password", json=body.model_dump())

    def my_sessions(self) -> list[acs.SessionOut]:
        return [acs.SessionOut.model_validate(s) for s in self._get("/api/v1/auth/sessions")]

    def request_password_reset(self, username: str) -> acs.AcceptedOut:
        """Same answer whether or not the user exists (no user enumeration)."""
        body = acs.ResetRequest(username=username).model_dump()
        response = self._request("POST", "/api/v1/auth/password-reset", json=body)
        return acs.AcceptedOut.model_validate(response.json())

    def confirm_password_reset(self, token: str, new_password: str) -> None:
        body = acs.ResetConfirm(token=token, new_password=new_password).model_dump()
        self._request("POST", "/api/v1/auth/password-reset/confirm", json=body)

    def my_quota(self) -> list[acs.QuotaOut]:
        """The caller's own storage space and that of their groups (FAQ)."""
        return [acs.QuotaOut.model_validate(q) for q in self._get("/api/v1/quota")]

    # ------------------------------------------------------------------ users
    def users(self) -> list[acs.UserOut]:
        return [acs.UserOut.model_validate(u) for u in self._get("/api/v1/users")]

    def user(self, username: str) -> acs.UserOut:
        return acs.UserOut.model_validate(self._get(f"/api/v1/users/{username}"))

    def create_user(
        self,
        username: str,
        password: str,
        role: str = "radiologist",
        *,
        display_name: str = "",
        email: str = "",
        pin_login: bool = False,
        grants: Grants | None = None,
    ) -> acs.UserOut:
        body = acs.UserIn(
            username=username,
            password=password,
            role=role,
            display_name=display_name,
            email=email,
            pin_login=pin_login,
            grants=grants or {},
        )
        response = self._request("POST", "/api/v1/users", json=body.model_dump())
        return acs.UserOut.model_validate(response.json())

    def update_user(
        self,
        username: str,
        *,
        role: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
        enabled: bool | None = None,
        pin_login: bool | None = None,
        password: str | None = None,
    ) -> acs.UserOut:
        """Change only the given fields; disabling, a new password or role ends sessions."""
        body = acs.UserPatch(
            role=role,
            display_name=display_name,
            email=email,
            enabled=enabled,
            pin_login=pin_login,
            password=password,
        ).model_dump(exclude_none=True)
        response = self._request("PATCH", f"/api/v1/users/{username}", json=body)
        return acs.UserOut.model_validate(response.json())

    def set_user_grants(self, username: str, grants: Grants) -> acs.UserOut:
        """Replace the user's rights per pool (pool name or '*' → rights)."""
        response = self._request("PUT", f"/api/v1/users/{username}/grants", json=grants)
        return acs.UserOut.model_validate(response.json())

    def revoke_user_sessions(self, username: str) -> int:
        """Admin kill: every session of the account ends at once; returns how many."""
        response = self._request("POST", f"/api/v1/users/{username}/sessions/revoke")
        return acs.RevokedOut.model_validate(response.json()).revoked

    def unlock_user(self, username: str) -> None:
        self._request("POST", f"/api/v1/users/{username}/unlock")

    def lockouts(self) -> list[acs.LockoutOut]:
        """Login lockouts in force (accounts and client addresses)."""
        return [acs.LockoutOut.model_validate(x) for x in self._get("/api/v1/lockouts")]

    def clear_address_lockout(self, address: str) -> None:
        self._request("DELETE", f"/api/v1/lockouts/address/{address}")

    # ------------------------------------------------------------------ groups
    def groups(self) -> list[acs.GroupOut]:
        return [acs.GroupOut.model_validate(g) for g in self._get("/api/v1/groups")]

    def create_group(self, name: str, description: str = "") -> acs.GroupOut:
        body = acs.GroupIn(name=name, description=description).model_dump()
        return acs.GroupOut.model_validate(
            self._request("POST", "/api/v1/groups", json=body).json()
        )

    def set_group_members(self, name: str, usernames: list[str]) -> acs.GroupOut:
        response = self._request("PUT", f"/api/v1/groups/{name}/members", json=usernames)
        return acs.GroupOut.model_validate(response.json())

    def set_group_grants(self, name: str, grants: Grants) -> acs.GroupOut:
        response = self._request("PUT", f"/api/v1/groups/{name}/grants", json=grants)
        return acs.GroupOut.model_validate(response.json())

    def delete_group(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/groups/{name}")

    # ------------------------------------------------------------------ devices
    def devices(self, status: str = "") -> list[acs.DeviceOut]:
        """All devices, or only those pending / approved / revoked."""
        return [
            acs.DeviceOut.model_validate(d) for d in self._get("/api/v1/devices", status=status)
        ]

    def approve_device(self, device_id: int) -> acs.DeviceOut:
        response = self._request("POST", f"/api/v1/devices/{device_id}/approve")
        return acs.DeviceOut.model_validate(response.json())

    def revoke_device(self, device_id: int) -> acs.DeviceOut:
        """The device's sessions end at once (issue 4)."""
        response = self._request("POST", f"/api/v1/devices/{device_id}/revoke")
        return acs.DeviceOut.model_validate(response.json())

    def rename_device(self, device_id: int, name: str) -> acs.DeviceOut:
        body = acs.DevicePatch(name=name).model_dump()
        response = self._request("PATCH", f"/api/v1/devices/{device_id}", json=body)
        return acs.DeviceOut.model_validate(response.json())

    # ------------------------------------------------------------------ quotas, retention
    def quotas(self) -> list[acs.QuotaOut]:
        return [acs.QuotaOut.model_validate(q) for q in self._get("/api/v1/quotas")]

    def set_quota(self, kind: str, subject: str, limit_mb: float | None) -> list[acs.QuotaOut]:
        """Set the quota of a user, group or pool; ``None`` removes it. Returns all quotas."""
        body = acs.QuotaIn(kind=kind, subject=subject, limit_mb=limit_mb).model_dump()
        response = self._request("PUT", "/api/v1/quotas", json=body)
        return [acs.QuotaOut.model_validate(q) for q in response.json()]

    def delete_study(self, study_uid: str) -> None:
        """Delete a study with its blobs (delete right on its pool); audited as 110105."""
        self._request("DELETE", f"/api/v1/studies/{study_uid}")

    def run_retention(self) -> acs.RetentionOut:
        """Run the retention sweep now instead of waiting for its interval."""
        response = self._request("POST", "/api/v1/retention/run")
        return acs.RetentionOut.model_validate(response.json())

    # ------------------------------------------------------------------ share links
    def create_share(
        self,
        study_uid: str,
        series_uid: str = "",
        *,
        expires_hours: float = 72.0,
        max_views: int | None = None,
        note: str = "",
    ) -> acs.ShareCreated:
        """A second-opinion link; its URL and PIN are in this answer only (FAQ)."""
        body = acs.ShareIn(
            study_uid=study_uid,
            series_uid=series_uid,
            expires_hours=expires_hours,
            max_views=max_views,
            note=note,
        ).model_dump()
        response = self._request("POST", "/api/v1/shares", json=body)
        return acs.ShareCreated.model_validate(response.json())

    def shares(self) -> list[acs.ShareOut]:
        """The caller's own links (administrators: all)."""
        return [acs.ShareOut.model_validate(s) for s in self._get("/api/v1/shares")]

    def revoke_share(self, share_id: int) -> None:
        self._request("DELETE", f"/api/v1/shares/{share_id}")

    # ------------------------------------------------------------------ audit trail
    def audit(
        self,
        *,
        event_id: str = "",
        user: str = "",
        outcome: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        object_id: str = "",
        offset: int = 0,
        limit: int = 200,
    ) -> list[acs.AuditOut]:
        """Filtered audit records (PS3.15 A.5 event ids); reading is itself audited."""
        rows = self._get(
            "/api/v1/audit",
            event_id=event_id,
            user=user,
            outcome=outcome,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            object_id=object_id,
            offset=offset,
            limit=limit,
        )
        return [acs.AuditOut.model_validate(r) for r in rows]

    def audit_export(
        self,
        *,
        event_id: str = "",
        user: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 5000,
    ) -> bytes:
        """DICOM audit messages (PS3.15 A.5.1) as one XML document, for an ATNA repository."""
        params = {
            "event_id": event_id,
            "user": user,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "limit": limit,
        }
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return self._request("GET", "/api/v1/audit/export", params=clean).content

    def audit_verify(self) -> acs.AuditVerifyOut:
        """Walk the hash chain; names the first altered, inserted or removed record."""
        return acs.AuditVerifyOut.model_validate(self._get("/api/v1/audit/verify"))
