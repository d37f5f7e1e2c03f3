"""/api/v1 accounts: login with PIN and devices, own sessions and password, users, groups,
pool grants, devices, quotas, hidden data, study deletion and retention (issue 4).

Access to each route is decided by ``server.accounts.rights.POLICY`` through the app-wide
``authorize`` dependency; the handlers here only do the work and write the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy import delete, select

from lucent.api import account_schemas as acs
from lucent.api import schemas
from server.accounts import audit, login, quotas, rights, throttle, users
from server.accounts import retention as retention_mod
from server.accounts.clock import now
from server.api.auth import (
    Caller,
    access,
    audit_caller,
    client_address,
    get_caller,
    require_pool,
)
from server.api.params import RowId
from server.context import ServerContext
from server.index.account_models import (
    Device,
    GroupMember,
    HiddenItem,
    LoginSession,
    PoolGrant,
    Quota,
    UserGroup,
)
from server.index.models import Series, Study, User

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def ctx_of(request: Request) -> ServerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _answer(outcome: login.Outcome) -> schemas.LoginResponse:
    if outcome.status >= 400:
        headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
        raise HTTPException(outcome.status, outcome.detail, headers=headers)
    return schemas.LoginResponse(
        token=outcome.token,
        expires_in=outcome.expires_in,
        username=outcome.username,
        role=outcome.role,
        pin_required=outcome.pin_required,
        challenge=outcome.challenge,
        password_change_required=outcome.password_change_required,
    )


class _Refused(Exception):
    """An account change the caller's role may not make (raised inside a transaction)."""


@contextmanager
def _guarded(ctx: ServerContext, caller: Caller, target: str) -> Iterator[None]:
    """Turn a refusal into 403 with an audit record, after the transaction has ended (the
    write session holds the database's write lock, which the audit record needs)."""
    try:
        yield
    except _Refused as refused:
        _refuse(ctx, caller, target, str(refused))


def _refuse(ctx: ServerContext, caller: Caller, target: str, reason: str) -> NoReturn:
    objects = [{"type": "user", "id": users.normalise(target)}]
    audit_caller(ctx, "refused", caller, objects, reason, audit.MINOR_FAILURE)
    raise HTTPException(403, reason)


def _may_manage(caller: Caller, target: User, new_role: str | None = None) -> None:
    reason = rights.management_refusal(
        caller.username, caller.role, target.username, target.role, new_role
    )
    if reason:
        raise _Refused(reason)


def _may_change_data_rights(caller: Caller, what: str) -> None:
    reason = rights.data_rights_refusal(caller.role, what)
    if reason:
        raise _Refused(reason)


def _holds_grants(db: Any, user: User) -> bool:
    """Whether the account has rights to patient data: grants of its own or of a group."""
    groups = select(GroupMember.group_pk).where(GroupMember.user_pk == user.id)
    stmt = select(PoolGrant.id).where(
        (PoolGrant.user_pk == user.id) | PoolGrant.group_pk.in_(groups)
    )
    return db.scalars(stmt.limit(1)).first() is not None


def _group_has_grants(db: Any, group: UserGroup) -> bool:
    return (
        db.scalars(select(PoolGrant.id).where(PoolGrant.group_pk == group.id).limit(1)).first()
        is not None
    )


def _forget_basic(request: Request) -> None:
    cache = getattr(request.app.state, "basic_cache", None)
    if cache is not None:
        cache.clear()


# ------------------------------------------------------------------ login and own account
@router.post("/auth/login", response_model=schemas.LoginResponse)
def login_route(body: schemas.LoginRequest, request: Request) -> schemas.LoginResponse:
    """Password step. Unknown user and wrong password get the same answer (issue 4)."""
    ctx = ctx_of(request)
    return _answer(
        login.login(
            ctx.WriteSession,
            ctx.settings,
            body.username,
            body.password,
            client_address(request),
            body.device_id,
            body.device_name,
        )
    )


@router.post("/auth/pin", response_model=schemas.LoginResponse)
def pin_route(body: acs.PinRequest, request: Request) -> schemas.LoginResponse:
    """Second step: the PIN mailed to the clinic address (FAQ)."""
    ctx = ctx_of(request)
    return _answer(
        login.confirm_pin(
            ctx.WriteSession, ctx.settings, body.challenge, body.pin, client_address(request)
        )
    )


