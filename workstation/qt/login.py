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
        self.settings = settings
        self.client: LucentClient | None = None
        self.server = QLineEdit(str(settings.value("server", "http://127.0.0.1:8750")))
        self.user = QLineEdit(str(settings.value("user", "")))
        self.password = QLineEdit(echoMode=QLineEdit.EchoMode.Password)
        self.error = QLabel(message)
        self.error.setStyleSheet("color: #c00;")
        form = QFormLayout()
        form.addRow("Server", self.server)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
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

    def try_login(self) -> None:
        client = LucentClient(self.server.text().strip(), timeout=120)
        try:
            client.login(self.user.text().strip(), self.password.text())
        except ApiError as exc:
            # The FAQ's list: unknown user, wrong password — the server says which.
            self.error.setText(f"Login failed: {exc.detail}")
            return
        except Exception as exc:
            self.error.setText(f"Server not reachable: {exc}")
            return
        self.settings.setValue("server", self.server.text().strip())
        self.settings.setValue("user", self.user.text().strip())
        self.client = client
        self.accept()
