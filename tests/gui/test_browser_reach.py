"""Study browser defects of outside probe 22, on the real server, checked on grabbed pixels.

* A name with only the ideographic group ("=山田^花子", ISO 2022 IR 87) showed blank.
* Only the newest 500 studies were listed, with no count and no way to the rest.
* A stopped server made typing a search or "Clear filter" raise httpx.ConnectError in the Qt
  slot (pytest-qt fails the test on that), leaving unfiltered rows under the filter bar.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.data.samples import make_instance, write
from tests.gui.helpers import grab, save
from tests.integration.dicom_io import storescu

SC = "1.2.840.10008.5.1.4.1.1.7"
ORANGE = (0xFF, 0xB0, 0x00)  # "N of TOTAL studies" while truncated
RED = (0xB0, 0x00, 0x20)  # the "server unreachable" banner


def _study_file(directory: Path, name: str, pid: str, k: int, charset: Any = None) -> Path:
    ds = make_instance(SC, patient_id=pid, patient_name="X", study_uid=generate_uid(),
                       series_uid=generate_uid())  # fmt: skip
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.StudyDate = f"202401{k + 1:02d}"
    return write(ds, directory / f"{k}.dcm")


def _store(server: Any, files: list[Path]) -> None:
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, (done.stderr, server.log_tail())


def _panel(qtbot: Any, api: Any, page_size: int = 1000) -> Any:
    from workstation.qt.browser import BrowserPanel

    panel = BrowserPanel(api, page_size=page_size)
    qtbot.addWidget(panel)
    panel.resize(600, 700)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def _has_colour(shot: np.ndarray, rgb: tuple[int, int, int], min_pixels: int = 200) -> bool:
    near = np.abs(shot.astype(int) - np.array(rgb)).max(axis=2) <= 8
    return int(near.sum()) >= min_pixels


def _top_rows(panel: Any) -> list[str]:
    return [panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())]


def test_ideographic_only_name_is_shown(qtbot, api, server, tmp_path, artifacts) -> None:  # noqa: ANN001
    suffix = uuid.uuid4().hex[:6].upper()
    _store(server, [_study_file(tmp_path, "=山田^花子", f"IDEO{suffix}", 0,
                                ["", "ISO 2022 IR 87"])])  # fmt: skip
    panel = _panel(qtbot, api)
    panel.search.setText(f"IDEO{suffix}")
    panel.refresh()
    assert _top_rows(panel) == ["山田, 花子"]
    item = panel.tree.topLevelItem(0)
    qtbot.wait(50)
    shot = grab(panel.tree.viewport())
    rect = panel.tree.visualItemRect(item)
    x0 = panel.tree.indentation() + 4  # right of the expand arrow
    x1 = panel.tree.columnWidth(0) - 4
    cell = shot[rect.top() : rect.bottom() + 1, x0:x1].max(axis=2)
    assert int((cell < 128).sum()) > 20, "no name drawn in the patient row"
    save(panel, artifacts, "browser_ideographic_name.png")


def test_every_study_is_reachable_and_the_count_shows(
    qtbot, api, server, tmp_path, artifacts
) -> None:  # noqa: ANN001, E501
    suffix = uuid.uuid4().hex[:6].upper()
    files = [_study_file(tmp_path, f"Pagetest{suffix}^P{k}", f"PG-{suffix}-{k}", k)
             for k in range(7)]  # fmt: skip
    _store(server, files)
    panel = _panel(qtbot, api, page_size=3)
    panel.search.setText(f"Pagetest{suffix}")
    panel.refresh()
    qtbot.wait(50)
    assert len(panel.visible_study_uids()) == 3
    assert panel.count_label.text() == "3 of 7 studies"
    assert panel.more_button.isVisible() and panel.all_button.isVisible()
    assert _has_colour(grab(panel.count_label), ORANGE)  # the filter bar is orange too
    save(panel, artifacts, "browser_paged.png")
    qtbot.mouseClick(panel.more_button, _left())
    assert len(panel.visible_study_uids()) == 6 and panel.count_label.text() == "6 of 7 studies"
    qtbot.mouseClick(panel.more_button, _left())
    assert len(panel.visible_study_uids()) == 7 and panel.count_label.text() == "7 studies"
    assert not panel.more_button.isVisible()
    qtbot.wait(50)
    assert not _has_colour(grab(panel.count_label), ORANGE, 1)
    assert sorted(_top_rows(panel)) == sorted(f"Pagetest{suffix}, P{k}" for k in range(7))
    panel.refresh()  # a new search starts at the first page again; "Load all" gets the rest
    assert panel.count_label.text() == "3 of 7 studies"
    qtbot.mouseClick(panel.all_button, _left())
    assert len(panel.visible_study_uids()) == 7 and not panel.all_button.isVisible()


def _left() -> Any:
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton


@pytest.fixture
def own_server(fresh_server: Any) -> Iterator[Any]:
    fresh_server.start()
    yield fresh_server


def test_server_outage_is_shown_and_the_browser_recovers(
    qtbot, own_server, tmp_path, artifacts
) -> None:  # noqa: ANN001, E501
    from workstation.qt.main_window import MainWindow

    suffix = uuid.uuid4().hex[:6].upper()
    _store(own_server, [_study_file(tmp_path, f"Outage{suffix}^P{k}", f"OUT-{k}", k)
                        for k in range(3)])  # fmt: skip
    client = own_server.client()
    win = MainWindow(client)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    panel = win.browser
    panel._retry.setInterval(300)  # the test need not wait 5 s per retry
    panel.refresh()
    assert len(panel.visible_study_uids()) == 3 and not panel.banner.isVisible()

    own_server.stop()
    qtbot.keyClicks(panel.search, "Outage")  # debounced search: the slot meets the outage
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=10000)
    assert "Cannot reach the Lucent server" in panel.banner.text()
    assert own_server.api_url in panel.banner.text() and "running" in panel.banner.text()
    assert panel.tree.topLevelItemCount() == 0  # no stale, unfiltered rows under the filter
    assert "Cannot reach" in win.status_label.text()
    qtbot.wait(50)
    assert _has_colour(grab(panel), RED)
    save(win, artifacts, "browser_server_unreachable.png")
    qtbot.mouseClick(panel.clear_button, _left())  # "Clear filter" while the server is away
    assert not panel.filter.active and panel.banner.isVisible()
    assert panel.tree.topLevelItemCount() == 0

    own_server.start()  # back: the retry timer brings the list back by itself
    qtbot.waitUntil(lambda: not panel.banner.isVisible(), timeout=30000)
    assert len(panel.visible_study_uids()) == 3
    assert win.status_label.text() == "Lucent server reachable again"
    qtbot.wait(50)
    assert not _has_colour(grab(panel), RED)
    client.close()
