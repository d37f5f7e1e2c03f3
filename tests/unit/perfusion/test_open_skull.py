"""Brain mask on a slice whose skull ring is open (outside probe 50, issue 6 "Brain mask").

One slice with a 20-40 mm gap in the bone (burr hole, craniectomy, a sinus or vessel through
the ring) enclosed no cavity: that slice lost its brain, and the largest-component step every
slice beyond it (hypoperfusion 48.4 of 97.0 mL, core -71 %, status ok, no warning).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.mask import _rescue_lost, _stack_component, brain_mask, find_brain
from lucent.perfusion.pipeline import PerfusionResult
from tests.data import phantom as P

HU_WINDOW = (-5.0, 85.0)
SPEC = P.PhantomSpec()
PIXEL_MM = SPEC.fov_mm / SPEC.matrix


def _baseline(spec: P.PhantomSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the pre-contrast HU image of our phantom (scalp at 40 HU: in the window)."""
    labels = P.make_labels(spec)
    return labels, np.clip(P._base(spec)[labels], -310.0, 345.0)


def _intracranial(labels: np.ndarray) -> np.ndarray:
    return ~np.isin(labels, (P.AIR, P.SCALP, P.SKULL))


def _wedge(matrix: int, centre_deg: float, half_deg: float) -> np.ndarray:
    """Pixels within ``half_deg`` of the direction ``centre_deg`` from the image centre."""
    c = np.arange(matrix) - (matrix - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    angle = np.degrees(np.arctan2(yy, xx))
    return np.abs((angle - centre_deg + 180) % 360 - 180) < half_deg


def _open(image: np.ndarray, labels: np.ndarray, slices: list[int], hu: float, half_deg: float,
          centre_deg: float = 180.0) -> np.ndarray:  # fmt: skip
    out = image.copy()
    wedge = _wedge(labels.shape[-1], centre_deg, half_deg)
    for z in slices:
        out[z][(labels[z] == P.SKULL) & wedge] = hu
    return out


def test_closed_ring_excludes_the_scalp_and_warns_of_nothing() -> None:
    labels, image = _baseline()
    result = find_brain(image, "CT", PIXEL_MM, HU_WINDOW)
    assert np.array_equal(result.mask, _intracranial(labels))  # scalp (40 HU) left out
    assert result.warnings == [] and result.bridged_slices == [] and result.rescued_slices == []
    assert np.array_equal(brain_mask(image, "CT", PIXEL_MM, HU_WINDOW), result.mask)


@pytest.mark.parametrize("hu", [40.0, -1000.0], ids=["soft-tissue", "air"])
@pytest.mark.parametrize("half_deg", [18.0, 35.0], ids=["40mm", "75mm"])
@pytest.mark.parametrize("slices", [[4], [0], [7], [3, 4], [2, 3, 4, 5]])
def test_open_ring_keeps_the_brain_of_every_slice(
    slices: list[int], half_deg: float, hu: float
) -> None:
    labels, image = _baseline()
    opened = _open(image, labels, slices, hu, half_deg)
    truth = _intracranial(labels)
    result = find_brain(opened, "CT", PIXEL_MM, HU_WINDOW)
    per_slice = result.mask.sum(axis=(1, 2))
    want = truth.sum(axis=(1, 2))
    assert np.all(np.abs(per_slice - want) <= 0.02 * want), (per_slice, want)
    assert not (result.mask & (labels == P.SCALP)).any()
    assert result.bridged_slices == slices
    assert [f"slice {z + 1} of 8: the skull ring is open" in w for z, w in
            zip(slices, result.warnings, strict=True)] == [True] * len(slices)  # fmt: skip


def _probe50_baseline() -> tuple[np.ndarray, np.ndarray]:
    """The tester's own phantom (128 x 1.8 mm, skull 5 px straight onto the air, no scalp)
    with its ring open over rows 55-74, columns 0-29 of slice 3 (bone -> CSF, 5 HU)."""
    nz, n = 8, 128
    z, y, x = np.meshgrid(np.arange(nz), np.arange(n), np.arange(n), indexing="ij")
    xx, yy = x - 63.5, y - 63.5
    zf = (z - (nz - 1) / 2) / (nz / 2 + 1)
    shrink = np.sqrt(np.clip(1 - 0.35 * zf**2, 0.2, 1))
    head = (xx / (52 * shrink)) ** 2 + (yy / (60 * shrink)) ** 2 <= 1
    inner = (xx / (47 * shrink)) ** 2 + (yy / (55 * shrink)) ** 2 <= 1
    brain = (xx / (45 * shrink)) ** 2 + (yy / (53 * shrink)) ** 2 <= 1
    image = np.full(head.shape, -1000.0)
    image[head], image[inner], image[brain] = 1000.0, 5.0, 35.0
    gap = np.zeros(head.shape, bool)
    gap[3, 55:75, :30] = True
    image[gap & head & ~inner] = 5.0
    return image, inner


def test_open_ring_of_the_probe_phantom_keeps_every_slice() -> None:
    image, inner = _probe50_baseline()
    mask = brain_mask(image, "CT", 1.8, HU_WINDOW)
    per_slice, want = mask.sum(axis=(1, 2)), inner.sum(axis=(1, 2))
    assert np.all(per_slice >= 0.98 * want) and np.all(per_slice <= 1.02 * want), per_slice


def test_the_stack_is_not_cut_at_a_slice_without_brain() -> None:
    """A component beyond an empty slice, over the largest one's footprint, is kept; one
    beside it (outside the footprint) or small is not."""
    opened = np.zeros((8, 40, 40), bool)
    opened[:4, 10:30, 10:30] = True
    opened[5:, 10:30, 10:30] = True  # beyond the empty slice 4
    opened[6, 0:3, 0:3] = True  # small speck on a kept slice
    kept = _stack_component(opened)
    assert kept[:4].sum() == 4 * 400 and kept[5:].sum() == 3 * 400
    assert not kept[6, 0:3, 0:3].any()
    aside = np.zeros((8, 40, 40), bool)
    aside[:5, 0:20, 0:20] = True
    aside[6:, 22:40, 22:40] = True  # no overlap with the largest component's footprint
    assert not _stack_component(aside)[6:].any()


def test_a_slice_without_brain_between_brain_slices_takes_their_tissue_and_is_named() -> None:
    labels, image = _baseline()
    truth = _intracranial(labels)
    no_bone = image.copy()
    no_bone[4][labels[4] == P.SKULL] = 40.0  # no ring at all on slice 5: nothing to bridge
    result = find_brain(no_bone, "CT", PIXEL_MM, HU_WINDOW)
    assert result.rescued_slices == [4] and result.bridged_slices == []
    assert result.mask[4].sum() >= 0.98 * truth[4].sum()
    assert not (result.mask & (labels == P.SCALP)).any()
    assert any(w.startswith("slice 5 of 8: no brain found") for w in result.warnings)

    blank = image.copy()
    blank[4] = -1000.0  # nothing to take: the slice is named, not silently left out
    result = find_brain(blank, "CT", PIXEL_MM, HU_WINDOW)
    assert result.lost_slices == [4] and result.mask[4].sum() == 0
    assert any("its volume is missing from the results" in w for w in result.warnings)

    brain = truth.copy()
    brain[4] = False
    _, rescued, lost = _rescue_lost(brain, truth)
    assert (rescued, lost) == ([4], [])


def test_mr_open_ring_keeps_every_slice() -> None:
    spec = P.PhantomSpec(modality="MR")
    labels = P.make_labels(spec)
    image = P._base(spec)[labels].astype(float)
    image = _open(image, labels, [4], 600.0, 18.0)  # the gap as bright as the scalp
    result = find_brain(image, "MR", PIXEL_MM, HU_WINDOW)
    truth = _intracranial(labels)
    assert np.all(result.mask.sum(axis=(1, 2)) >= 0.98 * truth.sum(axis=(1, 2)))
    assert not (result.mask & (labels == P.SCALP)).any()


def _open_dicom(folder: Path, ph: P.Phantom, z: int, hu: float, half_deg: float) -> None:
    """Open the skull ring of slice ``z`` in every time point's DICOM image."""
    spec = ph.spec
    zpos = (z - (spec.n_slices - 1) / 2) * spec.slice_mm
    gap = (ph.labels[z] == P.SKULL) & _wedge(spec.matrix, 180.0, half_deg)
    assert gap.sum() >= 10
    opened = 0
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if abs(float(ds.ImagePositionPatient[2]) - zpos) > 1e-3:
            continue
        stored = ds.pixel_array.copy()
        stored[gap] = round((hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.save_as(path)
        opened += 1
    assert opened == spec.n_times


def test_analyse_with_an_open_skull_on_one_slice_keeps_every_slice(tmp_path: Path) -> None:
    """End to end: a 40 mm gap in the bone of slice 5 of 8 (every time point), beside the
    lesion. HEAD dropped slices 5-8: hypoperfusion about half of truth, status ok."""
    spec = P.PhantomSpec(noise=1.0, seed=3)
    ph = P.generate(spec, tmp_path)
    _open_dicom(tmp_path, ph, 4, 20.0, 18.0)
    r = analyse(tmp_path, config=PerfusionConfig(motion_correction=False))
    assert isinstance(r, PerfusionResult), r
    per_slice = r.brain.sum(axis=(1, 2))
    truth = _intracranial(ph.labels).sum(axis=(1, 2))
    assert np.all(per_slice >= 0.95 * truth), (per_slice, truth)
    v = r.summary
    assert v["hypoperfusion_ml"] == pytest.approx(ph.volumes_ml["hypoperfusion"], rel=0.10)
    assert v["core_ml"] == pytest.approx(ph.volumes_ml["core"], rel=0.15)
    # the repair is said: result warnings and a QC flag naming the slice
    flags = [f for f in r.qc["flags"] if f["code"] == "brain_mask"]
    assert len(flags) == 1 and "slice 5 of 8" in flags[0]["reason"], r.qc["flags"]
    assert any("slice 5 of 8" in w for w in r.warnings), r.warnings


@pytest.mark.parametrize("hu", [40.0, -1000.0], ids=["soft-tissue", "air"])
def test_a_ring_open_on_every_slice_keeps_the_scalp_out_and_says_so(hu: float) -> None:
    """Outside probe 51: no closed ring anywhere (a craniectomy over the whole coverage), the
    gap filled with soft tissue: the mask took the scalp, core 270 of 24.9 mL, no warning."""
    labels, image = _baseline()
    slices = list(range(labels.shape[0]))
    opened = _open(image, labels, slices, hu, 18.0)
    truth = _intracranial(labels)
    result = find_brain(opened, "CT", PIXEL_MM, HU_WINDOW)
    assert not (result.mask & (labels == P.SCALP)).any()
    per_slice, want = result.mask.sum(axis=(1, 2)), truth.sum(axis=(1, 2))
    assert np.all(np.abs(per_slice - want) <= 0.02 * want), (per_slice, want)
    assert result.bridged_slices == slices and len(result.warnings) == len(slices)


def test_no_ring_even_bridged_is_said() -> None:
    """Gaps of ~130 mm on every slice: nothing to bridge; the mask is the head's soft tissue
    and the result says it may hold scalp (it said nothing)."""
    labels, image = _baseline()
    opened = _open(image, labels, list(range(labels.shape[0])), 40.0, 60.0)
    result = find_brain(opened, "CT", PIXEL_MM, HU_WINDOW)
    assert result.bridged_slices == []
    assert len(result.warnings) == 1 and "may include scalp" in result.warnings[0]