@router.post("/auth/logout", status_code=204)
def logout(request: Request, caller: Caller = Depends(get_caller)) -> None:
    header = request.headers.get("authorization", "")
    ctx = ctx_of(request)
    if header.lower().startswith("bearer "):
        with ctx.WriteSession() as db, db.begin():
            login.revoke_token(db, header[7:].strip())
    audit_caller(ctx, "logout", caller, [], "")


@router.get("/auth/me", response_model=schemas.UserInfo)
def me(request: Request, caller: Caller = Depends(get_caller)) -> schemas.UserInfo:
    with ctx_of(request).Session() as db:
        user = db.get(User, caller.user_id)
        display = user.display_name if user else caller.username
    return schemas.UserInfo(username=caller.username, display_name=display, role=caller.role)


@router.post("/auth/password", status_code=204)
def change_password(
    body: acs.PasswordChange, request: Request, caller: Caller = Depends(get_caller)
) -> None:
    """Change one's own password; every other session of the account ends."""
    ctx = ctx_of(request)
    with ctx.WriteSession() as db, db.begin():
        user = db.get(User, caller.user_id)
        assert user is not None
        if not users.check_password(user, body.old_password):
            raise HTTPException(400, "the current password is not correct")
        try:
            users.set_password(user, body.new_password)
        except users.AccountError as exc:
            raise HTTPException(400, str(exc)) from exc
        login.password_changed(db, user, one_time=False)  # the owner's own choice
        for row in db.scalars(
            select(LoginSession).where(
                LoginSession.user_pk == user.id, LoginSession.id != (caller.session_pk or -1)
            )
        ):
            row.revoked = True
    _forget_basic(request)
    audit_caller(
        ctx, "user-change", caller, [{"type": "user", "id": caller.username}], "password changed"
    )


@router.get("/auth/sessions", response_model=list[acs.SessionOut])
def my_sessions(request: Request, caller: Caller = Depends(get_caller)) -> list[acs.SessionOut]:
    with ctx_of(request).Session() as db:
        rows = db.scalars(
            select(LoginSession).where(
                LoginSession.user_pk == caller.user_id,
                LoginSession.revoked.is_(False),
                LoginSession.expires_at > now(),
            )
        )
        out = []
        for r in rows:
            device = db.get(Device, r.device_pk) if r.device_pk else None
            out.append(
                acs.SessionOut(
                    id=r.id,
                    created_at=r.created_at,
                    last_seen_at=r.last_seen_at,
                    expires_at=r.expires_at,
                    address=r.address,
                    device=device.name if device else "",
                    current=r.id == caller.session_pk,
                )
            )
        return out


@router.post("/auth/password-reset", status_code=202, response_model=acs.AcceptedOut)
def request_reset(body: acs.ResetRequest, request: Request) -> acs.AcceptedOut:
    """Mail a single-use reset link; the same answer whether or not the user exists."""
    ctx = ctx_of(request)
    login.request_reset(ctx.WriteSession, ctx.settings, body.username, client_address(request))
    return acs.AcceptedOut(
        detail="if the account exists and has an e-mail address, a link was sent"
    )


@router.post("/auth/password-reset/confirm", status_code=204)
def confirm_reset(body: acs.ResetConfirm, request: Request) -> None:
    outcome = login.confirm_reset(
        ctx_of(request).WriteSession, body.token, body.new_password, client_address(request)
    )
    if outcome.status >= 400:
        raise HTTPException(outcome.status, outcome.detail)
    _forget_basic(request)


# ------------------------------------------------------------------ users
def _grants(db: Any, *, user_pk: int | None = None, group_pk: int | None = None) -> dict:
    stmt = select(PoolGrant)
    stmt = (
        stmt.where(PoolGrant.user_pk == user_pk)
        if user_pk is not None
        else stmt.where(PoolGrant.group_pk == group_pk)
    )
    return {g.pool: sorted(rights.parse_rights(g.rights)) for g in db.scalars(stmt)}


def _pools(ctx: ServerContext) -> list[str]:
    return [p.name for p in ctx.settings.pools]


