"""The login dialog's layout (s15): a blank band of ~70 px stood between the password field
and the first-run hint (the empty error line took the height left over, worked out at the
labels' narrow width), and after a failed login the error pushed the hint's last lines out
of the dialog. Real widgets under Xvfb; the band is measured on the grabbed pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings

from tests.gui.helpers import grab, save
from tests.support.peers import free_port
from workstation.qt.login import LoginDialog


def _blank_rows_between(dialog: LoginDialog, top: int, bottom: int) -> int:
    """The longest run of rows without a drawn (dark) pixel between two y positions."""
    shot = grab(dialog)
    drawn = (shot[top:bottom].max(axis=2) < 160).any(axis=1)
    longest = run = 0
    for row in drawn:
        run = 0 if row else run + 1
        longest = max(longest, run)
    return longest


def _gap(dialog: LoginDialog) -> tuple[int, int]:
    below_password = dialog.password.mapTo(dialog, dialog.password.rect().bottomLeft()).y()
    hint_top = dialog.hint.mapTo(dialog, dialog.hint.rect().topLeft()).y()
    return below_password, hint_top


def _hint_fits(dialog: LoginDialog) -> bool:
    return dialog.hint.height() >= dialog.hint.heightForWidth(dialog.hint.width())


def test_no_blank_band_and_the_hint_stays_whole_after_an_error(
    qtbot: Any, tmp_path: Path, artifacts: Path
) -> None:
    settings = QSettings(str(tmp_path / "ws.ini"), QSettings.Format.IniFormat)
    settings.setValue("server", f"http://127.0.0.1:{free_port()}")  # nothing listens
    dialog = LoginDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.wait(50)
    assert dialog.hint.isVisible() and not dialog.error.isVisible()
    below, hint_top = _gap(dialog)
    assert hint_top - below < 24, (below, hint_top)
    # the pixels: the hint's first line follows the fields, no empty band in between
    assert _blank_rows_between(dialog, below + 2, hint_top + 30) < 24
    assert _hint_fits(dialog)
    save(dialog, artifacts, "s15_login_layout.png")

    dialog.user.setText("someone")
    dialog.password.setText("secret")
    dialog.try_login()
    qtbot.wait(50)
    assert dialog.error.isVisible() and "Server not reachable" in dialog.error.text()
    assert _hint_fits(dialog), (dialog.hint.height(), dialog.hint.heightForWidth(398))
    bottom = dialog.hint.mapTo(dialog, dialog.hint.rect().bottomLeft()).y()
    assert bottom <= dialog.height()
    shot = grab(dialog)
    assert (np.asarray(shot)[:, :, 0] > 150).sum() > 0  # something red-ish drawn (error)
    save(dialog, artifacts, "s15_login_layout_error.png")
