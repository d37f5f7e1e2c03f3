"""Main window: study browser | viewer grid, toolbar, progress with cancel in the status bar.

Series load in a worker thread (issue 5, ARCHITECTURE: never on the GUI thread) with the
displayed slice first; the status bar shows progress and a Cancel button.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QToolBar,
    QWidget,
)

from lucent.api import schemas
from lucent.api.client import LucentClient, SessionExpired
from workstation.model import browser, gsps, loader
from workstation.model.annotations import Annotation
from workstation.model.pipeline import CT_PRESETS
from workstation.model.series import SeriesData
from workstation.model.viewer import Layout
from workstation.qt.browser import BrowserPanel
from workstation.qt.documents import DocumentPanel
from workstation.qt.viewer import ViewerArea

MIP_SLAB_MM = 10.0  # thick-slab MIP default (vessels, nodules)
LAYOUTS = ["1x1", "1x2", "2x1", "2x2", "2x3", "3x3", "4x4"]


class _Signals(QObject):
    progress = Signal(int, int)
    described = Signal(object)
    finished = Signal(object)
    failed = Signal(str)


class LoadJob(QRunnable):
    """describe → first slice → rest, then any GSPS that references the series."""

    def __init__(
        self, client: LucentClient, series: schemas.SeriesOut, study: schemas.StudyOut | None
    ) -> None:
        super().__init__()
        self.client, self.series, self.study = client, series, study
        self.signals = _Signals()
        self.cancel = threading.Event()
        self.data: SeriesData | None = None
        self.states: list[gsps.PresentationState] = []

    def run(self) -> None:
        try:
            self.data = loader.describe(self.client, self.series, self.study)
            self.signals.described.emit(self.data)
            if self.data.kind == "image":
                loader.load(
                    self.client, self.data, 0, self.signals.progress.emit, self.cancel.is_set
                )
                self.states = loader.presentation_states(self.client, self.data)
            else:
                self.data.documents = [
                    loader.load_document(self.client, d.sop_instance_uid)
                    for d in self.data.documents
                ]
            self.signals.finished.emit(self)
        except loader.LoadCancelled:
            self.signals.failed.emit("loading cancelled")
        except SessionExpired:
            self.signals.failed.emit("session expired: please log in again")
        except Exception as exc:  # a broken series must not take the workstation down
            self.signals.failed.emit(f"could not load series: {exc}")


def _same_place(a: Annotation, b: Annotation) -> bool:
    """The same drawing (kind, image, frame, text, points to a thousandth of a pixel)."""
    return (
        (a.kind, a.sop_instance_uid, a.frame, a.text)
        == (b.kind, b.sop_instance_uid, b.frame, b.text)
        and len(a.points) == len(b.points)
        and all(
            abs(p[0] - q[0]) < 1e-3 and abs(p[1] - q[1]) < 1e-3
            for p, q in zip(a.points, b.points, strict=True)
        )
    )


class MainWindow(QMainWindow):
    def __init__(
        self,
        client: LucentClient,
        hidden: browser.HiddenStore | None = None,
        gsps_send_node: str = "",
    ) -> None:
        super().__init__()
        # Name of the store node (PACS) every saved GSPS also goes to; "" = archive only.
        self.gsps_send_node = gsps_send_node
        self.send_jobs: list[schemas.JobOut] = []
        self.setWindowTitle("Lucent Workstation")
        self.client = client
        self.layout_model = Layout()
        self.viewer = ViewerArea(self.layout_model)
        self.browser = BrowserPanel(client, hidden)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.jobs: list[LoadJob] = []
        self.loaded: dict[str, SeriesData] = {}
        self.documents = DocumentPanel()
        self.documents.hide()

        split = QSplitter()
        split.addWidget(self.browser)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.viewer)
        right.addWidget(self.documents)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        right.setCollapsible(0, False)
        self.right_split = right
        split.addWidget(right)
        split.setStretchFactor(1, 3)
        split.setSizes([380, 1100])
        self.setCentralWidget(split)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(240)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_loading)
        self.status_label = QLabel("")
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)

        self.browser.open_series.connect(
            lambda se, st: self.open_series(se, st, self.layout_model.active)
        )
        self.viewer.series_dropped.connect(self._dropped)
        for w in self.viewer.widgets:
            w.message.connect(self.status_label.setText)
        self.browser.session_expired.connect(self._session_expired)
        self.browser.server_problem.connect(self._server_problem)
        self._relogging = False
        self.server_stopped_message = ""  # set when the bundled server died (server_stopped)
        self.server_box: QMessageBox | None = None
        self.restart_button: QPushButton | None = None  # on server_box, when offered
        self._toolbar()
        self.layout_model.changed.connect(self._sync_voi_lut_action)

    # ------------------------------------------------------------------ toolbar
    def _toolbar(self) -> None:
        tb = QToolBar("Tools")
        self.addToolBar(tb)

        def action(text: str, fn: Any, key: str = "", checkable: bool = False) -> QAction:
            a = QAction(text, self)
            if key:
                a.setShortcut(QKeySequence(key))
            a.setCheckable(checkable)
            a.triggered.connect(fn)
            tb.addAction(a)
            return a

        for name in LAYOUTS:
            r, c = (int(v) for v in name.split("x"))
            action(name, lambda _=False, r=r, c=c: self.layout_model.set_grid(r, c))
        tb.addSeparator()
        for tool, label in (("wl", "W/L"), ("pan", "Pan"), ("zoom", "Zoom"),
                            ("scroll", "Scroll"), ("distance", "Distance"), ("angle", "Angle"),
                            ("rect", "Rect ROI"), ("ellipse", "Ellipse ROI"), ("text", "Text"),
                            ("arrow", "Arrow")):  # fmt: skip
            action(label, lambda _=False, t=tool: self.viewer.set_tool(t))
        tb.addSeparator()
        for name, (c, w) in CT_PRESETS.items():
            action(name, lambda _=False, c=c, w=w: self._active().set_window(c, w))
        tb.addSeparator()
        # PS3.4 N.2.1.1: an image's VOI LUT Sequence is the default VOI only when it has no
        # window; with both, the window is shown and this switches to the LUT (and back).
        self.voi_lut_action = action("VOI LUT", self._set_voi_lut, "Ctrl+L", checkable=True)
        self.voi_lut_action.setToolTip("Use the image's VOI LUT instead of the window (Ctrl+L)")
        self.voi_lut_action.setEnabled(False)
        image_menu = self.menuBar().addMenu("&Image")
        image_menu.addAction(self.voi_lut_action)
        action("Invert", lambda: self._active().toggle_invert())
        action("Overlays", lambda: self._active().toggle_overlays())  # key O in a viewport
        action("Reset", lambda: self._active().reset_view())
        self.ref_action = action("Ref lines", self._toggle_ref, checkable=True)
        self.ref_action.setChecked(True)
        self.sync_action = action("Sync", self._toggle_sync, checkable=True)
        self.sync_action.setChecked(True)
        action("GSPS W/L", self._apply_gsps_window)
        action("Save GSPS", self.save_gsps, "Ctrl+S")
        action("Save GSPS → PACS", self.save_and_send_gsps, "Ctrl+Shift+S")
        self.mpr_action = action("MPR", lambda: self.open_mpr(), "Ctrl+M")
        self.mip_action = action("MIP", lambda: self.open_mpr(MIP_SLAB_MM), "Ctrl+Shift+M")
        self.volume_action = action("3D", lambda: self.open_3d(), "Ctrl+3")
        action("Help", self._help)

    def _help(self) -> None:
        w = self.viewer.active_widget()
        w.show_help = not w.show_help
        w.update()

    def _active(self) -> Any:
        return self.layout_model.active_viewport()

    def _set_voi_lut(self, on: bool) -> None:
        vp = self._active()
        if not vp.has_voi_lut():
            self.status_label.setText("this image has no VOI LUT: the window is used")
        vp.set_voi_lut(on)
        self._sync_voi_lut_action()
        if vp.series is not None:
            self.status_label.setText(vp.voi_description())

    def _sync_voi_lut_action(self) -> None:
        """The action follows the active viewport: enabled when its image has a VOI LUT,
        checked while the LUT is what is shown."""
        vp = self._active()
        self.voi_lut_action.setEnabled(vp.has_voi_lut())
        self.voi_lut_action.blockSignals(True)
        self.voi_lut_action.setChecked(vp.use_voi_lut)
        self.voi_lut_action.blockSignals(False)

    def _toggle_ref(self, on: bool) -> None:
        self.layout_model.show_reference_lines = on
        self.layout_model.changed.emit()

    def _toggle_sync(self, on: bool) -> None:
        self.layout_model.sync_scroll = on

    # ------------------------------------------------------------------ loading
    def _dropped(self, index: int, uid: str) -> None:
        found = self.browser.series_item(uid)
        if found:
            self.open_series(found[0], found[1], index)

    def open_series(
        self, series: schemas.SeriesOut, study: schemas.StudyOut | None, index: int
    ) -> LoadJob | None:
        """Show a series in viewport ``index``; pixels arrive in the background."""
        if series.series_uid in self.loaded:
            self.layout_model.viewports[index].set_series(self.loaded[series.series_uid])
            self._apply_states(index, self.loaded[series.series_uid])
            return None
        job = LoadJob(self.client, series, study)
        widget = self.viewer.widgets[index]
        job.signals.described.connect(lambda data: self._described(index, data))
        job.signals.progress.connect(lambda done, total: self._progress(widget, done, total))
        job.signals.finished.connect(lambda j: self._finished(index, j))
        job.signals.failed.connect(lambda msg: self._failed(widget, msg, job))
        self.jobs.append(job)
        self.progress.setValue(0)
        self.progress.show()
        self.cancel_button.show()
        self.status_label.setText(f"loading {series.description or series.series_uid}")
        self.pool.start(job)
        return job

    def _described(self, index: int, data: SeriesData) -> None:
        if data.kind == "image":
            self.layout_model.viewports[index].set_series(data)

    def _progress(self, widget: Any, done: int, total: int) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        widget.loading_text = "" if done >= total else f"loading {done}/{total}"
        widget.update()

    def _finished(self, index: int, job: LoadJob) -> None:
        data = job.data
        assert data is not None
        self.jobs = [j for j in self.jobs if j is not job]
        self.viewer.widgets[index].loading_text = ""
        if data.kind == "image":
            self.loaded[data.uid] = data
            data.states = job.states  # type: ignore[attr-defined]
            self._apply_states(index, data)
        else:
            self._show_documents(data)
        if not self.jobs:
            self.progress.hide()
            self.cancel_button.hide()
        pages = len(self.documents.pages) if data.kind != "image" else 0
        self.status_label.setText(f"{data.series.description}: {data.summary(pages)}")

    def _apply_states(self, index: int, data: SeriesData) -> None:
        vp = self.layout_model.viewports[index]
        for state in getattr(data, "states", []):
            for a in state.annotations:
                # one saved from this viewport is shown already as the user's own drawing
                if not any(_same_place(a, b) for b in vp.annotations):
                    vp.annotations.append(a)
        vp.changed.emit()

    def _apply_gsps_window(self) -> None:
        """The GSPS window on request (issue 5: "its W/L on request")."""
        vp = self._active()
        for state in getattr(vp.series, "states", []):
            if state.window:
                vp.set_window(*state.window)
                return

    def _failed(self, widget: Any, message: str, job: LoadJob) -> None:
        self.jobs = [j for j in self.jobs if j is not job]
        widget.loading_text = ""
        self.progress.hide()
        self.cancel_button.hide()
        self.status_label.setText(message)
        if message.startswith("session expired") and self.handle_expired():
            self.status_label.setText("logged in again: open the series once more")

    # ------------------------------------------------------------------ session
    def login_again(self) -> str | None:
        """The login dialog with the reason; returns the new token (None: cancelled)."""
        from PySide6.QtCore import QSettings

        from workstation.qt.login import LoginDialog

        dialog = LoginDialog(
            QSettings("Lucent", "Workstation"), "Your session expired; please log in again."
        )
        if dialog.exec() == LoginDialog.DialogCode.Accepted and dialog.client is not None:
            return dialog.client.token
        return None

    def handle_expired(self) -> bool:
        """Expired or revoked session: log in again and keep every panel's client working
        (they share this client, so only its token changes); False when the user cancels."""
        if self._relogging:
            return False
        self._relogging = True
        try:
            token = self.login_again()
        finally:
            self._relogging = False
        if not token:
            self.status_label.setText("session expired: log in again to continue")
            self.browser.show_signed_out()  # no study list without a session
            return False
        self.client.token = token
        return True

    def _server_problem(self, message: str) -> None:
        """The browser could not reach the server (message) or reached it again ("")."""
        if self.server_stopped_message and not message:
            return  # a dead bundled server does not come back: its message stays
        self.status_label.setText(message or self.server_stopped_message or
                                  "Lucent server reachable again")  # fmt: skip

    def server_stopped(self, message: str, restart: Callable[[], None] | None = None) -> None:
        """The server the workstation started has died (app.ServerWatch): say so with the
        path of its log file, in the status bar and in a box that does not block reading.
        ``restart``: offered as the box's "Restart server" button, so that a reader in the
        middle of a list need not close the workstation to get the server back."""
        self.server_stopped_message = message
        self.status_label.setText(message.splitlines()[0])
        self.status_label.setToolTip(message)
        if self.server_box is not None:
            self.server_box.close()
        box = QMessageBox(QMessageBox.Icon.Critical, "Lucent server stopped", message,
                          QMessageBox.StandardButton.Close, self)  # fmt: skip
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setModal(False)
        self.restart_button = None
        if restart is not None:
            button = box.addButton("Restart server", QMessageBox.ButtonRole.AcceptRole)
            button.clicked.connect(restart)
            box.setDefaultButton(button)
            self.restart_button = button
        box.show()
        self.server_box = box

    def server_restarting(self) -> None:
        """A restart is under way (app.ServerWatch): the box goes, the status bar says so."""
        if self.server_box is not None:
            self.server_box.close()
            self.server_box = None
        self.status_label.setText("restarting the Lucent server …")
        self.status_label.setToolTip("")

    def server_running_again(self) -> None:
        """The restarted server answers: the session goes on (tokens live in its index)."""
        self.server_stopped_message = ""
        self.status_label.setText("the Lucent server is running again")
        self.browser.refresh()

    def _session_expired(self) -> None:
        if self.handle_expired():
            self.browser.refresh()

    def cancel_loading(self) -> None:
        for job in self.jobs:
            job.cancel.set()

    def _show_documents(self, data: SeriesData) -> None:
        """Basic/Enhanced text SR and encapsulated PDF pages in the panel under the viewer:
        about a third of the height (the images stay the main thing), closable (✕ / Esc)."""
        was_hidden = self.documents.isHidden()
        title = data.series.description or "Document"
        self.documents.show_documents(list(data.documents), title)
        if was_hidden:
            total = sum(self.right_split.sizes()) or self.right_split.height()
            self.right_split.setSizes([total - total // 3, total // 3])
            self.documents.to_top()

    # ------------------------------------------------------------------ GSPS, MPR
    def save_gsps(self) -> str:
        """Save the active viewport's own annotations as a GSPS into the archive (8.1.4)."""
        from pydicom.uid import generate_uid

        vp = self._active()
        data = vp.series
        sops = {s.sop_instance_uid for s in data.slices} if data is not None else set()
        # only this series' own annotations: never another series' (or patient's) ones
        mine = [a for a in vp.annotations if a.source == "user" and a.sop_instance_uid in sops]
        if data is None or not mine:
            self.status_label.setText("nothing to save: draw a measurement first")
            return ""
        sop = generate_uid()
        try:
            heads = {}
            for a in mine:
                if a.sop_instance_uid not in heads:
                    heads[a.sop_instance_uid] = loader.pipeline.read_part10(
                        self.client.instance_file(a.sop_instance_uid)
                    )
            ds = gsps.build(
                list(heads.values()), mine, series_uid=generate_uid(), sop_uid=sop,
                window=(vp.center, vp.width),
            )  # fmt: skip
            loader.store(self.client, ds)
        except Exception as exc:  # a failed save must be seen, never only on stderr
            message = f"could not save the presentation state: {exc}"
            self.status_label.setText(message)
            QMessageBox.warning(self, "Save GSPS", message)
            return ""
        self.status_label.setText(f"saved presentation state {sop}")
        self._remember_state(data, ds)
        if self.gsps_send_node:
            self.send_to_pacs([sop], self.gsps_send_node)
        return sop

    def _remember_state(self, data: SeriesData, ds: Any) -> None:
        """The saved GSPS joins the series' presentation states, so opening the series again
        (from the cache of this session) shows it; they were read once per load (probe 32)."""
        try:
            state = gsps.read(ds)
        except Exception as exc:  # stored already: only the display of it is missing
            self.status_label.setText(f"saved, but cannot show the presentation state: {exc}")
            return
        states = [
            x for x in getattr(data, "states", []) if x.sop_instance_uid != state.sop_instance_uid
        ]
        data.states = [*states, state]  # type: ignore[attr-defined]

    def save_and_send_gsps(self) -> str:
        """Ctrl+Shift+S: save, then send to a store node chosen now (Conformance 8.1.4)."""
        from PySide6.QtWidgets import QInputDialog

        try:
            names = [n.name for n in self.client.nodes() if n.store_target]
        except Exception as exc:
            self.status_label.setText(f"cannot list PACS nodes: {exc}")
            return ""
        if not names:
            self.status_label.setText("no store node configured on the server")
            return ""
        name = self.gsps_send_node if self.gsps_send_node in names else ""
        if not name:
            name, ok = QInputDialog.getItem(self, "Send GSPS", "Send to:", names, 0, False)
            if not ok:
                return ""
        remembered, self.gsps_send_node = self.gsps_send_node, ""
        sop = self.save_gsps()
        self.gsps_send_node = remembered
        if sop:
            self.send_to_pacs([sop], name)
        return sop

    def send_to_pacs(self, sop_uids: list[str], node_name: str) -> schemas.JobOut | None:
        """Send instances through the server's send job (the server does the C-STORE)."""
        try:
            node = next((n for n in self.client.nodes() if n.name == node_name), None)
            if node is None:
                self.status_label.setText(f"PACS node {node_name!r} is not configured")
                return None
            job = self.client.send(node.id, sop_instance_uids=sop_uids)
        except Exception as exc:
            self.status_label.setText(f"could not send to {node_name}: {exc}")
            return None
        self.send_jobs.append(job)
        self.status_label.setText(f"sending presentation state to {node_name} (job {job.id})")
        self._watch_job(job.id, node_name)
        return job

    def _watch_job(self, job_id: int, node_name: str) -> None:
        """Poll the send job on a timer (never blocks the GUI) and report its outcome."""
        from PySide6.QtCore import QTimer

        timer = QTimer(self)
        timer.setInterval(500)

        def poll() -> None:
            try:
                job = self.client.job(job_id)
            except Exception:
                timer.stop()
                return
            if job.finished:
                timer.stop()
                word = "sent to" if job.state == "done" else f"{job.state} sending to"
                self.status_label.setText(f"presentation state {word} {node_name}")
            elif job.state == "waiting":  # stored; the PACS's commitment report is due
                self.status_label.setText(
                    f"presentation state sent to {node_name}; waiting for its storage commitment"
                )

        timer.timeout.connect(poll)
        timer.start()

    def open_mpr(self, slab_mm: float = 0.0) -> QWidget | None:
        """MPR (and thick-slab MIP with ``slab_mm``) of the active viewport's volume."""
        from workstation.model.volume import volume_of
        from workstation.qt.mpr import MprWindow

        vp = self._active()
        if vp.series is None:
            self.status_label.setText("MPR: open a CT/MR series first")
            return None
        grid = volume_of(vp.series)
        if isinstance(grid, str):
            self.status_label.setText(grid)
            return None
        self.mpr_window = MprWindow(
            grid, vp.series.series.description, (vp.center, vp.width), slab_mm
        )
        self.mpr_window.show()
        return self.mpr_window

    def open_3d(self, preset: str = "Bone") -> QWidget | None:
        """Volume rendering (VTK in Qt) of the active viewport's CT/MR volume."""
        from workstation.model.volume import volume_of
        from workstation.qt.volume3d import VolumeWindow

        vp = self._active()
        if vp.series is None:
            self.status_label.setText("3D: open a CT/MR series first")
            return None
        grid = volume_of(vp.series)
        if isinstance(grid, str):
            self.status_label.setText(grid.replace("MPR", "3D"))
            return None
        self.volume_window = VolumeWindow(grid, vp.series.series.description, preset)
        self.volume_window.show()
        return self.volume_window