def _set_grants(
    db: Any,
    grants: dict[str, list[str]],
    pools: list[str],
    *,
    user_pk: int | None = None,
    group_pk: int | None = None,
) -> None:
    """Replace the grants; a pool that does not exist is refused, not stored unused (a typo
    would otherwise look granted: probe 7)."""
    unknown = sorted(set(grants) - set(pools) - {"*"})
    if unknown:
        raise HTTPException(
            422, f"unknown pool(s) {unknown}; the pools are {', '.join(pools)} (or '*' for all)"
        )
    for granted in grants.values():
        bad = set(granted) - set(rights.POOL_RIGHTS)
        if bad:
            raise HTTPException(
                422, f"unknown right(s) {sorted(bad)}; use {', '.join(rights.POOL_RIGHTS)}"
            )
    if user_pk is not None:
        db.execute(delete(PoolGrant).where(PoolGrant.user_pk == user_pk))
    else:
        db.execute(delete(PoolGrant).where(PoolGrant.group_pk == group_pk))
    for pool_name, granted in grants.items():
        if granted:
            db.add(
                PoolGrant(
                    user_pk=user_pk, group_pk=group_pk, pool=pool_name, rights=",".join(granted)
                )
            )


def _user_out(db: Any, user: User) -> acs.UserOut:
    groups = db.scalars(
        select(UserGroup.name)
        .join(GroupMember, GroupMember.group_pk == UserGroup.id)
        .where(GroupMember.user_pk == user.id)
    )
    return acs.UserOut(
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        role=user.role,
        enabled=user.enabled,
        pin_login=login.security(db, user).pin_login,
        groups=sorted(groups),
        grants=_grants(db, user_pk=user.id),
    )


def _user(db: Any, username: str, *, lock: bool = False) -> User:
    """The account or 404; ``lock`` for a change (see ``users.find``)."""
    user = users.find(db, username, lock=lock)
    if user is None:
        raise HTTPException(404, f"no user '{username}'")
    return user


@router.get("/users", response_model=list[acs.UserOut])
def list_users(request: Request) -> list[acs.UserOut]:
    with ctx_of(request).WriteSession() as db, db.begin():
        return [_user_out(db, u) for u in db.scalars(select(User).order_by(User.username))]


@router.post("/users", response_model=acs.UserOut, status_code=201)
def create_user(
    body: acs.UserIn, request: Request, caller: Caller = Depends(get_caller)
) -> acs.UserOut:
    ctx = ctx_of(request)
    name = users.normalise(body.username)
    reason = rights.management_refusal(caller.username, caller.role, name, "", body.role)
    if not reason and any(body.grants.values()):
        reason = rights.data_rights_refusal(caller.role, "pool grants of a new account")
    if reason:
        _refuse(ctx, caller, name, reason)
    # the creator knows the password: unless an administrator (who holds every right
    # anyway) made the account, it is one-time and the owner sets their own at first login
    one_time = caller.role != "administrator"
    with ctx.WriteSession() as db, db.begin():
        try:
            user = users.create_user(
                db,
                body.username,
                body.password,
                role=body.role,
                display_name=body.display_name,
                email=body.email,
            )
        except users.AccountError as exc:
            raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from exc
        sec = login.security(db, user)
        sec.pin_login = body.pin_login
        sec.password_one_time = one_time
        _set_grants(db, body.grants, _pools(ctx), user_pk=user.id)
        db.flush()
        out = _user_out(db, user)
    detail = audit.user_created(out.role, out.grants, one_time=one_time)
    audit_caller(ctx, "roles-change", caller, [{"type": "user", "id": out.username}], detail)
    return out


@router.get("/users/{username}", response_model=acs.UserOut)
def get_user(username: str, request: Request) -> acs.UserOut:
    with ctx_of(request).WriteSession() as db, db.begin():
        return _user_out(db, _user(db, username))


