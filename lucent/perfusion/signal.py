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


def upsample_curves(curves: np.ndarray, step: int) -> np.ndarray:
    """Linear interpolation of (..., K) curves onto a grid ``step`` times finer, (K - 1) *
    step + 1 samples: sample k * step is the acquired sample k. ``step`` 1: the same array."""
    if step <= 1:
        return curves
    k = curves.shape[-1]
    frac = np.arange(step, dtype=np.float32) / np.float32(step)
    lo, hi = curves[..., :-1, None], curves[..., 1:, None]
    inner = (lo * (1 - frac) + hi * frac).reshape(*curves.shape[:-1], (k - 1) * step)
    return np.concatenate([inner, curves[..., -1:]], axis=-1).astype(curves.dtype, copy=False)


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


def _median3(x: np.ndarray) -> np.ndarray:
    """3-point running median of a 1-D curve; the end points are kept."""
    if len(x) < 3:
        return x
    out = x.copy()
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


def detect_baseline(curve: np.ndarray, modality: str, skip: int = 0) -> Baseline:
    """Pre-bolus frames from the whole-brain mean curve.

    Arrival = last frame before the peak whose enhancement is below 10 % of the peak
    enhancement; every frame before it (after ``skip``) is baseline.
    """
    sign = -1.0 if modality == "MR" else 1.0
    c = sign * np.asarray(curve, float)
    n = len(c)
    ref = float(np.median(c[skip : skip + 3]))
    # judged on a 3-frame running median: one displaced or corrupt frame (+45 HU on the
    # brain mean when the head moved 5 mm and was not corrected) was the "peak", and every
    # frame before it, the whole bolus, became baseline (outside probe 36)
    e = _median3(c - ref)
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


