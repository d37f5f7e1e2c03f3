"""Start-up: find (or start) the local server, log in, open the main window."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication


def server_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_server(url: str) -> subprocess.Popen[bytes] | None:
    """Start the bundled `lucent-server run` when nothing answers on the local URL."""
    if server_up(url) or not url.startswith(("http://127.0.0.1", "http://localhost")):
        return None
    exe = shutil.which("lucent-server")
    cmd = [exe, "run"] if exe else [sys.executable, "-m", "server", "run"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if server_up(url):
            return proc
        time.sleep(0.5)
    return proc


def run(argv: list[str]) -> int:
    from workstation.qt.login import LoginDialog
    from workstation.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv)
    settings = QSettings("Lucent", "Workstation")
    ensure_server(str(settings.value("server", "http://127.0.0.1:8750")))
    dialog = LoginDialog(settings)
    if dialog.exec() != LoginDialog.DialogCode.Accepted or dialog.client is None:
        return 1
    client = dialog.client
    # [gsps] send_node: the PACS every saved presentation state also goes to ("" = none).
    window = MainWindow(client, gsps_send_node=str(settings.value("gsps/send_node", "")))
    window.resize(1600, 1000)
    window.show()
    window.browser.refresh()  # an expired session asks for the password (MainWindow)
    return int(app.exec())
