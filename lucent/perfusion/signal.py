"""Time-curve preparation: uniform time grid, baseline, concentration, leakage.

Deconvolution needs one uniform sampling for every voxel; slices acquired at different
moments (per-slice timing) are interpolated onto one common grid first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def uniform_grid(times: np.ndarray) -> tuple[np.ndarray, float]:
    """Common uniform grid covered by every slice: (grid seconds, dt)."""
    dt = float(np.median(np.diff(times, axis=0)))
    start, stop = float(times[0].max()), float(times[-1].min())
    n = int(np.floor((stop - start) / dt + 1e-6)) + 1
    return start + dt * np.arange(n), dt


def resample_to_grid(frames: np.ndarray, times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of (T, Z, Y, X) frames with per-slice times (T, Z) onto ``grid``.

    The interpolation weights are the same for every pixel of a slice, so this is one small
    (K x T) matrix per slice applied with a tensordot: cheap even for 512² CTP.
    """
    n_t, n_z = times.shape
    if len(grid) == n_t and np.allclose(times, grid[:, None], atol=1e-6):
        return frames
    out = np.empty((len(grid), *frames.shape[1:]), np.float32)
    eye = np.eye(n_t)
    for z in range(n_z):
        w = np.stack([np.interp(grid, times[:, z], eye[i]) for i in range(n_t)], axis=1)
        out[:, z] = np.tensordot(w.astype(np.float32), frames[:, z], axes=(1, 0))
    return out


def smooth_inplane(frames: np.ndarray, sigma_px: float) -> None:
    """In-place in-plane Gaussian smoothing of every (t, z) image."""
    if sigma_px <= 0.3:
        return
    for t in range(frames.shape[0]):
        for z in range(frames.shape[1]):
            frames[t, z] = ndimage.gaussian_filter(frames[t, z], sigma_px, truncate=3.0)


@dataclass
class Baseline:
    start: int
    end: int
    """Baseline frames are [start, end); ``end`` is the last pre-bolus frame + 1."""
    arrival_index: int
    peak_index: int
    warnings: list[str]


def detect_baseline(curve: np.ndarray, modality: str, skip: int = 0) -> Baseline:
    """Pre-bolus frames from the whole-brain mean curve.

    Arrival = last frame before the peak whose enhancement is below 10 % of the peak
    enhancement; every frame before it (after ``skip``) is baseline.
    """
    sign = -1.0 if modality == "MR" else 1.0
    c = sign * np.asarray(curve, float)
    n = len(c)
    ref = float(np.median(c[skip : skip + 3]))
    e = c - ref
    peak = int(np.argmax(e))
    top = e[peak]
    warnings: list[str] = []
    arrival = peak
    while arrival > skip and e[arrival] > 0.1 * top:
        arrival -= 1
    end = max(arrival, skip + 1)
    if end - skip < 2:
        warnings.append("no pre-bolus baseline: the bolus arrives in the first frames")
        end = min(n, skip + 2)
    return Baseline(start=skip, end=end, arrival_index=arrival, peak_index=peak, warnings=warnings)


def to_concentration(
    curves: np.ndarray, baseline: Baseline, modality: str, echo_time_s: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) source curves to concentration-like curves; returns (conc, S0).

    CT: ΔHU = S - S0 (linear in iodine). DSC-MR: ΔR2* = -ln(S/S0)/TE (issue 6).
    """
    s0 = curves[:, baseline.start : baseline.end].mean(axis=1)
    if modality == "CT":
        return curves - s0[:, None], s0
    te = float(echo_time_s or 0.03)
    safe = np.maximum(s0, 1e-3)[:, None]
    ratio = np.clip(curves / safe, 1e-3, None)
    conc = -np.log(ratio, dtype=np.float32) / np.float32(te)
    conc[s0 <= 1e-3] = 0
    return conc.astype(np.float32), s0


def leakage_correct(conc: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxerman-Weisskoff (AJNR 2006) T1/T2* leakage correction of ΔR2* curves.

    Fits ΔR2*(t) = K1 * ref(t) - K2 * ∫ref per voxel by linear least squares (closed-form
    2x2 normal equations, vectorised) and adds K2 * ∫ref back. Returns (corrected, K2).
    """
    ref = conc.mean(axis=0).astype(np.float64)
    integral = np.cumsum(ref) * dt
    a11, a12, a22 = ref @ ref, -(ref @ integral), integral @ integral
    det = a11 * a22 - a12 * a12
    if abs(det) < 1e-12:
        return conc, np.zeros(conc.shape[0], np.float32)
    b1 = conc @ ref.astype(np.float32)
    b2 = -(conc @ integral.astype(np.float32))
    k2 = ((a11 * b2 - a12 * b1) / det).astype(np.float32)
    corrected = conc + k2[:, None] * integral[None, :].astype(np.float32)
    return corrected, k2


def pca_denoise(conc: np.ndarray, noise_sd: float, chunk: int = 65536) -> tuple[np.ndarray, int]:
    """Project (n, K) curves on the principal components that rise above the noise.

    Bolus curves span a low-dimensional temporal subspace; components whose eigenvalue
    stays below the Marchenko-Pastur edge sigma²(1 + sqrt(K/n))² are noise (MP-PCA, Veraart
    et al., NeuroImage 2016). Unlike spatial smoothing this does not blur lesion borders,
    and less noise lets oSVD keep more singular values (less CBF underestimation).
    Returns (denoised, number of components kept).
    """
    n, k = conc.shape
    if n < 4 * k or noise_sd <= 0:
        return conc, k
    gram = np.zeros((k, k))
    for s in range(0, n, chunk):
        block = conc[s : s + chunk].astype(np.float64)
        gram += block.T @ block
    evals, evecs = np.linalg.eigh(gram / n)
    edge = noise_sd**2 * (1 + np.sqrt(k / n)) ** 2 * 1.05
    keep = evals > edge
    n_keep = int(keep.sum())
    if n_keep == 0 or n_keep == k:
        return conc, n_keep
    basis = evecs[:, keep].astype(np.float32)
    out = np.empty_like(conc)
    for s in range(0, n, chunk):
        block = conc[s : s + chunk]
        out[s : s + chunk] = (block @ basis) @ basis.T
    return out, n_keep