@router.patch("/users/{username}", response_model=acs.UserOut)
def patch_user(
    username: str, body: acs.UserPatch, request: Request, caller: Caller = Depends(get_caller)
) -> acs.UserOut:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, username), ctx.WriteSession() as db, db.begin():
        user = _user(db, username, lock=True)
        _may_manage(caller, user, body.role)
        if body.role is not None and body.role != user.role and _holds_grants(db, user):
            # the role is the ceiling of the grants: changing it changes data rights
            _may_change_data_rights(caller, f"the role of '{user.username}', who holds grants")
        one_time = body.password is not None and caller.user_id != user.id
        if one_time and _holds_grants(db, user):
            # Whoever sets the password can log in with it, and changing a one-time
            # password proves nothing about who does it: clinic IT set a radiologist's
            # password, "changed" it as them and read their pools (review). Accounts with
            # data rights get a new password from an administrator or the mailed link.
            _may_change_data_rights(
                caller,
                f"the password of '{user.username}', who holds grants; the user can ask for "
                "a reset link by e-mail",
            )
        if body.role is not None:
            if body.role not in rights.ROLES:
                raise HTTPException(422, f"role must be one of {', '.join(rights.ROLES)}")
            user.role = body.role
        if body.display_name is not None:
            user.display_name = body.display_name
        if body.email is not None:
            try:
                user.email = users.checked_email(body.email)
            except users.AccountError as exc:
                raise HTTPException(422, str(exc)) from exc
        if body.pin_login is not None:
            login.security(db, user).pin_login = body.pin_login
        if body.password is not None:
            try:
                users.set_password(user, body.password)
            except users.AccountError as exc:
                raise HTTPException(422, str(exc)) from exc
        if body.enabled is not None:
            user.enabled = body.enabled
        if body.enabled is False or body.password is not None:
            # mailed reset links die with the old password; one set by another is one-time
            login.password_changed(
                db, user, one_time=one_time if body.password is not None else None
            )
        if body.enabled is False or body.password is not None or body.role is not None:
            login.revoke_user_sessions(db, user.id)
        db.flush()
        out = _user_out(db, user)
    _forget_basic(request)
    changed = ", ".join(
        k for k, v in body.model_dump().items() if v is not None and k != "password"
    )
    if body.password is not None:
        what = "password (one-time)" if one_time else "password"
        changed += f", {what}" if changed else what
    audit_caller(ctx, "user-change", caller, [{"type": "user", "id": out.username}], changed)
    return out


@router.put("/users/{username}/grants", response_model=acs.UserOut)
def put_user_grants(
    username: str,
    body: dict[str, list[str]],
    request: Request,
    caller: Caller = Depends(get_caller),
) -> acs.UserOut:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, username), ctx.WriteSession() as db, db.begin():
        user = _user(db, username, lock=True)  # then delete + insert: the last write wins
        _may_manage(caller, user)
        _may_change_data_rights(caller, "pool grants")
        _set_grants(db, body, _pools(ctx), user_pk=user.id)
        db.flush()
        out = _user_out(db, user)
    audit_caller(
        ctx, "roles-change", caller, [{"type": "user", "id": out.username}], f"grants {body}"
    )
    return out


@router.post("/users/{username}/sessions/revoke", response_model=acs.RevokedOut)
def revoke_sessions(
    username: str, request: Request, caller: Caller = Depends(get_caller)
) -> acs.RevokedOut:
    """Admin kill: every session of the account ends at once."""
    ctx = ctx_of(request)
    with _guarded(ctx, caller, username), ctx.WriteSession() as db, db.begin():
        user = _user(db, username)
        _may_manage(caller, user)
        count = login.revoke_user_sessions(db, user.id)
    _forget_basic(request)
    audit_caller(ctx, "user-change", caller, [{"type": "user", "id": username}], "sessions revoked")
    return acs.RevokedOut(revoked=count)


@router.post("/users/{username}/unlock", status_code=204)
def unlock_user(username: str, request: Request, caller: Caller = Depends(get_caller)) -> None:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, username), ctx.WriteSession() as db, db.begin():
        user = users.find(db, username)  # unknown names lock out too, and may be unlocked
        if user is not None:
            _may_manage(caller, user)
        throttle.clear(db, throttle.keys(username, "")[0])
    audit_caller(ctx, "user-change", caller, [{"type": "user", "id": username}], "lockout cleared")


@router.get("/lockouts", response_model=list[acs.LockoutOut])
def list_lockouts(request: Request) -> list[acs.LockoutOut]:
    """Login lockouts in force: accounts (cleared with /users/{name}/unlock) and client
    addresses (cleared below)."""
    with ctx_of(request).Session() as db:
        return [
            acs.LockoutOut(
                kind="user" if row.key.startswith("user:") else "address",
                subject=row.key.partition(":")[2],
                failures=row.failures,
                locked_until=row.locked_until,
            )
            for row in throttle.active(db)
            if row.locked_until is not None
        ]


