"""Viewports and layout: the state a radiologist changes with mouse and keys.

A Viewport holds one series and how it is shown (slice, window, zoom/pan/rotate/flip,
invert, annotations). The Layout holds 1×1 … 4×4 viewports, knows which is active, keeps
synchronised scrolling within a Frame of Reference and computes reference lines. Views
subscribe to ``changed``; the model never calls Qt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workstation.model import geometry
from workstation.model.annotations import Annotation
from workstation.model.events import Event
from workstation.model.pipeline import Display, Frame, render
from workstation.model.series import SeriesData, Slice

MAX_GRID = 4


@dataclass(frozen=True)
class ViewTransform:
    """Image pixel coordinates (centres at integers) ↔ widget coordinates.

    Fit-to-window times ``zoom``, then pan (widget px), rotation in quarter turns, flips.
    Non-square pixels are shown in true proportions (row/col spacing).
    """

    cols: int
    rows: int
    width: int
    height: int
    zoom: float = 1.0
    pan: tuple[float, float] = (0.0, 0.0)
    rotation: int = 0
    flip_h: bool = False
    flip_v: bool = False
    aspect: float = 1.0  # row spacing / column spacing

    def matrix(self) -> np.ndarray:
        """3×3 affine from image (x, y) to widget (u, v)."""
        rot = self.rotation % 4
        img_w, img_h = self.cols, self.rows * self.aspect
        if rot % 2:
            img_w, img_h = img_h, img_w
        fit = min(self.width / max(img_w, 1e-6), self.height / max(img_h, 1e-6))
        s = fit * self.zoom
        # Centre the image at the origin (pixel edges at -0.5 … n-0.5).
        t0 = np.array([[1, 0, -(self.cols - 1) / 2], [0, 1, -(self.rows - 1) / 2], [0, 0, 1.0]])
        sc = np.diag([s, s * self.aspect, 1.0])
        fl = np.diag([-1.0 if self.flip_h else 1.0, -1.0 if self.flip_v else 1.0, 1.0])
        c, sn = [(1, 0), (0, 1), (-1, 0), (0, -1)][rot]
        ro = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1.0]])
        t1 = np.array(
            [[1, 0, self.width / 2 + self.pan[0]], [0, 1, self.height / 2 + self.pan[1]], [0, 0, 1]]
        )
        return t1 @ ro @ fl @ sc @ t0

    def to_widget(self, x: float, y: float) -> tuple[float, float]:
        u, v, _ = self.matrix() @ np.array([x, y, 1.0])
        return float(u), float(v)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        x, y, _ = np.linalg.inv(self.matrix()) @ np.array([u, v, 1.0])
        return float(x), float(y)

    @property
    def scale(self) -> float:
        m = self.matrix()
        return float(math.hypot(m[0, 0], m[1, 0]))


class Viewport:
    """One viewport's state; ``changed`` fires after every change."""

    def __init__(self) -> None:
        self.series: SeriesData | None = None
        self.index = 0
        self.center = 0.0
        self.width = 1.0
        self.invert = False
        self.zoom = 1.0
        self.pan = (0.0, 0.0)
        self.rotation = 0
        self.flip_h = False
        self.flip_v = False
        # Annotations belong to their series (probe 32: a measurement drawn on one patient's
        # series stayed, invisible, when another series was loaded and went into its GSPS).
        self._annotations: dict[str, list[Annotation]] = {}
        # the annotation the reader clicked (the only one Del removes); None: nothing selected
        self.selected: Annotation | None = None
        self.window_set = False
        self.use_voi_lut = False
        self.show_overlays = True  # DICOM overlay planes (60xx) on top of the image
        # How pixel-arrival events reach this model: the Qt layer routes them to the GUI
        # thread (the loader runs in workers); tests without Qt call straight through.
        self.dispatch: Callable[[Callable[[], None]], None] = lambda fn: fn()
        self.changed = Event()
        self._lut_key: tuple[object, ...] | None = None
        self._lut: np.ndarray | None = None

    # ------------------------------------------------------------------ series
    def set_series(self, series: SeriesData | None, index: int | None = None) -> None:
        if self.series is not None:
            self.series.loaded.disconnect(self._on_loaded)
        self.series = series
        self.index = 0 if index is None else index
        if series is not None and index is None and series.slices:
            self.index = 0
        self.window_set = False
        self.use_voi_lut = False
        self.reset_view(emit=False)
        if series is not None:
            series.loaded.connect(self._on_loaded)
            self._adopt_window()
        self.changed.emit()

    def _on_loaded(self, index: int) -> None:
        self.dispatch(lambda: self._on_loaded_here(index))

    def _on_loaded_here(self, index: int) -> None:
        if index == self.index:
            self._adopt_window()
            self.changed.emit()

    def _adopt_window(self) -> None:
        """The image's default VOI (PS3.3 C.11.2, PS3.4 N.2.1.1): its first window; a VOI
        LUT Sequence when it has no window (a CR's only VOI then showed as a full-range
        linear ramp). With both, the window is the default and ``set_voi_lut`` offers the LUT.
        """
        frame = self.frame()
        if frame is not None and not self.window_set:
            self.center, self.width = frame.default_window()
            self.use_voi_lut = frame.voi_lut is not None and not frame.windows
            self.window_set = True

    @property
    def count(self) -> int:
        return len(self.series) if self.series else 0

    def slice(self) -> Slice | None:
        if self.series is None or not self.series.slices:
            return None
        return self.series.slices[self.index]

    def frame(self) -> Frame | None:
        return self.series.frame(self.index) if self.series else None

    def plane(self) -> geometry.ImagePlane | None:
        s = self.slice()
        return s.plane if s else None

    # ------------------------------------------------------------------ navigation
    def set_index(self, index: int) -> None:
        if not self.count:
            return
        index = max(0, min(self.count - 1, index))
        if index != self.index:
            self.index = index
            self._adopt_window()
            self.changed.emit()

    def scroll(self, delta: int) -> None:
        self.set_index(self.index + delta)

    # ------------------------------------------------------------------ display
    def set_window(self, center: float, width: float) -> None:
        """A window chosen by the user (drag, preset, GSPS): it replaces a VOI LUT table."""
        self.center, self.width = float(center), max(1.0, float(width))
        self.window_set = True
        self.use_voi_lut = False
        self.changed.emit()

    def has_voi_lut(self) -> bool:
        frame = self.frame()
        return frame is not None and not frame.is_colour and frame.voi_lut is not None

    def set_voi_lut(self, on: bool) -> None:
        """Show the image's VOI LUT Sequence table (on) or the window (off); no-op without
        a table. The window keeps its values, so switching back is exact."""
        on = bool(on) and self.has_voi_lut()
        if on != self.use_voi_lut:
            self.use_voi_lut = on
            self.window_set = True
            self.changed.emit()

    def toggle_voi_lut(self) -> None:
        self.set_voi_lut(not self.use_voi_lut)

    def voi_description(self) -> str:
        """What VOI is shown, for the status bar: the LUT (with its explanation) or W/L."""
        frame = self.frame()
        if self.use_voi_lut and frame is not None and frame.voi_lut is not None:
            text = frame.voi_lut.explanation.strip()
            return f"VOI LUT{': ' + text if text else ''}"
        return f"Window W {self.width:.0f} L {self.center:.0f}"

    def drag_window(self, dx: float, dy: float) -> None:
        """Mouse W/L: right = wider, down = higher centre; step scales with the value range."""
        step = max(self.width / 256.0, 0.5)
        self.set_window(self.center + dy * step, self.width + dx * step)

    def display(self) -> Display:
        return Display(self.center, self.width, self.invert, self.use_voi_lut, self.show_overlays)

    def rendered(self) -> np.ndarray | None:
        """8-bit display pixels of the current slice; one LUT per window, reused when scrolling."""
        frame = self.frame()
        if frame is None:
            return None
        from workstation.model.pipeline import lut_for

        key = (
            frame.stored.dtype.str, frame.slope, frame.intercept, frame.photometric,
            frame.voi_function, id(frame.voi_lut), self.display(),
        )  # fmt: skip
        if key != self._lut_key:
            self._lut_key, self._lut = key, lut_for(frame, self.display())
        return render(frame, self.display(), self._lut)

    def transform(self, width: int, height: int) -> ViewTransform | None:
        s = self.slice()
        if s is None:
            return None
        aspect = s.spacing.row / s.spacing.col if s.spacing.source != "none" else 1.0
        return ViewTransform(
            s.cols, s.rows, width, height, self.zoom, self.pan, self.rotation,
            self.flip_h, self.flip_v, aspect,
        )  # fmt: skip

    def set_zoom(self, zoom: float) -> None:
        self.zoom = max(0.05, min(zoom, 64.0))
        self.changed.emit()

    def pan_by(self, du: float, dv: float) -> None:
        self.pan = (self.pan[0] + du, self.pan[1] + dv)
        self.changed.emit()

    def rotate(self, quarter_turns: int = 1) -> None:
        self.rotation = (self.rotation + quarter_turns) % 4
        self.changed.emit()

    def flip(self, horizontal: bool = True) -> None:
        if horizontal:
            self.flip_h = not self.flip_h
        else:
            self.flip_v = not self.flip_v
        self.changed.emit()

    def toggle_overlays(self) -> None:
        """Overlay planes can hide anatomy under them: the reader switches them off and on."""
        self.show_overlays = not self.show_overlays
        self.changed.emit()

    def has_overlay(self) -> bool:
        frame = self.frame()
        return frame is not None and frame.overlay is not None

    def toggle_invert(self) -> None:
        self.invert = not self.invert
        self.changed.emit()

    def reset_view(self, emit: bool = True) -> None:
        self.zoom, self.pan, self.rotation = 1.0, (0.0, 0.0), 0
        self.flip_h = self.flip_v = self.invert = False
        if self.series is not None:
            self.window_set = False
            self.use_voi_lut = False
            self._adopt_window()
        if emit:
            self.changed.emit()

    # ------------------------------------------------------------------ annotations
    @property
    def annotations(self) -> list[Annotation]:
        """The annotations of the series shown now (each series keeps its own list, so
        going back to a series shows its measurements again)."""
        key = self.series.uid if self.series is not None else ""
        return self._annotations.setdefault(key, [])

    @annotations.setter
    def annotations(self, value: list[Annotation]) -> None:
        key = self.series.uid if self.series is not None else ""
        self._annotations[key] = list(value)

    def add_annotation(self, a: Annotation) -> None:
        s = self.slice()
        if s is not None and not a.sop_instance_uid:
            a.sop_instance_uid, a.frame = s.sop_instance_uid, s.frame + 1
        self.annotations.append(a)
        self.changed.emit()

    def select_annotation(self, target: Annotation | None) -> None:
        """Select one of the annotations shown (click), or nothing (None)."""
        if target is not None and not any(a is target for a in self.visible_annotations()):
            target = None
        if target is not self.selected:
            self.selected = target
            self.changed.emit()

    def delete_annotation(self, target: Annotation | None = None) -> str:
        """Del: the given or selected annotation, and only that one.

        With nothing selected nothing goes: Del removed the newest annotation on the image,
        which the reader had not chosen (outside tester, s14). Never one on another slice
        (the user cannot see what goes), and never one read from a presentation state
        (GSPS): that is a saved document, and the reply says so. Returns what happened,
        for the status bar."""
        target = target if target is not None else self.selected
        if target is None:
            return "nothing selected: click an annotation to select it, then press Del"
        if not any(a is target for a in self.visible_annotations()):
            return "that annotation is not on the image shown: not deleted"
        if target.source != "user":
            return "GSPS annotations are part of a saved presentation state: not deleted"
        self.annotations[:] = [a for a in self.annotations if a is not target]
        if self.selected is target:
            self.selected = None
        self.changed.emit()
        return f"deleted {target.kind} annotation"

    def visible_annotations(self) -> list[Annotation]:
        s = self.slice()
        if s is None:
            return []
        return [
            a
            for a in self.annotations
            if a.sop_instance_uid == s.sop_instance_uid and a.frame == s.frame + 1
        ]

    def modality_values(self) -> np.ndarray | None:
        frame = self.frame()
        return None if frame is None or frame.is_colour else np.asarray(frame.modality_values())


