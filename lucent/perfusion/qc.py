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
