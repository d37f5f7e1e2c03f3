"""MPR window: axial, coronal, sagittal and oblique planes of a volume, thick-slab MIP.

VTK reslices (workstation.render.mpr); each plane is drawn like a stack image (numpy W/L →
QImage → QPainter, nearest neighbour), so what you see is what the pipeline predicts and no
GL context is needed. Every plane passes through one crosshair point: a click moves it,
the wheel scrolls a plane along its normal, and the other planes appear as coloured lines.

Every plane view carries the stack viewer's orientation letters (L/R, A/P, H/F at the edge
the patient direction points to, ``workstation.model.orientation_labels``), and its position
names the patient side ("sagittal L 20.0 mm"). The oblique plane's line is drawn first, wide
and dashed, and the orthogonal planes' thin lines over it: in the axial and coronal views the
oblique plane meets them along the very same line, and drawn last it hid the other.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from workstation.model.geometry import ImagePlane, reference_line
from workstation.model.orientation_labels import EdgeLabels
from workstation.model.pipeline import Display, Frame, render
from workstation.model.volume import VIEWS, MprState, VolumeGrid
from workstation.qt.viewport import edge_label_rects, paint_edge_labels
from workstation.render.mpr import SLAB_MODES, Reslicer

VIEW_COLOURS = {
    "axial": QColor(255, 60, 60),
    "coronal": QColor(60, 200, 60),
    "sagittal": QColor(70, 130, 255),
    "oblique": QColor(230, 0, 230),
}
#: The oblique plane's line: under the others, wide and dashed, so that where it coincides
#: with an orthogonal plane's line (axial view: coronal; coronal view: axial) both show.
OBLIQUE_LINE_WIDTH = 3


class PlaneView(QWidget):
    """One resliced plane of the shared MprState."""

    def __init__(self, window: MprWindow, view: str) -> None:
        super().__init__(window)
        self.window_ = window
        self.view = view
        self.plane: ImagePlane | None = None
        self.values: np.ndarray | None = None
        self.image: np.ndarray | None = None
        self._press: QPointF | None = None
        self._dragged = False
        self.edge_labels: EdgeLabels | None = None  # as last drawn
        self.overlay_label = ""  # the top-left text as last drawn
        self.setMinimumSize(200, 200)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # ------------------------------------------------------------------ pixels
    def refresh(self) -> None:
        st = self.window_.state
        self.plane = st.plane(self.view)
        slab = st.slab_mm
        self.values = self.window_.reslicer.plane(self.plane, slab, st.mode)
        frame = Frame(stored=self.values, slope=st.grid.slope, intercept=st.grid.intercept)
        self.image = np.ascontiguousarray(render(frame, Display(st.center, st.width)))
        self.update()

    def scale(self) -> float:
        if self.plane is None:
            return 1.0
        return min(self.width() / self.plane.cols, self.height() / self.plane.rows)

    def to_widget(self, x: float, y: float) -> tuple[float, float]:
        """Image pixel (centre at integer x, y) → widget coordinates."""
        assert self.plane is not None
        s = self.scale()
        ox = (self.width() - self.plane.cols * s) / 2
        oy = (self.height() - self.plane.rows * s) / 2
        return ox + (x + 0.5) * s, oy + (y + 0.5) * s

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        assert self.plane is not None
        s = self.scale()
        ox = (self.width() - self.plane.cols * s) / 2
        oy = (self.height() - self.plane.rows * s) / 2
        return (u - ox) / s - 0.5, (v - oy) / s - 0.5

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.GlobalColor.black)
        st = self.window_.state
        if self.image is not None and self.plane is not None:
            h, w = self.image.shape
            img = QImage(self.image.data, w, h, self.image.strides[0],
                         QImage.Format.Format_Grayscale8)  # fmt: skip
            s = self.scale()
            x0, y0 = self.to_widget(-0.5, -0.5)
            p.save()
            p.translate(x0, y0)
            p.scale(s, s)
            p.drawImage(0, 0, img)
            p.restore()
            self._paint_plane_lines(p)
            self.edge_labels = st.edge_labels(self.view)
            self._paint_edge_labels(p, self.edge_labels)
        p.setPen(VIEW_COLOURS[self.view])
        p.setFont(QFont("DejaVu Sans", 9))
        label = f"{self.view}  {st.position_label(self.view)}"
        if self.view == "oblique":
            label += f"  tilt {st.oblique_deg:.0f}°"
        if st.slab_mm > 0:
            label += f"\nslab {st.slab_mm:.1f} mm {'MIP' if st.mode == 'max' else st.mode}"
        self.overlay_label = label
        p.drawText(self.label_rect(), int(Qt.AlignmentFlag.AlignLeft), label)
        p.setPen(QColor(230, 230, 230))
        p.drawText(self.rect().adjusted(6, 4, -6, -4),
                   int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom),
                   f"W {st.width:.0f}  L {st.center:.0f}")  # fmt: skip
        p.end()

    def _paint_plane_lines(self, p: QPainter) -> None:
        """The other shown planes as lines: the oblique one first (wide, dashed), then the
        orthogonal ones thin on top, so a line that coincides with another never hides it."""
        assert self.plane is not None
        st = self.window_.state
        others = [v for v in VIEWS if v != self.view and v in self.window_.shown]
        for other in sorted(others, key=lambda v: v != "oblique"):
            seg = reference_line(self.plane, st.plane(other))
            if seg is None:
                continue
            if other == "oblique":
                pen = QPen(VIEW_COLOURS[other], OBLIQUE_LINE_WIDTH, Qt.PenStyle.DashLine)
                pen.setCapStyle(Qt.PenCapStyle.FlatCap)
            else:
                pen = QPen(VIEW_COLOURS[other], 1)
            p.setPen(pen)
            a, b = self.to_widget(*seg[0]), self.to_widget(*seg[1])
            p.drawLine(QPointF(*a), QPointF(*b))

    def label_rect(self) -> QRectF:
        """Where the view's name, position and slab are written (top left)."""
        return QRectF(self.rect().adjusted(6, 4, -6, -4))

    def edge_label_rects(self) -> dict[str, QRectF]:
        """Where each edge letter is drawn: as in the stack viewer."""
        return edge_label_rects(self.width(), self.height())

    def _paint_edge_labels(self, p: QPainter, labels: EdgeLabels) -> None:
        """The stack viewer's letters, font and colour, on a black tag: the crosshair
        lines run through the middle of the edges, right where the letters stand."""
        paint_edge_labels(p, self.edge_label_rects(), labels, tag=True)

    # ------------------------------------------------------------------ input
    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        self.window_.state.scroll(self.view, -1 if e.angleDelta().y() > 0 else 1)

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        k = e.key()
        if k in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown):
            step = 10 if k in (Qt.Key.Key_PageUp, Qt.Key.Key_PageDown) else 1
            up = k in (Qt.Key.Key_Up, Qt.Key.Key_PageUp)
            self.window_.state.scroll(self.view, -step if up else step)
        else:
            super().keyPressEvent(e)

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        self.setFocus()
        self._press, self._dragged = e.position(), False

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._press is None:
            return
        d = e.position() - self._press
        if not self._dragged and abs(d.x()) + abs(d.y()) < 3:
            return
        self._dragged = True
        self._press = e.position()
        st = self.window_.state
        st.set_window(st.center + d.y() * st.width / 400, st.width + d.x() * st.width / 200)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        """A click (no drag) moves the crosshair point there; the other planes follow."""
        if self._press is not None and not self._dragged and self.plane is not None:
            x, y = self.to_image(e.position().x(), e.position().y())
            self.window_.state.set_centre(self.plane.to_world(x, y))
        self._press = None


