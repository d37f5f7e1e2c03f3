"""Login dialog: remembers the last server and user (QSettings), never the password."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from lucent.api.client import ApiError, LucentClient

#: Where the first administrator's password is when the workstation did not start the server
#: itself (a service, or ``lucent-server run --first-run-admin`` in a terminal): the server
#: prints it once in its own output. The workstation cannot and must not read it from there.
MIN_WIDTH = 420
"""Pixels: the server address and user name fit, not cut."""
FIRST_RUN_HINT = (
    "First log-in to a new Lucent server? A server started with\n"
    "    lucent-server run --first-run-admin\n"
    "creates the user 'admin' and prints its password once in its own output: the terminal "
    "it was started in, or the service's log (journalctl on Linux, the service manager on "
    "Windows/macOS). Ask whoever installed the server. Lost, or no account yet? On the "
    "server machine:\n    lucent-server create-admin --username NAME --password-stdin"
)


class LoginDialog(QDialog):
    def __init__(
        self,
        settings: QSettings,
        message: str = "",
        first_admin: tuple[str, str] | None = None,
    ) -> None:
        """``first_admin``: the user name and password of the administrator the bundled
        server just created on a machine without any account (``run --first-run-admin``
        prints them once): shown here, once, and replaced by the user's own password."""
        super().__init__()
        self.setWindowTitle("Lucent — log in")
        self.setMinimumWidth(MIN_WIDTH)
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
        self.error = QLabel()
        self.error.setStyleSheet("color: #c00;")
        self.error.setWordWrap(True)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice.setVisible(False)
        # Where the first password is on a server someone else started (outside probe, s14):
        # shown on a workstation that never logged in, and after a failed login.
        self.hint = QLabel(FIRST_RUN_HINT)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #555;")
        self.hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hint.setVisible(first_admin is None and not self.user.text())
        self._first_admin = first_admin
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
        lay.addWidget(self.notice)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.hint)
        lay.addWidget(buttons)
        # Wrapped labels as wide as the fields: the dialog's height is then worked out at
        # its real width. It was worked out at the labels' own narrow width and the space
        # left over went to the empty error line, a blank band above the hint.
        margins = lay.contentsMargins()
        for label in (self.notice, self.error, self.hint):
            label.setMinimumWidth(MIN_WIDTH - margins.left() - margins.right())
        self._say(message)
        (self.password if self.user.text() else self.user).setFocus()
        if first_admin is not None:
            self._offer_first_admin(*first_admin)

    def _offer_first_admin(self, name: str, password: str) -> None:
        """A fresh machine: without this the user only ever saw "wrong user name or
        password" (outside probe 35)."""
        self.user.setText(name)
        self.password.setText(password)
        self.notice.setText(
            "No account existed yet, so the server created the first administrator "
            f"(shown only now):\n\n    user:      {name}\n    password:  {password}\n\n"
            "Choose your own password for it below. Should this password get lost, an "
            "administrator can be created on the server machine with\n"
            "    lucent-server create-admin --username NAME --password-stdin"
        )
        self.notice.setVisible(True)
        self._show_new_password(True)
        self.new_password.setFocus()

    def _say(self, text: str) -> None:
        """The red line under the fields: shown only with something to say, and the dialog
        grows or shrinks to fit it (the hint below it was cut off)."""
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.adjustSize()

    def _show_new_password(self, shown: bool) -> None:
        for field in (self.new_password, self.repeat):
            self._form.setRowVisible(field, shown)
        self.adjustSize()
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
            self.hint.setVisible(self._first_admin is None)
            self._say(f"Login failed: {exc.detail}")
            return
        except Exception as exc:
            self._say(f"Server not reachable: {exc}")
            return
        if self._first_admin is not None:  # the new password is typed already
            self._pending = client
            self._set_own_password(client)
            return
        if result.password_change_required:
            self._pending = client
            self._show_new_password(True)
            self.new_password.setFocus()
            self._say(
                "This password was set by an administrator and works once: choose your own "
                "password to continue."
            )
            return
        self._done(client)

    def _set_own_password(self, client: LucentClient) -> None:
        new = self.new_password.text()
        if new != self.repeat.text():
            self._say("The two new passwords differ.")
            return
        try:
            client.change_password(self.password.text(), new)
        except ApiError as exc:  # too short, too common ... the server says why
            self._say(f"Password not changed: {exc.detail}")
            return
        except Exception as exc:
            self._say(f"Server not reachable: {exc}")
            return
        self._done(client)

    def _done(self, client: LucentClient) -> None:
        self.settings.setValue("server", self.server.text().strip())
        self.settings.setValue("user", self.user.text().strip())
        self.client = client
        self.accept()
