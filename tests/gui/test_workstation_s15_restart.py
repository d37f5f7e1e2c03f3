"""A bundled server that died can be started again from the workstation (s15). The box
that says the server stopped used to end with "close the workstation and start it again": a
reader in the middle of a worklist lost their place. It now has "Restart server": the same
command starts again, the window stays usable while it starts, the session goes on (tokens
live in the server's index), and the watch goes on watching the new process. Real server
subprocesses, real Qt widgets under Xvfb, pixels checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lucent.api.client import LucentClient
from tests.gui.helpers import grab, save
from tests.gui.test_first_run_s13 import _config
from workstation.qt import app as ws_app


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the real user's config, data or log folders."""
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / sub))


def test_restart_server_from_the_stopped_box(qtbot: Any, tmp_path: Path, artifacts: Path) -> None:
    from workstation.qt.main_window import MainWindow

    config, url = _config(tmp_path)
    bundled = ws_app.ensure_server(url, config=config)
    assert bundled is not None
    try:
        assert bundled.running() and bundled.first_admin is not None, bundled.problem()
        name, password = bundled.first_admin
        client = LucentClient(url)
        client.login(name, password)
        win = MainWindow(client)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        qtbot.waitExposed(win)
        watch = ws_app.ServerWatch(win, bundled, url, every_ms=100)
        first_pid = bundled.proc.pid
        bundled.proc.kill()
        qtbot.waitUntil(lambda: win.server_box is not None and win.server_box.isVisible(),
                        timeout=20000)  # fmt: skip
        assert win.restart_button is not None and win.restart_button.isVisible()
        assert "Restart server" in win.server_box.text()
        qtbot.wait(100)
        save(win.server_box, artifacts, "s15_server_stopped_restart_box.png")
        shot = grab(win.server_box)
        button = win.restart_button.mapTo(win.server_box, win.restart_button.rect().topLeft())
        band = shot[button.y() : button.y() + win.restart_button.height(),
                    button.x() : button.x() + win.restart_button.width()]  # fmt: skip
        assert (band.max(axis=2) < 100).sum() > 30  # the button's label is drawn

        win.restart_button.click()
        assert win.server_box is None and "restarting" in win.status_label.text()
        assert bundled.proc.pid != first_pid
        qtbot.waitUntil(lambda: "running again" in win.status_label.text(), timeout=90000)
        assert bundled.running() and ws_app.server_up(url)
        assert client.status()["instances"] == 0  # the same session, on the new process
        assert win.server_stopped_message == ""
        log = bundled.log_path.read_text()
        assert f"process {bundled.proc.pid}" in log and ws_app._RUNNING in log
        previous = bundled.log_path.with_name(ws_app.LOG_NAME + ".1").read_text()
        assert f"process {first_pid}" in previous and "exit status -9" in previous
        save(win, artifacts, "s15_server_running_again.png")

        # the new process is watched too: a second crash is reported again
        bundled.proc.kill()
        qtbot.waitUntil(lambda: win.server_box is not None and win.server_box.isVisible(),
                        timeout=20000)  # fmt: skip
        assert "killed by signal 9" in win.server_box.text()
        watch.stop()
        client.close()
    finally:
        bundled.stop()


def test_a_restart_that_fails_says_why_and_offers_it_again(qtbot: Any, tmp_path: Path) -> None:
    from workstation.qt.main_window import MainWindow

    config, url = _config(tmp_path)
    bundled = ws_app.ensure_server(url, config=config)
    assert bundled is not None
    try:
        assert bundled.running() and bundled.first_admin is not None, bundled.problem()
        client = LucentClient(url)
        client.login(*bundled.first_admin)
        win = MainWindow(client)
        qtbot.addWidget(win)
        win.show()
        watch = ws_app.ServerWatch(win, bundled, url, every_ms=100)
        bundled.proc.kill()
        qtbot.waitUntil(lambda: win.server_box is not None, timeout=20000)
        # clinic IT broke the config meanwhile: the restart cannot start
        Path(config).write_text(Path(config).read_text() + "\n[no_such_section]\nkey = 1\n")
        assert win.restart_button is not None
        win.restart_button.click()
        qtbot.waitUntil(lambda: win.server_box is not None and win.server_box.isVisible(),
                        timeout=60000)  # fmt: skip
        text = win.server_box.text()
        assert "could not start" in text and "no_such_section" in text, text
        assert win.restart_button is not None  # offered again, once the config is fixed
        watch.stop()
        client.close()
    finally:
        bundled.stop()
