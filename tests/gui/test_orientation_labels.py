"""Orientation letters at the viewport edges (probe 22: none were shown).

The letters are read back from the grabbed frame: each edge's crop is compared with the
glyph of every candidate letter drawn alone in the same font, so the test sees what the
reader sees, not only the model's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt

from tests.gui.helpers import find_series, grab, open_series, qimage_rgb, save

EDGES = ("left", "right", "top", "bottom")


def _trim(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return mask[:0, :0]
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _glyph(text: str) -> np.ndarray:
    """The bright pixels of ``text`` drawn alone in the edge-label font, trimmed."""
    from PySide6.QtGui import QImage, QPainter

    from workstation.qt.viewport import EDGE_LABEL_COLOUR, edge_label_font

    img = QImage(80, 40, QImage.Format.Format_RGB888)
    img.fill(Qt.GlobalColor.black)
    p = QPainter(img)
    p.setFont(edge_label_font())
    p.setPen(EDGE_LABEL_COLOUR)
    p.drawText(10, 30, text)
    p.end()
    return _trim(qimage_rgb(img).min(axis=2) > 100)


def _crop(shot: np.ndarray, widget: Any, edge: str) -> np.ndarray:
    r = widget.edge_label_rects()[edge].toRect()
    box = shot[r.top() : r.bottom() + 1, r.left() : r.right() + 1]
    return _trim(box.min(axis=2) > 100)  # pale yellow text: every channel bright


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    return float((a & b).sum() / max((a | b).sum(), 1))


def read_edges(widget: Any, shot: np.ndarray) -> dict[str, str]:
    """Which of the letters each edge shows ("" for nothing; "?" when unreadable)."""
    out = {}
    for edge in EDGES:
        crop = _crop(shot, widget, edge)
        if not crop.size:
            out[edge] = ""
            continue
        scores = {t: _iou(crop, _glyph(t)) for t in "LRAPHF"}
        best = max(scores, key=scores.__getitem__)
        out[edge] = best if scores[best] > 0.99 else "?"
    return out


def test_axial_shows_r_left_l_right_and_a_flip_swaps_them(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    vp.set_zoom(0.5)  # the image clear of the edges: the letters stand on black
    qtbot.wait(50)
    shot = grab(widget)
    save(widget, artifacts, "workstation_orientation_axial.png")
    assert (widget.edge_labels.left, widget.edge_labels.right) == ("R", "L")
    assert read_edges(widget, shot) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key.Key_H)  # horizontal flip
    assert vp.flip_h
    qtbot.wait(50)
    shot = grab(widget)
    save(widget, artifacts, "workstation_orientation_axial_flipped.png")
    assert read_edges(widget, shot) == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    qtbot.keyClick(widget, Qt.Key.Key_Period)  # a quarter turn clockwise (after the flip)
    qtbot.wait(50)
    assert read_edges(widget, grab(widget)) == {
        "left": "P", "right": "A", "top": "L", "bottom": "R",
    }  # fmt: skip


def test_coronal_shows_head_at_the_top_and_no_orientation_no_letters(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    win = window
    vp = open_series(qtbot, win, api, scene, "Coronal")
    widget = win.viewer.widgets[0]
    vp.set_zoom(0.5)
    qtbot.wait(50)
    assert read_edges(widget, grab(widget)) == {
        "left": "R", "right": "L", "top": "H", "bottom": "F",
    }  # fmt: skip
    se, _ = find_series(api, scene, "CR")
    vp = open_series(qtbot, win, api, scene, "CR")
    assert "ImageOrientationPatient" not in vp.slice().attrs, se
    vp.set_zoom(0.5)
    qtbot.wait(50)
    shot = grab(widget)
    save(widget, artifacts, "workstation_orientation_none.png")
    assert widget.edge_labels is None
    assert read_edges(widget, shot) == dict.fromkeys(EDGES, "")
