"""Measurements and annotations drawn on an image, in image pixel coordinates.

Kept separate from the GSPS encoding so the viewer, the measurement code and the tests
share one plain structure (x = column, y = row, pixel centres at integers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from workstation.model import measure
from workstation.model.geometry import Point

KINDS = ("distance", "angle", "rect", "ellipse", "text", "arrow", "polyline")
# How many clicks complete each tool (text: one anchor; polyline from a GSPS: as read).
POINTS_NEEDED = {"distance": 2, "angle": 3, "rect": 2, "ellipse": 2, "text": 1, "arrow": 2}


@dataclass
class Annotation:
    kind: str
    points: list[Point]
    text: str = ""
    sop_instance_uid: str = ""
    frame: int = 1  # 1-based, as DICOM Referenced Frame Number
    source: str = "user"  # "user" or "gsps" (read from a presentation state)
    label: str = field(default="", compare=False)

    def measure(
        self, spacing: measure.Spacing, values: object = None, unit: str = ""
    ) -> measure.Result | None:
        """The measurement for this annotation (None for text/arrow/polyline)."""
        import numpy as np

        p = self.points
        if self.kind == "distance" and len(p) >= 2:
            return measure.distance(p[0], p[1], spacing)
        if self.kind == "angle" and len(p) >= 3:
            return measure.angle(p[0], p[1], p[2], spacing)
        if self.kind == "ellipse" and isinstance(values, np.ndarray):
            # two corners (our tool) or a GSPS ELLIPSE's axes, which may be rotated
            e = self.ellipse()
            return None if e is None else measure.ellipse_roi(values, e, spacing, unit)
        if self.kind == "rect" and len(p) >= 2 and isinstance(values, np.ndarray):
            return measure.roi(values, p[0], p[1], self.kind, spacing, unit)
        return None

    def ellipse(self) -> measure.Ellipse | None:
        """An ellipse annotation as its axes (centre, semi-axes, rotation): from the two
        corners our tool draws, or the four axis end points of a read GSPS ELLIPSE
        (PS3.3 C.10.5.1.2). None for other kinds."""
        return measure.Ellipse.of(self.points) if self.kind == "ellipse" else None


def _segment_distance(p: Point, a: Point, b: Point) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def outline(a: Annotation, to_view: Callable[[float, float], Point]) -> list[Point]:
    """The annotation's drawn line in view coordinates (rect/ellipse: their closed outline)."""
    pts = [to_view(*p) for p in a.points]
    if a.kind == "rect" and len(a.points) >= 2:
        (x0, y0), (x1, y1) = a.points[0], a.points[1]
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        return [to_view(x, y) for x, y in corners]
    e = a.ellipse()
    if e is not None:  # rotated as its axes say
        return [to_view(x, y) for x, y in e.outline()]
    return pts


def hit(
    items: list[Annotation],
    pos: Point,
    to_view: Callable[[float, float], Point],
    tolerance: float = 6.0,
) -> Annotation | None:
    """The annotation whose line passes within ``tolerance`` view pixels of ``pos`` (the
    nearest; a text annotation: near its anchor), or None. View coordinates, so that a
    click selects the same line at every zoom."""
    best: tuple[float, Annotation] | None = None
    for a in items:
        line = outline(a, to_view)
        if not line:
            continue
        if len(line) == 1 or a.kind == "text":
            (x, y), (px, py) = line[0], pos
            # the text is drawn to the right of and above its anchor
            d = 0.0 if 0 <= px - x <= 8 * max(len(a.text), 1) and 0 <= y - py <= 14 else (
                math.hypot(px - x, py - y))  # fmt: skip
        else:
            d = min(_segment_distance(pos, p, q) for p, q in zip(line, line[1:], strict=False))
        if d <= tolerance and (best is None or d < best[0]):
            best = (d, a)
    return best[1] if best else None
