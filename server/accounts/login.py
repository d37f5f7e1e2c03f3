"""Clinic login: password, lockout, device approval, mailed PIN, sessions, password reset.

Seeds: FAQ "PINs for the clinic login will be sent by mail to your clinic mail address";
"your clinic only allows login with previously approved devices"; IT FAQ, three device
approval policies. Issue 4: sessions with random tokens (only hashes stored), expiry, idle
logoff and revocation; refusals with a clear message that never tells an attacker which
users exist (unknown user and wrong password read the same).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession

from server.accounts import audit, links, mail, throttle, users
from server.accounts.clock import now
from server.config import Settings
from server.index.account_models import (
    Device,
    LoginSession,
    PasswordReset,
    PinChallenge,
    UserSecurity,
)
from server.index.models import User

log = logging.getLogger("lucent.accounts")

WRONG_CREDENTIALS = "wrong user name or password"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe (issue 4: tokens of at least 128 bits)."""
    return secrets.token_urlsafe(32)


@dataclass
class Outcome:
    """The answer to a login step: an HTTP status, a message and, on success, a token."""

    status: int
    detail: str = ""
    token: str = ""
    expires_in: int = 0
    username: str = ""
    role: str = ""
    pin_required: bool = False
    challenge: str = ""
    retry_after: int = 0
    device_status: str = ""
    password_change_required: bool = False


def security(db: DbSession, user: User) -> UserSecurity:
    row = db.get(UserSecurity, user.id)
    if row is None:
        row = UserSecurity(user_pk=user.id, pin_login=False)
        db.add(row)
        db.flush()
    return row


# ------------------------------------------------------------------ devices
def register_device(
    db: DbSession, settings: Settings, user: User, identity: str, name: str
) -> Device:
    """The user's device with this identity, registered now if new (IT FAQ policies)."""
    ident = digest(identity)
    device = db.scalars(
        select(Device).where(Device.user_pk == user.id, Device.identity_hash == ident)
    ).first()
    stamp = now()
    if device is None:
        policy = settings.accounts.device_approval
        has_other = (
            db.scalars(select(Device.id).where(Device.user_pk == user.id).limit(1)).first()
            is not None
        )
        if user.role == "administrator" and policy == "manual":
            policy = "first-device"  # somebody must be able to approve the first device
        approve = policy == "automatic" or (policy == "first-device" and not has_other)
        device = Device(
            user_pk=user.id,
            identity_hash=ident,
            name=(name or "device")[:128],
            status="approved" if approve else "pending",
            created_at=stamp,
            decided_at=stamp if approve else None,
            decided_by=f"policy:{policy}" if approve else "",
        )
        db.add(device)
        db.flush()
    device.last_seen_at = stamp
    return device


def decide_device(db: DbSession, device: Device, status: str, by: str) -> None:
    """Approve or revoke; a revoked device's sessions end at once (issue 4)."""
    device.status = status
    device.decided_at = now()
    device.decided_by = by
    if status == "revoked":
        db.execute(
            update(LoginSession).where(LoginSession.device_pk == device.id).values(revoked=True)
        )


# ------------------------------------------------------------------ sessions
def open_session(
    db: DbSession, settings: Settings, user: User, device: Device | None, address: str
) -> Outcome:
    token = new_token()
    stamp = now()
    minutes = settings.api.session_minutes
    db.add(
        LoginSession(
            token_hash=digest(token),
            user_pk=user.id,
            device_pk=device.id if device else None,
            address=address[:64],
            created_at=stamp,
            last_seen_at=stamp,
            expires_at=stamp + timedelta(minutes=minutes),
            revoked=False,
        )
    )
    outcome = Outcome(200, "", token, minutes * 60, user.username, user.role)
    # a one-time password (set by someone else) opens a session that may only change it
    outcome.password_change_required = security(db, user).password_one_time
    return outcome


@dataclass(frozen=True)
class SessionInfo:
    session_pk: int
    user_pk: int
    username: str
    role: str
    device_pk: int | None
    password_one_time: bool = False


