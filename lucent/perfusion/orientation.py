"""Anatomical direction letters of image axes (Patient Orientation, R/L markers on pages).

PS3.3 C.7.6.1.1.1: in the patient coordinate system (LPS) +x points to the patient's Left,
+y to Posterior, +z to Head; a direction is named by its main component's letter, an
oblique one by two or three letters, most significant first.
"""

from __future__ import annotations

import numpy as np

_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))
OBLIQUE_MIN = 0.25
"""A secondary component adds its letter from this size on (a tilt of ~15°): a head tilted
by a few degrees still reads "L", not "LH"."""


def letters(direction: np.ndarray | list[float] | tuple[float, ...]) -> str:
    """Letters of a direction (unit vector in LPS), e.g. (1, 0, 0) -> "L"."""
    v = np.asarray(direction, float)
    order = np.argsort(-np.abs(v))
    out = []
    for i, axis in enumerate(order):
        size = abs(float(v[axis]))
        if size < 1e-6 or (i > 0 and size < OBLIQUE_MIN):
            break
        out.append(_LETTERS[axis][int(v[axis] > 0)])
    return "".join(out)


def opposite(text: str) -> str:
    """The letters of the opposite direction ("L" -> "R", "LP" -> "RA")."""
    swap = {a: b for pair in _LETTERS for a, b in (pair, pair[::-1])}
    return "".join(swap[c] for c in text)


def image_markers(row_dir: np.ndarray, col_dir: np.ndarray) -> dict[str, str]:
    """Letters at the image's left, right, top and bottom edges: an axial slice with rows
    along +x shows the patient's Right on the left edge (radiological view)."""
    right, bottom = letters(row_dir), letters(col_dir)
    return {"left": opposite(right), "right": right, "top": opposite(bottom), "bottom": bottom}
