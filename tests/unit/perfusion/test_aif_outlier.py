"""A single-frame outlier must not become the AIF (outside probe 36).

One frame of the probe-36 head moved 5 mm, with motion correction off (a frame that motion
correction rejects, or a one-frame artefact): the skull edge then reads ~950 HU in that frame
only, a "bolus" higher and narrower than any artery. The peak/width score preferred it: CBV
0 everywhere and the whole brain core (738 of 20.2 mL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.aif import running_median3, select
from lucent.perfusion.mask import brain_mask
from lucent.perfusion.pipeline import PerfusionResult
from tests.unit.perfusion.test_motion_probe36 import PX, _head, _move, _write


def _moved_head(noise: float) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    frames, truth, art = _head(noise=noise)
    frames = frames.copy()
    frames[30] = _move(frames[30], 5.0, 0.0)
    return frames, truth, art


@pytest.mark.parametrize("noise", [0.0, 5.0])
@pytest.mark.parametrize("erode", [False, True])
def test_moved_frame_skull_edge_is_not_the_aif(noise: float, erode: bool) -> None:
    """The phantom's brain curves on a correct baseline (frames 0-11): the six AIF voxels
    are in the artery (before: all six on the skull edge, and no VOF)."""
    frames, _, art = _moved_head(noise)
    brain = brain_mask(frames[:3].mean(axis=0), "CT", PX, PerfusionConfig().ct_brain_hu)
    if erode:
        brain = ndimage.binary_erosion(brain, structure=np.ones((1, 3, 3), bool))
    curves = frames[:, brain].T
    conc = curves - curves[:, :12].mean(axis=1, keepdims=True)
    fns = select(conc, np.argwhere(brain))
    assert all(art[v] for v in fns.aif_voxels), fns.aif_voxels
    assert fns.vof_voxels


def test_select_ranks_a_supported_bolus_above_a_one_frame_spike() -> None:
    """200 tissue curves, 6 arterial boluses, 6 one-frame spikes three times as high."""
    k = 40
    t = np.arange(k, dtype=np.float64)
    x = np.clip(t - 12, 0, None)
    bolus = 300 * x**3 * np.exp(-x / 1.5) / (4.5**3 * np.exp(-3.0))
    rng = np.random.default_rng(0)
    tissue = np.convolve(bolus, np.exp(-t / 4.0))[:k] * 0.01
    curves = [tissue + rng.normal(0, 1, k) for _ in range(200)]
    curves += [bolus + rng.normal(0, 1, k) for _ in range(6)]
    for _ in range(6):
        spike = tissue + rng.normal(0, 1, k)
        spike[14] += 950.0
        curves.append(spike)
    conc = np.array(curves, np.float32)
    coords = np.array([(0, 0, i) for i in range(len(conc))])
    fns = select(conc, coords, n_aif=6, n_vof=6)
    assert sorted(v[2] for v in fns.aif_voxels) == list(range(200, 206))
    # the returned AIF is the measured mean curve, not the median-filtered one
    np.testing.assert_allclose(fns.aif_raw, conc[200:206].mean(axis=0), rtol=1e-5, atol=1e-4)


def test_running_median3_removes_one_frame_excursions_only() -> None:
    x = np.array([[0, 0, 9, 0, 0, -9, 0, 1, 2, 3, 2, 1, 7]], np.float32)
    np.testing.assert_array_equal(running_median3(x), [[0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 1]])


def test_moved_frame_without_motion_correction_is_not_a_confident_whole_brain_core(
    tmp_path: Path,
) -> None:
    """End to end, motion correction off. Before: the skull edge was the AIF and 738 mL of
    core (truth 20.2). The whole-brain mean curve also peaks at the moved frame (+45 HU), so
    the baseline detected from it is frames 0-29, which covers the bolus; the analysis is
    then refused (no curve enhances over that baseline). Whatever the result, the AIF is
    never the skull edge and the core is not the brain."""
    frames, truth, art = _moved_head(0.0)
    _write(frames, tmp_path / "dicom")
    cfg = PerfusionConfig(write_dicom=False, motion_correction=False)
    r = analyse(tmp_path / "dicom", config=cfg)
    if isinstance(r, PerfusionResult):
        voxels = r.to_dict()["qc"]["curves"]["aif_voxels_zyx"]
        assert voxels and all(art[tuple(v)] for v in voxels), voxels
        assert float(r.summary["core_ml"]) < 2 * truth["core"]
