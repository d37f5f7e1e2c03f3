"""The pixel readout under the cursor: image position, stored value, modality value.

A reader checks a density by pointing at it ("is this 60 HU blood?"), so the readout shows
the stored value and the Modality LUT output (PS3.3 C.11.1: stored × Rescale Slope +
Rescale Intercept; HU for CT) with its unit, and RGB for colour. Position is (column, row)
of the pixel whose centre is nearest (centres at integers, as in ``geometry``); outside the
image there is no readout.
"""

from __future__ import annotations

from workstation.model.pipeline import Frame


def pixel_at(frame: Frame, x: float, y: float) -> tuple[int, int] | None:
    """(column, row) of the pixel under image point (x, y), or None outside the image."""
    col, row = int(round(x)), int(round(y))  # round half to even: a pixel edge at .5 exactly
    rows, cols = frame.stored.shape[:2]
    if not (0 <= col < cols and 0 <= row < rows):
        return None
    return col, row


def format_value(value: float) -> str:
    """Whole numbers without decimals (HU), others to 2 decimals (no trailing zeros)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def pixel_readout(frame: Frame, x: float, y: float, unit: str = "") -> str | None:
    """One line such as ``(40, 20)  stored 1294  270 HU``; ``(3, 5)  RGB 255 0 0`` for colour.

    The modality value is shown when it differs from the stored value or has a unit
    (an MR without rescale shows the stored value once).
    """
    at = pixel_at(frame, x, y)
    if at is None:
        return None
    col, row = at
    value = frame.stored[row, col]
    where = f"({col}, {row})"
    if frame.is_colour:
        r, g, b = (int(v) for v in value[:3])
        return f"{where}  RGB {r} {g} {b}"
    stored = float(value)
    modality = stored * frame.slope + frame.intercept
    if frame.slope == 1 and frame.intercept == 0 and not unit:
        return f"{where}  value {format_value(stored)}"
    return f"{where}  stored {format_value(stored)}  {format_value(modality)} {unit}".rstrip()
