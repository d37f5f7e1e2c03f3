"""Quality control (seed FAQ: qcontrol_bolus, qcontrol_flowstats, motion report).

Every flag carries a reason a reader can act on: "bolus very low", bolus truncation (scan
ends before the bolus has passed), peak-to-noise, severe motion, per-hemisphere flow stats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import PerfusionConfig


def curve_stats(curve: np.ndarray, baseline: tuple[int, int]) -> dict[str, float]:
    """Peak enhancement, baseline noise (sd) and peak-to-noise of one curve."""
    b0, b1 = baseline
    base = curve[b0:b1]
    noise = float(np.std(base)) if len(base) > 1 else 0.0
    peak = float(curve.max())
    return {
        "peak": round(peak, 3),
        "peak_index": int(np.argmax(curve)),
        "noise_sd": round(noise, 4),
        "peak_to_noise": round(peak / noise, 2) if noise > 0 else float("inf"),
    }


def bolus_flags(
    aif: np.ndarray,
    tissue_curve: np.ndarray,
    baseline: tuple[int, int],
    modality: str,
    config: PerfusionConfig,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """qcontrol_bolus: statistics of AIF and whole-brain curves plus flags."""
    aif_s = curve_stats(aif, baseline)
    tis_s = curve_stats(tissue_curve, baseline)
    flags: list[dict[str, str]] = []
    low = config.bolus_low_ct_hu if modality == "CT" else config.bolus_low_mr_r2
    unit = "HU" if modality == "CT" else "1/s ΔR2*"
    if aif_s["peak"] < low or tis_s["peak_to_noise"] < config.min_peak_to_noise:
        flags.append(
            {
                "code": "bolus_low",
                "reason": (
                    f"Bolus very low: AIF peak {aif_s['peak']:.1f} {unit} (expected >= {low:g}), "
                    f"brain peak-to-noise {tis_s['peak_to_noise']:.1f}: little contrast reached "
                    "the brain (dose, cardiac output, injection); results may be noisy"
                ),
            }
        )
    for name, curve in (("AIF", aif), ("brain", tissue_curve)):
        peak = float(curve.max())
        tail = float(np.mean(curve[-2:]))
        if peak > 0 and (
            tail > config.truncation_fraction * peak or np.argmax(curve) >= len(curve) - 2
        ):
            flags.append(
                {
                    "code": "bolus_truncated",
                    "reason": (
                        f"Bolus truncated: the {name} curve is still at {tail / peak:.0%} of its "
                        "peak at the end of the scan. CBV is underestimated; CBF, MTT and Tmax "
                        "of late-arriving (hypoperfused) tissue are biased either way (an "
                        "outside phantom's penumbra CBF read 2x): hypoperfusion and core "
                        "volumes, mismatch, HIR and DEFUSE-3 are not reliable"
                    ),
                }
            )
            break
    if baseline[1] - baseline[0] < 3:
        flags.append(
            {
                "code": "short_baseline",
                "reason": f"only {baseline[1] - baseline[0]} pre-bolus frame(s): noisy baseline",
            }
        )
    if aif_s["peak_to_noise"] < 3 * config.min_peak_to_noise:
        flags.append(
            {
                "code": "aif_noisy",
                "reason": f"AIF peak-to-noise {aif_s['peak_to_noise']:.1f}: check the AIF curve",
            }
        )
    return {"aif": aif_s, "brain": tis_s}, flags


def hemisphere_stats(
    maps: dict[str, np.ndarray], tissue: np.ndarray, low: np.ndarray, low_side: str
) -> dict[str, Any]:
    """qcontrol_flowstats: median / mean / p10 / p90 per map and hemisphere, and the ratio."""
    other = "left" if low_side == "right" else "right"
    out: dict[str, Any] = {}
    for name, m in maps.items():
        entry: dict[str, Any] = {}
        for side, sel in ((low_side, tissue & low), (other, tissue & ~low)):
            v = m[sel]
            entry[side] = (
                {
                    "median": round(float(np.median(v)), 3),
                    "mean": round(float(v.mean()), 3),
                    "p10": round(float(np.percentile(v, 10)), 3),
                    "p90": round(float(np.percentile(v, 90)), 3),
                    "voxels": int(v.size),
                }
                if v.size
                else None
            )
        if entry["left"] and entry["right"] and entry["right"]["median"]:
            entry["left_right_ratio"] = round(entry["left"]["median"] / entry["right"]["median"], 3)
        out[name] = entry
    return out


def tmax_ranges(
    volumes: dict[str, Any],
    tmax: np.ndarray,
    hypo: np.ndarray,
    voxel_ml: float,
    uncertainty_s: np.ndarray,
    late_only: bool,
    severe_s: float,
) -> None:
    """Add the range of the Tmax>``severe_s`` volume and of the HIR that a per-voxel Tmax
    uncertainty ``uncertainty_s`` (late only, or either way) allows to ``summarise``'s volumes.
    Per voxel, because the lag grows with the MTT: a long-MTT core lags most.

    The severe threshold sits where delayed tissue's Tmax is least certain (issue 6: "Tmax>10 s
    / HIR had no uncertainty"): a reader sees how far the HIR can move, not only that it can.
    """
    early = tmax if late_only else tmax + uncertainty_s
    hi = float((hypo & (early > severe_s)).sum() * voxel_ml)
    lo = float((hypo & (tmax - uncertainty_s > severe_s)).sum() * voxel_ml)
    volumes["tmax_severe_ml_range"] = [round(lo, 2), round(hi, 2)]
    total = volumes.get("hypoperfusion_ml") or 0.0
    volumes["hypoperfusion_intensity_ratio_range"] = (
        [round(lo / total, 3), round(min(hi / total, 1.0), 3)] if total > 0 else None
    )


def tmax_reason(
    modality: str,
    uncertainty_s: float,
    late_only: bool,
    volumes: dict[str, Any],
    config: PerfusionConfig,
) -> str:
    """Reason of the ``tmax_resolution`` flag: how far delayed tissue's Tmax may be off and
    what that does to the Tmax>severe volume and the HIR (``tmax_ranges``)."""
    which = "DSC" if modality == "MR" else "CT"
    how = (
        f"may read up to {uncertainty_s:.1f} s late"
        if late_only
        else f"is uncertain by +-{uncertainty_s:.1f} s"
    )
    lo, hi = volumes.get("tmax_severe_ml_range") or (None, None)
    span = "" if lo is None else f" ({lo:.1f}-{hi:.1f} mL"
    hir = volumes.get("hypoperfusion_intensity_ratio_range")
    if span:
        span += f", HIR {hir[0]:.2f}-{hir[1]:.2f})" if hir else ")"
    return (
        f"{which} Tmax of delayed tissue {how}: the deconvolution is strongly regularised at "
        "this contrast-to-noise and the residue's peak moves late by about "
        f"{uncertainty_s if late_only else 2 * uncertainty_s:.1f} s for a sharp bolus arrival, "
        "far less for a dispersed one, and the data cannot tell which. The "
        f"Tmax>{config.threshold_tmax_severe:g} s volume{span} and the hypoperfusion intensity "
        f"ratio are uncertain (an outside phantom: HIR 0.83 for 0.22 uncorrected); the "
        f"Tmax>{config.threshold_tmax:g} s volume is less affected"
    )
