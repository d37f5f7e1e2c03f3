"""Login dialog: remembers the last server and user (QSettings), never the password."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from lucent.api.client import ApiError, LucentClient


class LoginDialog(QDialog):
    def __init__(self, settings: QSettings, message: str = "") -> None:
        super().__init__()
        self.setWindowTitle("Lucent — log in")
        self.setMinimumWidth(420)  # the server address and user name fit, not cut
        self.settings = settings
        self.client: LucentClient | None = None
        self.server = QLineEdit(str(settings.value("server", "http://127.0.0.1:8750")))
        self.user = QLineEdit(str(settings.value("user", "")))
        self.password = QLineEdit(echoMode=QLineEdit.EchoMode.Password)
        # Shown when the password is one-time (set by an administrator or clinic IT): the
        # owner chooses their own before anything else answers (server: 403
        # password-change-required on every other route).
        self.new_password = QLineEdit(echoMode=QLineEdit.EchoMode.Password)
        self.repeat = QLineEdit(echoMode=QLineEdit.EchoMode.Password)
        self.error = QLabel(message)
        self.error.setStyleSheet("color: #c00;")
        self.error.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Server", self.server)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        form.addRow("New password", self.new_password)
        form.addRow("Repeat new password", self.repeat)
        self._form = form
        self._pending: LucentClient | None = None  # logged in, own password still to set
        self._show_new_password(False)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.try_login)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        (self.password if self.user.text() else self.user).setFocus()

    def _show_new_password(self, shown: bool) -> None:
        for field in (self.new_password, self.repeat):
            self._form.setRowVisible(field, shown)
        self.server.setEnabled(not shown)
        self.user.setEnabled(not shown)
        self.password.setEnabled(not shown)

    def try_login(self) -> None:
        if self._pending is not None:
            self._set_own_password(self._pending)
            return
        client = LucentClient(self.server.text().strip(), timeout=120)
        try:
            result = client.login(self.user.text().strip(), self.password.text())
        except ApiError as exc:
            # The FAQ's list: unknown user, wrong password — the server says which.
            self.error.setText(f"Login failed: {exc.detail}")
            return
        except Exception as exc:
            self.error.setText(f"Server not reachable: {exc}")
            return
        if result.password_change_required:
            self._pending = client
            self._show_new_password(True)
            self.new_password.setFocus()
            self.error.setText(
                "This password was set by an administrator and works once: choose your own "
                "password to continue."
            )
            return
        self._done(client)

    def _set_own_password(self, client: LucentClient) -> None:
        new = self.new_password.text()
        if new != self.repeat.text():
            self.error.setText("The two new passwords differ.")
            return
        try:
            client.change_password(self.password.text(), new)
        except ApiError as exc:  # too short, too common ... the server says why
            self.error.setText(f"Password not changed: {exc.detail}")
            return
        except Exception as exc:
            self.error.setText(f"Server not reachable: {exc}")
            return
        self._done(client)

    def _done(self, client: LucentClient) -> None:
        self.settings.setValue("server", self.server.text().strip())
        self.settings.setValue("user", self.user.text().strip())
        self.client = client
        self.accept()
