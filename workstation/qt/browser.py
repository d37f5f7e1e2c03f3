"""Study browser panel: search with a visible "filter active" state, presets, tree, hiding.

FAQ: an empty search field shows all records; a forgotten filter is the classic "where are
my studies" call, so an active filter turns the bar orange and names itself, with one-click
"Clear filter". Series rows can be dragged into a viewport or double-clicked to open.

The list is paged (server maximum per request) with "N of TOTAL studies" and "Load more" /
"Load all", so no study is out of reach. When the server cannot be reached the list is
cleared, a red banner says what to check, and the panel retries until the server is back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QMimeData, QObject, QRunnable, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lucent.api import schemas
from lucent.api.client import LucentClient, SessionExpired
from workstation.model import browser
from workstation.model.thumbnails import ThumbnailCache
from workstation.qt.viewport import SERIES_MIME

ROLE = Qt.ItemDataRole.UserRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 7  # what a column sorts by, where text would not do
DATE_COLUMN, IMAGES_COLUMN = 2, 4


class _Item(QTreeWidgetItem):
    """A tree row that sorts by its SORT_ROLE value where it has one: numbers as numbers
    (series 1, 2, 10; image counts), dates as YYYYMMDD; text sorting put 10 before 2."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        tree = self.treeWidget()
        col = tree.sortColumn() if tree is not None else 0
        a, b = self.data(col, SORT_ROLE), other.data(col, SORT_ROLE)
        if a is not None and b is not None:
            try:
                return bool(a < b)
            except TypeError:
                pass
        # QTreeWidgetItem.__lt__ would call this override again (virtual operator<)
        return self.text(col).lower() < other.text(col).lower()


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("inf")  # unknown numbers last


THUMB = 64  # thumbnail edge in the tree, px


class _ThumbSignals(QObject):
    done = Signal(object)  # the ThumbnailJob, with .image set (QImage or None)


class ThumbnailJob(QRunnable):
    """Fetch (through the cache) and scale one series thumbnail off the GUI thread.

    QImage is reentrant, so decoding and scaling happen here too; only the QPixmap/QIcon
    is made on the GUI thread.
    """

    def __init__(self, client: LucentClient, cache: ThumbnailCache,
                 series: schemas.SeriesOut) -> None:  # fmt: skip
        super().__init__()
        self.client, self.cache, self.series = client, cache, series
        self.signals = _ThumbSignals()
        self.image: QImage | None = None

    def run(self) -> None:
        image = None
        try:
            png = self.cache.fetch(self.client, self.series)
            if png:
                img = QImage.fromData(png)
                if not img.isNull():
                    image = img.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation)  # fmt: skip
        except Exception:  # a thumbnail is a nicety: never an error dialog
            image = None
        self.image = image
        self.signals.done.emit(self)


class _Tree(QTreeWidget):
    """A tree whose series rows carry their UID as drag data for the viewports."""

    def mimeData(self, items: list[QTreeWidgetItem]) -> QMimeData:  # noqa: N802
        mime = QMimeData()
        for it in items:
            data = it.data(0, ROLE)
            if isinstance(data, schemas.SeriesOut):
                mime.setData(SERIES_MIME, data.series_uid.encode())
                break
        return mime


#: While the server is unreachable the list is asked for again this often (ms).
RETRY_MS = 5000


