"""Value types shared by the perfusion stages.

Errors are values (ARCHITECTURE "House style"): an input we cannot analyse gives a
``Refusal`` with a code a program can switch on and a reason a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset


class RefusalCode:
    """Stable codes of ``Refusal`` (documented behaviour of issue 6, "Input")."""

    NO_IMAGES = "no_images"
    NOT_PERFUSION = "not_perfusion"
    TOO_FEW_TIME_POINTS = "too_few_time_points"
    INCOMPLETE = "incomplete"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"
    MISSING_TIMING = "missing_timing"
    UNSUPPORTED = "unsupported"
    CORRUPT_IMAGES = "corrupt_images"
    NO_BOLUS = "no_bolus"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Refusal:
    """Why an analysis was not done; never raised, returned."""

    code: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": "refused", "code": self.code, "reason": self.reason}


@dataclass
class PerfusionSeries:
    """A 4D perfusion acquisition on one regular grid.

    ``frames`` is (T, Z, Y, X) float32 in modality units (HU for CT, signal for MR);
    ``times`` is (T, Z) seconds since the first frame, per slice, because slices of one
    time point may be acquired at different moments (seed Conformance Table 3 note).
    """

    frames: np.ndarray
    times: np.ndarray
    modality: str
    spacing: tuple[float, float, float]
    """(slice, row, column) spacing in mm, after in-plane binning."""
    origin: np.ndarray
    """Image Position (Patient) of the first voxel of slice 0 (binned grid)."""
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    timing_source: str
    echo_time_s: float | None
    slice_headers: list[Dataset]
    """One header (no pixels) per slice from the first time point: the source of derived objects."""
    bin_factor: int = 1
    series_uids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: list[tuple[int, int]] = field(default_factory=list)
    """(time point, slice) of blank or corrupt images replaced by interpolation in time."""
    other_series: list[dict[str, Any]] = field(default_factory=list)
    """Series of the input that are not part of the acquisition (a localizer, a plain head
    CT, a DWI in the same folder): UID, description and image count, for result.json."""
    slice_origins: np.ndarray | None = None
    """(Z, 3) Image Position (Patient) of each slice's first voxel (binned grid), as the
    source slices lie: with gantry tilt they are offset in-plane from slice to slice, which
    ``origin + normal * dz * z`` misses (15 mm at the last slice at 20 degrees)."""

    @property
    def shape(self) -> tuple[int, int, int, int]:
        t, z, y, x = self.frames.shape
        return t, z, y, x

    @property
    def voxel_ml(self) -> float:
        dz, dy, dx = self.spacing
        return dz * dy * dx / 1000.0

    def slice_position(self, z: int) -> np.ndarray:
        """IPP of slice ``z`` on the binned grid: where the source slice lies (outside
        probe 30: tilted slices were placed as if stacked along the normal)."""
        if self.slice_origins is not None:
            return np.asarray(self.slice_origins[z], float)
        return self.origin + self.normal * self.spacing[0] * z