class MprWindow(QWidget):
    """Four planes of one volume in a 2×2 grid, with slab thickness/mode and oblique tilt."""

    def __init__(self, grid: VolumeGrid, title: str = "", window: tuple[float, float] = (40, 400),
                 slab_mm: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.setWindowTitle(f"MPR — {title}" if title else "MPR")
        self.state = MprState(grid, center=window[0], width=window[1], slab_mm=slab_mm)
        self.reslicer = Reslicer(grid)
        self.slab = QDoubleSpinBox(suffix=" mm", maximum=500.0, decimals=1, singleStep=1.0)
        self.slab.setValue(slab_mm)
        self.slab.setToolTip("Thick slab along each plane's normal (0 = thin MPR)")
        self.modes = QComboBox()
        self.modes.addItems(list(SLAB_MODES))
        self.tilt = QDoubleSpinBox(suffix=" °", minimum=-90.0, maximum=90.0, decimals=1)
        self.tilt.setValue(self.state.oblique_deg)
        self.tilt.setToolTip("Oblique plane: axial tilted about the left-right axis")
        bar = QHBoxLayout()
        for w in (QLabel("Slab:"), self.slab, self.modes, QLabel("Oblique tilt:"), self.tilt):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(QLabel("click: crosshair · wheel/↑↓: move plane · drag: W/L"))
        grid_lay = QGridLayout()
        self.views = {v: PlaneView(self, v) for v in VIEWS}
        self.shown = set(VIEWS)
        for n, v in enumerate(VIEWS):
            grid_lay.addWidget(self.views[v], n // 2, n % 2)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addLayout(grid_lay, 1)
        self.slab.valueChanged.connect(lambda v: self.state.set_slab(v, self.modes.currentText()))
        self.modes.currentTextChanged.connect(lambda m: self.state.set_slab(self.slab.value(), m))
        self.tilt.valueChanged.connect(self.state.set_oblique)
        self.state.changed.connect(self.refresh)
        self.resize(1000, 900)
        self.refresh()

    def refresh(self) -> None:
        for v in self.views.values():
            v.refresh()
