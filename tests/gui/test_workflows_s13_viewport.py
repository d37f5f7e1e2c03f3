"""Viewport keys and overlays (probe 32): Ctrl+letter is not the letter's action, Del never
removes what the user cannot see (or a GSPS annotation without saying so; since s14 only a
selected annotation), the lossy badge
is sized to its text, and the position overlay is the patient coordinate with its letter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QFont, QFontMetrics

from tests.gui import scenes
from tests.gui.helpers import grab, open_series
from workstation.model.geometry import ImagePlane, patient_position_label, slice_position
from workstation.model.pipeline import Lossy


def _draw(qtbot: Any, win: Any, vp: Any, tool: str, pts: tuple[tuple[int, int], ...]) -> None:
    widget = win.viewer.widgets[0]
    win.viewer.set_tool(tool)
    tr = vp.transform(widget.width(), widget.height())
    for x, y in pts:
        u, v = tr.to_widget(x, y)
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))


def _click_on(qtbot: Any, widget: Any, vp: Any, a: Any) -> None:
    """A click halfway along the annotation's first segment (selects it)."""
    (x0, y0), (x1, y1) = a.points[0], a.points[1]
    tr = vp.transform(widget.width(), widget.height())
    u, v = tr.to_widget((x0 + x1) / 2, (y0 + y1) / 2)
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))


def test_ctrl_letters_do_not_trigger_viewport_letters(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene
) -> None:
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    widget.setFocus()
    win.viewer.set_tool("wl")
    ctrl = Qt.KeyboardModifier.ControlModifier
    for key in (Qt.Key.Key_D, Qt.Key.Key_A, Qt.Key.Key_E, Qt.Key.Key_B, Qt.Key.Key_W):
        qtbot.keyClick(widget, key, ctrl)
        assert widget.tool == "wl", key
    qtbot.keyClick(widget, Qt.Key.Key_I, ctrl)
    qtbot.keyClick(widget, Qt.Key.Key_H, Qt.KeyboardModifier.AltModifier)
    assert not vp.invert and not vp.flip_h
    # the plain letters still work
    qtbot.keyClick(widget, Qt.Key.Key_D)
    assert widget.tool == "distance"
    qtbot.keyClick(widget, Qt.Key.Key_I)
    assert vp.invert


def test_delete_only_what_is_shown(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, artifacts: Any
) -> None:
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    qtbot.waitUntil(lambda: any(a.source == "gsps" for a in vp.annotations), timeout=20000)
    widget = win.viewer.widgets[0]
    vp.set_index(2)
    # away from what other GUI tests draw here and save as GSPS on this session's server
    # ((10, 10)-(50, 40) on slice 2): loaded with the series, that copy lay under the
    # user's line and took the click, depending on which test files ran first
    _draw(qtbot, win, vp, "distance", ((36, 44), (60, 58)))
    _draw(qtbot, win, vp, "distance", ((4, 60), (30, 60)))
    on_two = [a for a in vp.annotations if a.source == "user"]
    assert len(on_two) == 2
    win.viewer.set_tool("wl")
    widget.setFocus()
    # selected on slice 2, Del on another slice: what is not shown never goes
    _click_on(qtbot, widget, vp, on_two[0])
    assert vp.selected is on_two[0]
    vp.set_index(5)
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "user"] == on_two
    assert "not on the image shown" in win.status_label.text()
    # slice 3 shows only the external GSPS line: selected and Del, it is kept, and said so
    vp.set_index(3)
    gsps_before = [a for a in vp.annotations if a.source == "gsps"]
    (shown,) = vp.visible_annotations()
    _click_on(qtbot, widget, vp, shown)
    assert vp.selected is shown
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "gsps"] == gsps_before
    assert "GSPS" in win.status_label.text()
    # back on slice 2: with nothing selected nothing goes (s14); the selected one goes
    vp.set_index(2)
    vp.select_annotation(None)
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "user"] == on_two
    assert "nothing selected" in win.status_label.text()
    _click_on(qtbot, widget, vp, on_two[1])
    assert vp.selected is on_two[1]
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "user"] == on_two[:1]
    qtbot.wait(30)
    win.grab().save(str(artifacts / "s13_delete_visible.png"))


def test_lossy_badge_fits_its_text_and_keeps_jpg(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, artifacts: Any
) -> None:
    win = window
    vp = open_series(qtbot, win, api, scene, "CR lossy")
    widget = win.viewer.widgets[0]
    for s in vp.series.slices:
        s.lossy = Lossy(True, "ISO_10918_1", "39.432")
    text = "JPG 39.432:1 ISO_10918_1"
    vp.changed.emit()
    qtbot.wait(50)
    shot = grab(widget)
    widget.grab().save(str(artifacts / "s13_lossy_badge.png"))
    fm = QFontMetrics(QFont("DejaVu Sans", 9))
    box = widget.badge_rect()
    assert widget.badge_text == text
    assert box.width() >= fm.horizontalAdvance(text) + 8
    assert box.left() >= 0 and box.right() <= widget.width()
    red = (shot[..., 0] == 200) & (shot[..., 1] == 0) & (shot[..., 2] == 0)
    cols = np.flatnonzero(red[int(box.top()) + 1 : int(box.bottom()) - 1].any(axis=0))
    assert cols.min() <= box.left() + 1 and cols.max() >= box.right() - 2
    # white text inside the box, from its left part ("JPG") to its right part
    white = (shot[..., 0] == 255) & (shot[..., 1] == 255) & (shot[..., 2] == 255)
    inside = white[int(box.top()) : int(box.bottom()), int(box.left()) : int(box.right())]
    text_cols = np.flatnonzero(inside.any(axis=0))
    assert text_cols.min() < 12 and text_cols.max() > box.width() - 14
    # the top-right corner text (series line included) starts under the badge
    corner = shot[: int(box.bottom()) + 60, int(box.left()) :]
    rows = np.flatnonzero((corner == 230).all(axis=2).any(axis=1))
    assert rows.size and rows.min() >= box.bottom(), (rows[:3], box)
    # a view too narrow for the whole text still shows "JPG" whole
    from workstation.model.viewer import Layout
    from workstation.qt.viewport import ViewportWidget

    narrow = ViewportWidget(Layout(), 0)
    qtbot.addWidget(narrow)
    narrow.resize(90, 120)
    small, shown = narrow.badge_layout(text)
    assert shown.startswith("JPG") and small.left() >= 0 and small.right() <= 90
    assert small.width() >= fm.horizontalAdvance("JPG") + 8


def test_position_overlay_is_the_patient_coordinate_with_its_letter(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene
) -> None:
    # the probe's sagittal: IOP 0/1/0/0/0/-1 at x = +9 (patient left) and x = -9 (right)
    for x, label in ((9.0, "L 9.0 mm"), (-9.0, "R 9.0 mm")):
        plane = ImagePlane.from_attrs([x, -50.0, 60.0], [0, 1, 0, 0, 0, -1], [1.0, 1.0], 64, 64)
        assert plane is not None
        assert slice_position(plane) == pytest.approx(-x)  # the old overlay's number
        assert patient_position_label(plane) == label
    coronal = ImagePlane.from_attrs([0, -4.0, 20.0], [1, 0, 0, 0, 0, -1], [0.5, 0.5], 64, 64)
    assert coronal is not None and patient_position_label(coronal) == "A 4.0 mm"
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    vp.set_index(3)
    qtbot.wait(50)
    widget.grab()
    assert "Pos H 3.0 mm" in widget.corner_texts[2], widget.corner_texts
