"""Brain and tissue masks.

CT: HU window on the pre-contrast image inside the cavity the skull ring encloses (a ring
open on a slice is bridged), opened per slice to cut the bridges to the scalp, largest 3D
component (and the slices beyond a cut in it), holes filled (skull and extracranial tissue
removed). MR: Otsu on the baseline signal. A slice left without brain between slices with
brain takes the tissue under theirs, and is named (``BrainMask.warnings``). Vessels are
removed later, by CBV, once the maps exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError


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


SKULL_GAP_BRIDGE_MM = 25.0
"""Radius of the disc that bridges an open skull ring (closes gaps up to twice as wide, 50 mm:
a burr hole, a small craniectomy, a sinus or vessel through the bone on one slice)."""

POOR_SLICE_FRACTION = 0.5
"""A slice whose enclosed brain candidate is under this fraction of that of its nearest
substantial slices (a quarter of the largest or more) has lost its cavity: its ring is open."""

NEIGHBOUR_MARGIN_MM = 5.0
"""A bridged cavity stays within this distance of its good neighbours' cavity."""

LOST_SLICE_FRACTION = 0.25
"""A slice between brain slices with under this fraction of their brain has lost its brain."""


@dataclass
class BrainMask:
    """The brain mask and what was done to keep every slice's brain (slices 0-based)."""

    mask: np.ndarray
    bridged_slices: list[int] = field(default_factory=list)
    """Skull ring open on the slice: brain taken inside the bridged ring."""
    rescued_slices: list[int] = field(default_factory=list)
    """No brain found between slices with brain: tissue under their brain taken instead."""
    lost_slices: list[int] = field(default_factory=list)
    """No brain found between slices with brain, and no tissue to take there."""
    warnings: list[str] = field(default_factory=list)


def _disc_dilate(mask: np.ndarray, radius_mm: float, pixel_mm: float) -> np.ndarray:
    """Euclidean dilation by a disc of ``radius_mm`` (a distance map: fast at any radius)."""
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=pixel_mm) <= radius_mm


def _disc_erode(mask: np.ndarray, radius_mm: float, pixel_mm: float) -> np.ndarray:
    padded = np.pad(mask, 1)  # the image border is outside
    return (ndimage.distance_transform_edt(padded, sampling=pixel_mm) > radius_mm)[1:-1, 1:-1]


