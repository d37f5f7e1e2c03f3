"""MPR plane views: orientation letters, the side of the plane, every plane line visible.

Outside probe 24: the plane views had no L/R, A/P, H/F letters (the stack viewer has them),
the sagittal position read "-20.0 mm" for a plane 20 mm to the patient's left, and the
oblique plane's line, drawn last, hid the coronal line in the axial view (and the axial
line in the coronal view): the two planes meet it along the very same line.

The window is built straight from a VolumeGrid (no server): a 60 × 60 × 30 mm axial volume
of air with one bright box. Letters are read back from the grabbed frame by comparing each
edge's crop with the glyph of the letters drawn alone (tests/gui/test_orientation_labels).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from tests.gui.helpers import grab, qimage_rgb, save
from tests.gui.test_orientation_labels import EDGES, _crop, _glyph, _iou

GREEN = (60, 200, 60)  # coronal plane line
RED = (255, 60, 60)  # axial plane line
MAGENTA = (230, 0, 230)  # oblique plane line
CENTRE = np.array([20.0, 31.0, 14.0])  # the crosshair point, mm (LPS)

# Every label direction_letters can give: one axis, or a dominant and a second one.
_AXES = (("L", "R"), ("P", "A"), ("H", "F"))
CANDIDATES = [a for pair in _AXES for a in pair] + [
    a + b
    for (i, pi), (j, pj) in itertools.permutations(enumerate(_AXES), 2)
    for a in pi
    for b in pj
]


def read_edges(widget: Any, shot: np.ndarray) -> dict[str, str]:
    out = {}
    for edge in EDGES:
        crop = _crop(shot, widget, edge)
        if not crop.size:
            out[edge] = ""
            continue
        scores = {t: _iou(crop, _glyph(t)) for t in CANDIDATES}
        best = max(scores, key=scores.__getitem__)
        out[edge] = best if scores[best] > 0.99 else "?"
    return out


def _mpr(qtbot: Any) -> Any:
    from workstation.model.volume import VolumeGrid
    from workstation.qt.mpr import MprWindow

    vol = np.zeros((30, 60, 60), np.int16)  # stored 0 → HU -1024: air
    vol[10:18, 25:35, 15:25] = 3000  # bone-bright box around the crosshair point
    eye = np.eye(3)
    grid = VolumeGrid(vol, np.zeros(3), eye[0], eye[1], eye[2], (1.0, 1.0, 1.0), 1.0, -1024.0)
    mpr = MprWindow(grid, "synthetic", (40, 400))
    qtbot.addWidget(mpr)
    mpr.show()
    qtbot.waitExposed(mpr)
    mpr.state.set_centre(CENTRE)
    qtbot.wait(50)
    return mpr


def test_every_plane_view_shows_its_orientation_letters(qtbot, artifacts: Path) -> None:  # noqa: ANN001
    mpr = _mpr(qtbot)
    expected = {
        "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
        "coronal": {"left": "R", "right": "L", "top": "H", "bottom": "F"},
        "sagittal": {"left": "A", "right": "P", "top": "H", "bottom": "F"},
        # tilted 30° from axial about the left-right axis: down is posterior and head-wards
        "oblique": {"left": "R", "right": "L", "top": "AF", "bottom": "PH"},
    }
    for view, edges in expected.items():
        widget = mpr.views[view]
        assert read_edges(widget, grab(widget)) == edges, view
    save(mpr, artifacts, "workstation_mpr_orientation.png")
    # Past 45° the oblique plane stands head-down (oblique_axes): the letters show it.
    mpr.tilt.setValue(60.0)
    qtbot.wait(50)
    obl = mpr.views["oblique"]
    assert read_edges(obl, grab(obl)) == {"left": "R", "right": "L", "top": "FA", "bottom": "HP"}
    save(mpr, artifacts, "workstation_mpr_orientation_oblique60.png")


def _text_strip(text: str, view: Any) -> np.ndarray:
    """The view's top-left text drawn alone, as the view draws it: the expected pixels."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFont, QImage, QPainter

    from workstation.qt.mpr import VIEW_COLOURS

    img = QImage(view.width(), view.height(), QImage.Format.Format_RGB888)
    img.fill(Qt.GlobalColor.black)
    p = QPainter(img)
    p.setPen(VIEW_COLOURS[view.view])
    p.setFont(QFont("DejaVu Sans", 9))
    p.drawText(view.label_rect(), int(Qt.AlignmentFlag.AlignLeft), text)
    p.end()
    return qimage_rgb(img)[:24, :180]


def test_plane_positions_name_the_patient_side(qtbot) -> None:  # noqa: ANN001
    mpr = _mpr(qtbot)
    st = mpr.state
    assert st.position("sagittal") == -20.0  # along the sagittal normal, which points right
    assert st.position_label("sagittal") == "L 20.0 mm"
    sag = mpr.views["sagittal"]
    assert sag.overlay_label == "sagittal  L 20.0 mm"
    shot = grab(sag)[:24, :180]
    assert np.array_equal(shot, _text_strip("sagittal  L 20.0 mm", sag))
    assert not np.array_equal(shot, _text_strip("sagittal  -20.0 mm", sag))
    assert st.position_label("coronal") == "P 31.0 mm"
    assert st.position_label("axial") == "H 14.0 mm"
    st.set_centre(np.array([-5.0, -7.5, -2.0]))
    assert st.position_label("sagittal") == "R 5.0 mm"
    assert st.position_label("coronal") == "A 7.5 mm"
    assert st.position_label("axial") == "F 2.0 mm"


def _across(view: Any, shot: np.ndarray, point: np.ndarray, dx: int) -> list[tuple[int, ...]]:
    """The pixels of the column ``dx`` widget pixels right of ``point``, ±4 rows around it."""
    u, v = view.to_widget(*view.plane.to_pixel(point))
    return [tuple(int(c) for c in shot[int(v) + dy, int(u) + dx]) for dy in range(-4, 5)]


def test_the_oblique_line_does_not_hide_the_orthogonal_line_it_meets(
    qtbot, artifacts: Path
) -> None:  # noqa: ANN001
    mpr = _mpr(qtbot)
    mpr.tilt.setValue(30.0)
    qtbot.wait(50)
    for name, colour in (("axial", GREEN), ("coronal", RED)):
        view = mpr.views[name]
        shot = grab(view)
        point = CENTRE + np.array([-12.0, 0.0, 0.0])  # on the line, away from the vertical one
        columns = [_across(view, shot, point, dx) for dx in range(0, 40)]
        with_line = sum(colour in c for c in columns)
        with_oblique = sum(MAGENTA in c for c in columns)
        assert with_line == len(columns), (name, columns[0])  # never hidden
        assert with_oblique >= len(columns) // 4, (name, columns[0])  # still seen beside it
    save(mpr, artifacts, "workstation_mpr_oblique_lines.png")
