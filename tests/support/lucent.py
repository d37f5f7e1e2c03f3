"""Our own server as a real subprocess on free loopback ports (for tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from lucent.api.client import LucentClient
from tests.support.peers import dicom_echo_ok, free_port

REPO = Path(__file__).resolve().parents[2]
ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(sections: dict[str, dict[str, Any]], pools: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    for pool in pools:
        lines.append("[[pools]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in pool.items())
        lines.append("")
    return "\n".join(lines)


T = TypeVar("T")


class LucentServer:
    """`lucent-server run` in its own process group, so a test can kill -9 all of it."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 2,
        max_pdu: int = 16384,
        pools: list[dict[str, Any]] | None = None,
        settings: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.pools = pools or [{"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()}]
        sections: dict[str, dict[str, Any]] = {
            "server": {"data_dir": str(self.workdir / "data"), "log_level": "INFO"},
            "archive": {"min_free_mb": 64},
            "dimse": {"bind_address": "127.0.0.1", "workers": workers, "max_pdu": max_pdu},
            "api": {"port": self.api_port},
        }
        for name, values in (settings or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config_path = self.workdir / "server.toml"
        self.config_path.write_text(render_config(sections, self.pools))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"
        self._admin_created = False

    @property
    def port(self) -> int:
        return int(self.pools[0]["port"])

    @property
    def ae_title(self) -> str:
        return str(self.pools[0]["ae_title"])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", *args, "--config", str(self.config_path)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> Self:
        if not self._admin_created:
            done = self.cli(
                "create-admin",
                "--username",
                ADMIN_USER,
                "--password-stdin",
                stdin=ADMIN_PASSWORD + "\n",
            )
            if done.returncode != 0 and "already exists" not in done.stderr:
                raise RuntimeError(f"create-admin failed: {done.stderr}")
            self._admin_created = True
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self._api_up() and all(
                dicom_echo_ok("127.0.0.1", int(p["port"]), str(p["ae_title"])) for p in self.pools
            ):
                return self
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"server did not come up in {timeout}s:\n{self.log_tail()}")

    def _api_up(self) -> bool:
        try:
            # not /openapi.json: its first call builds the whole schema (2 s of CPU)
            answer = httpx.get(f"{self.api_url}/api/v1/status", timeout=2)
            return answer.status_code in (200, 401)
        except httpx.HTTPError:
            return False

    def client(self) -> LucentClient:
        c = LucentClient(self.api_url)
        c.login(ADMIN_USER, ADMIN_PASSWORD)
        return c

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """``predicate()``'s first truthy value, polled; on timeout an AssertionError that
        names ``what`` and shows the server's log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9 of the whole server (main process and DICOM workers)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
