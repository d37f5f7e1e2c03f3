"""Who is calling: bearer tokens on every route, HTTP Basic for DICOMweb clients.

Basic credentials are verified with Argon2 once and then remembered for a short time as an
HMAC of (user, password) under a per-process secret, so DICOMweb clients that send Basic on
every request do not pay the password hash each time (as Orthanc allows Basic auth).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.accounts import users
from server.context import ServerContext

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    user_id: int
    username: str
    role: str

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


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer, Basic realm="Lucent"'},
    )


def get_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Caller:
    ctx: ServerContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        return _basic(request, header[6:])
    if credentials is None:
        raise _unauthorized("authentication required")
    with ctx.Session() as db:
        user = users.user_for_token(db, credentials.credentials)
        if user is None:
            raise _unauthorized("session expired or invalid; log in again")
        return Caller(user.id, user.username, user.role)


def _basic(request: Request, encoded: str) -> Caller:
    ctx: ServerContext = request.app.state.ctx
    cache: BasicCache = request.app.state.basic_cache
    try:
        username, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unauthorized("malformed Basic credentials") from exc
    cached = cache.get(username, password)
    if cached is not None:
        return cached
    with ctx.Session() as db, db.begin():
        user = users.authenticate(db, username, password)
        if user is None:
            raise _unauthorized("wrong user name or password")
        caller = Caller(user.id, user.username, user.role)
    cache.put(username, password, caller)
    return caller


def require_admin(caller: Caller = Depends(get_caller)) -> Caller:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrator rights required")
    return caller