class BrowserPanel(QWidget):
    open_series = Signal(object, object)  # SeriesOut, StudyOut
    session_expired = Signal()
    server_problem = Signal(str)  # the actionable message; "" once the server answers again

    def __init__(
        self, client: LucentClient, hidden: browser.HiddenStore | None = None,
        parent: QWidget | None = None, page_size: int = browser.SERVER_PAGE_MAX,
    ) -> None:  # fmt: skip
        super().__init__(parent)
        self.client = client
        self.hidden = hidden or browser.HiddenStore(client)
        self.filter = browser.Filter()
        self.pages = browser.StudyPages(client, page_size)
        self.studies: list[schemas.StudyOut] = []
        self.server_message = ""  # why the list is not shown ("" while the server answers)
        self.signed_out = False  # session expired and no new login yet: no list shown
        self.show_hidden = False
        self.thumbnails = ThumbnailCache()
        self.thumb_pool = QThreadPool(self)
        self.thumb_pool.setMaxThreadCount(2)
        self._series_items: dict[str, QTreeWidgetItem] = {}
        self._thumb_jobs: list[ThumbnailJob] = []

        self.search = QLineEdit(placeholderText="Search name, patient ID or accession (* ?)")
        self.search.setClearButtonEnabled(True)
        self.dates = QComboBox()
        self.dates.addItems(list(browser.DATE_PRESETS))
        self.modality = QLineEdit(placeholderText="Modality")
        self.modality.setMaximumWidth(80)
        self.clear_button = QPushButton("Clear filter")
        self.filter_label = QLabel("")
        self.filter_label.setStyleSheet("color: black; background: #ffb000; padding: 2px;")
        self.filter_label.hide()
        self.hidden_box = QCheckBox("Show hidden data")
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("color: white; background: #b00020; padding: 4px;")
        self.banner.hide()
        self.retry_button = QPushButton("Retry now")
        self.retry_button.hide()
        self.count_label = QLabel("")
        self.more_button = QPushButton("Load more")
        self.more_button.hide()
        self.all_button = QPushButton("Load all")
        self.all_button.hide()
        self.tree = _Tree()
        self.tree.setHeaderLabels(["Patient / Study / Series", "ID", "Date", "Modality", "Images"])
        self.tree.setSortingEnabled(True)
        # newest study first (a patient's newest study ranks the patient); a study's series
        # stay in series-number order under it
        self.tree.sortByColumn(DATE_COLUMN, Qt.SortOrder.DescendingOrder)
        self.tree.setDragEnabled(True)
        self.tree.setColumnWidth(0, 260)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

        row1 = QHBoxLayout()
        row1.addWidget(self.search, 1)
        row1.addWidget(self.modality)
        row1.addWidget(self.dates)
        row2 = QHBoxLayout()
        row2.addWidget(self.filter_label, 1)
        row2.addWidget(self.clear_button)
        row2.addWidget(self.hidden_box)
        row_banner = QHBoxLayout()
        row_banner.addWidget(self.banner, 1)
        row_banner.addWidget(self.retry_button)
        row3 = QHBoxLayout()
        row3.addWidget(self.count_label, 1)
        row3.addWidget(self.more_button)
        row3.addWidget(self.all_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addLayout(row_banner)
        lay.addWidget(self.tree, 1)
        lay.addLayout(row3)

        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._debounce.timeout.connect(self.refresh)
        self._retry = QTimer(self, singleShot=True, interval=RETRY_MS)
        self._retry.timeout.connect(self.refresh)
        self.retry_button.clicked.connect(self.refresh)
        self.more_button.clicked.connect(self.load_more)
        self.all_button.clicked.connect(self.load_all)
        self.search.textChanged.connect(self._changed)
        self.modality.textChanged.connect(self._changed)
        self.dates.currentTextChanged.connect(self._changed)
        self.clear_button.clicked.connect(self.clear_filter)
        self.hidden_box.toggled.connect(self._toggle_hidden)
        self.tree.itemExpanded.connect(self._expand)
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        self.tree.customContextMenuRequested.connect(self._menu)

    # ------------------------------------------------------------------ filter
    def _changed(self) -> None:
        self.filter.text = self.search.text()
        self.filter.modality = self.modality.text()
        self.filter.date_preset = self.dates.currentText()
        self._show_filter_state()
        self._debounce.start()

    def _show_filter_state(self) -> None:
        active = self.filter.active
        self.filter_label.setText(self.filter.describe())
        self.filter_label.setVisible(active)
        self.clear_button.setEnabled(active)
        self.search.setStyleSheet("background: #fff2cc;" if active else "")

    def clear_filter(self) -> None:
        """One click: empty every field and show all records again (FAQ)."""
        for w in (self.search, self.modality, self.dates):
            w.blockSignals(True)
        self.search.clear()
        self.modality.clear()
        self.dates.setCurrentIndex(0)
        for w in (self.search, self.modality, self.dates):
            w.blockSignals(False)
        self.filter.clear()
        self._show_filter_state()
        self.refresh()

    def _toggle_hidden(self, on: bool) -> None:
        self.show_hidden = on
        self.refresh()

    # ------------------------------------------------------------------ server
    def _ask(self, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Call the server from a slot: (True, result), or (False, None) after showing why.

        An unreachable server raised httpx.ConnectError out of the Qt slot (stderr only) and
        left unfiltered rows under an active filter bar.
        """
        try:
            result = fn()
        except SessionExpired:
            # Signed out first: with the login dialog cancelled, an unfiltered list under an
            # active filter bar stayed (probe 32); a new login refreshes the list.
            self.show_signed_out()
            self.session_expired.emit()  # the main window asks for the password again
            return False, None
        except Exception as exc:
            message = browser.unreachable_message(exc, self.client.base_url)
            if message is None:
                raise
            self._server_unreachable(message)
            return False, None
        if self.signed_out:
            self.signed_out = False
            self.banner.hide()
            self.retry_button.hide()
        if self.server_message:
            self._server_back()
        return True, result

    def show_signed_out(self) -> None:
        """Session expired or revoked: no studies are shown until the user logs in again."""
        self.signed_out = True
        self._retry.stop()
        self.banner.setText("Signed out: your session expired. Log in again to see studies.")
        self.banner.show()
        self.retry_button.setText("Log in…")
        self.retry_button.show()
        self._drop_list("Studies not shown: signed out")

    def _server_unreachable(self, message: str) -> None:
        """Say why and what to check, drop the stale list, retry until the server is back."""
        self.server_message = message
        self.banner.setText(f"⚠ {message}")
        self.banner.show()
        self.retry_button.setText("Retry now")
        self.retry_button.show()
        self._drop_list("Studies not shown: the server is unreachable")
        self._retry.start()
        self.server_problem.emit(message)

    def _drop_list(self, why: str) -> None:
        self.studies = []
        self._series_items = {}
        self.tree.clear()
        self.count_label.setText(why)
        self.count_label.setStyleSheet("")
        self.more_button.hide()
        self.all_button.hide()

    def _server_back(self) -> None:
        self.server_message = ""
        self._retry.stop()
        self.banner.hide()
        self.retry_button.hide()
        self.server_problem.emit("")

    # ------------------------------------------------------------------ tree
    def refresh(self) -> None:
        """The first page of the filter's studies (hidden list too when shown)."""
        self._debounce.stop()
        self._retry.stop()

        def first() -> list[schemas.StudyOut]:
            if self.show_hidden:
                self.hidden.reload()
            return self.pages.first(self.filter, self.show_hidden)

        ok, studies = self._ask(first)
        if not ok:
            return
        self.studies = list(studies)
        self._fill()

    def load_more(self) -> None:
        """The next page: every study can be reached, however many the archive holds."""
        ok, _ = self._ask(self.pages.more)
        if ok:
            self.studies = list(self.pages.studies)
            self._fill()

    def load_all(self) -> None:
        ok, _ = self._ask(self.pages.all)
        if ok:
            self.studies = list(self.pages.studies)
            self._fill()

    def _show_count(self) -> None:
        more = self.pages.has_more
        self.count_label.setText(self.pages.summary())
        self.count_label.setStyleSheet("color: black; background: #ffb000;" if more else "")
        self.more_button.setVisible(more)
        self.all_button.setVisible(more)

    def _fill(self) -> None:
        self.tree.setSortingEnabled(False)
        self._series_items = {}
        self.tree.clear()
        for row in browser.group(self.studies, self.hidden, self.show_hidden):
            # The Date column is the study date: a patient row shows its newest study's (what
            # the rows sort by), never the birth date (outside tester, s14). The birth date
            # is in the patient's tooltip (name and ID columns), as in the viewer's overlay.
            newest = max((str(s.study_date or "") for s in row.studies), default="")
            pit = _Item(
                [browser.format_name(row.name), row.patient_id, browser.format_date(newest),
                 "", str(sum(s.instance_count for s in row.studies))]
            )  # fmt: skip
            born = browser.format_date(row.birth_date)
            about = f"{browser.format_name(row.name)}, ID {row.patient_id}" + (
                f", born {born}" if born else ", birth date not recorded"
            )
            for col in (0, 1):
                pit.setToolTip(col, about)
            pit.setToolTip(DATE_COLUMN, f"newest study: {browser.format_date(newest) or '—'}")
            pit.setData(DATE_COLUMN, SORT_ROLE, newest)
            pit.setData(IMAGES_COLUMN, SORT_ROLE, sum(s.instance_count for s in row.studies))
            self.tree.addTopLevelItem(pit)
            for s in row.studies:
                if s.placeholder:
                    sit = _Item(["⚠ non-conformant data", "", "", "", ""])
                    sit.setToolTip(0, s.reason)
                    sit.setText(0, f"⚠ non-conformant data: {s.reason}")
                    sit.setForeground(0, Qt.GlobalColor.darkRed)
                    pit.addChild(sit)
                    continue
                sit = _Item(
                    [s.description or "(no description)", s.accession_number,
                     browser.format_date(s.study_date), ",".join(s.modalities),
                     str(s.instance_count)]
                )  # fmt: skip
                sit.setData(DATE_COLUMN, SORT_ROLE, str(s.study_date or ""))
                sit.setData(IMAGES_COLUMN, SORT_ROLE, int(s.instance_count or 0))
                if s.study_uid in self.hidden.studies:
                    sit.setForeground(0, Qt.GlobalColor.gray)
                sit.setData(0, ROLE, s)
                sit.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
                pit.addChild(sit)
            pit.setExpanded(True)
        self.tree.setSortingEnabled(True)
        self._show_count()

    def _expand(self, item: QTreeWidgetItem) -> None:
        study = item.data(0, ROLE)
        if not isinstance(study, schemas.StudyOut) or item.childCount():
            return
        ok, series = self._ask(
            lambda: self.client.series(study.study_uid, show_hidden=self.show_hidden)
        )
        if not ok:
            return
        for se in browser.visible_series(series, self.hidden, self.show_hidden):
            it = _Item(
                [f"{se.series_number or ''} {se.description or '(series)'}".strip(), "", "",
                 se.modality, str(se.instance_count)]
            )  # fmt: skip
            number = _number(se.series_number)
            it.setData(0, SORT_ROLE, number)
            # under the default newest-first date sort: series number ascending
            it.setData(DATE_COLUMN, SORT_ROLE, -number)
            it.setData(IMAGES_COLUMN, SORT_ROLE, int(se.instance_count or 0))
            it.setData(0, ROLE, se)
            it.setData(1, ROLE, study)
            if se.series_uid in self.hidden.series:
                it.setForeground(0, Qt.GlobalColor.gray)
            item.addChild(it)
            self._series_items[se.series_uid] = it
            self._request_thumbnail(se)

    # ------------------------------------------------------------------ thumbnails
    @property
    def thumbnails_pending(self) -> int:
        """Thumbnail requests not answered yet (status bar, tests)."""
        return len(self._thumb_jobs)

    def _request_thumbnail(self, series: schemas.SeriesOut) -> None:
        job = ThumbnailJob(self.client, self.thumbnails, series)
        job.signals.done.connect(self._thumbnail_ready)
        self._thumb_jobs.append(job)  # keep the signals object alive until it reports
        self.thumb_pool.start(job)

    def _thumbnail_ready(self, job: ThumbnailJob) -> None:
        """GUI thread (queued signal): put the icon on the row if it still exists."""
        self._thumb_jobs = [j for j in self._thumb_jobs if j is not job]
        item = self._series_items.get(job.series.series_uid)
        if item is None or job.image is None:
            return
        item.setIcon(0, QIcon(QPixmap.fromImage(job.image)))

    def series_tree_item(self, series_uid: str) -> QTreeWidgetItem | None:
        return self._series_items.get(series_uid)

    def _double_clicked(self, item: QTreeWidgetItem) -> None:
        data = item.data(0, ROLE)
        if isinstance(data, schemas.SeriesOut):
            self.open_series.emit(data, item.data(1, ROLE))

    def series_item(self, series_uid: str) -> tuple[schemas.SeriesOut, schemas.StudyOut] | None:
        for i in range(self.tree.topLevelItemCount()):
            pit = self.tree.topLevelItem(i)
            for j in range(pit.childCount()):
                sit = pit.child(j)
                self._expand(sit)
                for k in range(sit.childCount()):
                    se = sit.child(k).data(0, ROLE)
                    if isinstance(se, schemas.SeriesOut) and se.series_uid == series_uid:
                        return se, sit.data(0, ROLE)
        return None

    def study_item(self, study_uid: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            pit = self.tree.topLevelItem(i)
            for j in range(pit.childCount()):
                s = pit.child(j).data(0, ROLE)
                if isinstance(s, schemas.StudyOut) and s.study_uid == study_uid:
                    return pit.child(j)
        return None

    def visible_study_uids(self) -> list[str]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            pit = self.tree.topLevelItem(i)
            for j in range(pit.childCount()):
                s = pit.child(j).data(0, ROLE)
                if isinstance(s, schemas.StudyOut):
                    out.append(s.study_uid)
        return out

    def _menu(self, pos: object) -> None:
        item = self.tree.itemAt(pos)  # type: ignore[arg-type]
        if item is None:
            return
        data = item.data(0, ROLE)
        menu = QMenu(self)
        if self.show_hidden and (self.hidden.studies or self.hidden.series):
            menu.addAction("Restore all hidden data").triggered.connect(self.restore_all)
        if isinstance(data, schemas.StudyOut):
            hidden = data.study_uid in self.hidden.studies
            act = menu.addAction("Unhide study" if hidden else "Hide study")
            act.triggered.connect(lambda: self.hide_study(data.study_uid, not hidden))
        elif isinstance(data, schemas.SeriesOut):
            hidden = data.series_uid in self.hidden.series
            act = menu.addAction("Unhide series" if hidden else "Hide series")
            act.triggered.connect(lambda: self.hide_series(data.series_uid, not hidden))
        menu.popup(self.tree.viewport().mapToGlobal(pos))  # type: ignore[arg-type]

    def hide_study(self, uid: str, hidden: bool = True) -> None:
        """Hide (or restore) a study for this user on the server, then show the new list."""
        if self._ask(lambda: self.hidden.hide_study(uid, hidden))[0]:
            self.refresh()

    def hide_series(self, uid: str, hidden: bool = True) -> None:
        if self._ask(lambda: self.hidden.hide_series(uid, hidden))[0]:
            self.refresh()

    def restore_all(self) -> None:
        if self._ask(self.hidden.restore_all)[0]:
            self.refresh()