def check_session(db: DbSession, settings: Settings, token: str) -> SessionInfo | str:
    """The live session for a token, or the reason it is not live (expired, idle, revoked)."""
    row = db.scalars(select(LoginSession).where(LoginSession.token_hash == digest(token))).first()
    if row is None:
        return "session invalid; log in again"
    stamp = now()
    if row.device_pk is not None:
        device = db.get(Device, row.device_pk)
        if device is None or device.status != "approved":
            return "this device is no longer approved; contact your clinic IT"
    if row.revoked:
        return "session ended (logged out or revoked); log in again"
    if row.expires_at <= stamp:
        return "session expired; log in again"
    idle = settings.accounts.idle_minutes * 60
    if idle > 0 and (stamp - row.last_seen_at).total_seconds() > idle:
        return "logged off after inactivity; log in again"
    user = db.get(User, row.user_pk)
    if user is None or not user.enabled:
        return "account disabled; contact your clinic IT"
    # Touch at most every few seconds (not a write per request), well inside the idle time.
    if (stamp - row.last_seen_at).total_seconds() > min(30.0, idle / 4 if idle else 30.0):
        row.last_seen_at = stamp
    sec = db.get(UserSecurity, user.id)
    one_time = bool(sec is not None and sec.password_one_time)
    return SessionInfo(row.id, user.id, user.username, user.role, row.device_pk, one_time)


def revoke_token(db: DbSession, token: str) -> None:
    db.execute(
        update(LoginSession).where(LoginSession.token_hash == digest(token)).values(revoked=True)
    )


