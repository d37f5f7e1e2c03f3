"""Who is calling and what they may do: bearer sessions, HTTP Basic for DICOMweb, rights.

Basic credentials are verified with Argon2 once and then remembered for a short time as an
HMAC of (user, password) under a per-process secret, so DICOMweb clients that send Basic on
every request do not pay the password hash each time (as Orthanc allows Basic auth).

``authorize`` is an app-wide dependency: every request to a route is checked against
``server.accounts.rights.POLICY`` (issue 4: "Every API route checks rights").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from server.accounts import audit, login, rights, throttle, users
from server.context import ServerContext, requestor
from server.index.account_models import HiddenItem
from server.index.models import Instance, Series, Study

log = logging.getLogger("lucent.auth")
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    user_id: int
    username: str
    role: str
    session_pk: int | None = None
    address: str = ""
    #: the password was set by someone else: only changing it is allowed (rights.py)
    password_one_time: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role in ("administrator", "clinic-it")


class BasicCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._secret = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def _key(self, username: str, password: str) -> bytes:
        msg = users.normalise(username).encode() + b"\0" + password.encode()
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def get(self, username: str, password: str) -> Caller | None:
        key = self._key(username, password)
        with self._lock:
            hit = self._entries.get(key)
            if hit and hit[0] > time.monotonic():
                return hit[1]
            self._entries.pop(key, None)
        return None

    def put(self, username: str, password: str, caller: Caller) -> None:
        with self._lock:
            if len(self._entries) > 10000:
                self._entries.clear()
            self._entries[self._key(username, password)] = (time.monotonic() + self.ttl, caller)

    def clear(self) -> None:
        """Forget every remembered credential (password change, user disabled, revocation)."""
        with self._lock:
            self._entries.clear()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer, Basic realm="Lucent"'},
    )


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def get_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Caller:
    cached = getattr(request.state, "caller", None)
    if isinstance(cached, Caller):
        return cached
    ctx: ServerContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        caller = _basic(request, header[6:])
    else:
        if credentials is None:
            raise _unauthorized("authentication required")
        with ctx.WriteSession() as db, db.begin():
            info = login.check_session(db, ctx.settings, credentials.credentials)
        if isinstance(info, str):
            raise _unauthorized(info)
        caller = Caller(
            info.user_pk,
            info.username,
            info.role,
            info.session_pk,
            client_address(request),
            info.password_one_time,
        )
    request.state.caller = caller
    who = requestor.get()
    if who is not None:  # named in a Security Alert should a read of this request fail
        who.user = caller.username
    return caller


def _basic(request: Request, encoded: str) -> Caller:
    """HTTP Basic for DICOMweb peers; refused where the clinic login needs PIN or devices."""
    ctx: ServerContext = request.app.state.ctx
    cache: BasicCache = request.app.state.basic_cache
    try:
        username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unauthorized("malformed Basic credentials") from exc
    cached = cache.get(username, password)
    if cached is not None:
        return cached
    address = client_address(request)
    user_key, addr_key = throttle.keys(username, address)
    accounts = ctx.settings.accounts
    name = users.normalise(username)
    locked = False
    with ctx.WriteSession() as db, db.begin():
        # the same rules as /auth/login: the account's lock, then the address lock, which a
        # user who logged in from that address before passes with the right password
        wait = throttle.locked_for(db, user_key)
        user = None if wait else users.authenticate(db, name, password)
        wait = wait or login.address_wait(db, addr_key, user, address)
        if wait:
            if user is None and not throttle.locked_for(db, user_key):
                locked = throttle.fail(db, accounts, user_key, "")
        elif user is None:
            locked = throttle.fail(db, accounts, user_key, addr_key)
        else:
            needs_pin = accounts.pin_login or login.security(db, user).pin_login
            if needs_pin or accounts.device_approval != "automatic":
                raise _unauthorized("this account must log in with PIN or an approved device")
            one_time = login.security(db, user).password_one_time
            caller = Caller(user.id, user.username, user.role, None, address, one_time)
    events = []
    if locked:  # audited as the login route does (the Basic lockout went unrecorded)
        events.append(audit.Entry("lockout", audit.SERIOUS_FAILURE, name, address, [], "Basic"))
    if wait:
        refused = audit.Entry("login", audit.SERIOUS_FAILURE, name, address, [], "Basic, locked")
        events.append(refused)
        audit.record(ctx.WriteSession, *events)
        raise HTTPException(
            429,
            f"too many failed logins; try again in {wait} seconds",
            headers={"Retry-After": str(wait)},
        )
    if user is None:
        events.append(audit.Entry("login", audit.MINOR_FAILURE, name, address, [], "Basic"))
        audit.record(ctx.WriteSession, *events)
        raise _unauthorized(login.WRONG_CREDENTIALS)
    cache.put(username, password, caller)
    return caller


def require_admin(caller: Caller = Depends(get_caller)) -> Caller:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrator rights required")
    return caller


# ------------------------------------------------------------------ rights
def known_pools(ctx: ServerContext) -> list[str]:
    return [p.name for p in ctx.settings.pools]


def access(request: Request, caller: Caller) -> rights.PoolAccess:
    cached = getattr(request.state, "access", None)
    if isinstance(cached, rights.PoolAccess):
        return cached
    ctx: ServerContext = request.app.state.ctx
    with ctx.Session() as db:
        result = rights.pool_access(db, caller.user_id, caller.role, known_pools(ctx))
    request.state.access = result
    return result


def pools_with(request: Request, caller: Caller, right: str) -> list[str] | None:
    """Pools where the caller holds ``right`` (None = all): routes whose rule only asks for
    the right in some pool (``any_pool``) narrow what they touch with it."""
    ctx: ServerContext = request.app.state.ctx
    return access(request, caller).pools_with(right, known_pools(ctx))


#: The answer to an object the caller may not see, and to one that does not exist: the
#: same status and body, so that neither tells which UIDs are archived (probe 21).
NOT_FOUND = "not found"


def not_found() -> HTTPException:
    return HTTPException(404, NOT_FOUND)


def require_pool(
    request: Request,
    caller: Caller,
    pool: str,
    right: str,
    objects: list[dict[str, str]] | None = None,
    answer: HTTPException | None = None,
) -> None:
    """404 unless the caller holds ``right`` in ``pool``: the object is in a pool they may
    not use, and a 403 would confirm that it exists. ``answer`` is what the route says for
    an unknown object (the same, so that nothing differs); the refusal is audited."""
    if not access(request, caller).allows(pool, right):
        audit_hidden_refusal(request, caller, right, objects or [])
        raise answer or not_found()


def audit_hidden_refusal(
    request: Request, caller: Caller, right: str, objects: list[dict[str, str]]
) -> None:
    """A refused access to an object of a pool the caller may not use, answered like an
    unknown object: recorded as a failure (PS3.15 A.5, EventOutcomeIndicator 4) naming the
    object, as the 403 of a missing right is (it went unrecorded: probe 21)."""
    detail = f"{request.method} {request.url.path}: needs '{right}' in the object's pool"
    audit_caller(request.app.state.ctx, "refused", caller, objects, detail, audit.MINOR_FAILURE)


def match_pools(asked: str, known: list[str]) -> list[str]:
    """The configured pools a ``pool`` filter names: the name as configured, or the one
    configured name it equals ignoring case, or those a pattern with DICOM wildcards
    (* and ?) matches ignoring case. One way for every route, whatever the index does."""
    if asked in known:
        return [asked]
    if "*" in asked or "?" in asked:
        pattern = re.escape(asked).replace(r"\*", ".*").replace(r"\?", ".")
        return [p for p in known if re.fullmatch(pattern, p, re.IGNORECASE | re.DOTALL)]
    folded = [p for p in known if p.casefold() == asked.casefold()]
    return folded if len(folded) == 1 else []


def pool_filter(request: Request, asked: str) -> str:
    """The ``pool`` value a listing route gives the index: none once ``authorize`` has
    resolved it into ``readable_pools`` (the index would compare the raw text)."""
    return "" if getattr(request.state, "pool_resolved", False) else asked


def readable_pools(request: Request) -> list[str] | None:
    """Pools the caller may read (None = all); set by ``authorize`` for listing routes."""
    value = getattr(request.state, "read_pools", None)
    return list(value) if value is not None else None


_OBJECT_PARAMS = ("sop_uid", "sop", "series_uid", "series", "study_uid", "study")


def _path_objects(params: dict[str, str], study_uid: str) -> list[dict[str, str]]:
    """The objects a path names, for the audit record (the study found, else the path's)."""
    study = study_uid or params.get("study_uid") or params.get("study") or ""
    out = [{"type": "study", "id": study}] if study else []
    series = params.get("series_uid") or params.get("series")
    if series:
        out.append({"type": "series", "id": series})
    sop = params.get("sop_uid") or params.get("sop")
    if sop:
        out.append({"type": "instance", "id": sop})
    return out


def _pool_of(ctx: ServerContext, params: dict[str, str]) -> tuple[str | None, str]:
    """The pool of the object a path names, and that object's study UID (for audit)."""
    with ctx.Session() as db:
        sop = params.get("sop_uid") or params.get("sop")
        if sop:
            row = db.execute(
                select(Instance.pool, Study.study_uid)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                .where(Instance.sop_instance_uid == sop)
            ).first()
            return (row[0], row[1]) if row else (None, "")
        series = params.get("series_uid") or params.get("series")
        if series:
            row = db.execute(
                select(Study.pool, Study.study_uid)
                .join(Series, Series.study_pk == Study.id)
                .where(Series.series_uid == series)
            ).first()
            return (row[0], row[1]) if row else (None, "")
        study = params.get("study_uid") or params.get("study")
        if study:
            found = db.scalars(select(Study.pool).where(Study.study_uid == study)).first()
            return found, study
    return None, ""


def authorize(request: Request) -> None:
    """App-wide dependency: find the route's rule and enforce it (deny by default)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    rule = rights.rule_for(request.method, path)
    if rule is not None and rule.kind == "public":
        return
    caller = get_caller(request, _credentials(request))
    if caller.password_one_time and (request.method, path) not in rights.ONE_TIME_PASSWORD_ROUTES:
        _password_change_required(request, caller)
    if rule is None:
        log.warning("no access rule for %s %s: administrators only", request.method, path)
        if caller.role != "administrator":
            raise HTTPException(403, "this function has no access rule yet (administrators only)")
        return
    if rule.kind == "user":
        return
    if rule.kind == "capability":
        if not rights.role_allows(caller.role, rule.right):
            _forbidden(request, caller, rule.right)
        return
    if not rights.role_allows(caller.role, rule.right):
        _forbidden(request, caller, rule.right)
    ctx: ServerContext = request.app.state.ctx
    acc = access(request, caller)
    if rule.kind == "any-pool":
        if not acc.any(rule.right):
            _forbidden(request, caller, rule.right)
        _audit_access(request, caller, rule, "")
        return
    if rule.right == "import":
        target = ctx.settings.pools[0].name  # STOW stores into the first pool
        if not acc.allows(target, "import"):
            _forbidden(request, caller, "import")
        return
    params = dict(request.path_params)
    pool_name, study_uid = _pool_of(ctx, params)
    if pool_name is not None and acc.allows(pool_name, rule.right):
        _audit_access(request, caller, rule, study_uid)
        return
    if any(params.get(k) for k in _OBJECT_PARAMS) and not acc.everything:
        # The path names an object the caller may not use, or one that does not exist: one
        # answer for both, decided here, before the route could word them differently
        # ("instance X not found", "no matching instances", 200 [] of QIDO, or the 403
        # of an account without grants: probe 21). Not 403: that would confirm existence.
        if pool_name is not None:
            audit_hidden_refusal(request, caller, rule.right, _path_objects(params, study_uid))
        raise not_found()
    asked = request.query_params.get("pool", "")
    allowed = acc.pools_with(rule.right, known_pools(ctx))
    if asked:
        # The pool filter is resolved here against the configured names, once, and the
        # listing narrowed to it (``pool_filter``): "DEFAULT" was 403 and "default" 200 []
        # for a user limited to ONCO, the index comparing the raw text (probe 21).
        named = match_pools(asked, known_pools(ctx))
        if not named:
            pools = ", ".join(known_pools(ctx))
            raise HTTPException(422, f"no data pool named '{asked[:64]}'; the pools are {pools}")
        allowed = [p for p in named if acc.allows(p, rule.right)]
        request.state.pool_resolved = True
    if allowed is not None and not allowed:
        _forbidden(request, caller, rule.right)
    request.state.read_pools = allowed
    _audit_access(request, caller, rule, params.get("study_uid", params.get("study", "")))


def _credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=value.strip())
    return None


def _password_change_required(request: Request, caller: Caller) -> None:
    """403 for an account whose password someone else set (a reset by clinic IT or an
    administrator, or an account clinic IT created): it must set its own first, so a
    password somebody else knows never opens the owner's data (probe 21)."""
    detail = f"{request.method} {request.url.path}: one-time password not yet changed"
    audit_caller(request.app.state.ctx, "refused", caller, [], detail, audit.MINOR_FAILURE)
    raise HTTPException(
        403,
        rights.PASSWORD_CHANGE_DETAIL,
        headers={"X-Lucent-Error": rights.PASSWORD_CHANGE_CODE},
    )


def _forbidden(request: Request, caller: Caller, right: str) -> None:
    _audit_refusal(request.app.state.ctx, caller, request, right)
    raise HTTPException(403, f"your account lacks the '{right}' right for this")


def audit_caller(
    ctx: ServerContext,
    event: str,
    caller: Caller,
    objects: list[dict[str, str]],
    detail: str,
    outcome: int = audit.SUCCESS,
) -> None:
    """One audit record of what a logged-in caller did (or was refused): who, from where."""
    audit.record(
        ctx.WriteSession,
        audit.Entry(event, outcome, caller.username, caller.address, objects, detail),
    )


def _audit_refusal(ctx: ServerContext, caller: Caller, request: Request, right: str) -> None:
    detail = f"{request.method} {request.url.path}: needs '{right}'"
    audit_caller(ctx, "refused", caller, [], detail, audit.MINOR_FAILURE)


def _audit_access(request: Request, caller: Caller, rule: rights.Rule, study_uid: str) -> None:
    """Data access (query, view, download) as PS3.15 A.5 Query / Instances Accessed / Export."""
    ctx: ServerContext = request.app.state.ctx
    if not rule.audit or not ctx.settings.audit.data_access:
        return
    objects = [{"type": "study", "id": study_uid}] if study_uid else []
    if rule.audit == "query" and not study_uid:
        objects = [{"type": "query", "id": str(request.url.query)[:200]}]
    audit_caller(ctx, rule.audit, caller, objects, f"{request.method} {request.url.path}")


def hidden_uids(request: Request, level: str, show_hidden: bool = False) -> set[str]:
    """UIDs this caller has hidden (FAQ "Show hidden data"); empty when ``show_hidden``
    (the routes' declared ``?show_hidden=true``)."""
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller) or show_hidden:
        return set()
    ctx: ServerContext = request.app.state.ctx
    with ctx.Session() as db:
        return set(
            db.scalars(
                select(HiddenItem.uid).where(
                    HiddenItem.user_pk == caller.user_id, HiddenItem.level == level
                )
            )
        )
