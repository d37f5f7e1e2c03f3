"""Image planes in patient space and reference lines between them (FAQ; PS3.3 C.7.6.2).

Pixel coordinates here are (x = column, y = row) with the centre of the top-left pixel at
(0, 0): Image Position (0020,0032) is that centre. The FAQ says reference lines are "only
displayed if these data are available or valid sections can be calculated from them", so
every constructor validates and returns None rather than drawing at a wrong place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]


@dataclass(frozen=True)
class ImagePlane:
    """One image's plane: IPP, row/column direction cosines, pixel spacing and size."""

    position: np.ndarray  # centre of the first pixel, mm
    row_dir: np.ndarray  # direction of increasing column (IOP[0:3])
    col_dir: np.ndarray  # direction of increasing row (IOP[3:6])
    row_spacing: float  # mm between rows (PixelSpacing[0])
    col_spacing: float  # mm between columns (PixelSpacing[1])
    rows: int
    cols: int

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    @classmethod
    def from_attrs(
        cls,
        position: Sequence[float] | None,
        orientation: Sequence[float] | None,
        spacing: Sequence[float] | None,
        rows: int | None,
        cols: int | None,
    ) -> ImagePlane | None:
        """A plane only when IPP/IOP/spacing are complete and IOP is two orthonormal vectors."""
        try:
            if not position or not orientation or not spacing or not rows or not cols:
                return None
            if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
                return None
            pos = np.asarray([float(v) for v in position])
            iop = np.asarray([float(v) for v in orientation])
            sp = [float(v) for v in spacing]
        except (TypeError, ValueError):
            return None
        r, c = iop[:3], iop[3:]
        if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(iop)):
            return None
        if abs(np.linalg.norm(r) - 1) > 0.01 or abs(np.linalg.norm(c) - 1) > 0.01:
            return None
        if abs(float(np.dot(r, c))) > 0.01 or sp[0] <= 0 or sp[1] <= 0:
            return None
        return cls(pos, r / np.linalg.norm(r), c / np.linalg.norm(c), sp[0], sp[1], rows, cols)

    def to_world(self, x: float, y: float) -> np.ndarray:
        return (
            self.position
            + self.row_dir * (x * self.col_spacing)
            + self.col_dir * (y * self.row_spacing)
        )

    def to_pixel(self, p: np.ndarray) -> Point:
        d = np.asarray(p, float) - self.position
        return (
            float(np.dot(d, self.row_dir)) / self.col_spacing,
            float(np.dot(d, self.col_dir)) / self.row_spacing,
        )

    def distance(self, p: np.ndarray) -> float:
        """Signed distance of a point from this plane along the normal (mm)."""
        return float(np.dot(np.asarray(p, float) - self.position, self.normal))

    def corners(self) -> list[np.ndarray]:
        """The image's outer edge (pixel edges, not centres), clockwise from top-left."""
        x0, y0, x1, y1 = -0.5, -0.5, self.cols - 0.5, self.rows - 0.5
        return [self.to_world(x0, y0), self.to_world(x1, y0), self.to_world(x1, y1),
                self.to_world(x0, y1)]  # fmt: skip


def clip_segment(
    a: Point, b: Point, xmin: float, ymin: float, xmax: float, ymax: float
) -> tuple[Point, Point] | None:
    """Liang–Barsky clipping of segment a→b to a rectangle; None when it misses."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, a[0] - xmin), (dx, xmax - a[0]), (-dy, a[1] - ymin), (dy, ymax - a[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (a[0] + t0 * dx, a[1] + t0 * dy), (a[0] + t1 * dx, a[1] + t1 * dy)


def reference_line(target: ImagePlane, other: ImagePlane) -> tuple[Point, Point] | None:
    """Where ``other``'s image cuts ``target``'s plane, in target pixel coordinates.

    The segment is the part of the other image's rectangle lying in the target plane, clipped
    to the target image. None for (near-)parallel planes or when they do not meet inside
    both images. Callers must also check that both share a Frame of Reference.
    """
    if abs(float(np.dot(target.normal, other.normal))) > 0.9999:
        return None
    corners = other.corners()
    dist = [target.distance(c) for c in corners]
    points: list[np.ndarray] = []
    for i in range(4):
        j = (i + 1) % 4
        di, dj = dist[i], dist[j]
        if di == 0:
            points.append(corners[i])
        if (di < 0 < dj) or (dj < 0 < di):
            t = di / (di - dj)
            points.append(corners[i] + t * (corners[j] - corners[i]))
    if len(points) < 2:
        return None
    # Farthest pair (a corner lying exactly in the plane can appear twice).
    best = max(
        ((p, q) for k, p in enumerate(points) for q in points[k + 1 :]),
        key=lambda pq: float(np.linalg.norm(pq[0] - pq[1])),
    )
    a, b = target.to_pixel(best[0]), target.to_pixel(best[1])
    return clip_segment(a, b, -0.5, -0.5, target.cols - 0.5, target.rows - 0.5)


def slice_position(plane: ImagePlane) -> float:
    """Position along the normal, for the "slice position" overlay and sorting."""
    return float(np.dot(plane.position, plane.normal))


def patient_position_label(plane: ImagePlane) -> str:
    """Where the slice is, as readers expect it: the patient coordinate along the axis the
    plane faces, with its direction letter ("R 9.0 mm", "L 9.0 mm", "A …", "P …", "F …",
    "H …"; PS3.3 C.7.6.2.1.1: +x left, +y posterior, +z head). The position along the
    normal had the opposite sign of x on a sagittal with IOP 0/1/0/0/0/-1 (probe 32)."""
    centre = plane.to_world((plane.cols - 1) / 2, (plane.rows - 1) / 2)
    axis = int(np.argmax(np.abs(plane.normal)))
    value = float(centre[axis])
    negative, positive = (("R", "L"), ("A", "P"), ("F", "H"))[axis]
    if abs(value) < 0.05:
        return "0.0 mm"
    return f"{negative if value < 0 else positive} {abs(value):.1f} mm"