def _bridged_cavity(ring: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Cavity of a skull ring with its gaps (up to 2 x SKULL_GAP_BRIDGE_MM) bridged.

    Closing the filled ring, not the ring: a disc rolled over a thin ring's gap dips through
    it from outside (a 36 mm gap in 7 mm of bone stays open under any disc under 48 mm), so
    the ring is grown until the gap closes, filled, and shrunk back by the same disc. In the
    gap the cavity reaches the chord between the bone's outer corners; scalp stays outside.
    The image is padded first: a head near the edge of the field of view is not shrunk from
    the edge.
    """
    pad = int(np.ceil(SKULL_GAP_BRIDGE_MM / pixel_mm)) + 2
    wide = np.pad(ring, pad)
    grown = _disc_dilate(wide, SKULL_GAP_BRIDGE_MM, pixel_mm)
    closed = _disc_erode(ndimage.binary_fill_holes(grown), SKULL_GAP_BRIDGE_MM, pixel_mm)
    return (closed & ~wide)[pad:-pad, pad:-pad]


def _hull_cavity(ring: np.ndarray) -> np.ndarray:
    """Non-bone inside the convex hull of the bone: a gap of any width bridged by its chord."""
    points = np.argwhere(ring)
    out = np.zeros_like(ring)
    if len(points) < 3:
        return out
    try:
        corners = points[ConvexHull(points).vertices]
    except QhullError:  # collinear bone: no ring
        return out
    grid = np.indices(ring.shape).reshape(2, -1).T
    out[...] = (Delaunay(corners).find_simplex(grid) >= 0).reshape(ring.shape)
    return out & ~ring


def _cavities(
    ring: np.ndarray, candidate: np.ndarray, pixel_mm: float
) -> tuple[np.ndarray, list[int]]:
    """Per slice, the cavity enclosed by the skull ring (Z, Y, X), and the slices bridged.

    A ring open on one slice (a 20-40 mm gap: burr hole, craniectomy, a vessel or sinus
    through the bone) encloses nothing, and that slice lost all of its brain, and with it the
    largest-component step every slice beyond it (outside probe 50: hypoperfusion -50 %, status
    ok). A slice whose enclosed candidate is under POOR_SLICE_FRACTION of its nearest
    substantial slices' is bridged (``_bridged_cavity``; wider gaps by the bone's convex hull),
    within its nearest good slices' cavity (a closing or a hull also takes in concavities
    outside the skull: skull base, head rest). Slices with a closed ring are unchanged.
    """
    n_z = ring.shape[0]
    plain = np.stack([ndimage.binary_fill_holes(b) & ~b for b in ring])
    area = (plain & candidate).sum(axis=(1, 2))
    if not area.any():
        # no slice has a closed ring (a craniectomy over the whole coverage): every ring is
        # bridged, with no good neighbour to guard it. The mask took the whole head before,
        # scalp included: outside probe 51, core 270 of 24.9 mL, status ok, no warning
        cavity = np.stack([_bridged_cavity(b, pixel_mm) if b.any() else b for b in ring])
        bridged = [z for z in range(n_z) if (cavity[z] & candidate[z]).any()]
        return cavity, bridged
    big = area >= 0.25 * area.max()

    def nearest(z: int, mark: np.ndarray) -> list[int]:
        found = []
        for step in (-1, 1):
            k = z + step
            while 0 <= k < n_z and not mark[k]:
                k += step
            if 0 <= k < n_z:
                found.append(k)
        return found

    ref = np.array([max((area[k] for k in nearest(z, big)), default=0) for z in range(n_z)])
    poor = area < POOR_SLICE_FRACTION * ref
    cavity = plain.copy()
    bridged: list[int] = []
    for z in range(n_z):
        if n_z > 1 and not poor[z]:
            continue
        need = max(1.0, float(area[z]) if n_z == 1 else 0.25 * float(ref[z]))
        guard_from = nearest(z, big & ~poor)
        guard = None
        if guard_from:
            beside = np.logical_or.reduce([plain[k] for k in guard_from])
            guard = _disc_dilate(beside, NEIGHBOUR_MARGIN_MM, pixel_mm)
        tiers = [_bridged_cavity(ring[z], pixel_mm)]
        if guard is not None:  # the hull reaches any bone on the slice: only beside a guard
            tiers.append(_hull_cavity(ring[z]))
        for better in tiers:
            if guard is not None:
                better &= guard
            if (better & candidate[z] & ~plain[z]).sum() >= need:
                cavity[z] |= better
                bridged.append(z)
                break
    return cavity, bridged


def _stack_component(opened: np.ndarray) -> np.ndarray:
    """Largest 3D component, and the components on the slices beyond a cut in it.

    One slice with no brain (an open skull ring, a corrupt image) splits the stack: the
    largest component then ends there and every slice beyond it was dropped. A component
    that lies mostly on slices the largest one misses, over its footprint, is brain too.
    """
    lab, n = ndimage.label(opened)
    if n <= 1:
        return opened.copy()
    sizes = ndimage.sum_labels(opened, lab, index=np.arange(1, n + 1))
    largest = int(np.argmax(sizes)) + 1
    keep = lab == largest
    per_slice = keep.sum(axis=(1, 2))
    typical = float(np.median(per_slice[per_slice > 0]))
    missed = per_slice == 0
    footprint = keep.any(axis=0)
    for i, found in enumerate(ndimage.find_objects(lab), start=1):
        if found is None or i == largest or sizes[i - 1] < 0.25 * typical:
            continue
        part = lab[found] == i
        beyond = part[missed[found[0]]].sum()
        n_slices = int(part.any(axis=(1, 2)).sum())
        if beyond < 0.5 * sizes[i - 1] or sizes[i - 1] < 0.25 * typical * n_slices:
            continue
        flat = part.any(axis=0)
        if (flat & footprint[found[1:]]).sum() < 0.5 * flat.sum():
            continue
        keep[found] |= part
    return keep


def _rescue_lost(brain: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """A slice between slices with brain keeps brain: the tissue under both neighbours' brain.

    Whatever emptied it (an open skull ring wider than SKULL_GAP_BRIDGE_MM allows, bone or
    tissue the HU window misses), brain does not stop between two slices that have it, and
    a slice must not vanish from the volumes unnoticed. Returns the mask, the slices rescued
    and those with no tissue to take (both 0-based).
    """
    area = brain.sum(axis=(1, 2))
    if not area.any():
        return brain, [], []
    typical = float(np.median(area[area > 0]))
    good = np.nonzero(area >= LOST_SLICE_FRACTION * typical)[0]
    out = brain.copy()
    rescued: list[int] = []
    lost: list[int] = []
    for lo, hi in zip(good[:-1], good[1:], strict=True):
        low = LOST_SLICE_FRACTION * min(area[lo], area[hi])
        under = brain[lo] & brain[hi]
        for z in range(lo + 1, hi):
            if area[z] >= low:
                continue
            take = tissue[z] & under
            if take.sum() >= 2 * low:
                out[z] |= take
                rescued.append(int(z))
            else:
                lost.append(int(z))
    return out, rescued, lost


def find_brain(
    baseline_image: np.ndarray, modality: str, pixel_mm: float, hu_window: tuple[float, float]
) -> BrainMask:
    """Intracranial mask (Z, Y, X) from the mean pre-contrast image, and the slices that
    needed help to keep their brain (issue 6: brain mask, skull and scalp removed)."""
    radius = max(1, int(round(2.0 / pixel_mm)))
    struct = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), radius)
    struct3 = np.zeros((3, *struct.shape), bool)
    struct3[1] = struct
    bridged: list[int] = []
    unenclosed = False
    if modality == "CT":
        head = baseline_image > -200
        bone = baseline_image > 150
        inside = _fill_slices(head & ~bone) & ~bone
        candidate = inside & (baseline_image > hu_window[0]) & (baseline_image < hu_window[1])
        tissue = candidate.copy()
        # drop scalp: brain is the cavity enclosed by the skull ring (bridged where open)
        enclosed, bridged = _cavities(bone, candidate, pixel_mm)
        if enclosed.sum() > 0.2 * candidate.sum():
            candidate &= enclosed
        else:
            bridged = []
            if bone.any():
                unenclosed = True
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
        tissue = candidate.copy()
        head = _fill_slices(baseline_image > 0.2 * level)
        dark = head & ~candidate  # skull: dark on T2*-weighted EPI
        enclosed = np.stack([ndimage.binary_fill_holes(d) & ~d for d in dark])
        if enclosed.sum() > 0.2 * candidate.sum():
            candidate &= enclosed
    opened = ndimage.binary_opening(candidate, structure=struct3)
    brain = _stack_component(opened)
    brain = ndimage.binary_dilation(brain, structure=struct3) & candidate
    brain, rescued, lost = _rescue_lost(brain, tissue)
    result = BrainMask(_fill_slices(brain), bridged, rescued, lost)
    n_z = brain.shape[0]
    if unenclosed:
        result.warnings.append(
            "no skull ring encloses the brain on any slice, even bridged: the brain mask is "
            "the soft tissue inside the head and may include scalp: check it"
        )
    for z in bridged:
        result.warnings.append(
            f"slice {z + 1} of {n_z}: the skull ring is open (burr hole, craniectomy, or a "
            "vessel through the bone); its brain was taken inside the bridged ring: check the "
            "brain mask on this slice"
        )
    for z in rescued:
        result.warnings.append(
            f"slice {z + 1} of {n_z}: no brain found between slices with brain; the tissue "
            "under their brain was taken instead: check the brain mask on this slice"
        )
    for z in lost:
        result.warnings.append(
            f"slice {z + 1} of {n_z}: no brain found between slices with brain and no tissue "
            "to take there: its volume is missing from the results"
        )
    return result


def brain_mask(
    baseline_image: np.ndarray, modality: str, pixel_mm: float, hu_window: tuple[float, float]
) -> np.ndarray:
    """Intracranial mask (Z, Y, X) from the mean pre-contrast image (``find_brain``'s mask)."""
    return find_brain(baseline_image, modality, pixel_mm, hu_window).mask


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
