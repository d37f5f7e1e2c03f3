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


def coregister(fixed: sitk.Image, moving: sitk.Image) -> Coregistration:
    """Mattes mutual information (multi-modal: CT/DSC baseline vs ADC), Euler 3D, 2 levels."""
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.3, 11)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 0.01, 100, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
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
