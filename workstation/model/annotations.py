"""Measurements and annotations drawn on an image, in image pixel coordinates.

Kept separate from the GSPS encoding so the viewer, the measurement code and the tests
share one plain structure (x = column, y = row, pixel centres at integers).
"""

from __future__ import annotations

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
        if self.kind in ("rect", "ellipse") and len(p) >= 2 and isinstance(values, np.ndarray):
            return measure.roi(values, p[0], p[1], self.kind, spacing, unit)
        return None
