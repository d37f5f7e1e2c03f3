"""Corrupt images in a perfusion series: blank or garbled, found and repaired, or refused.

One blank image (all pixels 0: -1024 HU) among 45 time points made the analysis report
core 0 mL and hypoperfusion 0 mL with no flag; two blank time points were refused as "no
enhancing voxels" and a blank first one as "no brain found", naming anything but the cause
(outside probe). An image is corrupt when its head differs from the slice's temporal median
by far more than contrast and motion can: the median absolute difference over the head
(robust to vessels, which enhance by hundreds of HU, and to moved skull edges, which are a
minority of the head) above ``CT_LIMIT_HU`` on CT, or ``MR_LIMIT`` of the head's signal on
MR; a constant image is corrupt too. A few are replaced by linear interpolation in time
from the same slice's nearest good images and named in a QC flag; more than
``MAX_FRACTION`` of a slice's images is refused.
"""

from __future__ import annotations

import numpy as np

CT_LIMIT_HU = 200.0
"""Median |image - temporal median| over the head that no bolus or motion reaches on CT
(brain enhancement is tens of HU)."""
MR_LIMIT = 0.5
"""The same on MR, as a fraction of the head's median signal (DSC drops are ~20-40 %
at the bolus peak, over a minority of the head)."""
MAX_FRACTION = 0.2
"""Most of one slice's images that may be repaired; beyond, the series is refused."""
_STRIDE = 4  # in-plane subsampling of the reference: a median over T of every voxel is slow


def find(frames: np.ndarray, modality: str) -> np.ndarray:
    """(T, Z) mask of corrupt images of (T, Z, Y, X) ``frames`` in modality units."""
    sample = frames[:, :, ::_STRIDE, ::_STRIDE]
    ref = np.median(sample, axis=0)
    n_t, n_z = frames.shape[:2]
    bad = np.zeros((n_t, n_z), bool)
    for z in range(n_z):
        if modality == "CT":
            head = ref[z] > -500.0
            limit = CT_LIMIT_HU
        else:
            top = float(np.percentile(ref[z], 99)) if ref[z].size else 0.0
            head = ref[z] > 0.1 * top
            limit = MR_LIMIT * float(np.median(ref[z][head])) if head.any() else np.inf
        if head.sum() < 50:
            continue  # nothing to compare (a slice outside the head)
        for t in range(n_t):
            img = sample[t, z]
            dev = float(np.median(np.abs(img[head] - ref[z][head])))
            bad[t, z] = dev > limit or float(frames[t, z].std()) == 0.0
    return bad


def repair(frames: np.ndarray, times: np.ndarray, bad: np.ndarray) -> None:
    """Replace each bad image in place by linear interpolation in time (``times`` (T, Z))
    between its slice's nearest good images (the nearest one at either end)."""
    n_t = frames.shape[0]
    for t, z in zip(*np.nonzero(bad), strict=True):
        good = [k for k in range(n_t) if not bad[k, z]]
        before = [k for k in good if k < t]
        after = [k for k in good if k > t]
        if before and after:
            a, b = before[-1], after[0]
            w = float((times[t, z] - times[a, z]) / max(times[b, z] - times[a, z], 1e-9))
            frames[t, z] = (1 - w) * frames[a, z] + w * frames[b, z]
        else:
            frames[t, z] = frames[(before or after)[-1 if before else 0], z]


def describe(bad: np.ndarray) -> str:
    """'time point 21 slice 3, ...' (1-based), at most 8 named."""
    pairs = [f"time point {t + 1} slice {z + 1}" for t, z in zip(*np.nonzero(bad), strict=True)]
    more = f" and {len(pairs) - 8} more" if len(pairs) > 8 else ""
    return ", ".join(pairs[:8]) + more
