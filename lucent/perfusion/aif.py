"""Automatic arterial input (AIF) and venous output (VOF) selection.

AIF: among the voxels with the largest area under the curve, keep the earliest (first
moment), then the highest and narrowest peaks (cf. Mouridsen et al., MRM 2006). VOF: the
largest area among later-peaking voxels (a sinus is large enough to be free of partial
volume). Partial-volume correction scales the AIF so its area matches the VOF's (tracer
conservation: both see the whole bolus; e.g. Knutsson et al., MRM 2010).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class InputFunctions:
    aif: np.ndarray
    vof: np.ndarray | None
    aif_raw: np.ndarray
    aif_voxels: list[tuple[int, int, int]]
    vof_voxels: list[tuple[int, int, int]]
    pve_scale: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, dt: float, t0: float) -> dict[str, Any]:
        n = len(self.aif)
        return {
            "time_s": [round(t0 + i * dt, 3) for i in range(n)],
            "aif": [round(float(v), 4) for v in self.aif],
            "aif_uncorrected": [round(float(v), 4) for v in self.aif_raw],
            "vof": None if self.vof is None else [round(float(v), 4) for v in self.vof],
            "aif_voxels_zyx": [list(v) for v in self.aif_voxels],
            "vof_voxels_zyx": [list(v) for v in self.vof_voxels],
            "pve_scale": round(self.pve_scale, 4),
        }


def select(
    conc: np.ndarray,
    coords: np.ndarray,
    n_aif: int = 6,
    n_vof: int = 6,
    pve_correction: bool = True,
    max_pve_scale: float = 4.0,
) -> InputFunctions:
    """Pick AIF/VOF from (n, K) concentration curves of brain voxels at ``coords`` (n, 3)."""
    n, k = conc.shape
    t = np.arange(k, dtype=np.float32)
    auc = conc.sum(axis=1)
    peak = conc.max(axis=1)
    warnings: list[str] = []
    keep = max(50, int(0.02 * n))
    top = np.argsort(auc)[::-1][: min(keep, n)]
    top = top[(auc[top] > 0) & (peak[top] > 0)]
    if len(top) < n_aif:
        raise ValueError("no enhancing voxels: bolus not visible")
    sub = conc[top]
    pos = np.clip(sub, 0, None)
    fm = (pos * t).sum(axis=1) / np.maximum(pos.sum(axis=1), 1e-9)
    early = fm <= np.percentile(fm, 30)
    cand = np.where(early)[0]
    if len(cand) < n_aif:
        cand = np.argsort(fm)[: max(n_aif, 1)]
    width = auc[top][cand] / np.maximum(peak[top][cand], 1e-9)
    score = peak[top][cand] / np.maximum(width, 1e-3)
    chosen = cand[np.argsort(score)[::-1][:n_aif]]
    aif_raw = sub[chosen].mean(axis=0)
    aif_fm = float(np.median(fm[chosen]))
    aif_ttp = int(np.argmax(aif_raw))
    # VOF: later, large area
    late = np.where((fm > aif_fm + 1.0) & (np.argmax(sub, axis=1) > aif_ttp))[0]
    vof = None
    vof_idx = np.array([], int)
    scale = 1.0
    if len(late) >= 1:
        vof_idx = late[np.argsort(auc[top][late])[::-1][:n_vof]]
        vof = sub[vof_idx].mean(axis=0)
        if pve_correction:
            ratio = float(vof.sum() / max(aif_raw.sum(), 1e-9))
            if ratio > 1.0:
                scale = min(ratio, max_pve_scale)
                if ratio > max_pve_scale:
                    warnings.append(
                        f"VOF/AIF area ratio {ratio:.1f} capped at {max_pve_scale}: "
                        "check the AIF/VOF placement"
                    )
    else:
        warnings.append("no venous output found: no partial-volume correction of the AIF")
    aif = aif_raw * np.float32(scale)
    return InputFunctions(
        aif=aif.astype(np.float32),
        vof=None if vof is None else vof.astype(np.float32),
        aif_raw=aif_raw.astype(np.float32),
        aif_voxels=[tuple(int(c) for c in coords[top[i]]) for i in chosen],  # type: ignore[misc]
        vof_voxels=[tuple(int(c) for c in coords[top[i]]) for i in vof_idx],  # type: ignore[misc]
        pve_scale=scale,
        warnings=warnings,
    )