@router.delete("/lockouts/address/{address}", status_code=204)
def clear_address_lockout(
    address: str, request: Request, caller: Caller = Depends(get_caller)
) -> None:
    """End the lockout of a client address and forget its failures (probe 7: nothing could
    clear one, and it held back every login from that address, administrators' too)."""
    ctx = ctx_of(request)
    key = throttle.keys("", address)[1]
    with ctx.WriteSession() as db, db.begin():
        if not throttle.clear(db, key):
            raise HTTPException(404, f"no failed logins recorded for address '{address}'")
    audit_caller(ctx, "user-change", caller, [], f"address lockout cleared: {address}")


# ------------------------------------------------------------------ groups
def _group(db: Any, name: str, *, lock: bool = False) -> UserGroup:
    """The group or 404. ``lock`` takes its row lock before a change: a PUT that replaces
    its members or grants (delete, then insert) would otherwise, on PostgreSQL, leave the
    union of two concurrent PUTs or fail on group_members_pkey (probe 31)."""
    stmt = select(UserGroup).where(UserGroup.name == name)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    group = db.scalars(stmt).first()
    if group is None:
        raise HTTPException(404, f"no group '{name}'")
    return group


def _group_out(db: Any, g: UserGroup) -> acs.GroupOut:
    members = db.scalars(
        select(User.username)
        .join(GroupMember, GroupMember.user_pk == User.id)
        .where(GroupMember.group_pk == g.id)
    )
    return acs.GroupOut(
        name=g.name,
        description=g.description,
        members=sorted(members),
        grants=_grants(db, group_pk=g.id),
    )


@router.get("/groups", response_model=list[acs.GroupOut])
def list_groups(request: Request) -> list[acs.GroupOut]:
    with ctx_of(request).Session() as db:
        return [_group_out(db, g) for g in db.scalars(select(UserGroup).order_by(UserGroup.name))]


@router.post("/groups", response_model=acs.GroupOut, status_code=201)
def create_group(
    body: acs.GroupIn, request: Request, caller: Caller = Depends(get_caller)
) -> acs.GroupOut:
    ctx = ctx_of(request)
    with ctx.WriteSession() as db, db.begin():
        if db.scalars(select(UserGroup).where(UserGroup.name == body.name)).first():
            raise HTTPException(409, f"a group named '{body.name}' exists")
        group = UserGroup(name=body.name, description=body.description)
        db.add(group)
        db.flush()
        out = _group_out(db, group)
    audit_caller(ctx, "roles-change", caller, [{"type": "user", "id": body.name}], "group created")
    return out


@router.put("/groups/{name}/members", response_model=acs.GroupOut)
def put_members(
    name: str, body: list[str], request: Request, caller: Caller = Depends(get_caller)
) -> acs.GroupOut:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, name), ctx.WriteSession() as db, db.begin():
        group = _group(db, name, lock=True)
        members = [_user(db, u) for u in body]
        pks = [u.id for u in members]
        if caller.role != "administrator":
            before = set(
                db.scalars(select(GroupMember.user_pk).where(GroupMember.group_pk == group.id))
            )
            changed = before.symmetric_difference(pks)
            if changed and _group_has_grants(db, group):
                _may_change_data_rights(caller, f"members of group '{name}', which has grants")
            for pk in changed:  # an administrator account is changed by administrators only
                target = db.get(User, pk)
                if target is not None:
                    _may_manage(caller, target)
        db.execute(delete(GroupMember).where(GroupMember.group_pk == group.id))
        for pk in sorted(set(pks)):
            db.add(GroupMember(group_pk=group.id, user_pk=pk))
        db.flush()
        out = _group_out(db, group)
    audit_caller(
        ctx, "roles-change", caller, [{"type": "user", "id": name}], f"members {out.members}"
    )
    return out


