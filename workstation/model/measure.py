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


def roi_mask(shape: tuple[int, int], a: Point, b: Point, kind: str) -> np.ndarray:
    """Pixels whose centres lie inside the rectangle or the inscribed ellipse a–b."""
    x0, x1 = sorted((a[0], b[0]))
    y0, y1 = sorted((a[1], b[1]))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    if kind == "ellipse":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max((x1 - x0) / 2, 1e-6), max((y1 - y0) / 2, 1e-6)
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def roi(
    values: np.ndarray, a: Point, b: Point, kind: str, spacing: Spacing, unit: str = ""
) -> Result:
    """Mean, SD, min, max of modality values (HU when rescaled) and the area."""
    mask = roi_mask(values.shape[:2], a, b, kind)
    sel = values[mask].astype(np.float64)
    w, h = abs(b[0] - a[0]), abs(b[1] - a[1])
    area_px = math.pi * w * h / 4 if kind == "ellipse" else w * h
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
