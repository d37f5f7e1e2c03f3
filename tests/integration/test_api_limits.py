"""Request bodies are bounded before a route reads them (outside probe: four 300 MB POSTs
to the unauthenticated login route took the server from 0.3 to 2.4 GB of memory)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx

from lucent.api.client import LucentClient
from server.api import body_limit
from tests.data import samples
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


def test_stow_takes_bodies_beyond_the_json_limit(server: LucentServer, api: LucentClient) -> None:
    """STOW-RS carries whole studies: a 2 MiB instance is stored, not refused with 413."""
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.7", rows=1536, cols=1536)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    part = buf.getvalue()
    assert len(part) > 2 * body_limit.JSON_LIMIT
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--XX--\r\n"
    r = httpx.post(
        f"{server.api_url}/dicom-web/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {api.token}",
            "content-type": 'multipart/related; type="application/dicom"; boundary=XX',
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert body_limit.limit_for("POST", "/dicom-web/studies/1.2.3") == body_limit.STOW_LIMIT
