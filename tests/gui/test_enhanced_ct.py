"""Enhanced CT end to end: a multi-frame whose geometry exists only in its functional groups
(PS3.3 C.7.6.16), sent into the real server and opened in the viewer.

Per-frame geometry must be used: frames sorted by their own z, the slice position from each
frame's Image Position, the coronal series' plane drawn as a reference line at the row the
geometry predicts, and distances in mm from the shared (non-square) Pixel Spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from lucent.dicom import pixels as lucent_pixels
from tests.gui import scenes
from tests.gui.helpers import grab, open_series, sample, save
from workstation.model.geometry import slice_position

YELLOW = (255, 220, 0)


def test_enhanced_ct_frames_use_their_own_geometry(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    win = window
    win.layout_model.set_grid(1, 2)
    vp = open_series(qtbot, win, api, scene, "Enhanced CT", 0)
    cor = open_series(qtbot, win, api, scene, "Coronal", 1)
    widget = win.viewer.widgets[0]
    assert vp.count == len(scenes.ENH_Z)
    order = sorted(range(len(scenes.ENH_Z)), key=lambda f: scenes.ENH_Z[f])  # [1, 2, 0, 3]
    assert [s.frame for s in vp.series.slices] == order
    cor.set_index(0)  # the coronal plane y = -4 mm
    assert cor.plane().position[1] == pytest.approx(-4.0)
    # y = -4 on a frame whose row 0 is at y = -10 with 0.6 mm rows: row 10 exactly.
    line_row = (-4.0 - scenes.ENH_ORIGIN[1]) / scenes.ENH_SPACING[0]
    assert line_row == pytest.approx(10.0)
    win.layout_model.set_active(0)
    for k, f in enumerate(order):
        vp.set_index(k)
        qtbot.wait(20)
        assert slice_position(vp.plane()) == pytest.approx(scenes.ENH_Z[f])
        assert (vp.center, vp.width) == (40.0, 400.0)  # window from the functional groups
        shot = grab(widget)
        tr = vp.transform(widget.width(), widget.height())
        grey = int(lucent_pixels.window_to_8bit(np.array([float(scenes.enhanced_hu(f))]),
                                                40, 400)[0])  # fmt: skip
        assert tuple(sample(shot, tr, 20, 25)) == (grey,) * 3, (k, f)
        # The reference line: on row 10 (± 1 px on screen), not 2 rows away.
        u, v = tr.to_widget(20, line_row)
        column = [
            tuple(int(c) for c in shot[r, round(u)]) for r in range(round(v) - 1, round(v) + 2)
        ]
        assert YELLOW in column, (k, column)
        u, v = tr.to_widget(20, line_row + 2)
        assert tuple(shot[round(v), round(u)]) == (grey,) * 3
    # Pixels are 0.6 mm tall and 0.8 mm wide: shown in true proportion, measured in mm.
    assert tr.aspect == pytest.approx(0.75)
    win.viewer.set_tool("distance")
    for a, b in (((5, 5), (15, 5)), ((5, 8), (5, 18))):
        for x, y in (a, b):
            u, v = tr.to_widget(x, y)
            qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))
    found = [a.measure(vp.slice().spacing) for a in vp.annotations if a.source == "user"]
    assert [r.unit for r in found if r] == ["mm", "mm"]
    values = [r.value for r in found if r]
    tolerance = 0.8 * 2 / tr.scale  # a click lands within ±½ screen pixel per end
    assert values[0] == pytest.approx(10 * 0.8, abs=tolerance)
    assert values[1] == pytest.approx(10 * 0.6, abs=tolerance)
    qtbot.wait(20)
    save(win, artifacts, "workstation_enhanced_ct.png")
