"""MPR and thick-slab MIP with VTK's vtkImageReslice (issue 5: "via VTK reslice").

The volume stays in numpy (the series' stored values, shared, not copied); VTK reslices it
along axial/coronal/sagittal/oblique axes and optionally combines a slab (max = MIP, mean).
The result comes back as a numpy image so the same W/L pipeline and viewport draw it.
No Qt here; VTK runs without a render window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtk
from vtk.util import numpy_support

# Reslice axes as (x-axis, y-axis) in volume index space (i = column, j = row, k = slice).
ORIENTATIONS = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, 1)),
    "sagittal": ((0, 1, 0), (0, 0, 1)),
}


@dataclass
class Reslicer:
    """A (slices, rows, cols) volume with its voxel spacing (mm): z, y, x."""

    volume: np.ndarray
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        vol = np.ascontiguousarray(self.volume)
        self._keep = vol
        image = vtk.vtkImageData()
        k, j, i = vol.shape
        image.SetDimensions(i, j, k)
        image.SetSpacing(self.spacing[2], self.spacing[1], self.spacing[0])
        arr = numpy_support.numpy_to_vtk(vol.reshape(-1), deep=False)
        image.GetPointData().SetScalars(arr)
        self.image = image
        self.reslice = vtk.vtkImageReslice()
        self.reslice.SetInputData(image)
        self.reslice.SetOutputDimensionality(2)
        self.reslice.SetInterpolationModeToLinear()

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        k, j, i = self.volume.shape
        return ((i - 1) * self.spacing[2], (j - 1) * self.spacing[1], (k - 1) * self.spacing[0])

    def slice(
        self,
        orientation: str,
        position_mm: float,
        slab_mm: float = 0.0,
        mode: str = "max",
        axes: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
    ) -> np.ndarray:
        """One resliced plane at ``position_mm`` along its normal; a slab when slab_mm > 0.

        ``axes`` overrides the orientation (oblique MPR: two orthonormal in-plane vectors).
        """
        xa, ya = axes or ORIENTATIONS[orientation]
        x, y = np.asarray(xa, float), np.asarray(ya, float)
        n = np.cross(x, y)
        centre = np.asarray(self.extent_mm) / 2
        along = n if n.sum() >= 0 else -n  # position counts up the volume's own axis
        origin = centre + along * (position_mm - float(np.dot(centre, along)))
        m = vtk.vtkMatrix4x4()
        for r in range(3):
            m.SetElement(r, 0, x[r])
            m.SetElement(r, 1, y[r])
            m.SetElement(r, 2, n[r])
            m.SetElement(r, 3, origin[r])
        self.reslice.SetResliceAxes(m)
        step = min(self.spacing)
        self.reslice.SetOutputSpacing(step, step, step)
        if slab_mm > 0:
            self.reslice.SetSlabNumberOfSlices(max(1, int(round(slab_mm / step))))
            {"max": self.reslice.SetSlabModeToMax, "mean": self.reslice.SetSlabModeToMean,
             "min": self.reslice.SetSlabModeToMin}[mode]()  # fmt: skip
        else:
            self.reslice.SetSlabNumberOfSlices(1)
        self.reslice.Update()
        out = self.reslice.GetOutput()
        dims = out.GetDimensions()
        flat = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars())
        return flat.reshape(dims[1], dims[0]).copy()
