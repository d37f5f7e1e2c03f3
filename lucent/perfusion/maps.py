"""Perfusion maps from deconvolved residues and concentration curves.

Indicator-dilution theory (Ostergaard et al., MRM 1996): C_t = (rho/kH) CBF (C_a (x) R);
CBF = (kH/rho) max(CBF·R), CBV = (kH/rho) ∫C_t / ∫C_a, MTT = CBV / CBF (central volume
theorem), Tmax = time of max of the residue, TTP = time of max of the tissue curve.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .config import PerfusionConfig
from .deconvolution import Deconvolved, correct_truncation, osvd, ssvd, tikhonov
from .residue_shape import box_weight

MAP_UNITS = {
    "cbf": "ml/100g/min",
    "cbv": "ml/100g",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
}


def hematocrit_factor(config: PerfusionConfig) -> float:
    """kH/rho: large- vs small-vessel hematocrit and brain density (Rempp et al., 1994)."""
    kh = (1 - config.hematocrit_large) / (1 - config.hematocrit_small)
    return kh / config.density_g_per_ml


def adaptive_oi(config: PerfusionConfig, cnr: float, modality: str = "CT") -> float:
    """oSVD oscillation-index threshold for the measured contrast-to-noise ratio.

    Wu et al. (MRM 2003) tuned OI = 0.095 at one noise level and note that the best threshold
    depends on SNR: noise makes a residue oscillate, and at realistic CT noise 0.095 lets too
    much of it through (CBF/Tmax noise), while in clean data a lower threshold truncates the
    true residue (CBF underestimated). The threshold therefore falls with the CNR of the mean
    brain curve: ``oi_threshold`` at ``oi_cnr_ref`` and above, proportionally lower below,
    never below ``oi_min``.
    """
    base = config.oi_threshold if modality == "CT" else config.dsc_oi_threshold
    if not config.oi_adaptive or not np.isfinite(cnr):
        return base
    scale = min(1.0, max(cnr, 0.0) / config.oi_cnr_ref)
    return float(max(min(config.oi_min, base), base * scale))


def deconvolve(
    conc: np.ndarray, aif: np.ndarray, dt: float, config: PerfusionConfig
) -> Deconvolved:
    if config.method == "osvd":
        return osvd(conc, aif, dt, config.oi_threshold)
    if config.method == "ssvd":
        return ssvd(conc, aif, dt, config.ssvd_threshold)
    if config.method == "tikhonov":
        return tikhonov(conc, aif, dt, config.tikhonov_lambda)
    raise ValueError(f"unknown deconvolution method {config.method!r}")


def first_pass_window(
    reference: np.ndarray, start: int, dt: float, margin_s: float = 30.0
) -> slice:
    """Frames of the first pass for CBV: bolus arrival to the end of the reference's first
    pass (back below 10 % of its peak) plus ``margin_s`` for delayed, dispersed tissue.

    On DSC the whole-curve integral adds recirculation, leakage residue and, above all, the
    per-voxel S0 error times every post-bolus frame; integrating the first pass only is the
    classic DSC practice (Østergaard et al., MRM 1996)."""
    k = len(reference)
    peak = int(np.argmax(reference))
    end = peak
    top = float(reference[peak])
    while end < k - 1 and reference[end] > 0.1 * top:
        end += 1
    stop = min(k, end + int(np.ceil(margin_s / dt)) + 1)
    return slice(max(0, start), stop)


def compute_maps(
    conc: np.ndarray,
    aif: np.ndarray,
    dt: float,
    config: PerfusionConfig,
    cbv_window: slice | None = None,
    smooth: Callable[[np.ndarray], np.ndarray] | None = None,
    correct: bool = True,
) -> tuple[dict[str, np.ndarray], Deconvolved]:
    """Maps for (n, K) curves; returns 1D arrays (n,) keyed like ``MAP_UNITS``.

    ``cbv_window``: frames integrated for CBV (tissue and AIF alike); default all.
    ``smooth``: spatial smoothing of a per-voxel array (the caller knows the voxels'
    positions), for ``correct_truncation`` and ``box_weight``; ``correct``: apply the
    truncation correction."""
    f = hematocrit_factor(config)
    dec = deconvolve(conc, aif, dt, config)
    cbf = np.clip(dec.rmax * np.float32(f * 6000.0), 0, None)
    w = cbv_window or slice(None)
    area_aif = float(aif[w].sum())
    cbv = np.clip(conc[:, w].sum(axis=1) / max(area_aif, 1e-9) * np.float32(f * 100.0), 0, None)
    tmax = dec.tmax
    if correct:
        mtt_from = (smooth(cbf), smooth(cbv)) if smooth is not None else None
        exp = correct_truncation(cbf, cbv, dec, mtt_from, smooth)
        if dec.bank is not None and config.residue_shape:
            box = correct_truncation(cbf, cbv, dec, mtt_from, smooth, model="box")
            w = box_weight(conc, dec.bank, {"exponential": exp, "box": box}, cbv, smooth)
            cbf = (1 - w) * exp[0] + w * box[0]
            tmax = (1 - w) * exp[1] + w * box[1]
        else:
            cbf, tmax = exp
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 1e-3, 60.0 * cbv / cbf, 0.0).astype(np.float32)
    mtt = np.clip(mtt, 0, 30)
    ttp = (np.argmax(conc, axis=1) * dt).astype(np.float32)
    maps = {
        "cbf": cbf.astype(np.float32),
        "cbv": cbv.astype(np.float32),
        "mtt": mtt,
        "tmax": np.clip(tmax, 0, 30).astype(np.float32),
        "ttp": ttp,
    }
    return maps, dec
