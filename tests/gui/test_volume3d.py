"""3D volume rendering: VTK inside Qt (QVTKRenderWindowInteractor) under Xvfb + Mesa.

Pixels come from vtkWindowToImageFilter (QWidget.grab cannot see a native GL window). The
scene's "Volume" series is air (HU -1000) with one bone-bright box (HU 2000) centred at
x 8.5, y 15.5, z 40 mm; the renderer projects patient points, so the box is checked at the
place the camera geometry predicts, and air around it must stay black.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.gui import scenes
from tests.gui.helpers import open_series

BOX = np.array([8.5, 15.5, 40.0])  # centre of the box, mm (LPS)
AIR = [np.array([19.0, 15.5, 40.0]), np.array([8.5, 15.5, 47.0]), np.array([2.0, 5.0, 33.0])]


def _save(shot: np.ndarray, path: Path) -> None:
    from PySide6.QtGui import QImage

    h, w, _ = shot.shape
    QImage(shot.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy().save(str(path))


def _bright(shot: np.ndarray, level: int = 60) -> np.ndarray:
    return shot.max(axis=2) > level


def _without_letters(shot: np.ndarray, scene: Any) -> np.ndarray:
    """The frame with the orientation letters' boxes blacked out: the volume's pixels only
    (tests/gui/test_volume3d_orientation.py checks the letters)."""
    out = shot.copy()
    for x0, y0, x1, y1 in scene.label_boxes().values():
        out[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3] = 0
    return out


def _open_3d(qtbot: Any, win: Any, api: Any, scene: scenes.Scene) -> Any:
    open_series(qtbot, win, api, scene, "Volume")
    win.volume_action.trigger()
    vol = win.volume_window
    qtbot.addWidget(vol)
    qtbot.waitExposed(vol)
    vol.scene.render()
    return vol


def test_volume_rendering_shows_the_box_where_the_camera_projects_it(
    qtbot, window, api, scene, artifacts: Path, needs_x: None
) -> None:  # noqa: ANN001
    vol = _open_3d(qtbot, window, api, scene)
    rw = vol.vtk_widget.GetRenderWindow()
    assert rw.GetMultiSamples() == 0
    assert vol.scene.preset == "Bone"
    shot = vol.screenshot()
    _save(shot, artifacts / "workstation_3d_bone.png")
    h, w, _ = shot.shape
    assert (h, w) == tuple(reversed(rw.GetSize()))
    x, y = vol.scene.project(BOX)
    # Anterior view: patient's left (+x) on screen right; the box (x 8.5) lies right of the
    # volume centre (x 11.75) in patient terms, so left of the image centre on screen.
    cx, _ = vol.scene.project(vol.scene.grid.centre)
    assert x < cx - 5
    assert abs(x - w / 2) < w / 4 and abs(y - h / 2) < h / 4  # in the centre region
    patch = shot[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3]
    assert patch.min() > 80, patch.max(axis=2)
    for p in AIR:
        ax, ay = vol.scene.project(p)
        assert shot[int(ay), int(ax)].max() < 10, p
    assert shot[:10, :10].max() == 0 and shot[-10:, -10:].max() == 0  # background black
    ys, xs = np.nonzero(_bright(_without_letters(shot, vol.scene)))
    assert abs(xs.mean() - x) < 3 and abs(ys.mean() - y) < 3  # nothing bright elsewhere

    # MIP: the box's grey is the transfer function's value at HU 2000: 3000/4000 of white.
    vol.presets.setCurrentText("MIP")
    assert vol.scene.preset == "MIP"
    mip = vol.screenshot()
    _save(mip, artifacts / "workstation_3d_mip.png")
    assert abs(int(mip[int(y), int(x)].max()) - 191) <= 3
    for p in AIR:
        ax, ay = vol.scene.project(p)
        assert mip[int(ay), int(ax)].max() < 10, p


def test_mouse_drag_rotates_and_reset_restores_the_anterior_view(
    qtbot, window, api, scene, artifacts: Path, needs_x: None
) -> None:  # noqa: ANN001
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    vol = _open_3d(qtbot, window, api, scene)
    before = vol.screenshot()
    x0, _ = vol.scene.project(BOX)
    # A horizontal left-button drag on the VTK widget: the trackball style turns the camera.
    widget = vol.vtk_widget
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    mods = Qt.KeyboardModifier.NoModifier
    glob = QPointF(widget.mapToGlobal(centre.toPoint()))

    def send(kind: QEvent.Type, pos: QPointF, button: Qt.MouseButton,
             buttons: Qt.MouseButton) -> None:  # fmt: skip
        QApplication.sendEvent(widget, QMouseEvent(kind, pos, glob, button, buttons, mods))

    send(QEvent.Type.MouseButtonPress, centre, left, left)
    for k in range(1, 11):
        send(QEvent.Type.MouseMove, centre + QPointF(12 * k, 0), none, left)
    send(QEvent.Type.MouseButtonRelease, centre + QPointF(120, 0), left, none)
    cam = vol.scene.renderer.GetActiveCamera()
    direction = np.array(cam.GetDirectionOfProjection())
    assert abs(direction[1]) < 0.99, direction  # no longer looking straight along +y
    turned = vol.screenshot()
    _save(turned, artifacts / "workstation_3d_rotated.png")
    x1, y1 = vol.scene.project(BOX)
    assert abs(x1 - x0) > 3  # the box moved on screen …
    ys, xs = np.nonzero(_bright(_without_letters(turned, vol.scene)))
    assert abs(xs.mean() - x1) < 3 and abs(ys.mean() - y1) < 3  # … and is drawn there
    vol.reset()
    again = vol.screenshot()
    assert np.array_equal(again, before)
