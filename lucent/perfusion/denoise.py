"""Adaptive-weights denoising of concentration-time curves (propagation-separation).

A fixed-width filter (Gaussian, or the TIPS bilateral filter with its similarity scaled by
the single-voxel noise floor) cannot tell a 2 HU core curve from a 6 HU white-matter curve
at 5 HU noise: one voxel's curve is too noisy for that test, so the filter averages across
the core's edge (edge voxels read 1.2x their CBF) and its fixed width leaves the interior
noise in patches of its own size (an rCBF SD of ~0.26, 15-25 % of a core's voxels cross
30 %). Adaptive weights smoothing (Polzehl & Spokoiny, "Propagation-separation approach
for local likelihood estimation", Probab. Theory Relat. Fields 2006) grows the neighbourhood
in steps and compares *estimates*, not voxels: at each step two voxels' current estimates
are tested against the variance those estimates still have, which shrinks as they average
more voxels. In a homogeneous region the test keeps passing and the neighbourhood keeps
growing (propagation: the result there is close to a plain, wide average); across an edge
the estimates soon differ by many of their (small) standard deviations and stop being
mixed (separation), whatever their single-voxel contrast-to-noise was.

The neighbourhood grows as an à-trous (dilated) cascade (Dammertz et al., "Edge-avoiding
à-trous wavelet transform", HPG 2010; with variance-guided weights as in Schied et al.,
HPG 2017): step k averages the previous step's estimates over a 5x5 B3-spline stencil
dilated by 2^k pixels, so every step costs the same 24 shifted products whatever its
radius (an exact Polzehl-Spokoiny disc of 15 mm at 0.9 mm pixels is ~700 neighbours per
step). The variance of each estimate is propagated through the weights and corrected, per
step, by the ratio of the exact to the naively propagated variance of the same
non-adaptive cascade (the estimates of neighbouring voxels overlap); the statistic also
uses the exact variance of the *difference* of two overlapping estimates.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

B3 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
"""Separable B3-spline stencil of each à-trous step (Dammertz et al. 2010)."""
Z3 = (0.25, 0.5, 0.25)
"""Through-plane stencil (neighbouring slices), used once the in-plane step reaches the
slice spacing: thick CT slices (5 mm) are only averaged with neighbouring slices where the
in-plane neighbourhood is already as wide."""


def _views(shape: tuple[int, ...], d: tuple[int, ...]) -> tuple[tuple[slice, ...], ...]:
    """(dst, src) slices: voxel ``dst`` pairs with its neighbour at ``dst + d``."""
    dst, src = [], []
    for n, o in zip(shape, d, strict=True):
        if o >= 0:
            dst.append(slice(0, max(n - o, 0)))
            src.append(slice(o, max(n, o)))
        else:
            dst.append(slice(-o, max(n, -o)))
            src.append(slice(0, max(n + o, 0)))
    return tuple(dst), tuple(src)


def noise_covariance(grid: np.ndarray, mask: np.ndarray, trim: float = 0.9) -> np.ndarray:
    """(p, p) covariance of one voxel's noise in ``grid`` (p, Z, Y, X), from the
    differences of in-plane direct neighbours inside ``mask``.

    Two neighbours of the same tissue differ by their noise only: cov(difference) = 2
    Sigma for spatially white noise. Pairs straddling a tissue edge are outliers; they are
    removed by trimming at the ``trim`` quantile of the chi-square distribution of the
    Mahalanobis distance (three passes) and the trimmed covariance is rescaled to the full
    one (consistency factor of a trimmed Gaussian: P(chi2_{p+2} < q) / P(chi2_p < q)).
    No noise model is assumed: this is the covariance of the curves' coefficients after
    every earlier step (baseline subtraction correlates all frames; MP-PCA projection).
    """
    p = grid.shape[0]
    parts = []
    for d in ((0, 0, 1), (0, 1, 0)):
        a, b = _views(mask.shape, d)
        ok = mask[a] & mask[b]
        parts.append((grid[(slice(None), *a)] - grid[(slice(None), *b)])[:, ok])
    dd = np.concatenate(parts, axis=1).T.astype(np.float64)
    if len(dd) < 10 * p:
        return np.eye(p)
    cov = dd.T @ dd / len(dd)
    q = float(stats.chi2.ppf(trim, p))
    scale = float(stats.chi2.cdf(q, p + 2)) / trim
    for _ in range(3):
        m = np.einsum("ij,jk,ik->i", dd, np.linalg.pinv(cov), dd)
        keep = m < q
        if keep.sum() < 10 * p:
            break
        cov = dd[keep].T @ dd[keep] / keep.sum() / scale
    return cov / 2.0


Offsets = dict[tuple[int, ...], float]


def _cascade(stages: list[tuple[int, int]]) -> tuple[list[float], list[Offsets]]:
    """Variance bookkeeping of the non-adaptive cascade (``stages``: (z, in-plane)
    dilations): per step, exact / naively propagated variance of an estimate, and the
    exact variance of the difference of two previous-step estimates at each stencil
    offset relative to the sum of their variances (< 1: overlapping estimates)."""
    ry = 2 * sum(s for _, s in stages) + 1
    rz = sum(sz for sz, _ in stages) + 1
    kern = np.zeros((2 * rz + 1, 2 * ry + 1, 2 * ry + 1))
    kern[rz, ry, ry] = 1.0
    ratios: list[float] = []
    rhos: list[Offsets] = []
    prev = 1.0
    for sz, s in stages:
        taps = _taps(sz, s)
        rho = {}
        k2 = float((kern**2).sum())
        for d, _ in taps:
            if any(d):
                diff = kern - np.roll(kern, d, (0, 1, 2))
                rho[d] = float((diff**2).sum()) / (2 * k2)
        rhos.append(rho)
        out = np.zeros_like(kern)
        naive = 0.0
        for d, a in taps:
            out += a * np.roll(kern, d, (0, 1, 2))
            naive += a * a
        kern = out
        exact = float((kern**2).sum())
        ratios.append(exact / prev / naive)
        prev = exact
    return ratios, rhos


def _taps(sz: int, s: int) -> list[tuple[tuple[int, int, int], float]]:
    """Stencil of one step: in-plane B3 dilated by ``s`` pixels, or (``s`` 0) the
    through-plane ``Z3`` dilated by ``sz`` slices."""
    if s == 0:
        return [(((i - 1) * sz, 0, 0), a) for i, a in enumerate(Z3)]
    ys = [((i - 2) * s, a) for i, a in enumerate(B3)]
    return [((0, dy, dx), ay * ax) for dy, ay in ys for dx, ax in ys]


def adaptive_filter(
    values: np.ndarray,
    idx: tuple[np.ndarray, ...],
    shape: tuple[int, int, int],
    inside: np.ndarray,
    pixel_mm: float,
    slice_mm: float | None,
    radius_mm: float,
    alpha: float = 0.01,
) -> np.ndarray:
    """Adaptive-weights (propagation-separation) smoothing of (n, p) curve coefficients.

    ``values`` are the voxels ``idx`` of a (Z, Y, X) grid of ``shape``; only those of
    ``inside`` (tissue) are filtered and used, the others keep their values.

    Parameters (none is fitted to a phantom):
    - ``radius_mm``: the widest step's in-plane dilation (2^k pixels, the last one at or
      below this): the largest neighbourhood a homogeneous region reaches. Bounded by
      anatomy, not noise: a vascular territory's quiet interior is centimetres wide.
    - ``slice_mm``: neighbouring slices join once a step's in-plane dilation reaches the
      slice spacing (None: in-plane only).
    - ``alpha``: the test's level. Coefficients are whitened by the noise covariance
      (``noise_covariance``), so the squared difference of two estimates divided by the
      variance of that difference is chi-square with p degrees of freedom when both
      estimate the same curve; lambda = its 1 - ``alpha`` quantile. The weight is the
      plateau kernel of Polzehl & Spokoiny: 1 below lambda / 2, 0 above lambda, linear
      between. alpha = 0.01: one pair in a hundred of the same tissue is wrongly kept
      apart at full strength (propagation), and two tissues whose estimates differ by
      more than the noise of that difference are separated.
    """
    out = values.copy()
    sel = np.nonzero(inside)[0]
    if len(sel) < 16 or pixel_mm <= 0:
        return out
    p = values.shape[1]
    sub = tuple(i[sel] for i in idx)
    # work on the tissue's bounding box (the head fills part of the grid)
    lo = [int(s.min()) for s in sub]
    hi = [int(s.max()) + 1 for s in sub]
    box = tuple(h - low for low, h in zip(lo, hi, strict=True))
    loc = tuple(s - low for s, low in zip(sub, lo, strict=True))
    mask = np.zeros(box, bool)
    mask[loc] = True
    maskf = mask.astype(np.float32)
    y = np.zeros((p, *box), np.float32)
    y[(slice(None), *loc)] = values[sel].T
    cov = noise_covariance(y, mask)
    ev, evec = np.linalg.eigh(cov)
    ev = np.maximum(ev, 1e-12 * max(float(ev.max()), 1e-30))
    whiten = (evec / np.sqrt(ev)).T.astype(np.float32)  # (p, p): z = whiten @ y
    unwhiten = (evec * np.sqrt(ev)).astype(np.float32)
    theta = np.tensordot(whiten, y, axes=(1, 0)).astype(np.float32)
    del y
    lam = float(stats.chi2.ppf(1.0 - alpha, p))
    stages: list[tuple[int, int]] = []
    s = 1
    while s * pixel_mm <= radius_mm * (1 + 1e-6):
        stages.append((0, s))
        if slice_mm is not None and box[0] > 1 and s * pixel_mm >= slice_mm:
            stages.append((1, 0))
        s *= 2
    ratios, rhos = _cascade(stages)
    # voxels outside the tissue get a curve no tissue estimate resembles: weight 0
    theta[:, ~mask] = np.float32(1e4)
    var = maskf.copy()  # variance of each estimate, in units of one voxel's noise
    buf = np.empty(box, np.float32)
    for (sz, s), ratio, rho in zip(stages, ratios, rhos, strict=True):
        taps = _taps(sz, s)
        centre = max(a for _, a in taps)
        acc = np.float32(centre) * theta
        sw = np.float32(centre) * maskf
        sw2 = np.float32(centre * centre) * var
        # the weight of a pair is symmetric: each offset d > 0 serves both voxels
        for d, a in taps:
            if d <= (0, 0, 0):
                continue
            dst, src = _views(box, d)
            if any(x.stop <= x.start for x in dst):
                continue
            w = np.zeros(buf[dst].shape, np.float32)
            tmp = buf[dst]
            for c in range(p):
                np.subtract(theta[c][dst], theta[c][src], out=tmp)
                tmp *= tmp
                w += tmp
            # u = d2 / (lambda * rho * (var_i + var_j)); w = a * clip(2 (1 - u), 0, 1)
            np.add(var[dst], var[src], out=tmp)
            tmp *= np.float32(lam * rho[d])
            np.maximum(tmp, np.float32(1e-12), out=tmp)
            w /= tmp
            np.subtract(np.float32(1.0), w, out=w)
            w *= np.float32(2.0 * a)
            np.clip(w, 0.0, np.float32(a), out=w)
            for c in range(p):
                acc[c][dst] += w * theta[c][src]
                acc[c][src] += w * theta[c][dst]
            sw[dst] += w
            sw[src] += w
            w *= w
            sw2[dst] += w * var[src]
            sw2[src] += w * var[dst]
        safe = np.maximum(sw, np.float32(1e-12))
        theta = np.where(mask, acc / safe, theta)
        new_var = np.minimum(np.float32(ratio) * sw2 / (safe * safe), var)
        var = np.where(mask, new_var, var).astype(np.float32)
    res = np.tensordot(unwhiten, theta, axes=(1, 0))
    out[sel] = res[(slice(None), *loc)].T
    return out
