"""Which residue shape a voxel's tissue curve shows: exponential (well mixed) or box (plug flow).

The truncation correction (``deconvolution.correct_truncation``) needs the residue's shape:
a truncated deconvolution lowers an exponential's sharp peak far more than a box's flat top
(at one filter and MTT 4 s: 0.63 vs 0.97 of truth), so one model's table applied to the
other's residue is wrong by up to 1.8x. The truncated residue itself hardly tells them apart
(what would, its high frequencies, is what the truncation removed), but the tissue curve
does: both models' corrected readings (MTT, arrival) predict a curve, and the one that fits
the measured curve markedly better wins. Residuals are compared after spatial smoothing, so
noise, which fits both equally, leaves the exponential model (the usual one) in place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .deconvolution import MTT_GRID, FilterBank

BOX_FIT_RATIO = (1.3, 2.0)
"""Exponential/box residual ratio (spatially smoothed) at which the box reading starts to
count, and from which it counts alone (linear in between). On exponential phantoms the
ratio's 90th percentile was 0.2-0.5 noise free and up to 1.2 at 8 HU noise; on box
phantoms 3-50 at 0.01 HU storage, 1.1-3.1 at whole HU."""
DELAY_STEP = 0.25
"""Arrival-time step (s) of the template grid."""


def box_weight(
    conc: np.ndarray,
    bank: FilterBank,
    readings: dict[str, tuple[np.ndarray, np.ndarray]],
    cbv: np.ndarray,
    smooth: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 16384,
    rounding_sd: float = 0.0,
) -> np.ndarray:
    """Weight in [0, 1] of the box reading per voxel.

    ``readings``: model -> (CBF, Tmax) corrected on that model's tables (map units: MTT =
    60 CBV / CBF s). Each model's template, the tissue curve of its residue at that MTT and
    arrival, is fitted to the voxel's curve by least squares (amplitude free).
    ``rounding_sd``: the SD per frame that the curves' storage step leaves when it is their
    only noise (noise-free phantoms; 0 otherwise). That energy is in both models' residuals,
    and no template can fit it: taken off both, the ratio compares the models' misfits
    alone. With it left in, a whole-HU box phantom's ratio fell to 1.1-3.1 (3-50 in 0.01 HU
    steps), a fifth of its grey matter mixed in the exponential reading (CBF 155 of 60)
    and grey matter read 1.36-1.57x.
    """
    k = conc.shape[1]
    delays = np.arange(0.0, 0.5 * k * bank.dt, DELAY_STEP)
    log_grid = np.log(MTT_GRID)
    sse: dict[str, np.ndarray] = {}
    for model, (cbf, tmax) in readings.items():
        templates = bank.tissue(MTT_GRID, delays, model).astype(np.float32)
        norms = np.einsum("dmk,dmk->dm", templates, templates)
        with np.errstate(divide="ignore", invalid="ignore"):
            mtt = np.where(cbf > 0, 60.0 * cbv / cbf, MTT_GRID[-1])
        jm = np.clip(
            np.rint(np.interp(np.log(np.clip(mtt, MTT_GRID[0], MTT_GRID[-1])), log_grid,
                              np.arange(len(MTT_GRID)))).astype(np.intp),
            0,
            len(MTT_GRID) - 1,
        )  # fmt: skip
        jd = np.clip(np.rint(tmax / DELAY_STEP).astype(np.intp), 0, len(delays) - 1)
        out = np.zeros(len(conc), np.float32)
        for s in range(0, len(conc), chunk):
            c = conc[s : s + chunk].astype(np.float32)
            t = templates[jd[s : s + chunk], jm[s : s + chunk]]
            n = norms[jd[s : s + chunk], jm[s : s + chunk]]
            ct = np.einsum("nk,nk->n", c, t)
            cc = np.einsum("nk,nk->n", c, c)
            out[s : s + chunk] = np.maximum(cc - ct * ct / np.maximum(n, 1e-12), 0)
        sse[model] = np.maximum(out - np.float32(k * rounding_sd**2), 0)
    exp_sse, box_sse = sse["exponential"], sse["box"]
    if smooth is not None:
        exp_sse, box_sse = smooth(exp_sse), smooth(box_sse)
    ratio = exp_sse / np.maximum(box_sse, 1e-12)
    lo, hi = BOX_FIT_RATIO
    return np.clip((ratio - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