class Layout:
    """rows × cols viewports (1×1 … 4×4); the active one receives keys and tools."""

    def __init__(self, rows: int = 1, cols: int = 1) -> None:
        self.viewports: list[Viewport] = [Viewport() for _ in range(MAX_GRID * MAX_GRID)]
        self.rows, self.cols = 1, 1
        self.active = 0
        self.sync_scroll = True
        self.show_reference_lines = True
        self.changed = Event()
        for vp in self.viewports:
            vp.changed.connect(lambda vp=vp: self._viewport_changed(vp))
        self._syncing = False
        self.set_grid(rows, cols)

    def set_grid(self, rows: int, cols: int) -> None:
        self.rows = max(1, min(MAX_GRID, rows))
        self.cols = max(1, min(MAX_GRID, cols))
        self.active = min(self.active, self.rows * self.cols - 1)
        self.changed.emit()

    @property
    def visible(self) -> list[Viewport]:
        return self.viewports[: self.rows * self.cols]

    def active_viewport(self) -> Viewport:
        return self.viewports[self.active]

    def set_active(self, index: int) -> None:
        if index != self.active:
            self.active = index
            self.changed.emit()

    def _viewport_changed(self, source: Viewport) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            if self.sync_scroll:
                self._sync_from(source)
        finally:
            self._syncing = False
        self.changed.emit()

    def _sync_from(self, source: Viewport) -> None:
        """Same Frame of Reference, parallel planes: go to the slice nearest the source's."""
        plane = source.plane()
        if plane is None or source.series is None or not source.series.frame_of_reference:
            return
        centre = plane.to_world((plane.cols - 1) / 2, (plane.rows - 1) / 2)
        for vp in self.visible:
            if vp is source or vp.series is None or vp.series is source.series:
                continue
            if vp.series.frame_of_reference != source.series.frame_of_reference:
                continue
            other = vp.plane()
            if other is None or abs(float(np.dot(other.normal, plane.normal))) < 0.99:
                continue
            k = vp.series.nearest(centre)
            if k is not None and k != vp.index:
                vp.set_index(k)

    def reference_lines(self, target: Viewport) -> list[tuple[geometry.Point, geometry.Point]]:
        """Lines of the other visible viewports' current planes on ``target`` (FAQ).

        Only between series of the same Frame of Reference with valid geometry.
        """
        if not self.show_reference_lines or target.series is None:
            return []
        plane = target.plane()
        if plane is None or not target.series.frame_of_reference:
            return []
        lines = []
        for vp in self.visible:
            if vp is target or vp.series is None:
                continue
            if vp.series.frame_of_reference != target.series.frame_of_reference:
                continue
            other = vp.plane()
            if other is None:
                continue
            line = geometry.reference_line(plane, other)
            if line is not None:
                lines.append(line)
        return lines
