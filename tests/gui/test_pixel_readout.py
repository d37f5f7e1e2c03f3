"""The pixel readout under the mouse (probe 22: there was none).

The scene's axial CT has a known HU ramp (``scenes.ct_pixels``); the mouse is moved with
qtbot onto chosen pixels and the readout is read back from the grabbed frame, by comparing
its pixels with the expected line drawn alone in the overlay font.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QPoint

from tests.gui import scenes
from tests.gui.helpers import grab, open_series, qimage_rgb, save


def _trim(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return mask[:0, :0]
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _line(text: str) -> np.ndarray:
    """Bright pixels of ``text`` drawn alone in the overlay font and colour, trimmed."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter

    img = QImage(400, 40, QImage.Format.Format_RGB888)
    img.fill(Qt.GlobalColor.black)
    p = QPainter(img)
    p.setFont(QFont("DejaVu Sans", 9))
    p.setPen(QColor(230, 230, 230))
    p.drawText(10, 28, text)
    p.end()
    return _trim(qimage_rgb(img).min(axis=2) > 100)


def _shown(widget: Any, shot: np.ndarray) -> np.ndarray:
    """The bright pixels of the readout line as the viewport drew it, trimmed."""
    x, y = widget.readout_origin
    box = shot[y - 16 : y + 5, x - 2 : x + 400]
    return _trim(box.min(axis=2) > 100)


def _point_at(qtbot: Any, widget: Any, vp: Any, col: int, row: int) -> None:
    u, v = vp.transform(widget.width(), widget.height()).to_widget(col, row)
    qtbot.mouseMove(widget, QPoint(int(round(u)), int(round(v))))
    qtbot.wait(50)


def hu(col: int, k: int = 0) -> int:
    return int(scenes.ct_pixels(k)[0, col]) - 1024


def test_readout_follows_the_mouse_over_a_ct_hu_ramp(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    vp.set_zoom(0.5)  # text on black: the image is clear of the corners
    qtbot.wait(50)
    for col, row in ((40, 20), (5, 60), (63, 0)):
        _point_at(qtbot, widget, vp, col, row)
        expected = f"({col}, {row})  stored {hu(col) + 1024}  {hu(col)} HU"
        assert widget.readout_text == expected
        shot = grab(widget)
        shown, want = _shown(widget, shot), _line(expected)
        assert shown.shape == want.shape and (shown == want).all(), (col, row, expected)
    assert hu(40) == 270  # the ramp: -1000 + 40·2000/63, rounded
    save(widget, artifacts, "workstation_pixel_readout.png")
    # Scrolling under a still mouse: the readout follows the slice (HU + k per slice).
    vp.set_index(3)
    qtbot.wait(50)
    assert widget.readout_text == f"(63, 0)  stored {hu(63, 3) + 1024}  {hu(63, 3)} HU"
    # Off the image (the black margin): no readout at all.
    qtbot.mouseMove(widget, QPoint(3, widget.height() // 3))
    qtbot.wait(50)
    assert widget.readout_text == "" and widget.readout_origin is None