@router.put("/groups/{name}/grants", response_model=acs.GroupOut)
def put_group_grants(
    name: str,
    body: dict[str, list[str]],
    request: Request,
    caller: Caller = Depends(get_caller),
) -> acs.GroupOut:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, name), ctx.WriteSession() as db, db.begin():
        group = _group(db, name, lock=True)
        _may_change_data_rights(caller, f"pool grants of group '{name}'")
        _set_grants(db, body, _pools(ctx), group_pk=group.id)
        db.flush()
        out = _group_out(db, group)
    audit_caller(ctx, "roles-change", caller, [{"type": "user", "id": name}], f"grants {body}")
    return out


@router.delete("/groups/{name}", status_code=204)
def delete_group(name: str, request: Request, caller: Caller = Depends(get_caller)) -> None:
    ctx = ctx_of(request)
    with _guarded(ctx, caller, name), ctx.WriteSession() as db, db.begin():
        group = _group(db, name, lock=True)
        if _group_has_grants(db, group):
            _may_change_data_rights(caller, f"group '{name}', which has grants")
        db.execute(delete(GroupMember).where(GroupMember.group_pk == group.id))
        db.execute(delete(PoolGrant).where(PoolGrant.group_pk == group.id))
        db.execute(delete(Quota).where(Quota.kind == "group", Quota.subject == name))
        db.delete(group)
    ctx.quotas.forget_cache()  # its quota went with it
    audit_caller(ctx, "roles-change", caller, [{"type": "user", "id": name}], "group deleted")


# ------------------------------------------------------------------ devices
def _device_out(db: Any, d: Device) -> acs.DeviceOut:
    owner = db.get(User, d.user_pk)
    return acs.DeviceOut(
        id=d.id,
        username=owner.username if owner else "",
        name=d.name,
        status=d.status,
        created_at=d.created_at,
        decided_by=d.decided_by,
        last_seen_at=d.last_seen_at,
    )


@router.get("/devices", response_model=list[acs.DeviceOut])
def list_devices(request: Request, status: str = "") -> list[acs.DeviceOut]:
    with ctx_of(request).Session() as db:
        stmt = select(Device).order_by(Device.id)
        if status:
            stmt = stmt.where(Device.status == status)
        return [_device_out(db, d) for d in db.scalars(stmt)]


def _decide(request: Request, device_id: int, status: str, caller: Caller) -> acs.DeviceOut:
    ctx = ctx_of(request)
    with ctx.WriteSession() as db, db.begin():
        device = db.get(Device, device_id, with_for_update=True)  # one decision at a time
        if device is None:
            raise HTTPException(404, "no such device")
        login.decide_device(db, device, status, caller.username)
        out = _device_out(db, device)
    audit_caller(
        ctx,
        "device",
        caller,
        [{"type": "device", "id": str(device_id)}, {"type": "user", "id": out.username}],
        f"device {status}",
    )
    return out


@router.post("/devices/{device_id}/approve", response_model=acs.DeviceOut)
def approve_device(
    device_id: RowId, request: Request, caller: Caller = Depends(get_caller)
) -> acs.DeviceOut:
    return _decide(request, device_id, "approved", caller)


@router.post("/devices/{device_id}/revoke", response_model=acs.DeviceOut)
def revoke_device(
    device_id: RowId, request: Request, caller: Caller = Depends(get_caller)
) -> acs.DeviceOut:
    """Block a device; its sessions end at once (issue 4)."""
    return _decide(request, device_id, "revoked", caller)


@router.patch("/devices/{device_id}", response_model=acs.DeviceOut)
def rename_device(
    device_id: RowId, body: acs.DevicePatch, request: Request, caller: Caller = Depends(get_caller)
) -> acs.DeviceOut:
    ctx = ctx_of(request)
    with ctx.WriteSession() as db, db.begin():
        device = db.get(Device, device_id, with_for_update=True)  # one decision at a time
        if device is None:
            raise HTTPException(404, "no such device")
        device.name = body.name[:128]
        out = _device_out(db, device)
    audit_caller(
        ctx, "device", caller, [{"type": "device", "id": str(device_id)}], "device renamed"
    )
    return out


# ------------------------------------------------------------------ quotas
def _quota_out(db: Any, q: Quota) -> acs.QuotaOut:
    from server.accounts.quotas import usage

    return acs.QuotaOut(
        kind=q.kind,
        subject=q.subject,
        limit_bytes=q.limit_bytes,
        used_bytes=usage(db, q.kind, q.subject),
    )


