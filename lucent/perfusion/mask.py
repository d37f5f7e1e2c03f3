"""Brain and tissue masks.

CT: HU window on the pre-contrast image, opened per slice to cut the bridges to the scalp,
largest 3D component, holes filled (skull and extracranial tissue removed). MR: Otsu on the
baseline signal. Vessels are removed later, by CBV, once the maps exist.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(m) for m in mask])


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold (1979) on a 256-bin histogram."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def brain_mask(
    baseline_image: np.ndarray, modality: str, pixel_mm: float, hu_window: tuple[float, float]
) -> np.ndarray:
    """Intracranial mask (Z, Y, X) from the mean pre-contrast image."""
    radius = max(1, int(round(2.0 / pixel_mm)))
    struct = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), radius)
    struct3 = np.zeros((3, *struct.shape), bool)
    struct3[1] = struct
    if modality == "CT":
        head = baseline_image > -200
        bone = baseline_image > 150
        inside = _fill_slices(head & ~bone) & ~bone
        candidate = inside & (baseline_image > hu_window[0]) & (baseline_image < hu_window[1])
        # drop scalp: brain is the cavity enclosed by the skull ring
        enclosed = np.stack(
            [ndimage.binary_fill_holes(b) & ~b for b in bone]
        )  # cavity enclosed by the skull ring, per slice
        if enclosed.sum() > 0.2 * candidate.sum():
            candidate &= enclosed
    else:
        # Otsu on the whole head separates "dark" (air, skull: a few % of the signal) from
        # everything else; the head's typical signal is the median above it, and brain is
        # judged against that (a bare Otsu level sits near the skull and keeps the scalp)
        values = baseline_image[baseline_image > 0]
        level = 0.0
        if values.size:
            thr = otsu(values)
            level = float(np.median(values[values > thr])) if (values > thr).any() else thr
        candidate = baseline_image > 0.5 * level
        head = _fill_slices(baseline_image > 0.2 * level)
        dark = head & ~candidate  # skull: dark on T2*-weighted EPI
        enclosed = np.stack([ndimage.binary_fill_holes(d) & ~d for d in dark])
        if enclosed.sum() > 0.2 * candidate.sum():
            candidate &= enclosed
    opened = ndimage.binary_opening(candidate, structure=struct3)
    brain = _largest_component(opened)
    brain = ndimage.binary_dilation(brain, structure=struct3) & candidate
    return _fill_slices(brain)


def tissue_mask(
    brain: np.ndarray, baseline_image: np.ndarray, modality: str, csf_max_hu: float
) -> np.ndarray:
    """Brain minus CSF (CT: baseline HU <= csf_max_hu), the domain of core/volumes."""
    if modality == "CT":
        return brain & (baseline_image > csf_max_hu)
    # DSC: the hole-filled mask holds skull, air pockets and CSF. Dark baseline voxels give
    # noise-dominated ΔR2*; CSF is bright on T2*-weighted EPI and has no perfusion.
    if not brain.any():
        return brain.copy()
    median = float(np.median(baseline_image[brain]))
    return brain & (baseline_image >= 0.6 * median) & (baseline_image <= 1.4 * median)
