"""Measurements in image pixel coordinates, reported in mm when the spacing allows it.

Issue 5: distance in mm from Pixel Spacing (0028,0030), with a warning when the spacing is
unknown or only Imager Pixel Spacing (0018,1164) — which is at the detector, not the patient,
so projection images are magnified by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workstation.model.geometry import Point


@dataclass(frozen=True)
class Spacing:
    """Row and column spacing (mm) and where they came from: pixel, imager or none."""

    row: float = 1.0
    col: float = 1.0
    source: str = "none"

    @classmethod
    def from_attrs(cls, attrs: dict[str, object]) -> Spacing:
        for key, source in (("PixelSpacing", "pixel"), ("ImagerPixelSpacing", "imager")):
            value = attrs.get(key)
            if isinstance(value, list | tuple) and len(value) == 2:
                try:
                    r, c = float(value[0]), float(value[1])
                except (TypeError, ValueError):
                    continue
                if r > 0 and c > 0:
                    return cls(r, c, source)
        return cls()

    @property
    def warning(self) -> str:
        if self.source == "imager":
            return "Imager Pixel Spacing: detector plane, not calibrated at the patient"
        if self.source == "none":
            return "pixel spacing unknown: pixels, not mm"
        return ""


@dataclass(frozen=True)
class Result:
    """A measurement value for display: label text plus the numbers tests check."""

    text: str
    value: float
    unit: str
    warning: str = ""
    stats: dict[str, float] = field(default_factory=dict)


def distance(a: Point, b: Point, spacing: Spacing) -> Result:
    dx = (b[0] - a[0]) * spacing.col
    dy = (b[1] - a[1]) * spacing.row
    d = math.hypot(dx, dy)
    unit = "px" if spacing.source == "none" else "mm"
    text = f"{d:.1f} {unit}" + (" *" if spacing.warning else "")
    return Result(text, d, unit, spacing.warning)


def angle(a: Point, vertex: Point, b: Point, spacing: Spacing) -> Result:
    """Angle at ``vertex`` in degrees, in patient proportions (anisotropic pixels respected)."""
    u = np.array([(a[0] - vertex[0]) * spacing.col, (a[1] - vertex[1]) * spacing.row])
    v = np.array([(b[0] - vertex[0]) * spacing.col, (b[1] - vertex[1]) * spacing.row])
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0 or nv == 0:
        return Result("-", 0.0, "deg")
    deg = math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(u, v)) / (nu * nv)))))
    return Result(f"{deg:.1f}°", deg, "deg")


@dataclass(frozen=True)
class Ellipse:
    """An ellipse as its axes, in image pixel coordinates: centre, the semi-axis along its
    first axis (``rx``) and across it (``ry``), and the first axis' rotation in radians from
    +x (columns) towards +y (rows).

    PS3.3 C.10.5.1.2: a GSPS ELLIPSE is the two end points of its major axis, then the two
    of its minor axis, so another system's ellipse may be rotated; its points' bounding box
    drew and measured a 45-degree ellipse as an upright one (probe 59). Our own ellipse
    tool draws axis-aligned ones from two corners."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float = 0.0

    @classmethod
    def of(cls, points: list[Point]) -> Ellipse | None:
        """Four points: the major then the minor axis' end points (C.10.5.1.2); two points:
        the corners of an axis-aligned bounding box; else None."""
        if len(points) >= 4:
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points[:4]
            # the axes cross at the centre; the mean of both midpoints forgives rounding
            cx = (x0 + x1 + x2 + x3) / 4
            cy = (y0 + y1 + y2 + y3) / 4
            rx = math.hypot(x1 - x0, y1 - y0) / 2
            ry = math.hypot(x3 - x2, y3 - y2) / 2
            return cls(cx, cy, rx, ry, math.atan2(y1 - y0, x1 - x0))
        if len(points) >= 2:
            (x0, y0), (x1, y1) = points[0], points[1]
            return cls((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2)
        return None

    @property
    def area(self) -> float:
        """Area in pixels² (scaled by row × column spacing for mm²: any affine map scales
        every area by its determinant)."""
        return math.pi * self.rx * self.ry

    def axes(self) -> list[Point]:
        """The end points of its first then its second axis (GSPS ELLIPSE order)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        ux, uy = self.rx * c, self.rx * s
        vx, vy = -self.ry * s, self.ry * c
        return [
            (self.cx - ux, self.cy - uy),
            (self.cx + ux, self.cy + uy),
            (self.cx - vx, self.cy - vy),
            (self.cx + vx, self.cy + vy),
        ]

    def outline(self, steps: int = 64) -> list[Point]:
        """Closed outline of ``steps`` segments."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        out: list[Point] = []
        for k in range(steps + 1):
            t = 2 * math.pi * k / steps
            u, v = self.rx * math.cos(t), self.ry * math.sin(t)
            out.append((self.cx + u * c - v * s, self.cy + u * s + v * c))
        return out

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixels whose centres lie inside (on the outline counts)."""
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        dx, dy = xx - self.cx, yy - self.cy
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = dx * c + dy * s
        v = -dx * s + dy * c
        rx, ry = max(self.rx, 1e-6), max(self.ry, 1e-6)
        return np.asarray((u / rx) ** 2 + (v / ry) ** 2 <= 1.0)


def roi_mask(shape: tuple[int, int], a: Point, b: Point, kind: str) -> np.ndarray:
    """Pixels whose centres lie inside the rectangle or the inscribed ellipse a–b."""
    if kind == "ellipse":
        return Ellipse.of([a, b]).mask(shape)  # type: ignore[union-attr]
    x0, x1 = sorted((a[0], b[0]))
    y0, y1 = sorted((a[1], b[1]))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def roi(
    values: np.ndarray, a: Point, b: Point, kind: str, spacing: Spacing, unit: str = ""
) -> Result:
    """Mean, SD, min, max of modality values (HU when rescaled) and the area."""
    if kind == "ellipse":
        return ellipse_roi(values, Ellipse.of([a, b]), spacing, unit)  # type: ignore[arg-type]
    mask = roi_mask(values.shape[:2], a, b, kind)
    return _roi_result(values[mask], abs(b[0] - a[0]) * abs(b[1] - a[1]), spacing, unit)


def ellipse_roi(values: np.ndarray, ellipse: Ellipse, spacing: Spacing, unit: str = "") -> Result:
    """``roi`` of an ellipse, rotated or not: the pixels inside the rotated shape."""
    return _roi_result(values[ellipse.mask(values.shape[:2])], ellipse.area, spacing, unit)


def _roi_result(selected: np.ndarray, area_px: float, spacing: Spacing, unit: str) -> Result:
    sel = selected.astype(np.float64)
    if spacing.source == "none":
        area, area_unit = area_px, "px²"
    else:
        area, area_unit = area_px * spacing.row * spacing.col, "mm²"
    if sel.size == 0:
        return Result(f"area {area:.1f} {area_unit}", area, area_unit, spacing.warning)
    stats = {
        "mean": float(sel.mean()),
        "sd": float(sel.std()),
        "min": float(sel.min()),
        "max": float(sel.max()),
        "area": area,
        "n": float(sel.size),
    }
    u = f" {unit}" if unit else ""
    text = (
        f"mean {stats['mean']:.1f}{u} SD {stats['sd']:.1f}\n"
        f"min {stats['min']:.0f} max {stats['max']:.0f}\narea {area:.1f} {area_unit}"
    )
    return Result(text, stats["mean"], unit, spacing.warning, stats)