@router.get("/quotas", response_model=list[acs.QuotaOut])
def list_quotas(request: Request) -> list[acs.QuotaOut]:
    with ctx_of(request).Session() as db:
        return [_quota_out(db, q) for q in db.scalars(select(Quota).order_by(Quota.id))]


async def _raw_json(request: Request) -> Any:
    """The body as sent (Starlette caches it): the model has already coerced ``true`` to 1."""
    try:
        return await request.json()
    except ValueError:
        return None


@router.put("/quotas", response_model=list[acs.QuotaOut])
def put_quota(
    body: acs.QuotaIn,
    request: Request,
    caller: Caller = Depends(get_caller),
    raw: Any = Depends(_raw_json),
) -> list[acs.QuotaOut]:
    """Set (or with ``limit_mb: null`` remove) the quota of a user, group or pool (FAQ)."""
    ctx = ctx_of(request)
    if body.kind not in ("user", "group", "pool"):
        raise HTTPException(422, "kind must be user, group or pool")
    if isinstance(raw, dict) and isinstance(raw.get("limit_mb"), bool):
        # true was stored as a 1 MB quota (probe 34)
        raise HTTPException(422, "limit_mb must be a number of MB or null, not true/false")
    # 1e300 overflowed int() into a 500, a negative limit was stored (probe 7), 1e-9 was
    # stored as a 0-byte quota (probe 34), 0.5 as 524288 bytes: whole MB only
    limit = None if body.limit_mb is None else quotas.limit_bytes(body.limit_mb)
    if isinstance(limit, str):
        raise HTTPException(422, limit)
    subject = users.normalise(body.subject) if body.kind == "user" else body.subject
    with ctx.WriteSession() as db, db.begin():
        if body.limit_mb is not None and not _quota_subject_exists(ctx, db, body.kind, subject):
            raise HTTPException(422, f"no {body.kind} named '{subject}' to set a quota for")
        quotas.set_limit(db, body.kind, subject, limit)
    ctx.quotas.forget_cache()
    audit_caller(
        ctx, "config-change", caller, [], f"quota {body.kind} {subject} = {_mb(body.limit_mb)}"
    )
    return list_quotas(request)


def _mb(limit_mb: float | None) -> str:
    return "none" if limit_mb is None else f"{int(limit_mb)} MB"


def _quota_subject_exists(ctx: ServerContext, db: Any, kind: str, subject: str) -> bool:
    """A quota for a user, group or pool that does not exist limits nothing, and a typo
    would look set (probe 7); removing one (limit_mb null) is always allowed."""
    if kind == "user":
        return users.find(db, subject) is not None
    if kind == "group":
        return db.scalars(select(UserGroup.id).where(UserGroup.name == subject)).first() is not None
    return subject in _pools(ctx)


@router.get("/quota", response_model=list[acs.QuotaOut])
def my_quota(request: Request, caller: Caller = Depends(get_caller)) -> list[acs.QuotaOut]:
    """The caller's own storage space and that of their groups."""
    with ctx_of(request).Session() as db:
        names = list(
            db.scalars(
                select(UserGroup.name)
                .join(GroupMember, GroupMember.group_pk == UserGroup.id)
                .where(GroupMember.user_pk == caller.user_id)
            )
        )
        rows = db.scalars(
            select(Quota).where(
                ((Quota.kind == "user") & (Quota.subject == caller.username))
                | ((Quota.kind == "group") & Quota.subject.in_(names))
            )
        )
        return [_quota_out(db, q) for q in rows]


# ------------------------------------------------------------------ hidden data
@router.get("/hidden", response_model=list[acs.HiddenOut])
def list_hidden(request: Request, caller: Caller = Depends(get_caller)) -> list[acs.HiddenOut]:
    """FAQ "Show hidden data": what this user has hidden, to restore. Only objects of pools
    the caller may read: one hidden before a grant was withdrawn (or through the leak of
    probe 58) would otherwise stay listed while it exists and vanish once it is deleted."""
    acc = access(request, caller)
    with ctx_of(request).Session() as db:
        rows = list(
            db.scalars(
                select(HiddenItem)
                .where(HiddenItem.user_pk == caller.user_id)
                .order_by(HiddenItem.id)
            )
        )
        if not acc.everything:
            pools = {(r.level, r.uid): _hidden_pool(db, r.level, r.uid) for r in rows}
            rows = [r for r in rows if acc.allows(pools[r.level, r.uid] or "", "read")]
        return [acs.HiddenOut(level=r.level, uid=r.uid, hidden_at=r.hidden_at) for r in rows]


