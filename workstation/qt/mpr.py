"""MPR window: axial, coronal, sagittal planes of a loaded volume, thick-slab MIP on request."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter, QPaintEvent, QWheelEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from workstation.model.pipeline import Display, Frame, render
from workstation.model.series import SeriesData
from workstation.render.mpr import Reslicer


class PlaneView(QWidget):
    """One resliced plane, W/L from the series' viewport; wheel moves the plane."""

    def __init__(self, window: MprWindow, orientation: str) -> None:
        super().__init__(window)
        self.window_ = window
        self.orientation = orientation
        self.position = 0.0
        self.image: np.ndarray | None = None
        self.setMinimumSize(200, 200)

    def refresh(self) -> None:
        w = self.window_
        values = w.reslicer.slice(self.orientation, self.position, w.slab.value(), w.mode())
        frame = Frame(stored=values.astype(w.volume_dtype), slope=w.slope, intercept=w.intercept)
        self.image = np.ascontiguousarray(render(frame, Display(w.center, w.width)))
        self.update()

    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        self.position += (1 if e.angleDelta().y() > 0 else -1) * min(self.window_.spacing)
        self.refresh()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.GlobalColor.black)
        if self.image is not None:
            h, w = self.image.shape
            fmt = QImage.Format.Format_Grayscale8
            img = QImage(self.image.data, w, h, self.image.strides[0], fmt)
            s = min(self.width() / w, self.height() / h)
            p.translate((self.width() - w * s) / 2, (self.height() - h * s) / 2)
            p.scale(s, s)
            p.drawImage(0, 0, img)
            p.resetTransform()
        p.setPen(Qt.GlobalColor.yellow)
        p.drawText(8, 16, f"{self.orientation}  {self.position:.1f} mm")
        p.end()


class MprWindow(QWidget):
    def __init__(self, data: SeriesData) -> None:
        super().__init__()
        assert data.volume is not None
        self.setWindowTitle(f"MPR — {data.series.description}")
        s0 = data.slices[0]
        gap = 1.0
        if len(data.slices) > 1 and data.slices[0].plane and data.slices[1].plane:
            gap = abs(data.slices[1].plane.distance(data.slices[0].plane.position)) or 1.0
        self.spacing = (gap, s0.spacing.row, s0.spacing.col)
        self.reslicer = Reslicer(data.volume, self.spacing)
        self.volume_dtype = data.volume.dtype
        first = data.frame(0)
        self.slope = first.slope if first else 1.0
        self.intercept = first.intercept if first else 0.0
        self.center, self.width = first.default_window() if first else (40.0, 400.0)
        self.slab = QSpinBox(suffix=" mm slab", maximum=200)
        self.modes = QComboBox()
        self.modes.addItems(["max", "mean", "min"])
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Thick slab:"))
        bar.addWidget(self.slab)
        bar.addWidget(self.modes)
        bar.addStretch(1)
        views = QHBoxLayout()
        ext = self.reslicer.extent_mm
        self.views = [PlaneView(self, o) for o in ("axial", "coronal", "sagittal")]
        for v, pos in zip(self.views, (ext[2] / 2, ext[1] / 2, ext[0] / 2), strict=True):
            v.position = pos
            views.addWidget(v)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addLayout(views, 1)
        self.slab.valueChanged.connect(self.refresh)
        self.modes.currentTextChanged.connect(self.refresh)
        self.resize(1200, 450)
        self.refresh()

    def mode(self) -> str:
        return self.modes.currentText()

    def refresh(self) -> None:
        for v in self.views:
            v.refresh()
