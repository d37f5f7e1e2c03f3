"""Request bodies are bounded before a route reads them (outside probe: four 300 MB POSTs
to the unauthenticated login route took the server from 0.3 to 2.4 GB of memory)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from server.api import body_limit
from tests.support.lucent import LucentServer

BIG = body_limit.JSON_LIMIT + 1


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def test_oversized_bodies_are_refused_with_413(server: LucentServer) -> None:
    url = f"{server.api_url}/api/v1/auth/login"
    with httpx.Client(timeout=30) as http:
        declared = http.post(url, content=b" " * BIG, headers={"content-type": "application/json"})
        assert declared.status_code == 413, declared.text
        assert "larger than 1 MiB" in declared.json()["detail"]
    with httpx.Client(timeout=30) as http:  # no Content-Length: counted as it arrives
        chunked = http.post(url, content=_chunks(BIG), headers={"content-type": "application/json"})
        assert chunked.status_code == 413, chunked.text
    with httpx.Client(timeout=30) as http:  # the server still answers the ordinary request
        small = http.post(url, json={"username": "nobody", "password": "wrong-password"})
        assert small.status_code == 401


def test_stow_takes_large_bodies_up_to_its_own_limit() -> None:
    assert body_limit.limit_for("POST", "/dicom-web/studies") == body_limit.STOW_LIMIT
    assert body_limit.limit_for("POST", "/dicom-web/studies/1.2.3") == body_limit.STOW_LIMIT
    assert body_limit.limit_for("POST", "/api/v1/auth/login") == body_limit.JSON_LIMIT
    assert body_limit.STOW_LIMIT > 100 * body_limit.JSON_LIMIT
