"""The server the workstation starts, and the first administrator's password (outside tester,
s14). (1) The bundled server's output was read into 20 lines of memory and nobody saw it after
login: a server that died left no trace. It now goes to a log file in the user's log folder
(platformdirs), and the message when the server stops (before or after login) names that
file. (2) On a server started separately with ``--first-run-admin`` the login dialog said
nothing about where the one-time password is: it now says that the server printed it in its
own output (it never reads that output). Real server subprocesses, real Qt widgets under
Xvfb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings

from lucent.api.client import LucentClient
from tests.gui.helpers import grab, save
from tests.gui.test_first_run_s13 import _config
from workstation.qt import app as ws_app
from workstation.qt.login import LoginDialog


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the real user's config, data or log folders."""
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / sub))


def test_the_log_folder_is_the_users_platformdirs_log_dir(tmp_path: Path) -> None:
    assert ws_app.log_dir() == tmp_path / "state" / "lucent" / "log"


def test_a_server_that_cannot_start_names_its_log_file(tmp_path: Path) -> None:
    config, url = _config(tmp_path)
    Path(config).write_text(Path(config).read_text() + "\n[no_such_section]\nkey = 1\n")
    logs = tmp_path / "logs"
    bundled = ws_app.ensure_server(url, config=config, timeout=60, log=logs)
    assert bundled is not None
    try:
        assert not bundled.running()
        problem = bundled.problem()
        log = logs / ws_app.LOG_NAME
        assert bundled.log_path == log and str(log) in problem, problem
        text = log.read_text()
        assert "no_such_section" in text, text  # why it refused, in the file
        assert "exit status 2" in text
    finally:
        bundled.stop()


def test_a_server_that_dies_after_login_is_reported_with_its_log(
    qtbot: Any, tmp_path: Path, artifacts: Path
) -> None:
    from workstation.qt.main_window import MainWindow

    config, url = _config(tmp_path)
    bundled = ws_app.ensure_server(url, config=config)  # default: the user's log folder
    assert bundled is not None
    try:
        assert bundled.running() and bundled.first_admin is not None, bundled.problem()
        name, password = bundled.first_admin
        log = ws_app.log_dir() / ws_app.LOG_NAME
        assert bundled.log_path == log
        text = log.read_text()
        assert ws_app._RUNNING in text and "Created the first administrator" in text
        assert password not in text  # shown once in the login dialog, never written
        client = LucentClient(url)
        client.login(name, password)
        win = MainWindow(client)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        qtbot.waitExposed(win)
        watch = ws_app.ServerWatch(win, bundled, url, every_ms=100)
        qtbot.wait(300)
        assert win.server_box is None  # running: nothing said
        bundled.proc.kill()  # a crash: nobody stopped it
        qtbot.waitUntil(lambda: win.server_box is not None and win.server_box.isVisible(),
                        timeout=20000)  # fmt: skip
        assert not watch.timer.isActive()
        box = win.server_box
        assert str(log) in box.text() and "stopped" in box.text(), box.text()
        assert "stopped" in win.status_label.text()
        assert "exit status" in log.read_text()
        qtbot.wait(100)
        shot = grab(box)
        assert shot.shape[0] > 60 and (shot.max(axis=2) < 80).sum() > 200  # text drawn
        save(box, artifacts, "s14_server_stopped_box.png")
        save(win, artifacts, "s14_server_stopped_window.png")
        client.close()
    finally:
        bundled.stop()


def _hint_shown(dialog: LoginDialog) -> bool:
    return dialog.hint.isVisible() and "--first-run-admin" in dialog.hint.text()


def test_login_says_where_the_password_of_a_separately_started_server_is(
    qtbot: Any, tmp_path: Path, artifacts: Path
) -> None:
    config, url = _config(tmp_path)
    out = (tmp_path / "server-out.txt").open("w")
    # Started by clinic IT, not by the workstation: its output is not the workstation's.
    proc = subprocess.Popen([sys.executable, "-m", "server", "run", "--first-run-admin",
                             "--config", config], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        qtbot.waitUntil(lambda: ws_app.server_up(url) or proc.poll() is not None,
                        timeout=90000)  # fmt: skip
        assert proc.poll() is None, (tmp_path / "server-out.txt").read_text()
        printed = (tmp_path / "server-out.txt").read_text()
        password = next(
            line.split(":", 1)[1].strip()
            for line in printed.splitlines()
            if line.strip().startswith("password:")
        )
        settings = QSettings(str(tmp_path / "ws.ini"), QSettings.Format.IniFormat)
        settings.setValue("server", url)
        dialog = LoginDialog(settings)  # no first_admin: the workstation started nothing
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        assert _hint_shown(dialog) and "prints its password" in dialog.hint.text()
        assert "create-admin" in dialog.hint.text()
        assert password not in dialog.hint.text()  # never read from the server
        qtbot.wait(50)
        shot = grab(dialog)
        top = dialog.hint.mapTo(dialog, dialog.hint.rect().topLeft())
        band = shot[top.y() : top.y() + dialog.hint.height(), :]
        assert (band.max(axis=2) < 140).sum() > 300  # the hint's text is drawn
        save(dialog, artifacts, "s14_login_first_run_hint.png")
        dialog.user.setText("admin")
        dialog.password.setText("not-the-password")
        dialog.try_login()
        assert dialog.client is None and "Login failed" in dialog.error.text()
        assert _hint_shown(dialog)  # still there after the failure
        dialog.password.setText(password)  # read by the person from the server's output
        dialog.try_login()
        assert dialog.client is not None, dialog.error.text()
        # a workstation that has logged in before: no hint until a login fails
        again = LoginDialog(settings)
        qtbot.addWidget(again)
        again.show()
        assert again.user.text() == "admin" and not again.hint.isVisible()
        again.password.setText("wrong-again")
        again.try_login()
        assert _hint_shown(again)
        # the workstation's own server shows the password itself: no hint then
        own = LoginDialog(settings, first_admin=("admin", "x" * 16))
        qtbot.addWidget(own)
        own.show()
        assert not own.hint.isVisible() and own.notice.isVisible()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        out.close()
