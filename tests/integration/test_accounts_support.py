"""Helpers for the accounts tests: the real app in-process (ASGI), with its own data folder.

No test functions here; test modules import ``make_app``/``AppUnderTest`` from this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lucent.api.client import LucentClient
from server import config
from server.accounts import clock, users
from server.api.app import create_app
from server.context import ServerContext

ADMIN = ("admin", "correct-horse-battery")
PASSWORD = "a-long-enough-password"


class AppUnderTest:
    def __init__(self, ctx: ServerContext, client: TestClient, app: FastAPI) -> None:
        self.ctx = ctx
        self.http = client
        self.app = app

    def client(self, username: str | None = None, password: str = PASSWORD) -> LucentClient:
        """The typed client the apps use, over this in-process app; logged in if a name is
        given (the admin gets a device identity, as the admin console would send)."""
        api = LucentClient("http://testserver")
        api._http.close()
        api._http = self.http  # same ASGI transport; each client keeps its own token
        if username == ADMIN[0]:
            api.login_device(username, ADMIN[1], "admin-console", "console")
        elif username is not None:
            api.login(username, password)
        return api

    def admin_client(self) -> LucentClient:
        return self.client(ADMIN[0])

    def login(self, username: str, password: str = PASSWORD, **extra: Any) -> httpx.Response:
        return self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": password, **extra}
        )

    def token(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        r = self.login(username, password)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def admin(self) -> dict[str, str]:
        r = self.login(*ADMIN, device_id="admin-console", device_name="console")
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def add_user(
        self, name: str, role: str, grants: dict[str, list[str]] | None = None, **extra: Any
    ) -> None:
        created = self.admin_client().create_user(name, PASSWORD, role, grants=grants, **extra)
        assert created.username == name.casefold() and created.role == role

    def store(self, data: bytes, pool: str = "DEFAULT", owner: int | None = None) -> int:
        return self.ctx.store(data, pool=pool, source="TEST", owner=owner).status


@contextmanager
def make_app(
    workdir: Path,
    sections: dict[str, dict[str, Any]] | None = None,
    pools: list[dict[str, Any]] | None = None,
) -> Iterator[AppUnderTest]:
    data: dict[str, Any] = {
        "server": {"data_dir": str(workdir / "data")},
        "archive": {"min_free_mb": 1},
        "accounts": {"retention_interval_minutes": 0.0},
    }
    for name, values in (sections or {}).items():
        data.setdefault(name, {}).update(values)
    data["pools"] = pools or [{"name": "DEFAULT", "ae_title": "LUCENT", "port": 0}]
    settings = config.parse(data)
    ctx = ServerContext(settings, migrate=True)
    with ctx.WriteSession() as db, db.begin():
        users.create_user(db, ADMIN[0], ADMIN[1], role="administrator")
    clock.reset()
    try:
        fastapi_app = create_app(ctx)
        with TestClient(fastapi_app) as client:
            yield AppUnderTest(ctx, client, fastapi_app)
    finally:
        clock.reset()
        ctx.close()


CT = "1.2.840.10008.5.1.4.1.1.2"


def ct_bytes(tmp: Path, **kwargs: Any) -> bytes:
    """One small CT image as Part-10 bytes (tests/data/samples.py generator)."""
    from tests.data.samples import make_instance, write

    ds = make_instance(CT, rows=kwargs.pop("rows", 32), cols=kwargs.pop("cols", 32), **kwargs)
    path = write(ds, tmp / f"{ds.SOPInstanceUID}.dcm")
    return path.read_bytes()
