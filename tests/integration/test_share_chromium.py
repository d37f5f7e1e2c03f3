"""Second-opinion share link in real headless Chromium (FAQ: "a temporary link to studies or
series ... protected against unauthorized access with a PIN").

Drives Debian ``chromium`` over the DevTools protocol against the real server subprocess:
wrong PIN refused, right PIN shows the image (pixels of a screenshot checked), the cookie
opens nothing else, an expired link is refused.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lucent.api.client import LucentClient
from tests.integration.test_accounts_support import ct_bytes
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer

websocket = pytest.importorskip("websocket")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed")


class Browser:
    """A headless Chromium page driven through the DevTools protocol (one websocket)."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [
                str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--remote-debugging-port=0", "--window-size=800,700", "about:blank",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        port = 0
        while time.monotonic() < deadline and not port:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
        assert port, "chromium did not start"
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self._ids = itertools.count(1)
        self.call("Page.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                return msg.get("result", {})  # type: ignore[no-any-return]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)  # fmt: skip
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(f"Boolean({condition})"):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {condition}")

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LucentServer]:
    with LucentServer(tmp_path_factory.mktemp("share-server")) as srv:
        yield srv


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _admin(server: LucentServer) -> dict[str, str]:
    r = httpx.post(f"{server.api_url}/api/v1/auth/login",
                   json={"username": ADMIN_USER, "password": ADMIN_PASSWORD})  # fmt: skip
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _api(server: LucentServer) -> LucentClient:
    """The typed client, logged in as the administrator (creates and revokes links)."""
    api = LucentClient(server.api_url)
    api.login(ADMIN_USER, ADMIN_PASSWORD)
    return api


def _stow(server: LucentServer, headers: dict[str, str], data: bytes) -> None:
    b = "sharebnd"
    body = f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
    body += f"\r\n--{b}--\r\n".encode()
    ctype = f'multipart/related; type="application/dicom"; boundary={b}'
    r = httpx.post(f"{server.api_url}/dicom-web/studies", content=body,
                   headers={**headers, "Content-Type": ctype})  # fmt: skip
    assert r.status_code == 200, r.text


def _bright_square(tmp: Path, study: str) -> bytes:
    """A CT image: black background, a bright square in the middle (easy to find in pixels)."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(ct_bytes(tmp, study_uid=study, rows=64, cols=64)))
    arr = np.zeros((64, 64), dtype=np.uint16)
    arr[16:48, 16:48] = 2000
    ds.PixelData = arr.tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 1000, 2000
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_share_link_in_chromium(server: LucentServer, browser: Browser, tmp_path: Path) -> None:
    admin = _admin(server)
    api = _api(server)
    _stow(server, admin, _bright_square(tmp_path, "1.2.826.55.1"))
    _stow(server, admin, _bright_square(tmp_path, "1.2.826.55.2"))
    created = api.create_share("1.2.826.55.1", expires_hours=1, note="second opinion")
    link, pin = created.url, created.pin
    [listed] = [s for s in api.shares() if s.id == created.id]
    assert listed.study_uid == "1.2.826.55.1" and listed.note == "second opinion"
    assert not listed.revoked and listed.views == 0
    token = link.rsplit("/", 1)[1]
    assert len(token) >= 43  # >= 256 bits

    browser.goto(link)
    assert browser.eval("document.getElementById('pinform').style.display") != "none"
    wrong = "000000" if pin != "000000" else "111111"
    browser.eval(f"document.getElementById('pin').value = '{wrong}'")
    browser.eval("document.getElementById('open').click()")
    browser.wait_for("document.body.dataset.state === 'refused'")
    assert "Wrong PIN" in browser.eval("document.getElementById('message').textContent")
    assert browser.eval("document.getElementById('viewer').style.display") != "block"

    browser.eval(f"document.getElementById('pin').value = '{pin}'")
    browser.eval("document.getElementById('open').click()")
    browser.wait_for("document.body.dataset.loaded === '0'")
    box = browser.eval("JSON.stringify(document.getElementById('image').getBoundingClientRect())")
    rect = json.loads(box)
    shot = browser.screenshot()
    x0, y0 = int(rect["x"]), int(rect["y"])
    w, h = int(rect["width"]), int(rect["height"])
    centre = shot[y0 + h // 2 - 20 : y0 + h // 2 + 20, x0 + w // 2 - 20 : x0 + w // 2 + 20]
    corner = shot[y0 + 5 : y0 + 40, x0 + 5 : x0 + 40]
    assert centre.mean() > 200 and corner.mean() < 40  # the bright square on black

    # the viewing cookie opens nothing else: not the archive API, not another link
    status = browser.eval(
        "fetch('/api/v1/studies', {credentials: 'same-origin'}).then(r => r.status)"
    )
    assert status == 401
    status = browser.eval(
        "fetch('/dicom-web/studies/1.2.826.55.2', {credentials: 'same-origin'}).then(r => r.status)"
    )
    assert status == 401
    second = api.create_share("1.2.826.55.2", expires_hours=1)
    other = second.url.rsplit("/", 1)[1]
    status = browser.eval(f"fetch('/share/{other}/content').then(r => r.status)")
    assert status == 401
    # the content of the shared link is exactly that study: one image
    count = browser.eval(
        f"fetch('/share/{token}/content').then(r => r.json()).then(j => j.images.length)"
    )
    assert count == 1

    # a revoked (withdrawn) link is refused at once, cookie or not
    api.revoke_share(second.id)
    browser.goto(f"{server.api_url}/share/{other}")
    assert "withdrawn" in browser.eval("document.getElementById('problem').textContent")
    assert {s.id: s.revoked for s in api.shares()}[second.id] is True
    assert {s.id: s.views for s in api.shares()}[created.id] == 1

    events = api.audit(user="share-link")
    assert any(e.outcome == 4 for e in events) and any(e.outcome == 0 for e in events)
    api.close()


def test_expired_link_is_refused(server: LucentServer, browser: Browser, tmp_path: Path) -> None:
    admin = _admin(server)
    _stow(server, admin, _bright_square(tmp_path, "1.2.826.55.3"))
    r = httpx.post(
        f"{server.api_url}/api/v1/shares",
        headers=admin,
        json={"study_uid": "1.2.826.55.3", "expires_hours": 0.0003},
    )  # ~1 s
    assert r.status_code == 201
    url, pin = r.json()["url"], r.json()["pin"]
    time.sleep(1.5)
    browser.goto(url)
    assert "expired" in browser.eval("document.getElementById('problem').textContent")
    assert browser.eval("document.getElementById('pinform').style.display") == "none"
    r = httpx.post(f"{url}/pin", json={"pin": pin})
    assert r.status_code == 410


def test_share_pin_brute_force_blocks_the_link(server: LucentServer, tmp_path: Path) -> None:
    admin = _admin(server)
    _stow(server, admin, _bright_square(tmp_path, "1.2.826.55.4"))
    r = httpx.post(
        f"{server.api_url}/api/v1/shares",
        headers=admin,
        json={"study_uid": "1.2.826.55.4", "expires_hours": 1, "max_views": 1},
    )
    url, pin = r.json()["url"], r.json()["pin"]
    wrong = "000000" if pin != "000000" else "111111"
    codes = [httpx.post(f"{url}/pin", json={"pin": wrong}).status_code for _ in range(5)]
    assert codes == [401] * 5
    assert httpx.post(f"{url}/pin", json={"pin": pin}).status_code == 410  # blocked now