def revoke_user_sessions(db: DbSession, user_pk: int) -> int:
    result = db.execute(
        update(LoginSession)
        .where(
            LoginSession.user_pk == user_pk,
            LoginSession.revoked.is_(False),
            LoginSession.expires_at > now(),
        )
        .values(revoked=True)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ login
def login(
    session_factory: object,
    settings: Settings,
    username: str,
    password: str,
    address: str,
    device_identity: str = "",
    device_name: str = "",
) -> Outcome:
    """Password step of the clinic login; may answer "PIN required" with a challenge."""
    user_key, addr_key = throttle.keys(username, address)
    events: list[audit.Entry] = []
    mail_to: tuple[str, str] | None = None
    name = users.normalise(username)
    with session_factory() as db, db.begin():  # type: ignore[operator]
        user: User | None = None
        wait = throttle.locked_for(db, user_key)
        if wait:
            outcome = Outcome(
                429, f"too many failed logins; try again in {wait} seconds", retry_after=wait
            )
        else:
            user = users.authenticate(db, name, password)
            wait = address_wait(db, addr_key, user, address)
            if wait:
                outcome = Outcome(
                    429,
                    f"too many failed logins from this address; try again in {wait} seconds "
                    "or ask your clinic IT to clear the lock",
                    retry_after=wait,
                )
                # a wrong password still counts against the account
                if user is None and throttle.fail(db, settings.accounts, user_key, ""):
                    events.append(
                        audit.Entry(
                            "lockout", audit.SERIOUS_FAILURE, name, address, [], "login locked"
                        )
                    )
        if wait:
            events.append(audit.Entry("login", audit.SERIOUS_FAILURE, name, address, [], "locked"))
        else:
            outcome, mail_to = _login_checked(
                db, settings, user, name, address, device_identity, device_name, events
            )
            if outcome.status == 401 and throttle.fail(db, settings.accounts, user_key, addr_key):
                events.append(
                    audit.Entry("lockout", audit.SERIOUS_FAILURE, name, address, [], "login locked")
                )
            elif outcome.status < 400:
                throttle.clear(db, user_key)
    audit.record(session_factory, *events)
    if mail_to is not None:
        try:
            mail.send(settings.smtp, mail_to[0], "Your Lucent login PIN", mail_to[1])
        except mail.MailError as exc:
            log.error("%s", exc)
            return Outcome(503, "the PIN mail could not be sent; contact your clinic IT")
    return outcome


#: A user who logged in from an address within this many days still gets in from it while
#: the address is locked (with the right password).
FAMILIAR_DAYS = 30


def address_wait(db: DbSession, addr_key: str, user: User | None, address: str) -> int:
    """Seconds the address lock holds this login back (0 = not locked, or let through).

    The address lock slows guessing across many names from one place; it used to refuse
    every correct login from that address too, administrators included, for as long as
    the guessing went on (probe 7; a clinic behind one NAT address is one address). Like
    "familiar location" rules of mature products, a user with the right password who has
    logged in from this address before gets in; everybody else reads the same refusal,
    whatever their password, so the lock tells a guesser nothing.
    """
    wait = throttle.locked_for(db, addr_key)
    if not wait or user is None:
        return wait
    since = now() - timedelta(days=FAMILIAR_DAYS)
    known = db.scalars(
        select(LoginSession.id)
        .where(
            LoginSession.user_pk == user.id,
            LoginSession.address == address[:64],
            LoginSession.created_at >= since,
        )
        .limit(1)
    ).first()
    return 0 if known is not None else wait


def _login_checked(
    db: DbSession,
    settings: Settings,
    user: User | None,
    name: str,
    address: str,
    device_identity: str,
    device_name: str,
    events: list[audit.Entry],
) -> tuple[Outcome, tuple[str, str] | None]:
    """The login of a user whose password was checked (None: wrong name or password)."""
    if user is None:
        events.append(
            audit.Entry("login", audit.MINOR_FAILURE, name, address, [], WRONG_CREDENTIALS)
        )
        return Outcome(401, WRONG_CREDENTIALS), None
    device: Device | None = None
    policy = settings.accounts.device_approval
    if device_identity:
        device = register_device(db, settings, user, device_identity, device_name)
        if device.status == "pending":
            events.append(
                audit.Entry(
                    "device",
                    audit.MINOR_FAILURE,
                    name,
                    address,
                    [{"type": "device", "id": str(device.id)}],
                    "device awaiting approval",
                )
            )
            return (
                Outcome(
                    403,
                    f"this device ('{device.name}') is not approved yet; ask your clinic IT to "
                    "approve it",
                    device_status="pending",
                ),
                None,
            )
        if device.status != "approved":
            events.append(
                audit.Entry("login", audit.MINOR_FAILURE, name, address, [], "device revoked")
            )
            return (
                Outcome(
                    403,
                    "this device is blocked for this account; contact your clinic IT",
                    device_status=device.status,
                ),
                None,
            )
    elif policy != "automatic":
        return (
            Outcome(403, "this clinic only allows login from approved devices; use the app"),
            None,
        )
    sec = security(db, user)
    if settings.accounts.pin_login or sec.pin_login:
        if not user.email:
            return Outcome(403, "PIN login needs a clinic e-mail address; contact clinic IT"), None
        pin = f"{secrets.randbelow(10**6):06d}"
        challenge = new_token()
        db.add(
            PinChallenge(
                token_hash=digest(challenge),
                user_pk=user.id,
                device_pk=device.id if device else None,
                pin_hash=users.hash_secret(pin),
                address=address[:64],
                expires_at=now() + timedelta(minutes=settings.accounts.pin_minutes),
                attempts=0,
                used=False,
            )
        )
        events.append(audit.Entry("pin", audit.SUCCESS, name, address, [], "PIN mailed"))
        minutes = settings.accounts.pin_minutes
        body = (
            f"Your Lucent login PIN is {pin}\n\nIt is valid for {minutes:g} minutes. "
            "If you did not try to log in, tell your clinic IT.\n"
        )
        return (
            Outcome(
                200,
                "a PIN was sent to your clinic e-mail address",
                pin_required=True,
                challenge=challenge,
                username=user.username,
                role=user.role,
            ),
            (user.email, body),
        )
    events.append(
        audit.Entry(
            "login",
            audit.SUCCESS,
            name,
            address,
            [{"type": "device", "id": str(device.id)}] if device else [],
        )
    )
    return open_session(db, settings, user, device, address), None


def confirm_pin(
    session_factory: object, settings: Settings, challenge: str, pin: str, address: str
) -> Outcome:
    """Second step: the mailed PIN, within its expiry and attempt limit."""
    events: list[audit.Entry] = []
    with session_factory() as db, db.begin():  # type: ignore[operator]
        row = db.scalars(
            select(PinChallenge).where(PinChallenge.token_hash == digest(challenge))
        ).first()
        if row is None or row.used:
            outcome = Outcome(401, "this PIN is no longer valid; log in again")
        elif row.expires_at <= now():
            outcome = Outcome(401, "PIN expired; log in again")
            row.used = True
        elif not users.check_secret(row.pin_hash, pin.strip()):
            row.attempts += 1
            left = settings.accounts.pin_attempts - row.attempts
            if left <= 0:
                row.used = True
                outcome = Outcome(401, "wrong PIN too often; log in again for a new PIN")
            else:
                outcome = Outcome(401, f"wrong PIN; {left} attempt(s) left")
        else:
            row.used = True
            user = db.get(User, row.user_pk)
            device = db.get(Device, row.device_pk) if row.device_pk else None
            if user is None or not user.enabled or (device and device.status != "approved"):
                outcome = Outcome(401, "this PIN is no longer valid; log in again")
            else:
                outcome = open_session(db, settings, user, device, address)
        username = ""
        if row is not None:
            owner = db.get(User, row.user_pk)
            username = owner.username if owner else ""
        events.append(
            audit.Entry(
                "pin",
                audit.SUCCESS if outcome.status == 200 else audit.MINOR_FAILURE,
                username,
                address,
                [],
                "PIN accepted" if outcome.status == 200 else outcome.detail,
            )
        )
    audit.record(session_factory, *events)
    return outcome


# ------------------------------------------------------------------ password reset
def request_reset(session_factory: object, settings: Settings, username: str, address: str) -> None:
    """Mail a single-use reset link; silent when the user is unknown (no enumeration).

    The link's host comes from the settings, never from the request (``links``).
    """
    base_url = links.public_base(settings)
    body = ""
    email = ""
    token = ""
    name = users.normalise(username)
    with session_factory() as db, db.begin():  # type: ignore[operator]
        allowed = _reset_allowed(db, settings, name, address)
        user = users.find(db, username) if allowed else None
        if user is not None and user.enabled and user.email:
            token = new_token()
            db.add(
                PasswordReset(
                    token_hash=digest(token),
                    user_pk=user.id,
                    expires_at=now() + timedelta(minutes=settings.accounts.reset_minutes),
                    used=False,
                )
            )
            email = user.email
            body = (
                "A password reset was requested for your Lucent account.\n\n"
                f"Reset token: {token}\nLink: {base_url}/reset?token={token}\n\n"
                f"Valid for {settings.accounts.reset_minutes:g} minutes, once.\n"
            )
    audit.record(
        session_factory,
        audit.Entry(
            "user-change",
            audit.SUCCESS if allowed else audit.MINOR_FAILURE,
            name,
            address,
            [],
            "password reset requested" if allowed else "password reset: too many requests",
        ),
    )
    if email:
        links.warn_if_guessed(settings, "password-reset link")
        try:
            mail.send(settings.smtp, email, "Lucent password reset", body)
        except mail.MailError as exc:
            # The caller hears the same 202 as for an unknown name; clinic IT reads the log.
            # The token of a mail that never went out is not kept.
            log.error("password-reset mail for '%s' not sent: %s", name, exc)
            with session_factory() as db, db.begin():  # type: ignore[operator]
                db.execute(delete(PasswordReset).where(PasswordReset.token_hash == digest(token)))


def _reset_allowed(db: DbSession, settings: Settings, name: str, address: str) -> bool:
    """Whether this reset request may mail: per client address (any names) and then per
    account name (known or not, so the answer tells nothing). Six anonymous requests in a
    second sent seven mails (probe 7): a mail bomb and a flood of live tokens."""
    accounts = settings.accounts
    if not throttle.allow(db, f"reset-addr:{address}", accounts.reset_address_per_hour, 3600):
        return False
    return throttle.allow(db, f"reset-user:{name}", 1, accounts.reset_mail_seconds)


def password_changed(db: DbSession, user: User, *, one_time: bool | None = None) -> None:
    """After any password change (own, by an administrator, by a reset link) or disabling:
    every reset token mailed before it dies. An older mail still reset the password after
    a newer link was used or after the owner changed it (probe 7), so whoever could read
    an old mail could take the account back."""
    sec = security(db, user)
    sec.password_changed_at = now()
    if one_time is not None:  # None: the password itself did not change (disabled)
        sec.password_one_time = one_time
    db.execute(
        update(PasswordReset)
        .where(PasswordReset.user_pk == user.id, PasswordReset.used.is_(False))
        .values(used=True)
    )


def confirm_reset(session_factory: object, token: str, password: str, address: str) -> Outcome:
    invalid = Outcome(400, "this reset link is invalid, used or expired; request a new one")
    with session_factory() as db, db.begin():  # type: ignore[operator]
        row = db.scalars(
            select(PasswordReset).where(PasswordReset.token_hash == digest(token))
        ).first()
        if row is None or row.used or row.expires_at <= now():
            return invalid
        user = db.get(User, row.user_pk)
        if user is None or not user.enabled:
            return invalid
        try:
            users.set_password(user, password)
        except users.AccountError as exc:
            return Outcome(400, str(exc))
        # claimed with a conditional UPDATE, so two requests with one token cannot both win
        claimed = db.execute(
            update(PasswordReset)
            .where(PasswordReset.id == row.id, PasswordReset.used.is_(False))
            .values(used=True)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            db.rollback()
            return invalid
        password_changed(db, user, one_time=False)  # the owner chose it via the mailed link
        revoke_user_sessions(db, user.id)
        name = user.username
    audit.record(
        session_factory,
        audit.Entry("user-change", audit.SUCCESS, name, address, [], "password reset"),
    )
    return Outcome(204)