def _hidden_pool(db: Any, level: str, uid: str) -> str | None:
    """The pool of the study or series ``uid`` names (None: there is none)."""
    if level == "study":
        return db.scalars(select(Study.pool).where(Study.study_uid == uid)).first()
    if level == "series":
        return db.scalars(
            select(Study.pool)
            .join(Series, Series.study_pk == Study.id)
            .where(Series.series_uid == uid)
        ).first()
    return None


@router.post("/hidden", status_code=204)
def hide(body: acs.HiddenIn, request: Request, caller: Caller = Depends(get_caller)) -> None:
    if body.level not in ("study", "series"):
        raise HTTPException(422, "level must be study or series")
    if not body.uid.strip():
        raise HTTPException(422, "uid must name a study or series")
    ctx = ctx_of(request)
    unknown = HTTPException(404, f"no {body.level} {body.uid} to hide")
    with ctx.Session() as db:
        pool = _hidden_pool(db, body.level, body.uid)
    # an empty or unknown UID was stored and listed as hidden (probe 34); one of a pool the
    # caller may not read answered 204 where an unknown one is 404: it told which UIDs are
    # archived (probe 58). The same answer for both, and the refusal audited.
    if pool is None:
        raise unknown
    objects = [{"type": body.level, "id": body.uid}]
    require_pool(request, caller, pool, "read", objects, unknown)
    model = Study if body.level == "study" else Series
    column = Study.study_uid if body.level == "study" else Series.series_uid
    with ctx.WriteSession() as db, db.begin():
        if db.scalars(select(model.id).where(column == body.uid)).first() is None:
            raise unknown  # deleted meanwhile
        exists = db.scalars(
            select(HiddenItem).where(
                HiddenItem.user_pk == caller.user_id,
                HiddenItem.level == body.level,
                HiddenItem.uid == body.uid,
            )
        ).first()
        if exists is None:
            db.add(
                HiddenItem(user_pk=caller.user_id, level=body.level, uid=body.uid, hidden_at=now())
            )


@router.delete("/hidden", status_code=204)
def unhide(
    request: Request, level: str = "", uid: str = "", caller: Caller = Depends(get_caller)
) -> None:
    """Restore one hidden item (level and uid), or all of them (no parameters)."""
    with ctx_of(request).WriteSession() as db, db.begin():
        stmt = delete(HiddenItem).where(HiddenItem.user_pk == caller.user_id)
        if uid:
            stmt = stmt.where(HiddenItem.uid == uid)
        if level:
            stmt = stmt.where(HiddenItem.level == level)
        db.execute(stmt)


# ------------------------------------------------------------------ deletion, retention
@router.delete("/studies/{study_uid}", status_code=204)
def delete_study(study_uid: str, request: Request, caller: Caller = Depends(get_caller)) -> None:
    """Delete a study and its blobs (needs the delete right on its pool); audited 110105."""
    removed = retention_mod.delete_study(
        ctx_of(request), study_uid, user=caller.username, address=caller.address, event="delete"
    )
    if removed < 0:
        raise HTTPException(404, f"study {study_uid} not found")
    # its evaluations end now, storing and sending nothing (outside probe 39: the results
    # brought the deleted study back and went to the PACS); the scanner catches retention
    perfusion = getattr(request.app.state, "perfusion", None)
    if perfusion is not None:
        perfusion.sources_deleted()


@router.post("/retention/run", response_model=acs.RetentionOut)
def run_retention(request: Request, caller: Caller = Depends(get_caller)) -> acs.RetentionOut:
    """Run the retention sweep now; who started it is audited (each deletion is too, as
    user "retention"), probe 34: a manual run left no trace of who ran it."""
    ctx = ctx_of(request)
    audit_caller(ctx, "service-start", caller, [], "retention sweep started by hand")
    deleted = retention_mod.sweep(ctx)
    audit_caller(
        ctx, "service-stop", caller, [], f"retention sweep: {len(deleted)} study(ies) deleted"
    )
    return acs.RetentionOut(deleted_studies=deleted)
