"""First start of the workstation on a fresh machine (outside probe 35): it started the
bundled server without an account, so the login dialog could only say "wrong user name or
password", and that server kept running after the workstation exited. The workstation now
starts it with ``--first-run-admin``, shows the one-time administrator password in the login
dialog, asks for the user's own password, and stops the server it started when it exits.
Real server subprocess, real Qt dialog under Xvfb."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from lucent.api.client import ApiError, LucentClient
from tests.support.lucent import render_config
from tests.support.peers import free_port
from workstation.qt import app as ws_app
from workstation.qt.login import LoginDialog


def _config(tmp_path: Path) -> tuple[str, str]:
    """A server config on free loopback ports with its own (empty) data directory."""
    api_port = free_port()
    text = render_config(
        {
            "server": {"data_dir": str(tmp_path / "data"), "log_level": "INFO"},
            "archive": {"min_free_mb": 64},
            "dimse": {"bind_address": "127.0.0.1", "workers": 1},
            "api": {"port": api_port},
        },
        [{"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()}],
    )
    path = tmp_path / "server.toml"
    path.write_text(text)
    return str(path), f"http://127.0.0.1:{api_port}"


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started without --config writes the user's config and data folders: never
    the real ones."""
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))


def _gone(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/v1/status", timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_a_fresh_machine_gets_its_first_administrator_in_the_login_dialog(
    qtbot,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    config, url = _config(tmp_path)
    bundled = ws_app.ensure_server(url, config=config)
    assert bundled is not None
    try:
        assert bundled.running() and bundled.problem() == ""
        assert bundled.first_admin is not None, list(bundled.tail)
        name, password = bundled.first_admin
        assert name == "admin" and len(password) >= 12
        assert all(password not in line for line in bundled.tail)  # shown once, not kept

        settings = QSettings(str(tmp_path / "ws.ini"), QSettings.Format.IniFormat)
        settings.setValue("server", url)
        dialog = LoginDialog(settings, first_admin=bundled.first_admin)
        qtbot.addWidget(dialog)
        dialog.show()
        assert dialog.notice.isVisible() and password in dialog.notice.text()
        assert "create-admin" in dialog.notice.text()
        assert dialog.user.text() == "admin" and dialog.new_password.isVisible()
        dialog.new_password.setText("my-Own-Admin-Secret-42")
        dialog.repeat.setText("my-Own-Admin-Secret-42")
        dialog.try_login()
        assert dialog.client is not None, dialog.error.text()
        assert dialog.result() == LoginDialog.DialogCode.Accepted
        assert dialog.client.me().role == "administrator"

        probe = LucentClient(url)
        with pytest.raises(ApiError):
            probe.login("admin", password)  # replaced by the user's own
        assert not probe.login("admin", "my-Own-Admin-Secret-42").password_change_required
    finally:
        bundled.stop()
    assert not bundled.running() and _gone(url)

    again = ws_app.ensure_server(url, config=config)  # an account exists: nothing created
    assert again is not None
    try:
        assert again.running() and again.first_admin is None
    finally:
        again.stop()
    assert _gone(url)


def test_the_server_the_workstation_started_stops_when_it_exits(
    qtbot,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, url = _config(tmp_path)
    ini = tmp_path / "ws.ini"
    seed = QSettings(str(ini), QSettings.Format.IniFormat)
    seed.setValue("server", url)
    seed.setValue("server_config", config)
    seed.sync()
    monkeypatch.setattr(
        ws_app, "QSettings", lambda *_: QSettings(str(ini), QSettings.Format.IniFormat)
    )
    started: list[ws_app.BundledServer] = []
    real_ensure = ws_app.ensure_server

    def ensure(*args: object, **kwargs: object) -> ws_app.BundledServer | None:
        bundled = real_ensure(*args, **kwargs)  # type: ignore[arg-type]
        if bundled is not None:
            started.append(bundled)
        return bundled

    monkeypatch.setattr(ws_app, "ensure_server", ensure)
    seen: list[str] = []
    answered: list[bool] = []

    def cancel_login() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, LoginDialog):
            QTimer.singleShot(100, cancel_login)
            return
        answered.append(not _gone(url))  # the server answers while the dialog is open
        seen.append(getattr(dialog, "notice", dialog.error).text())
        dialog.reject()

    QTimer.singleShot(100, cancel_login)
    try:
        assert ws_app.run(["lucent-workstation"]) == 1
        assert len(started) == 1 and answered == [True]
        assert "password" in seen[0] and "admin" in seen[0]
        assert not started[0].running(), "the server the workstation started outlived it"
        assert _gone(url)
    finally:
        for left in started:  # whatever a failing run left behind
            proc = getattr(left, "proc", left)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_server_already_running_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service answering at the address: nothing is started, nothing will be stopped."""
    monkeypatch.setattr(ws_app, "server_up", lambda url: True)
    monkeypatch.setattr(ws_app.subprocess, "Popen", None)  # would raise if called
    assert ws_app.ensure_server("http://127.0.0.1:8750") is None
    assert ws_app.ensure_server("https://pacs.example.org:8750") is None
