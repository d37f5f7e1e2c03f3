"""Start-up: find (or start) the local server, log in, open the main window.

A server the workstation starts itself lives as long as the workstation: it is stopped when
the workstation exits (closed, cancelled login, Ctrl+C; on Linux also when the workstation is
killed). A server that should keep receiving images while nobody reads (modalities sending at
night) is run as a service or with ``lucent-server run``; the workstation then finds it
answering and leaves it alone.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx
import platformdirs
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

if TYPE_CHECKING:
    from workstation.qt.main_window import MainWindow

#: The lines ``lucent-server run --first-run-admin`` prints once when no account exists
#: (server.cli.cmd_run): "Created the first administrator ...", "  user: NAME",
#: "  password: SECRET".
_CREATED = "Created the first administrator"
_USER = re.compile(r"^\s*user:\s*(\S+)\s*$")
_PASSWORD = re.compile(r"^\s*password:\s*(\S+)\s*$")
#: The banner's first line (server.cli.banner): everything before it has been printed.
_RUNNING = "Lucent server running"
#: Seconds to wait for a bundled server's API: the first start creates and migrates the index.
START_TIMEOUT = 90.0
#: The bundled server's output, in the user's log folder (the one before it: ``.1``).
LOG_NAME = "workstation-server.log"


def log_dir() -> Path:
    """The user's log folder for Lucent (platformdirs: ~/.local/state/lucent/log on Linux,
    %LOCALAPPDATA%\\lucent\\Logs on Windows, ~/Library/Logs/lucent on macOS)."""
    return Path(platformdirs.user_log_dir("lucent", appauthor=False))


def _open_log(folder: Path) -> tuple[Path, IO[str] | None]:
    """A fresh log file for this server run; the previous run's is kept as ``.1``. None when
    the folder cannot be written (the server still starts: the tail is kept in memory)."""
    path = folder / LOG_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.replace(path.with_name(LOG_NAME + ".1"))
        return path, path.open("w", encoding="utf-8")
    except OSError:
        return path, None


def server_url(settings: QSettings) -> str:
    """The server the workstation talks to (setting ``server``)."""
    return str(settings.value("server", "http://127.0.0.1:8750"))


def server_up(url: str) -> bool:
    """Whether a Lucent server answers at ``url``: its status route, which answers 401
    without a login. (``/openapi.json`` built the whole API schema on its first call: 2 s
    of the server's CPU at every workstation start.)"""
    try:
        return httpx.get(f"{url}/api/v1/status", timeout=2).status_code in (200, 401)
    except httpx.HTTPError:
        return False


def _is_local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: the started server gets SIGTERM when the workstation dies (even by SIGKILL),
    so a crashed workstation leaves no server behind (PR_SET_PDEATHSIG). libc is looked up
    here, in the parent: the function runs in the child between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_signal


class BundledServer:
    """A ``lucent-server run --first-run-admin`` the workstation started, with what it said.

    Its output (stdout and stderr) is read on a thread for as long as it runs, also after
    login: every line goes to ``log_path`` (the user's log folder), so that clinic IT can
    read why a server died hours later (outside probe, s14: the output was dropped after
    login). The one-time administrator password is kept in ``first_admin`` and never in
    ``tail`` or the log file; ``tail`` keeps the last lines for the error message."""

    def __init__(self, proc: subprocess.Popen[str], log: Path | None = None) -> None:
        self.first_admin: tuple[str, str] | None = None
        self._lock = threading.RLock()  # the reader and the GUI thread both write the log
        self._log_folder = log if log is not None else log_dir()
        self._attach(proc)

    def _attach(self, proc: subprocess.Popen[str]) -> None:
        """Follow ``proc``: a fresh log file (the previous one kept as ``.1``) and a reader."""
        self.proc = proc
        self.tail: deque[str] = deque(maxlen=20)
        self.banner_seen = threading.Event()
        self.silent_at = ""  # the URL, when the server runs but did not answer there
        self._exit_noted = False
        self.log_path, self._log = _open_log(self._log_folder)
        self._write_log(
            f"=== {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z} the workstation started "
            f"the server (process {proc.pid}): {' '.join(map(str, proc.args))}"
        )
        self._reader = threading.Thread(
            target=self._read, args=(proc.stdout,), daemon=True, name="bundled-server-output"
        )
        self._reader.start()

    def restart(self) -> None:
        """Start the same command again (after it died, or to stop and start it); returns at
        once, the caller waits for the API. The log of the run that ended becomes ``.1``.
        No parent-death signal this time: the workstation has Qt threads now, and Python
        code between fork and exec may deadlock there; ``run`` still stops it at exit."""
        self.stop()
        self._attach(_start(list(map(str, self.proc.args)), parent_death=False))

    def _read(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        user = ""
        created = False
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                line = line.rstrip("\r\n")
                if _CREATED in line:
                    created = True
                elif created and (m := _USER.match(line)):
                    user = m.group(1)
                elif created and user and (m := _PASSWORD.match(line)):
                    self.first_admin = (user, m.group(1))
                    created = False
                    # never kept in the tail or the log: shown once, in the login dialog
                    self._write_log("  password: (shown once in the workstation's login dialog)")
                    continue
                if line.startswith(_RUNNING):
                    self.banner_seen.set()
                self._write_log(line)
                if line.strip():
                    self.tail.append(line)
        self.banner_seen.set()  # the server's output ended: nothing more will come
        self._note_exit()
        self._close_log()

    def _note_exit(self) -> None:
        """The exit status, once, in the log. Called by the reader at the end of the output
        and by whoever sees the process gone: after a crash the server's DICOM worker
        processes can hold the output open a while longer."""
        code = self.proc.wait()
        with self._lock:
            if self._exit_noted:
                return
            self._exit_noted = True
        self._write_log(f"=== the server ended (exit status {code})")

    def _write_log(self, line: str) -> None:
        with self._lock:
            if self._log is None:
                return
            try:
                self._log.write(line + "\n")
                self._log.flush()  # a crash leaves everything it said on disk
            except (OSError, ValueError):
                self._close_log()

    def _close_log(self) -> None:
        with self._lock:
            log, self._log = self._log, None
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()

    def running(self) -> bool:
        return self.proc.poll() is None

    def problem(self) -> str:
        """Why the server is not serving ("" when it serves)."""
        if self.running():
            if self.silent_at:
                return (
                    f"The local server started but did not answer at {self.silent_at}: check "
                    "that the workstation's server address matches the server's [api] port."
                )
            return ""
        self._reader.join(timeout=2)
        self._note_exit()
        said = "\n".join(list(self.tail)[-5:])
        return (
            f"The local server could not start (exit status {self.proc.returncode})"
            + (f":\n{said}" if said else ".")
            + self.log_hint()
        )

    def log_hint(self) -> str:
        """Where the server's whole output is ("" when the log folder could not be written)."""
        return f"\nIts whole output is in {self.log_path}" if self.log_path.exists() else ""

    def stopped_message(self) -> str:
        """Why a server that served (the user is logged in) is gone, for the main window."""
        self._reader.join(timeout=2)
        self._note_exit()
        said = "\n".join(list(self.tail)[-5:])
        code = self.proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return (
            f"The local Lucent server the workstation started has stopped ({how}): images "
            "can no longer be loaded or received until it is restarted (Restart server)."
            + self.log_hint()
            + (f"\nIts last lines:\n{said}" if said else "")
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the server stops its DICOM workers and records Application Stop), then
        SIGKILL if it has not ended within ``timeout`` seconds."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(timeout=5)
        self._note_exit()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._reader.is_alive():
            self._close_log()


def server_command(config: str | None = None) -> list[str]:
    """``lucent-server run --first-run-admin``: on a fresh machine no account exists, and the
    server then creates the administrator 'admin' with a random password it prints once (the
    workstation shows it at login). With an account in the index it creates nothing."""
    exe = shutil.which("lucent-server")
    cmd = [exe] if exe else [sys.executable, "-m", "server"]
    cmd += ["run", "--first-run-admin"]
    if config:
        cmd += ["--config", config]
    return cmd


def _start(command: list[str], *, parent_death: bool = True) -> subprocess.Popen[str]:
    """The server process, its output piped to the reader of :class:`BundledServer`."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        preexec_fn=_parent_death_signal() if parent_death else None,  # noqa: PLW1509
    )


def ensure_server(
    url: str,
    config: str | None = None,
    timeout: float = START_TIMEOUT,
    log: Path | None = None,
) -> BundledServer | None:
    """Start the bundled server when nothing answers on a local URL; None when a server
    answers already (a service: left alone) or the URL is not on this machine. Its output
    goes to ``log`` (default: :func:`log_dir`)."""
    if not _is_local(url) or server_up(url):
        return None
    proc = _start(server_command(config))
    bundled = BundledServer(proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and bundled.running():
        if server_up(url):
            bundled.banner_seen.wait(5)  # the password line comes before the banner
            return bundled
        time.sleep(0.3)
    if bundled.running():
        bundled.silent_at = url
    return bundled


def run(argv: list[str]) -> int:
    settings = QSettings("Lucent", "Workstation")
    url = server_url(settings)
    # before QApplication: no Qt thread exists yet while the server process is forked
    bundled = ensure_server(url, config=str(settings.value("server_config", "")) or None)
    try:
        return _run(argv, settings, bundled, url)
    finally:
        if bundled is not None:
            bundled.stop()


def _run(argv: list[str], settings: QSettings, bundled: BundledServer | None, url: str) -> int:
    from workstation.qt.login import LoginDialog
    from workstation.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv)
    message = bundled.problem() if bundled is not None else ""
    first_admin = bundled.first_admin if bundled is not None else None
    dialog = LoginDialog(settings, message=message, first_admin=first_admin)
    if dialog.exec() != LoginDialog.DialogCode.Accepted or dialog.client is None:
        return 1
    client = dialog.client
    # [gsps] send_node: the PACS every saved presentation state also goes to ("" = none).
    window = MainWindow(client, gsps_send_node=str(settings.value("gsps/send_node", "")))
    window.resize(1600, 1000)
    window.show()
    window.browser.refresh()  # an expired session asks for the password (MainWindow)
    # the bundled server answers where it was started: ``url``, whatever the login chose
    watch = ServerWatch(window, bundled, url) if bundled is not None else None
    try:
        return int(app.exec())
    finally:
        if watch is not None:
            watch.stop()


class ServerWatch:
    """Tells the reader when the server the workstation started dies (with its log file;
    without this the browser only said "not reachable" and nobody knew why), and offers to
    start it again: the box's "Restart server" restarts it and waits, without blocking the
    window, until its API answers or it gives up (then the box comes back with why)."""

    def __init__(
        self, window: MainWindow, bundled: BundledServer, url: str, every_ms: int = 2000
    ) -> None:
        self.window = window
        self.bundled = bundled
        self.url = url
        self._starting_since: float | None = None
        self.timer = QTimer(window)
        self.timer.timeout.connect(self._check)
        self.timer.start(every_ms)

    def _check(self) -> None:
        if self._starting_since is not None:
            self._check_start()
        elif not self.bundled.running():
            self.timer.stop()
            self.window.server_stopped(self.bundled.stopped_message(), self.restart)

    def _check_start(self) -> None:
        assert self._starting_since is not None
        if not self.bundled.running():
            self._starting_since = None
            self.timer.stop()
            self.window.server_stopped(self.bundled.problem(), self.restart)
        elif server_up(self.url):
            self._starting_since = None
            self.window.server_running_again()
        elif time.monotonic() - self._starting_since > START_TIMEOUT:
            self._starting_since = None
            self.timer.stop()
            self.bundled.silent_at = self.url
            self.window.server_stopped(self.bundled.problem(), self.restart)

    def restart(self) -> None:
        """Start the server again; the timer watches its start, then the server."""
        self.window.server_restarting()
        self.bundled.restart()
        self._starting_since = time.monotonic()
        if not self.timer.isActive():
            self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
