"""The analysis parameters a result records: deconvolution method, thresholds, islands.

A core volume means nothing without the threshold that drew it, and oSVD, sSVD and Tikhonov
give different CBF and Tmax: result.json, the Enhanced SR, the summary page and each
object's Derivation Description name what this run used (every SC once said "oSVD", also
after ``--method tikhonov``: outside probe).
"""

from __future__ import annotations

from typing import Any

from .config import METHOD_NAMES, PerfusionConfig


def recorded(config: PerfusionConfig, oi_threshold: float | None) -> dict[str, Any]:
    """result.json's "parameters": what was used (``oi_threshold``: the adaptive value)."""
    method = config.method
    regularisation: dict[str, Any] = {
        "osvd": {"oscillation_index_threshold": oi_threshold},
        "ssvd": {"relative_singular_value_threshold": config.ssvd_threshold},
        "tikhonov": {"relative_lambda": config.tikhonov_lambda},
    }[method]
    return {
        "method": method,
        "method_name": METHOD_NAMES[method],
        **{k: None if v is None else round(float(v), 4) for k, v in regularisation.items()},
        "threshold_core": config.threshold_core,
        "threshold_adc": config.threshold_adc,
        "threshold_tmax": config.threshold_tmax,
        "threshold_tmax_severe": config.threshold_tmax_severe,
        "min_island_ml": config.min_island_ml,
        "reference": config.reference,
        "ct_core_cbf": config.ct_core_cbf,
        "motion_correction": config.motion_correction,
        "defuse3": {
            "core_max_ml": config.defuse3_core_max_ml,
            "ratio_min": config.defuse3_ratio_min,
            "mismatch_min_ml": config.defuse3_mismatch_min_ml,
        },
    }


def method_text(p: dict[str, Any]) -> str:
    """ "oSVD (oscillation index threshold 0.035)" and the like."""
    detail = {
        "osvd": ("oscillation index threshold", p.get("oscillation_index_threshold")),
        "ssvd": ("singular value threshold", p.get("relative_singular_value_threshold")),
        "tikhonov": ("lambda", p.get("relative_lambda")),
    }[p["method"]]
    return (
        f"{p['method_name']} ({detail[0]} {detail[1]:g})"
        if detail[1] is not None
        else (p["method_name"])
    )


def threshold_text(p: dict[str, Any]) -> str:
    """All thresholds in one line (summary page, Derivation Description)."""
    return (
        f"core rCBF < {p['threshold_core']:.0%} of healthy tissue (CT/DSC) or ADC <= "
        f"{p['threshold_adc']:g} x10^-6 mm²/s (with DWI); hypoperfusion Tmax > "
        f"{p['threshold_tmax']:g} s; severe Tmax > {p['threshold_tmax_severe']:g} s; islands "
        f"< {p['min_island_ml']:g} mL removed"
    )


def derivation(what: str, p: dict[str, Any], thresholds: bool = False) -> str:
    """Derivation Description (0008,2111, ST) of an output object."""
    text = f"{what}; deconvolution {method_text(p)}"
    return f"{text}; {threshold_text(p)}" if thresholds else text
