"""Rigid coregistration of DWI (ADC) / FLAIR to the perfusion grid.

Seed FAQ: coregistration can fail ("local minimum"), so the result reports the transform and
a similarity score; a reader must be able to check it visually (overlay pages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk


def to_sitk(
    vol: np.ndarray,
    origin: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    normal: np.ndarray,
    spacing: tuple[float, float, float],
) -> sitk.Image:
    """(Z, Y, X) array with DICOM geometry as a SimpleITK image in patient (LPS) space."""
    img = sitk.GetImageFromArray(vol.astype(np.float32))
    img.SetSpacing((spacing[2], spacing[1], spacing[0]))
    img.SetOrigin(tuple(float(v) for v in origin))
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


@dataclass
class Coregistration:
    resampled: np.ndarray
    translation_mm: list[float]
    rotation_deg: list[float]
    metric: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "translation_mm": self.translation_mm,
            "rotation_deg": self.rotation_deg,
            "mattes_mi": round(self.metric, 4),
        }


YAW_SEARCH_DEG = tuple(range(-30, 31, 5))
"""In-plane start angles tried before the descent: a head on two scanners (CT perfusion and
MR FLAIR, or another session) can be tilted by 10-20°, beyond the capture range of a
gradient descent on mutual information (12° converged to 8° on the phantom)."""


def _best_yaw(fixed: sitk.Image, moving: sitk.Image, init: sitk.Euler3DTransform) -> float:
    """The start angle (about the slice normal) with the best MI on 6 mm smoothed images."""
    f = sitk.SmoothingRecursiveGaussian(fixed, 6.0)
    m = sitk.SmoothingRecursiveGaussian(moving, 6.0)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetInterpolator(sitk.sitkLinear)
    best, best_value = 0.0, math.inf
    for angle in YAW_SEARCH_DEG:
        t = sitk.Euler3DTransform(init)
        t.SetRotation(0.0, 0.0, math.radians(angle))
        reg.SetInitialTransform(t, inPlace=True)
        try:
            value = reg.MetricEvaluate(f, m)
        except RuntimeError:
            continue
        if value < best_value:
            best, best_value = float(angle), value
    return best


def coregister(fixed: sitk.Image, moving: sitk.Image) -> Coregistration:
    """Mattes mutual information (multi-modal: CT/DSC baseline vs ADC/FLAIR), Euler 3D.

    Three levels of Gaussian smoothing in mm (6, 3, 0) on the full grid rather than a
    pyramid: the shrink factors of ITK apply to every axis and would halve a perfusion slab of
    8 thick slices, leaving too little through-plane information. The optimizer runs to a
    small step (not a fixed iteration count), otherwise a rotation of a few degrees is only
    partly recovered.
    """
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    init.SetRotation(0.0, 0.0, math.radians(_best_yaw(fixed, moving, init)))
    n_voxels = int(np.prod(fixed.GetSize()))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    if n_voxels > 150_000:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(150_000 / n_voxels, 11)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=300,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([1, 1, 1])
    reg.SetSmoothingSigmasPerLevel([6.0, 3.0, 1.5])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=True)
    try:
        reg.Execute(fixed, moving)
        metric = float(reg.GetMetricValue())
    except RuntimeError:
        metric = float("nan")
    out = sitk.Resample(moving, fixed, init, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    p = init.GetParameters()
    return Coregistration(
        resampled=sitk.GetArrayFromImage(out),
        translation_mm=[round(float(v), 3) for v in p[3:]],
        rotation_deg=[round(math.degrees(float(v)), 3) for v in p[:3]],
        metric=metric,
    )
