"""The workstation against the real server: pixels of grabbed frames, not just widgets.

One data set is sent with storescu per worker; each test opens what it needs in a fresh
main window. Screenshots of the main screens go to tests/artifacts/.
"""

from __future__ import annotations

import numpy as np
import pytest

from lucent.dicom import pixels as lucent_pixels
from tests.gui import scenes
from tests.gui.helpers import grab as _grab
from tests.gui.helpers import open_series as _open
from tests.gui.helpers import sample as _sample
from tests.gui.helpers import save as _save

YELLOW = (255, 220, 0)


def test_window_level_gives_the_predicted_grey_values(qtbot, window, api, scene, artifacts) -> None:  # noqa: ANN001
    win = window
    win.browser.refresh()
    vp = _open(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    assert vp.count == 8 and (vp.center, vp.width) == (40.0, 400.0)
    vp.set_index(3)
    for center, width in ((40.0, 400.0), (-600.0, 1500.0), (300.0, 80.0)):
        vp.set_window(center, width)
        qtbot.wait(20)
        shot = _grab(widget)
        tr = vp.transform(widget.width(), widget.height())
        hu = scenes.ct_pixels(3).astype(np.float32) - 1024
        expected = lucent_pixels.window_to_8bit(hu, center, width)
        for x in (8, 20, 31, 40, 55):
            y = 32
            got = _sample(shot, tr, x, y)
            assert tuple(got) == (expected[y, x],) * 3, (center, width, x)
    # Scrolling by wheel changes the slice; the image follows.
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent

    ev = QWheelEvent(QPointF(100, 100), QPointF(100, 100), QPoint(0, 0), QPoint(0, -120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    widget.wheelEvent(ev)
    assert vp.index == 4
    qtbot.keyClick(widget, Qt.Key.Key_Up)
    assert vp.index == 3
    vp.set_window(40, 400)
    _save(win, artifacts, "workstation_axial_ct.png")


def test_monochrome1_inverted_and_lossy_badge_only_on_lossy(
    qtbot, window, api, scene, artifacts
) -> None:  # noqa: ANN001, E501
    win = window
    win.layout_model.set_grid(1, 2)
    vp0 = _open(qtbot, win, api, scene, "CR", 0)
    vp1 = _open(qtbot, win, api, scene, "CR lossy", 1)
    qtbot.wait(50)
    stored = np.tile(np.linspace(0, 4095, scenes.N).round(), (scenes.N, 1))
    expected = 255 - lucent_pixels.window_to_8bit(stored, 2048, 4096)
    for vp, widget in ((vp0, win.viewer.widgets[0]), (vp1, win.viewer.widgets[1])):
        shot = _grab(widget)
        tr = vp.transform(widget.width(), widget.height())
        for x in (4, 30, 60):
            assert tuple(_sample(shot, tr, x, 32)) == (expected[32, x],) * 3
        assert expected[32, 4] > 200 > 50 > expected[32, 60]  # low values bright: inverted
    badge = []
    for widget in win.viewer.widgets[:2]:
        r = widget.badge_rect()
        shot = _grab(widget)[int(r.top()) : int(r.bottom()), int(r.left()) : int(r.right())]
        red = (shot[..., 0] == 200) & (shot[..., 1] == 0) & (shot[..., 2] == 0)
        badge.append(int(red.sum()))
    assert badge[0] == 0 and badge[1] > 100, badge
    assert vp1.slice().lossy.badge == "JPG 10:1 ISO_10918_1"
    _save(win, artifacts, "workstation_cr_lossy_badge.png")


def test_reference_line_at_the_computed_position(qtbot, window, api, scene, artifacts) -> None:  # noqa: ANN001
    win = window
    win.layout_model.set_grid(1, 2)
    ax = _open(qtbot, win, api, scene, "Axial", 0)
    co = _open(qtbot, win, api, scene, "Coronal", 1)
    co.set_index(1)  # y = -1.5 mm
    ax.set_index(5)  # z = 5 mm
    qtbot.wait(50)
    # On the axial image the coronal plane y = -1.5 mm is row (y - y0) / 0.5.
    y0 = -(scenes.N - 1) * scenes.SPACING / 2
    row = (-1.5 - y0) / scenes.SPACING
    widget = win.viewer.widgets[0]
    shot = _grab(widget)
    tr = ax.transform(widget.width(), widget.height())
    for x in (10, 32, 50):
        u, v = tr.to_widget(x, row)
        column = shot[int(v) - 3 : int(v) + 4, int(round(u))]
        hits = [k for k, px in enumerate(column) if tuple(px) == YELLOW]
        assert hits and all(abs(int(v) - 3 + k - v) <= 1.0 for k in hits), (x, hits, v)
    u, v = tr.to_widget(32, row + 8)
    assert tuple(shot[int(v), int(u)]) != YELLOW
    # On the coronal image the axial plane z = 5 is row (20 - 5) / 0.5 = 30.
    widget1 = win.viewer.widgets[1]
    shot1 = _grab(widget1)
    tr1 = co.transform(widget1.width(), widget1.height())
    u, v = tr1.to_widget(32, 30)
    column = shot1[int(v) - 3 : int(v) + 4, int(round(u))]
    assert any(tuple(px) == YELLOW for px in column)
    # Synchronised scrolling: scrolling the axial moves nothing (planes not parallel).
    _save(win, artifacts, "workstation_reference_lines.png")


def test_distance_in_mm_and_gsps_round_trip(qtbot, window, api, scene, artifacts) -> None:  # noqa: ANN001
    from PySide6.QtCore import QPoint, Qt

    win = window
    vp = _open(qtbot, win, api, scene, "Axial", 0)
    vp.set_index(2)
    widget = win.viewer.widgets[0]
    win.viewer.set_tool("distance")
    tr = vp.transform(widget.width(), widget.height())
    for x, y in ((10, 10), (50, 40)):
        u, v = tr.to_widget(x, y)
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))
    (a,) = [a for a in vp.annotations if a.source == "user"]
    result = a.measure(vp.slice().spacing)
    assert result is not None and result.unit == "mm"
    assert result.value == pytest.approx(0.5 * np.hypot(40, 30), abs=0.5 * 0.2)
    qtbot.wait(20)
    _save(win, artifacts, "workstation_distance.png")
    sop = win.save_gsps()
    assert sop
    # Reopen in a fresh window: the GSPS comes back with the same graphics.
    from workstation.qt.main_window import MainWindow

    win2 = MainWindow(api)
    qtbot.addWidget(win2)
    win2.resize(1000, 800)
    win2.show()
    vp2 = _open(qtbot, win2, api, scene, "Axial", 0)
    qtbot.waitUntil(lambda: any(x.source == "gsps" for x in vp2.annotations), timeout=20000)
    ours = [x for x in vp2.annotations if x.kind == "distance"]
    assert any(
        x.sop_instance_uid == a.sop_instance_uid and np.allclose(x.points, a.points, atol=1e-6)
        for x in ours
    )
    win2.pool.waitForDone(20000)


def test_highdicom_gsps_is_displayed(qtbot, window, api, scene, artifacts) -> None:  # noqa: ANN001
    win = window
    vp = _open(qtbot, win, api, scene, "Axial", 0)
    qtbot.waitUntil(lambda: any(a.source == "gsps" for a in vp.annotations), timeout=20000)
    vp.set_index(3)
    qtbot.wait(50)
    widget = win.viewer.widgets[0]
    shot = _grab(widget)
    tr = vp.transform(widget.width(), widget.height())
    u, v = tr.to_widget(32, 10)  # highdicom line at GSPS y = 10.5 → pixel centre row 10
    column = shot[int(v) - 2 : int(v) + 3, int(u)]
    orange = [tuple(px) for px in column if px[0] == 255 and 120 <= px[1] <= 160 and px[2] < 40]
    assert orange, column
    vp.set_index(2)
    qtbot.wait(20)
    shot = _grab(widget)
    column = shot[int(v) - 2 : int(v) + 3, int(u)]
    assert not any(px[0] == 255 and 120 <= px[1] <= 160 and px[2] < 40 for px in column)


def test_filter_then_clear_shows_all_again(qtbot, window, api, scene, artifacts) -> None:  # noqa: ANN001
    win = window
    panel = win.browser
    panel.refresh()
    everything = set(panel.visible_study_uids())
    anna = {s.study_uid for s in api.studies(patient_name=f"Guitest{scene.suffix}^Anna")}
    bernd = {s.study_uid for s in api.studies(patient_name=f"Guitest{scene.suffix}^Bernd")}
    assert anna | bernd <= everything
    assert not panel.filter_label.isVisible()
    panel.search.setText(f"guitest{scene.suffix}^anna")  # lower case: still found (FAQ)
    qtbot.waitUntil(lambda: set(panel.visible_study_uids()) == anna, timeout=10000)
    assert panel.filter_label.isVisible() and "Filter active" in panel.filter_label.text()
    _save(win, artifacts, "workstation_filter_active.png")
    from PySide6.QtCore import Qt

    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    assert panel.search.text() == "" and not panel.filter_label.isVisible()
    assert set(panel.visible_study_uids()) == everything
    # Hide a study: the server keeps it per user (FAQ); "Show hidden data" restores it.
    (one,) = anna
    try:
        panel.hide_study(one)
        assert one not in panel.visible_study_uids()
        assert [(h.level, h.uid) for h in api.hidden_items()] == [("study", one)]
        name = f"Guitest{scene.suffix}^Anna"
        assert api.studies(patient_name=name) == []  # the server itself leaves it out
        from workstation.qt.main_window import MainWindow

        other = MainWindow(api)  # another workstation of the same user
        qtbot.addWidget(other)
        other.browser.refresh()
        assert one not in other.browser.visible_study_uids()
        panel.hidden_box.setChecked(True)
        assert one in panel.visible_study_uids()
        item = panel.study_item(one)
        assert item is not None and item.foreground(0).color() == Qt.GlobalColor.gray
        panel.hide_study(one, hidden=False)
        assert api.hidden_items() == []
        panel.hidden_box.setChecked(False)
        assert one in panel.visible_study_uids()
        # A series: hidden from the study's series list, back with show_hidden.
        se = [s for s in api.series(one) if s.description == "Coronal"][0]
        panel.hide_series(se.series_uid)
        assert se.series_uid not in [s.series_uid for s in api.series(one)]
        assert se.series_uid in [s.series_uid for s in api.series(one, show_hidden=True)]
        panel.hidden_box.setChecked(True)
        panel.restore_all()
        assert api.hidden_items() == []
    finally:
        api.unhide()  # the scene is shared with the other tests


def test_expired_session_asks_to_log_in_again_and_carries_on(qtbot, window, api, scene) -> None:  # noqa: ANN001
    """A revoked/expired token: the browser asks for the password (login_again) instead of
    failing, the shared client gets the new token and the list fills."""
    win = window
    good = api.token
    asked: list[str] = []

    def login_again() -> str | None:
        asked.append("login")
        return good

    win.login_again = login_again
    try:
        api.token = "expired-token"
        win.browser.search.setText(f"Guitest{scene.suffix}^Anna")
        win.browser.refresh()
        assert asked == ["login"] and api.token == good
        anna = {s.study_uid for s in api.studies(patient_name=f"Guitest{scene.suffix}^Anna")}
        assert set(win.browser.visible_study_uids()) == anna
        # Cancelled login: no loop, a clear message, the token stays as it was.
        win.login_again = lambda: None
        api.token = "expired-token"
        win.browser.refresh()
        assert "session expired" in win.status_label.text()
    finally:
        api.token = good
