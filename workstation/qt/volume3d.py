"""3D volume window: VTK inside Qt (QVTKRenderWindowInteractor), issue 5 "Rendering".

Multisampling is off (it costs 4–5× frame rate under software GL); the trackball camera
style rotates with the left mouse button, zooms with the right one / wheel, pans with the
middle one. A native GL window is invisible to QWidget.grab(): screenshots come from
vtkWindowToImageFilter (VolumeScene.screenshot).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera

from workstation.model.volume import VolumeGrid
from workstation.render.volume3d import PRESETS, VolumeScene

HELP = "drag: rotate · right drag/wheel: zoom · middle drag: pan · R: reset"


class VolumeWindow(QWidget):
    """A volume rendering of one series with presets (bone, soft tissue, MIP) and reset."""

    def __init__(self, grid: VolumeGrid, title: str = "", preset: str = "Bone") -> None:
        super().__init__()
        self.setWindowTitle(f"3D — {title}" if title else "3D")
        self.vtk_widget = QVTKRenderWindowInteractor(self)
        render_window = self.vtk_widget.GetRenderWindow()
        render_window.SetMultiSamples(0)
        self.scene = VolumeScene(grid, render_window)
        self.interactor = render_window.GetInteractor()
        self.interactor.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self.presets = QComboBox()
        self.presets.addItems(list(PRESETS))
        self.presets.setCurrentText(preset)
        self.presets.currentTextChanged.connect(self.set_preset)
        reset = QPushButton("Reset")
        reset.setToolTip("Anterior view, whole volume (R)")
        reset.clicked.connect(self.reset)
        bar = QHBoxLayout()
        for w in (QLabel("Preset:"), self.presets, reset):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(QLabel(HELP))
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.vtk_widget, 1)
        self.set_preset(preset)
        self.resize(700, 700)
        self.interactor.Initialize()

    def set_preset(self, name: str) -> None:
        self.scene.set_preset(name)
        if self.presets.currentText() != name:
            self.presets.setCurrentText(name)
        self.scene.render()

    def reset(self) -> None:
        self.scene.reset_camera()
        self.scene.render()

    def rotate(self, azimuth: float, elevation: float = 0.0) -> None:
        self.scene.rotate(azimuth, elevation)
        self.scene.render()

    def screenshot(self) -> np.ndarray:
        return self.scene.screenshot()

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        if e.key() == Qt.Key.Key_R:
            self.reset()
        else:
            super().keyPressEvent(e)

    def closeEvent(self, event: object) -> None:  # noqa: N802
        """Release the GL context before Qt destroys the native window (avoids X errors)."""
        self.vtk_widget.Finalize()
        super().closeEvent(event)  # type: ignore[arg-type]
