"""Core / hypoperfusion segmentation, volumes, mismatch, HIR and DEFUSE-3.

Issue 6: CT core = rCBF < 30 % of healthy contralateral tissue; MR core = ADC <= 620
x10^-6 mm²/s with DWI; hypoperfusion = Tmax > 6 s; islands below a minimum volume are
removed and reported (seed FAQ: 1-2 mL lesions can be smoothed away). DEFUSE-3 (Albers et
al., NEJM 2018): core < 70 mL, mismatch ratio >= 1.8, mismatch volume >= 15 mL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .config import PerfusionConfig


@dataclass
class IslandReport:
    removed_count: int = 0
    removed_ml: float = 0.0
    removed: list[dict[str, Any]] = field(default_factory=list)


def remove_islands(
    mask: np.ndarray, voxel_ml: float, min_ml: float
) -> tuple[np.ndarray, IslandReport]:
    """Drop 3D (26-connected) components smaller than ``min_ml``; report each one."""
    report = IslandReport()
    if min_ml <= 0 or not mask.any():
        return mask, report
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())[1:]
    small = np.where(sizes * voxel_ml < min_ml)[0] + 1
    if len(small) == 0:
        return mask, report
    centres = ndimage.center_of_mass(mask, lab, small)
    for i, c in zip(small, centres, strict=True):
        report.removed.append(
            {
                "volume_ml": round(float(sizes[i - 1] * voxel_ml), 3),
                "centre_zyx": [round(v, 1) for v in c],
            }
        )
    report.removed_count = len(small)
    report.removed_ml = round(float(sizes[small - 1].sum() * voxel_ml), 3)
    out = mask & ~np.isin(lab, small)
    return out, report


def hemispheres(brain: np.ndarray, row_dir: np.ndarray) -> tuple[np.ndarray, str, str]:
    """Split at the brain's centroid column; returns (column < midline, its side, other side).

    Patient left is +x in DICOM LPS; columns run along the row direction (IOP first vector).
    """
    cols = np.nonzero(brain)[2]
    mid = float(cols.mean()) if len(cols) else brain.shape[2] / 2
    low = np.zeros(brain.shape, bool)
    low[..., : int(round(mid))] = True
    low_side = "right" if row_dir[0] >= 0 else "left"
    return low, low_side, "left" if low_side == "right" else "right"


@dataclass
class Segmentation:
    core: np.ndarray
    hypo: np.ndarray
    severe: np.ndarray
    core_source: str
    reference_cbf: float
    affected_side: str
    islands: dict[str, IslandReport]


def segment(
    maps: dict[str, np.ndarray],
    tissue: np.ndarray,
    brain: np.ndarray,
    row_dir: np.ndarray,
    voxel_ml: float,
    config: PerfusionConfig,
    adc: np.ndarray | None = None,
) -> Segmentation:
    """Core and hypoperfusion masks on the (Z, Y, X) grid."""
    tmax, cbf = maps["tmax"], maps["cbf"]
    hypo = tissue & (tmax > config.threshold_tmax)
    severe = tissue & (tmax > config.threshold_tmax_severe)
    low, low_side, high_side = hemispheres(brain, row_dir)
    affected_low = (hypo & low).sum() >= (hypo & ~low).sum()
    contra = ~low if affected_low else low
    healthy = tissue & contra & (tmax < 4.0)
    if healthy.sum() < 50:
        healthy = tissue & (tmax < 4.0)
    reference = float(np.median(cbf[healthy])) if healthy.any() else float(np.median(cbf[tissue]))
    if adc is not None:
        core = tissue & (adc > 0) & (adc <= config.threshold_adc)
        source = f"ADC <= {config.threshold_adc:g} x10^-6 mm²/s"
    else:
        core = tissue & (cbf < config.threshold_core * reference)
        source = f"rCBF < {config.threshold_core:.0%} of contralateral healthy tissue"
    islands: dict[str, IslandReport] = {}
    core, islands["core"] = remove_islands(core, voxel_ml, config.min_island_ml)
    hypo, islands["hypoperfusion"] = remove_islands(hypo, voxel_ml, config.min_island_ml)
    severe &= hypo
    return Segmentation(
        core=core,
        hypo=hypo,
        severe=severe,
        core_source=source,
        reference_cbf=reference,
        affected_side=low_side if affected_low else high_side,
        islands=islands,
    )


def summarise(
    seg: Segmentation, voxel_ml: float, n_slices: int, coverage_mm: float, config: PerfusionConfig
) -> dict[str, Any]:
    """Volumes (mL), mismatch, HIR, DEFUSE-3 verdict with failed criteria and reliability."""
    core = float(seg.core.sum() * voxel_ml)
    hypo = float(seg.hypo.sum() * voxel_ml)
    severe = float(seg.severe.sum() * voxel_ml)
    mismatch = hypo - core
    ratio = hypo / core if core > 0 else None
    hir = severe / hypo if hypo > 0 else None
    reliable = coverage_mm >= config.min_coverage_mm and n_slices >= config.min_slices
    failed: list[str] = []
    if core >= config.defuse3_core_max_ml:
        failed.append(f"core {core:.1f} mL >= {config.defuse3_core_max_ml:g} mL")
    if ratio is not None and ratio < config.defuse3_ratio_min:
        failed.append(f"mismatch ratio {ratio:.2f} < {config.defuse3_ratio_min:g}")
    if mismatch < config.defuse3_mismatch_min_ml:
        failed.append(f"mismatch volume {mismatch:.1f} mL < {config.defuse3_mismatch_min_ml:g} mL")
    verdict = "not_assessable" if not reliable else ("met" if not failed else "not_met")
    return {
        "core_ml": round(core, 2),
        "hypoperfusion_ml": round(hypo, 2),
        "tmax_severe_ml": round(severe, 2),
        "mismatch_ml": round(mismatch, 2),
        "mismatch_ratio": None if ratio is None else round(ratio, 3),
        "mismatch_ratio_infinite": ratio is None and hypo > 0,
        "hypoperfusion_intensity_ratio": None if hir is None else round(hir, 3),
        "core_source": seg.core_source,
        "reference_cbf": round(seg.reference_cbf, 2),
        "affected_side": seg.affected_side,
        "islands_removed": {
            k: {"count": v.removed_count, "volume_ml": v.removed_ml, "islands": v.removed}
            for k, v in seg.islands.items()
        },
        "volumes_reliable": reliable,
        "reliability_reason": (
            ""
            if reliable
            else f"coverage {coverage_mm:.0f} mm over {n_slices} slices is below "
            f"{config.min_coverage_mm:g} mm / {config.min_slices} slices: volumes and DEFUSE-3 "
            "are not meaningful (maps are still valid)"
        ),
        "defuse3": {"verdict": verdict, "failed_criteria": failed},
    }