def leakage_correct(
    conc: np.ndarray, dt: float, reference: np.ndarray | None = None, lam: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """Leakage correction of ΔR2* curves (Boxerman-Weisskoff model, AJNR 2006).

    Model: ΔR2*(t) = K1 * ref(t) - K2 * ∫ref; the corrected curve adds K2 * ∫ref back. The
    classic least-squares fit of (K1, K2) is biased whenever a voxel's bolus is delayed or
    dispersed against the whole-brain reference: a late or broad first pass looks like T2*
    leakage, and in a stroke the "correction" then removes half the CBV of the penumbra.
    K2 is therefore estimated as Bjørnerud et al. (JCBFM 2011, "Part I") do: deconvolve the
    curve by the reference (Tikhonov) and read K2 from the late residue,
    which is zero for any intravascular tracer whatever its delay or MTT and a constant
    -K2 when contrast leaks out. Returns (corrected, K2 per voxel).
    """
    n, k = conc.shape
    ref = (conc.mean(axis=0) if reference is None else reference).astype(np.float64)
    if not np.any(ref > 0):
        return conc, np.zeros(n, np.float32)
    # causal (lower-triangular) Tikhonov deconvolution: a zero-padded circulant would have to
    # cancel the leakage plateau in the padding and bend the late residue
    a = np.tril(ref[np.subtract.outer(np.arange(k), np.arange(k)).clip(0)]) * dt
    u, sv, vt = np.linalg.svd(a)
    damp = sv / (sv**2 + (lam * sv.max()) ** 2)
    # late window, in residue lags: from 30 s (first passes of delayed, low-flow tissue have
    # ended) to the last lag the data determine (the reference is zero before its arrival,
    # so the last ``arrival`` lags are in the null space)
    arrival = int(np.argmax(ref > 0.05 * ref.max()))
    lo = int(np.ceil(30.0 / dt))
    hi = k - arrival - 1
    k2 = np.zeros(n, np.float32)
    if hi - lo < 3:
        return conc, k2
    # only the mean of the late residue is needed: one row vector applied to every curve
    row = (vt[:, lo:hi].mean(axis=1) * damp) @ u.T
    k2 = -(conc @ row.astype(np.float32))
    integral = (np.cumsum(ref) * dt).astype(np.float32)
    corrected = conc + k2[:, None] * integral[None, :]
    return corrected.astype(np.float32), k2


def marchenko_pastur_sd(evals: np.ndarray, n: int) -> tuple[float, int]:
    """Noise SD and signal rank from the eigenvalues of an (n, K) sample covariance.

    MP-PCA (Veraart et al., NeuroImage 2016, eqs. 10-11): the K - p smallest eigenvalues are
    pure noise when their mean (one estimate of sigma²) is at least their spread divided by
    4 sqrt((K - p) / n) (the width of the Marchenko-Pastur bulk, a second estimate); p is
    the smallest rank for which that holds. It uses every frame of every curve, so it also
    sees noise that the pre-bolus frames do not show (integer HU storage rounds a flat
    baseline to a constant, but a rising bolus to +-0.5 HU: sigma 0.29).
    Returns (sigma, p).
    """
    lam = np.sort(np.asarray(evals, np.float64))[::-1]
    # exact null directions carry no noise: the baseline subtraction (every curve's
    # pre-bolus frames average to zero) removes one
    lam = lam[lam > 1e-6 * max(float(np.median(lam)), 1e-30)]
    k = len(lam)
    if k < 2:
        return 0.0, k
    for p in range(k - 1):
        rest = lam[p:]
        gamma = (k - p) / max(n, 1)
        if rest.mean() >= (rest[0] - rest[-1]) / (4.0 * np.sqrt(gamma)):
            return float(np.sqrt(max(rest.mean(), 0.0))), p
    return float(np.sqrt(max(lam[-1], 0.0))), k - 1


def _covariance(curves: np.ndarray, chunk: int) -> np.ndarray:
    """(K, K) second-moment matrix of (n, K) curves, in float64 chunks (bounded memory)."""
    k = curves.shape[1]
    gram = np.zeros((k, k))
    for s in range(0, curves.shape[0], chunk):
        block = curves[s : s + chunk].astype(np.float64)
        gram += block.T @ block
    return gram / max(curves.shape[0], 1)


def mp_noise_sd(curves: np.ndarray, chunk: int = 65536) -> float:
    """``marchenko_pastur_sd`` of (n, K) curves (noise SD per frame)."""
    n, k = curves.shape
    if n < 4 * k:
        return 0.0
    return marchenko_pastur_sd(np.linalg.eigvalsh(_covariance(curves, chunk)), n)[0]


def pca_basis(
    conc: np.ndarray,
    noise_sd: float | None,
    chunk: int = 65536,
    min_keep: int = 0,
    min_ratio: int = 4,
) -> np.ndarray | None:
    """(K, p) orthonormal temporal components of (n, K) curves above the noise, or None
    when every component is kept (no components: shape (K, 0)); see ``pca_denoise``."""
    n_fit, k = conc.shape
    if n_fit < min_ratio * k or (noise_sd is not None and noise_sd <= 0):
        return None
    evals, evecs = np.linalg.eigh(_covariance(conc, chunk))
    if noise_sd is None:
        noise_sd, _ = marchenko_pastur_sd(evals, n_fit)
        if noise_sd <= 0:
            return None
    edge = noise_sd**2 * (1 + np.sqrt(k / n_fit)) ** 2 * 1.05
    keep = evals > edge
    if min_keep:
        keep[np.argsort(evals)[::-1][:min_keep]] = True
    n_keep = int(keep.sum())
    if n_keep == 0 or n_keep == k:
        return np.zeros((k, 0), np.float32) if n_keep == 0 else None
    return evecs[:, keep].astype(np.float32)


def pca_denoise(
    conc: np.ndarray,
    noise_sd: float | None,
    chunk: int = 65536,
    min_keep: int = 0,
    min_ratio: int = 4,
) -> tuple[np.ndarray, int]:
    """Project (n, K) curves on the principal components that rise above the noise.

    Bolus curves span a low-dimensional temporal subspace; components whose eigenvalue
    stays below the Marchenko-Pastur edge sigma²(1 + sqrt(K/n))² are noise (MP-PCA, Veraart
    et al., NeuroImage 2016). Unlike spatial smoothing this does not blur lesion borders,
    and less noise lets oSVD keep more singular values (less CBF underestimation).
    ``noise_sd`` None: estimated from the same eigenvalues (``marchenko_pastur_sd``).
    ``min_keep``: keep at least
    this many (small regions with their own bolus shape fall below a global edge).
    ``min_ratio``: fewer than this many curves per time point give no reliable subspace.
    Returns (denoised, number of components kept).
    """
    k = conc.shape[1]
    basis = pca_basis(conc, noise_sd, chunk, min_keep, min_ratio)
    if basis is None:
        return conc, k
    if basis.shape[1] == 0:
        return conc, 0
    out = np.empty_like(conc)
    for s in range(0, conc.shape[0], chunk):
        block = conc[s : s + chunk]
        out[s : s + chunk] = (block @ basis) @ basis.T
    return out, basis.shape[1]


def _shift2d(a: np.ndarray, dy: int, dx: int, fill: float | bool) -> np.ndarray:
    """``a`` (Z, Y, X, ...) moved in-plane: out[y, x] = a[y + dy, x + dx], ``fill`` outside."""
    ny, nx = a.shape[1], a.shape[2]
    out = np.full_like(a, fill)
    ys, yd = (slice(dy, ny), slice(0, ny - dy)) if dy >= 0 else (slice(0, ny + dy), slice(-dy, ny))
    xs, xd = (slice(dx, nx), slice(0, nx - dx)) if dx >= 0 else (slice(0, nx + dx), slice(-dx, nx))
    out[:, yd, xd] = a[:, ys, xs]
    return out


def tips_filter(
    values: np.ndarray,
    features: np.ndarray,
    idx: tuple[np.ndarray, ...],
    shape: tuple[int, int, int],
    inside: np.ndarray,
    sigma_px: float,
    strength: float = 1.0,
    guide: np.ndarray | None = None,
    max_offsets: int | None = None,
) -> np.ndarray:
    """Edge-preserving in-plane smoothing of (n, K) curves: a TIPS bilateral filter.

    Time-intensity profile similarity (Mendrik et al., Phys Med Biol 2011): a neighbour's
    curve is averaged in with a spatial Gaussian weight times a weight that falls with the
    distance between the two voxels' time curves (here their ``features`` (n, m), e.g. main
    temporal components), so grey matter is not averaged with white matter or a lesion (a
    Gaussian blur of the thin cortical ribbon caps the DSC CBF/CBV correlation with truth
    near 0.88 even without noise). Distances are those of non-local means: the mean over the
    3x3 in-plane patch of the per-voxel squared feature difference, far less noisy than one
    voxel's. Each is scaled by its median between direct neighbours, which is dominated by
    pairs of the same tissue (the noise floor), so no noise model is needed. ``guide`` (n,),
    e.g. the pre-contrast signal, adds a second similarity of the same form (anatomy: grey
    and white matter differ at baseline, a lesion does not). Only voxels of ``inside``
    (tissue) are filtered and used; the others keep their curves.
    """
    out = values.copy()
    if sigma_px <= 0.3 or not inside.any():
        return out
    k = values.shape[1]
    rad = max(1, int(np.ceil(2.5 * sigma_px)))
    sel = np.nonzero(inside)[0]
    sub = tuple(i[sel] for i in idx)
    mask = np.zeros(shape, bool)
    mask[sub] = True
    feat = np.zeros((*shape, features.shape[1] + (guide is not None)), np.float32)
    feat[(*sub, slice(0, features.shape[1]))] = features[sel]
    if guide is not None:
        feat[(*sub, -1)] = guide[sel]
    n_curve = features.shape[1]

    def patch_mean(d: np.ndarray, ok: np.ndarray) -> np.ndarray:
        okf = ok.astype(np.float32)
        num = ndimage.uniform_filter(d * okf, (0, 3, 3), mode="constant")
        den = ndimage.uniform_filter(okf, (0, 3, 3), mode="constant")
        return np.where(den > 0, num / np.maximum(den, 1e-6), d)

    def distances(dy: int, dx: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        ok = mask & _shift2d(mask, dy, dx, False)
        diff2 = (feat - _shift2d(feat, dy, dx, 0.0)) ** 2
        d = patch_mean(diff2[..., :n_curve].sum(axis=-1), ok)
        dg = patch_mean(diff2[..., -1], ok) if guide is not None else None
        return d, dg, ok

    d1, g1, ok1 = distances(0, 1)
    floor = float(np.median(d1[ok1])) if ok1.any() else 0.0
    gfloor = float(np.median(g1[ok1])) if g1 is not None and ok1.any() else 0.0
    if floor <= 0:
        return out
    val = np.zeros((*shape, k), np.float32)
    val[sub] = values[sel]
    disc = [
        (dy, dx)
        for dy in range(-rad, rad + 1)
        for dx in range(-rad, rad + 1)
        if 0 < dy * dy + dx * dx <= rad * rad
    ]
    # more neighbours than ``max_offsets`` (a wide kernel on a fine grid: sigma 5 mm is a
    # disc of ~600 pixels at 0.9 mm): a row pass, then a column pass on its result
    # (separable bilateral filtering, Pham & van Vliet, ICME 2005), 4 rad offsets
    separable = max_offsets is not None and len(disc) > max_offsets
    rows = [(0, dx) for dx in range(-rad, rad + 1) if dx]
    cols = [(dy, 0) for dy in range(-rad, rad + 1) if dy]
    passes = [rows, cols] if separable else [disc]
    for offsets in passes:
        acc = val.copy()
        wsum = mask.astype(np.float32)
        for dy, dx in offsets:
            r2 = dy * dy + dx * dx
            d, dg, ok = distances(dy, dx)
            e = np.maximum(d / floor - 1.0, 0.0)
            if dg is not None and gfloor > 0:
                e = e + np.maximum(dg / gfloor - 1.0, 0.0)
            w = np.where(ok, np.exp(-r2 / (2 * sigma_px**2) - e / strength), 0.0)
            w = w.astype(np.float32)
            acc += w[..., None] * _shift2d(val, dy, dx, 0.0)
            wsum += w
        val = np.where(mask[..., None], acc / np.maximum(wsum, 1e-12)[..., None], val)
    out[sel] = val[sub]
    return out


def main_components(curves: np.ndarray, fit: np.ndarray, rank: int) -> np.ndarray:
    """(n, rank) coordinates of (n, K) curves on the ``rank`` main temporal components of
    ``curves[fit]``: the bolus shapes without the frame-to-frame noise of the rest (what the
    curve-similarity filter compares)."""
    src = curves[fit].astype(np.float64)
    rank = max(1, min(rank, curves.shape[1]))
    _, evecs = np.linalg.eigh(src.T @ src / max(len(src), 1))
    return (curves @ evecs[:, -rank:].astype(np.float32)).astype(np.float32)
