"""Login dialog with a one-time password (set by an administrator or clinic IT): the server
answers every route but /auth/password with 403 password-change-required until the owner
sets their own. The dialog logged such a user in and every later request failed; it now
asks for a new password first. Real server, real Qt dialog under Xvfb."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings

from lucent.api.client import LucentClient, PasswordChangeRequired
from tests.gui.helpers import save
from workstation.qt.login import LoginDialog


def _red_pixels(widget: object) -> int:
    image = widget.grab().toImage()  # type: ignore[attr-defined]
    width, height = image.width(), image.height()
    ptr = image.constBits()
    arr = np.frombuffer(ptr, np.uint8, count=image.sizeInBytes()).reshape(height, -1, 4)
    b, g, r = arr[:, :width, 0].astype(int), arr[:, :width, 1], arr[:, :width, 2]
    return int(((r > 150) & (g < 80) & (b < 80)).sum())


def test_a_one_time_password_is_replaced_in_the_login_dialog(
    qtbot,
    server,
    api: LucentClient,
    tmp_path: Path,
    artifacts: Path,  # noqa: ANN001
) -> None:
    name = f"otp{uuid.uuid4().hex[:8]}"
    api.create_user(name, "first-Password-123", grants={"DEFAULT": ["read"]})
    api.update_user(name, password="reset-by-Admin-456")  # set by another: one-time
    probe = LucentClient(server.api_url)
    assert probe.login(name, "reset-by-Admin-456").password_change_required
    try:
        probe.studies()
        raise AssertionError("a one-time password gave access")
    except PasswordChangeRequired:
        pass

    settings = QSettings(str(tmp_path / "login.ini"), QSettings.Format.IniFormat)
    dialog = LoginDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.server.setText(server.api_url)
    dialog.user.setText(name)
    dialog.password.setText("reset-by-Admin-456")
    assert not dialog.new_password.isVisible()
    dialog.try_login()
    assert dialog.client is None and dialog.new_password.isVisible()
    assert "choose your own" in dialog.error.text()
    qtbot.wait(50)
    assert _red_pixels(dialog) > 50  # the message is drawn, in red
    save(dialog, artifacts, "workstation_login_one_time.png")
    dialog.new_password.setText("my-Own-Secret-789")
    dialog.repeat.setText("something else")
    dialog.try_login()
    assert dialog.client is None and "differ" in dialog.error.text()
    dialog.repeat.setText("my-Own-Secret-789")
    dialog.try_login()
    assert dialog.client is not None and dialog.result() == LoginDialog.DialogCode.Accepted
    dialog.client.studies()  # the session now reads like any other
    fresh = LucentClient(server.api_url)
    assert not fresh.login(name, "my-Own-Secret-789").password_change_required
