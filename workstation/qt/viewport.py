"""One image viewport: numpy W/L → QImage → QPainter, plus overlays, lines and measurements.

Issue 5 measured this path at 8–10 ms for a 1000×1000 view under software rendering, with
no GL context, so stack viewing uses it; VTK is kept for MPR/MIP (workstation.render).
Images are drawn nearest-neighbour: what you see is the stored pixel, and tests can check
grabbed grey values against the numpy pipeline exactly.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QInputDialog, QWidget

from workstation.model import browser
from workstation.model.annotations import POINTS_NEEDED, Annotation, hit
from workstation.model.orientation_labels import EdgeLabels, edge_labels, labels_for
from workstation.model.pipeline import CT_PRESETS
from workstation.model.readout import pixel_readout
from workstation.model.series import Slice
from workstation.model.viewer import Layout, Viewport, ViewTransform
from workstation.qt.dispatch import on_gui_thread

SERIES_MIME = "application/x-lucent-series"
EDGE_LABEL_COLOUR = QColor(255, 255, 160)


def edge_label_font() -> QFont:
    """The font of the edge letters (a function: a QFont needs the QApplication first)."""
    font = QFont("DejaVu Sans", 12)
    font.setBold(True)
    return font


def paint_edge_labels(
    p: QPainter, rects: dict[str, QRectF], labels: EdgeLabels, *, tag: bool = False
) -> None:
    """L/R, A/P, H/F at the middle of each edge, with a dark shadow over bright images
    (``tag``: on a black box, where crosshair lines run through the edges). Drawn from
    whole-pixel baselines so a letter looks the same wherever it stands."""
    p.save()
    p.setFont(edge_label_font())
    fm = p.fontMetrics()
    for edge, rect in rects.items():
        text = getattr(labels, edge)
        if not text:
            continue
        tw, r = fm.horizontalAdvance(text), rect.toRect()
        x = {"left": r.left(), "right": r.right() + 1 - tw}.get(edge, r.center().x() - tw // 2)
        if edge == "top":
            y = r.top() + fm.ascent()
        elif edge == "bottom":
            y = r.bottom() + 1 - fm.descent()
        else:
            y = r.center().y() + (fm.ascent() - fm.descent()) // 2
        if tag:
            p.fillRect(QRectF(x - 3, y - fm.ascent(), tw + 6, fm.height()), QColor(0, 0, 0))
        p.setPen(QColor(0, 0, 0))
        p.drawText(x + 1, y + 1, text)
        p.setPen(EDGE_LABEL_COLOUR)
        p.drawText(x, y, text)
    p.restore()


def edge_label_rects(w: int, h: int) -> dict[str, QRectF]:
    """Where each edge letter of a w x h view is drawn: the middle of that edge, on whole
    pixels (the stack viewer and the MPR views alike)."""
    return {
        "left": QRectF(6, h // 2 - 10, 40, 20),
        "right": QRectF(w - 46, h // 2 - 10, 40, 20),
        "top": QRectF(w // 2 - 30, 4, 60, 20),
        "bottom": QRectF(w // 2 - 30, h - 24, 60, 20),
    }


REFERENCE_COLOUR = QColor(255, 220, 0)
ANNOTATION_COLOUR = QColor(0, 255, 120)
GSPS_COLOUR = QColor(255, 140, 0)
SELECTED_COLOUR = QColor(0, 200, 255)  # the selected annotation: the one Del removes

HELP_TEXT = """Keyboard
  Wheel / ↑ ↓ / PgUp PgDn   scroll (Home/End: first/last)
  Left drag        window/level (or the selected tool)
  Right drag       zoom        Middle drag  pan
  1–8              CT presets (brain, subdural, stroke, bone, lung, soft tissue, liver, mediast.)
  I invert   R reset   H/V flip   , . rotate   O overlay planes on/off
  D distance  A angle  E ellipse  B rectangle  T text  W arrow  Esc: W/L tool
  Click an annotation: select it   Del: delete the selected one   C cine   F1 help
  Ctrl+M MPR (axial/coronal/sagittal/oblique)   Ctrl+Shift+M thick-slab MIP
  Ctrl+3 3D volume rendering (bone, soft tissue, MIP; drag rotates, R resets)
  Ctrl+S save GSPS"""


def qimage_of(pixels: np.ndarray) -> tuple[QImage, np.ndarray]:
    """A QImage over display pixels, and the buffer it borrows (keep it alive meanwhile).

    Qt reads ``height`` rows of ``bytesPerLine`` bytes from one pointer: the rows must be
    C-contiguous. pydicom decodes RLE colour (and a few other codecs) to a planar-backed view
    with strides like (64, 1, 4096); handed over as it was, Qt read the wrong bytes or past
    the buffer and the workstation segfaulted (probe 22). So: a C-contiguous uint8 copy when
    needed, bytesPerLine from that copy, grey (rows, cols) or RGB (rows, cols, 3) only.
    """
    buf = np.ascontiguousarray(pixels, dtype=np.uint8)
    if buf.ndim == 2:
        fmt = QImage.Format.Format_Grayscale8
    elif buf.ndim == 3 and buf.shape[2] == 3:
        fmt = QImage.Format.Format_RGB888
    else:
        raise ValueError(f"display pixels must be (rows, cols) or (rows, cols, 3), not {buf.shape}")
    h, w = buf.shape[:2]
    return QImage(buf.data, w, h, buf.strides[0], fmt), buf


class ViewportWidget(QWidget):
    """Draws one model Viewport; user input changes the model, the model repaints the view."""

    series_dropped = Signal(int, str)  # viewport index, series uid
    activated = Signal(int)
    message = Signal(str)  # for the status bar (e.g. what Del did or why it did nothing)

    def __init__(self, layout: Layout, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layout_model = layout
        self.index = index
        self.model: Viewport = layout.viewports[index]
        self.model.dispatch = on_gui_thread
        self.model.changed.connect(self._schedule)
        self.tool = "wl"
        self.pending: list[tuple[float, float]] = []
        self.hover: tuple[float, float] | None = None
        self.show_help = False
        self._drag: tuple[Qt.MouseButton, QPointF] | None = None
        self._image_ref: object = None
        self._cine = QTimer(self)
        self._cine.timeout.connect(lambda: self.model.set_index((self.model.index + 1) % max(
            self.model.count, 1)))  # fmt: skip
        self.loading_text = ""
        self.edge_labels: EdgeLabels | None = None  # as last drawn
        self.cursor: QPointF | None = None  # widget position of the mouse over this view
        self.readout_text = ""  # the pixel readout as last drawn
        self.corner_texts: tuple[list[str], ...] = ()  # the four corners as last drawn
        self.readout_origin: tuple[int, int] | None = None  # its baseline start (x, y)
        self.badge_text = ""  # the lossy badge text as last drawn
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(64, 64)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def _schedule(self) -> None:
        on_gui_thread(self.update)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.GlobalColor.black)
        vp = self.model
        tr = vp.transform(self.width(), self.height())
        pixels = vp.rendered()
        if tr is not None and pixels is not None:
            m = tr.matrix()
            qt = QTransform(m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2])
            h, w = pixels.shape[:2]
            img, self._image_ref = qimage_of(pixels)  # the QImage borrows this buffer
            p.save()
            p.setTransform(qt)
            p.drawImage(QRectF(-0.5, -0.5, w, h), img)
            p.restore()
            self._paint_lines(p, tr)
            self._paint_annotations(p, tr)
        self._paint_overlays(p)
        if self.layout_model.active == self.index and len(self.layout_model.visible) > 1:
            p.setPen(QPen(QColor(80, 160, 255), 2))
            p.drawRect(self.rect().adjusted(1, 1, -1, -1))
        if self.show_help:
            self._paint_help(p)
        p.end()

    def _paint_lines(self, p: QPainter, tr: object) -> None:
        pen = QPen(REFERENCE_COLOUR, 1)
        p.setPen(pen)
        for a, b in self.layout_model.reference_lines(self.model):
            u0, v0 = tr.to_widget(*a)  # type: ignore[attr-defined]
            u1, v1 = tr.to_widget(*b)  # type: ignore[attr-defined]
            p.drawLine(QPointF(u0, v0), QPointF(u1, v1))

    def _paint_annotations(self, p: QPainter, tr: object) -> None:
        vp = self.model
        s = vp.slice()
        if s is None:
            return
        values = None
        items = list(vp.visible_annotations())
        if self.pending and self.hover:
            items.append(Annotation(self.tool, [*self.pending, self.hover]))
        p.setFont(QFont("DejaVu Sans", 9))
        for a in items:
            colour = GSPS_COLOUR if a.source == "gsps" else ANNOTATION_COLOUR
            selected = a is vp.selected
            p.setPen(QPen(SELECTED_COLOUR if selected else colour, 2.5 if selected else 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            pts = [QPointF(*tr.to_widget(*pt)) for pt in a.points]  # type: ignore[attr-defined]
            if a.kind == "ellipse" and len(pts) >= 2:
                self._ellipse(p, tr, a)
            elif a.kind == "rect" and len(pts) >= 2:
                p.drawRect(QRectF(pts[0], pts[1]).normalized())
            elif a.kind == "text" and pts:
                p.drawText(pts[0], a.text)
            elif a.kind == "arrow" and len(pts) >= 2:
                self._arrow(p, pts[0], pts[1])
            elif len(pts) >= 2:
                p.drawPolyline(pts)
            if selected:  # handles on its points: what Del would remove is plain to see
                p.setBrush(SELECTED_COLOUR)
                for q in pts:
                    p.drawRect(QRectF(q.x() - 3, q.y() - 3, 6, 6))
                p.setBrush(Qt.BrushStyle.NoBrush)
            if a.kind in ("rect", "ellipse") and values is None:
                values = vp.modality_values()
            result = a.measure(s.spacing, values, vp.series.modality_unit() if vp.series else "")
            if result is not None and pts:
                anchor = pts[-1] + QPointF(6, -6)
                for k, line in enumerate(result.text.split("\n")):
                    p.drawText(anchor + QPointF(0, 12 * k), line)

    @staticmethod
    def _ellipse(p: QPainter, tr: object, a: Annotation) -> None:
        """An ellipse as its axes say, rotated (a GSPS ELLIPSE, PS3.3 C.10.5.1.2, may be):
        drawn in its own frame (centre at the origin, first axis along x) through the image
        to widget transform, with a cosmetic pen so the line keeps its width at any zoom.
        The axis end points' bounding box drew a 45-degree ellipse upright (probe 59)."""
        import math

        e = a.ellipse()
        if e is None:
            return
        m = tr.matrix()  # type: ignore[attr-defined]
        view = QTransform(m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2])
        local = QTransform()
        local.translate(e.cx, e.cy)
        local.rotate(math.degrees(e.angle))
        pen = QPen(p.pen())
        pen.setCosmetic(True)
        p.save()
        p.setPen(pen)
        p.setTransform(local * view, True)
        p.drawEllipse(QPointF(0.0, 0.0), e.rx, e.ry)
        p.restore()

    @staticmethod
    def _arrow(p: QPainter, tail: QPointF, head: QPointF) -> None:
        import math

        p.drawLine(tail, head)
        ang = math.atan2(head.y() - tail.y(), head.x() - tail.x())
        for d in (2.6, -2.6):
            p.drawLine(head, head + QPointF(10 * math.cos(ang + d), 10 * math.sin(ang + d)))

    def _paint_overlays(self, p: QPainter) -> None:
        """Corner overlays (patient, study, series, image, position, W/L, zoom) and badge."""
        vp = self.model
        series = vp.series
        p.setFont(QFont("DejaVu Sans", 9))
        p.setPen(QColor(230, 230, 230))
        w, h = self.width(), self.height()
        if series is None:
            self.edge_labels = None
            p.drawText(QRectF(0, 0, w, h), Qt.AlignmentFlag.AlignCenter, "drop a series here")
            return
        st = series.study
        s = vp.slice()
        tl = [
            browser.format_name(st.patient_name) if st else "",
            f"{st.patient_id}  {browser.format_date(st.birth_date)}" if st else "",
        ]
        tr_ = [
            st.description if st else "",
            browser.format_date(st.study_date) if st else "",
            f"Se {series.series.series_number or ''} {series.series.description}",
        ]
        bl = [f"Im {vp.index + 1} / {vp.count}"]
        if s is not None:
            location = s.attrs.get("SliceLocation")
            if isinstance(location, list | tuple):
                location = location[0] if location else None
            if location is not None:
                bl.append(f"Loc {float(location):.1f} mm")  # type: ignore[arg-type]
            elif s.plane is not None:
                from workstation.model.geometry import patient_position_label

                bl.append(f"Pos {patient_position_label(s.plane)}")
            thick = s.attrs.get("SliceThickness")
            if thick:
                bl.append(f"Thk {float(thick[0]):.1f} mm")  # type: ignore[index]
        if vp.has_overlay():
            bl.append("Overlay on (O)" if vp.show_overlays else "Overlay hidden (O)")
        tr = vp.transform(w, h)
        # the VOI actually applied: a VOI LUT read "W .. L .." of a window not in use
        voi = vp.voi_description()
        br = [voi if voi.startswith("VOI LUT") else f"W {vp.width:.0f}  L {vp.center:.0f}"]
        if tr is not None:
            br.append(f"Zoom {tr.scale:.2f}")
        if self.loading_text:
            br.append(self.loading_text)
        self.corner_texts = (tl, tr_, bl, br)
        lossy = s is not None and s.lossy.lossy
        # the top-right block starts under the badge: the badge never covers the series line
        top = int(self.badge_layout(s.lossy.badge)[0].bottom()) + 4 if lossy else 22  # type: ignore[union-attr]
        self._corner(p, tl, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._corner(p, tr_, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, top=top)
        self._corner(p, bl, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom)
        self._paint_readout(p, len([x for x in bl if x]))
        self._corner(p, br, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom)
        self.edge_labels = self._orientation(s, tr)
        if self.edge_labels is not None:
            self._paint_edge_labels(p, self.edge_labels)
        if s is not None and s.lossy.lossy:
            self.paint_badge(p, s.lossy.badge)
        if (
            s is not None
            and s.spacing.warning
            and any(a.kind in ("distance", "rect", "ellipse") for a in vp.visible_annotations())
        ):
            p.setPen(QColor(255, 120, 120))
            p.drawText(QRectF(0, h - 60, w, 16), Qt.AlignmentFlag.AlignHCenter, s.spacing.warning)

    @staticmethod
    def _orientation(s: Slice | None, tr: ViewTransform | None) -> EdgeLabels | None:
        """Edge letters of the current slice as shown now (flips and rotation included)."""
        if s is None or tr is None:
            return None
        if s.plane is not None:
            return edge_labels(s.plane.row_dir, s.plane.col_dir, tr.matrix())
        return labels_for(s.attrs.get("ImageOrientationPatient"), tr.matrix())  # type: ignore[arg-type]

    def edge_label_rects(self) -> dict[str, QRectF]:
        return edge_label_rects(self.width(), self.height())

    def readout(self) -> str:
        """Position, stored and modality value (or RGB) of the pixel under the mouse."""
        vp = self.model
        frame, tr = vp.frame(), vp.transform(self.width(), self.height())
        if self.cursor is None or frame is None or tr is None or vp.series is None:
            return ""
        x, y = tr.to_image(self.cursor.x(), self.cursor.y())
        return pixel_readout(frame, x, y, vp.series.modality_unit()) or ""

    def _paint_readout(self, p: QPainter, lines_below: int) -> None:
        """The readout as one line just above the bottom-left block, from a whole-pixel
        baseline (it changes with every pixel the mouse crosses; no jitter)."""
        self.readout_text = self.readout()
        self.readout_origin = None
        if not self.readout_text:
            return
        fm = p.fontMetrics()
        x = 6
        y = self.height() - 4 - lines_below * fm.lineSpacing() - 2 - fm.descent()
        self.readout_origin = (x, y)
        p.drawText(x, y, self.readout_text)

    def _paint_edge_labels(self, p: QPainter, labels: EdgeLabels) -> None:
        paint_edge_labels(p, self.edge_label_rects(), labels)

    def badge_layout(self, text: str) -> tuple[QRectF, str]:
        """The badge box sized to its text (font metrics), top-right, and the text shown:
        all of it when it fits the view, else elided at the end; "JPG" is always kept whole
        (a fixed 148 px box clipped both ends: "PG 39.432:1 ISO_10918_", probe 32)."""
        fm = QFontMetrics(QFont("DejaVu Sans", 9))
        pad, margin = 12, 4
        room = max(fm.horizontalAdvance("JPG"), self.width() - 2 * margin - pad)
        shown = text
        if fm.horizontalAdvance(text) > room:
            shown = fm.elidedText(text, Qt.TextElideMode.ElideRight, room)
            if not shown.startswith("JPG") or shown.startswith("JPG…"):
                shown = "JPG"
        width = fm.horizontalAdvance(shown) + pad
        box = QRectF(self.width() - margin - width, 2, width, fm.height() + 4)
        return box, shown

    def badge_rect(self) -> QRectF:
        """Where the badge of the current image is (or would be) drawn."""
        s = self.model.slice()
        text = s.lossy.badge if s is not None and s.lossy.lossy else "JPG"
        return self.badge_layout(text)[0]

    def paint_badge(self, p: QPainter, text: str) -> None:
        """FAQ "JPG": a red badge top-right on every lossy-compressed image."""
        box, shown = self.badge_layout(text)
        p.save()
        p.setFont(QFont("DejaVu Sans", 9))
        p.fillRect(box, QBrush(QColor(200, 0, 0)))
        p.setPen(Qt.GlobalColor.white)
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, shown)
        p.restore()
        self.badge_text = shown

    def _corner(self, p: QPainter, lines: list[str], align: Qt.AlignmentFlag, top: int = 0) -> None:
        text = "\n".join(x for x in lines if x)
        rect = QRectF(6, 4 + top, self.width() - 12, self.height() - 8 - top)
        p.drawText(rect, int(align), text)

    def _paint_help(self, p: QPainter) -> None:
        p.fillRect(self.rect(), QColor(0, 0, 0, 200))
        p.setPen(Qt.GlobalColor.white)
        p.setFont(QFont("DejaVu Sans Mono", 10))
        box = self.rect().adjusted(20, 20, -20, -20)
        p.drawText(box, int(Qt.AlignmentFlag.AlignLeft), HELP_TEXT)

    # ------------------------------------------------------------------ input
    def image_point(self, pos: QPointF) -> tuple[float, float] | None:
        tr = self.model.transform(self.width(), self.height())
        return None if tr is None else tr.to_image(pos.x(), pos.y())

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        self.setFocus()
        self.layout_model.set_active(self.index)
        self.activated.emit(self.index)
        pos = e.position()
        if e.button() == Qt.MouseButton.LeftButton and self.tool in POINTS_NEEDED:
            pt = self.image_point(pos)
            if pt is None:
                return
            self.pending.append(pt)
            if len(self.pending) >= POINTS_NEEDED[self.tool]:
                self._finish_annotation()
            self.update()
            return
        if e.button() == Qt.MouseButton.LeftButton and self._select_at(pos):
            return  # a click on an annotation selects it (no window/level drag)
        self._drag = (e.button(), pos)

    def _select_at(self, pos: QPointF) -> bool:
        """Select the annotation under the mouse (True), or clear the selection (False)."""
        tr = self.model.transform(self.width(), self.height())
        if tr is None:
            return False
        found = hit(self.model.visible_annotations(), (pos.x(), pos.y()), tr.to_widget)
        self.model.select_annotation(found)
        if found is not None:
            what = "GSPS " if found.source == "gsps" else ""
            self.message.emit(f"{what}{found.kind} annotation selected: Del deletes it")
        return found is not None

    def _finish_annotation(self) -> None:
        text = ""
        if self.tool == "text":
            text, ok = QInputDialog.getText(self, "Annotation", "Text:")
            if not ok or not text:
                self.pending = []
                return
        self.model.add_annotation(Annotation(self.tool, list(self.pending), text))
        self.pending = []

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        pos = e.position()
        self.cursor = QPointF(pos)
        if self._drag is None and self.readout() != self.readout_text:
            self.update()  # repaint only when the pixel under the mouse changes
        if self.pending:
            self.hover = self.image_point(pos)
            self.update()
        if self._drag is None:
            return
        button, last = self._drag
        dx, dy = pos.x() - last.x(), pos.y() - last.y()
        self._drag = (button, pos)
        if button == Qt.MouseButton.LeftButton:
            if self.tool == "pan":
                self.model.pan_by(dx, dy)
            elif self.tool == "zoom":
                self.model.set_zoom(self.model.zoom * (1.0 - dy / 200.0))
            elif self.tool == "scroll":
                self.model.scroll(int(dy // 4) or (1 if dy > 0 else -1 if dy < 0 else 0))
            else:
                self.model.drag_window(dx, dy)
        elif button == Qt.MouseButton.RightButton:
            self.model.set_zoom(self.model.zoom * (1.0 - dy / 200.0))
        elif button == Qt.MouseButton.MiddleButton:
            self.model.pan_by(dx, dy)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        self._drag = None

    def leaveEvent(self, e: QEvent) -> None:  # noqa: N802
        """The readout belongs to the pixel under the mouse: none once it leaves the view."""
        self.cursor = None
        if self.readout_text:
            self.update()
        super().leaveEvent(e)

    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        steps = e.angleDelta().y() // 120 or (1 if e.angleDelta().y() > 0 else -1)
        self.model.scroll(-int(steps))

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        vp, k = self.model, e.key()
        K = Qt.Key
        M = Qt.KeyboardModifier
        if e.modifiers() & (M.ControlModifier | M.AltModifier | M.MetaModifier):
            # Ctrl+S, Ctrl+M, ... are the window's shortcuts: never the plain-letter action
            e.ignore()
            super().keyPressEvent(e)
            return
        presets = list(CT_PRESETS.values())
        tools = {K.Key_D: "distance", K.Key_A: "angle", K.Key_E: "ellipse", K.Key_B: "rect",
                 K.Key_T: "text", K.Key_W: "arrow", K.Key_Escape: "wl"}  # fmt: skip
        if k in (K.Key_Up, K.Key_PageUp):
            vp.scroll(-1 if k == K.Key_Up else -10)
        elif k in (K.Key_Down, K.Key_PageDown):
            vp.scroll(1 if k == K.Key_Down else 10)
        elif k == K.Key_Home:
            vp.set_index(0)
        elif k == K.Key_End:
            vp.set_index(vp.count - 1)
        elif K.Key_1 <= k <= K.Key_8:
            vp.set_window(*presets[k - K.Key_1])
        elif k == K.Key_I:
            vp.toggle_invert()
        elif k == K.Key_O:
            vp.toggle_overlays()
        elif k == K.Key_R:
            vp.reset_view()
        elif k == K.Key_H:
            vp.flip(True)
        elif k == K.Key_V:
            vp.flip(False)
        elif k == K.Key_Period:
            vp.rotate(1)
        elif k == K.Key_Comma:
            vp.rotate(-1)
        elif k in tools:
            if k == K.Key_Escape:
                vp.select_annotation(None)
            self.set_tool(tools[k])
        elif k in (K.Key_Delete, K.Key_Backspace):
            self.message.emit(vp.delete_annotation())
        elif k == K.Key_C:
            self.toggle_cine()
        elif k == K.Key_F1:
            self.show_help = not self.show_help
            self.update()
        else:
            super().keyPressEvent(e)

    def set_tool(self, tool: str) -> None:
        self.tool, self.pending = tool, []
        self.update()

    def toggle_cine(self) -> None:
        """Cine at the recorded Frame Time (0018,1063) when there is one, else 10 frames/s."""
        if self._cine.isActive():
            self._cine.stop()
            return
        s = self.model.slice()
        ms = (s.frame_time_ms if s else None) or 100.0
        self._cine.start(max(10, int(ms)))

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, e: object) -> None:  # noqa: N802
        if e.mimeData().hasFormat(SERIES_MIME):  # type: ignore[attr-defined]
            e.acceptProposedAction()  # type: ignore[attr-defined]

    def dropEvent(self, e: object) -> None:  # noqa: N802
        uid = bytes(e.mimeData().data(SERIES_MIME)).decode()  # type: ignore[attr-defined]
        self.series_dropped.emit(self.index, uid)
        e.acceptProposedAction()  # type: ignore[attr-defined]
