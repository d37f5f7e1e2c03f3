"""3D view: orientation letters at the edges follow the camera (outside probe 24: none).

The window is built straight from a VolumeGrid (no server). Pixels come from
vtkWindowToImageFilter; each letter's drawn box (``VolumeScene.label_boxes``) must hold the
pale yellow letter colour, and after turning the camera half round the left letter's glyph
is the one the right edge showed before (R and L swap), drawn from the same font.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workstation.model.orientation_labels import EdgeLabels

ANTERIOR = EdgeLabels(left="R", right="L", top="H", bottom="F")


def _save(shot: np.ndarray, path: Path) -> None:
    from PySide6.QtGui import QImage

    h, w, _ = shot.shape
    QImage(shot.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy().save(str(path))


def _window(qtbot: Any) -> Any:
    from workstation.model.volume import VolumeGrid
    from workstation.qt.volume3d import VolumeWindow

    vol = np.zeros((32, 32, 32), np.int16)  # stored 0 → HU -1024: air
    vol[10:20, 12:18, 5:12] = 3000  # a bone-bright box, off centre
    eye = np.eye(3)
    grid = VolumeGrid(vol, np.zeros(3), eye[0], eye[1], eye[2], (1.0, 1.0, 1.0), 1.0, -1024.0)
    win = VolumeWindow(grid, "synthetic", "Bone")
    win.resize(420, 420)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.scene.render()
    return win


def _letter(shot: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The letter's own pixels in its box (pale yellow: red and green bright, blue less)."""
    x0, y0, x1, y1 = box
    crop = shot[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1].astype(int)
    mask = (crop[..., 0] > 200) & (crop[..., 1] > 200) & (crop[..., 2] < 200)
    ys, xs = np.nonzero(mask)
    assert len(ys) > 10, box
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def test_the_3d_view_names_the_patient_directions_at_its_edges(
    qtbot, artifacts: Path, needs_x: None
) -> None:  # noqa: ANN001
    win = _window(qtbot)
    scene = win.scene
    shot = win.screenshot()
    _save(shot, artifacts / "workstation_3d_orientation.png")
    assert scene.edge_labels == ANTERIOR  # anterior view: patient's left on screen right
    h, w, _ = shot.shape
    boxes = scene.label_boxes()
    before = {edge: _letter(shot, box) for edge, box in boxes.items()}
    assert boxes["left"][2] < w / 4 and boxes["right"][0] > 3 * w / 4
    assert boxes["top"][3] < h / 4 and boxes["bottom"][1] > 3 * h / 4
    assert not np.array_equal(before["left"], before["right"])  # R and L look different

    win.rotate(180.0)  # seen from behind: the patient's left is now on screen left
    turned = win.screenshot()
    _save(turned, artifacts / "workstation_3d_orientation_posterior.png")
    assert scene.edge_labels == EdgeLabels(left="L", right="R", top="H", bottom="F")
    after = {edge: _letter(turned, box) for edge, box in scene.label_boxes().items()}
    assert np.array_equal(after["left"], before["right"])
    assert np.array_equal(after["right"], before["left"])

    win.rotate(90.0)  # a lateral view: anterior/posterior at the sides, head still up
    assert {scene.edge_labels.left, scene.edge_labels.right} == {"A", "P"}
    assert scene.edge_labels.top == "H"
    win.rotate(0.0, 90.0)  # tipped over the A-P axis: from the head, left-right is up-down
    labels = scene.edge_labels
    assert {labels.top, labels.bottom} == {"L", "R"} and {labels.left, labels.right} == {"A", "P"}
    win.reset()
    assert scene.edge_labels == ANTERIOR
