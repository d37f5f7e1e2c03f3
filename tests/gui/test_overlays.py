"""DICOM overlay planes in the viewer: white on top of the image where Overlay Origin says,
per slice (the loader must not drop them on the volume fast path), toggled with O."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from lucent.dicom import pixels as lucent_pixels
from tests.gui import scenes
from tests.gui.helpers import grab, open_series, sample, save

WHITE = (255, 255, 255)


def test_overlay_pixels_appear_at_the_predicted_place_and_toggle(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    win = window
    vp = open_series(qtbot, win, api, scene, "Overlay")
    widget = win.viewer.widgets[0]
    assert vp.count == scenes.OVERLAY_SLICES and (vp.center, vp.width) == (40.0, 400.0)
    grey = int(lucent_pixels.window_to_8bit(lucent_pixels.np.array([0.0]), 40, 400)[0])
    assert 90 < grey < 110  # HU 0 in a 40/400 window: mid grey, so white overlay stands out
    for k in range(scenes.OVERLAY_SLICES):
        vp.set_index(k)
        qtbot.wait(20)
        shot = grab(widget)
        tr = vp.transform(widget.width(), widget.height())
        row, (c0, c1), (dr, dc) = scenes.overlay_line(k)
        for x in (c0, 15, c1):
            assert tuple(sample(shot, tr, x, row)) == WHITE, (k, x)
        assert tuple(sample(shot, tr, dc, dr)) == WHITE, k  # the dot: not flipped
        for x, y in ((c0 - 1, row), (c1 + 1, row), (15, row - 1), (15, row + 1), (dc + 1, dr)):
            assert tuple(sample(shot, tr, x, y)) == (grey,) * 3, (k, x, y)
        other, _, _ = scenes.overlay_line((k + 1) % scenes.OVERLAY_SLICES)
        assert tuple(sample(shot, tr, 15, other)) == (grey,) * 3  # another slice's line
    save(win, artifacts, "workstation_overlay.png")
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key.Key_O)
    assert not vp.show_overlays
    qtbot.wait(20)
    shot = grab(widget)
    tr = vp.transform(widget.width(), widget.height())
    row, _, (dr, dc) = scenes.overlay_line(vp.index)
    assert tuple(sample(shot, tr, 15, row)) == (grey,) * 3
    assert tuple(sample(shot, tr, dc, dr)) == (grey,) * 3
    qtbot.keyClick(widget, Qt.Key.Key_O)
    qtbot.wait(20)
    assert tuple(sample(grab(widget), tr, 15, row)) == WHITE
    from workstation.qt.viewport import HELP_TEXT

    assert "O overlay planes on/off" in HELP_TEXT
