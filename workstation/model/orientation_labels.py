"""Orientation labels at the edges of a viewport, from Image Orientation (Patient).

PS3.3 C.7.6.2.1.1: the patient-based coordinate system is LPS — +x towards the patient's
Left, +y Posterior, +z Head. IOP (0020,0037) gives the row direction (increasing column,
left → right on an unrotated screen) and the column direction (increasing row, top → bottom).
Letters are those of Patient Orientation (0020,0020), PS3.3 C.7.6.1.1.1: L/R, A/P, H/F.

As in Weasis, Horos and OsiriX, an edge is labelled with the patient direction that points
*towards* it: an axial image (row +x, column +y) shows R on the left edge and L on the right
edge, A at the top and P at the bottom. An oblique direction gets its dominant axis first and
the second-largest after it when that one is large enough to matter (e.g. "LA").

The screen ↔ image mapping comes from the viewport's ``ViewTransform`` matrix, so a flip or a
quarter turn moves the labels with the image; no orientation, no labels (never a guess).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A secondary axis is named when its share of the unit direction is at least this (≈ 11.5°):
# a few degrees of gantry tilt stays "P", a 30° oblique becomes "LA".
SECOND_AXIS_MIN = 0.2
_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # (+, −) per LPS axis


@dataclass(frozen=True)
class EdgeLabels:
    """The letters drawn at the middle of each viewport edge."""

    left: str
    right: str
    top: str
    bottom: str


def direction_cosines(orientation: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Row and column direction of IOP, or None unless they are two orthonormal vectors."""
    try:
        if orientation is None or len(orientation) != 6:
            return None
        iop = np.asarray([float(v) for v in orientation])
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(iop)):
        return None
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01:
        return None
    if abs(float(np.dot(row, col))) > 0.01:
        return None
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def direction_letters(v: Sequence[float] | np.ndarray) -> str:
    """Letters of the patient direction ``v`` (LPS): dominant axis, then a notable second."""
    d = np.asarray(v, float)
    n = float(np.linalg.norm(d))
    if n == 0 or not np.isfinite(n):
        return ""
    d = d / n
    order = sorted(range(3), key=lambda i: -abs(d[i]))
    out = ""
    for rank, i in enumerate(order[:2]):
        if rank and abs(d[i]) < SECOND_AXIS_MIN:
            break
        out += _LETTERS[i][0 if d[i] > 0 else 1]
    return out


def edge_labels(
    row_dir: Sequence[float] | np.ndarray,
    col_dir: Sequence[float] | np.ndarray,
    view_matrix: np.ndarray | None = None,
) -> EdgeLabels:
    """Labels for the four edges of the screen.

    ``view_matrix`` maps image (x = column, y = row) to widget (u right, v down); only its
    2×2 linear part counts (``ViewTransform.matrix()``: rotation, flips, scale, aspect).
    Without one, the image is shown as stored. A screen direction (1, 0) is the image
    direction M⁻¹·(1, 0), i.e. that combination of row and column directions in the patient.
    """
    row, col = np.asarray(row_dir, float), np.asarray(col_dir, float)
    lin = np.eye(2) if view_matrix is None else np.asarray(view_matrix, float)[:2, :2]
    inv = np.linalg.inv(lin)

    def towards(screen: tuple[float, float]) -> str:
        dx, dy = inv @ np.asarray(screen, float)
        return direction_letters(dx * row + dy * col)

    return EdgeLabels(
        left=towards((-1.0, 0.0)),
        right=towards((1.0, 0.0)),
        top=towards((0.0, -1.0)),
        bottom=towards((0.0, 1.0)),
    )


def labels_for(
    orientation: Sequence[float] | None, view_matrix: np.ndarray | None = None
) -> EdgeLabels | None:
    """Edge labels from an IOP value as stored; None when the orientation is unknown."""
    dirs = direction_cosines(orientation)
    if dirs is None:
        return None
    return edge_labels(dirs[0], dirs[1], view_matrix)
