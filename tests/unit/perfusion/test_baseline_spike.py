"""Baseline detection survives one displaced or corrupt frame (outside probe 36).

The whole-brain mean curve jumps +45 HU at a frame where the head moved 5 mm and motion
correction is off (or a frame is corrupt): ``detect_baseline`` took that frame as the
peak and every frame before it, the whole bolus, as baseline (frames 0-29); the analysis
then found no enhancing voxel and was refused, or, before the AIF guard, read 738 mL of
core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.pipeline import PerfusionResult
from lucent.perfusion.signal import detect_baseline
from tests.unit.perfusion.test_motion_probe36 import DT, NT, _head, _move, _volume, _write


def _brain_curve(spike_at: int | None) -> np.ndarray:
    t = np.arange(NT) * DT
    x = np.clip(t - 20.0, 0, None)
    curve = 30.0 + 8.0 * x**3 * np.exp(-x / 3.0) / (9.0**3 * np.exp(-3.0))
    if spike_at is not None:
        curve[spike_at] += 45.0
    return curve


def test_one_spiking_frame_is_not_the_peak() -> None:
    clean = detect_baseline(_brain_curve(None), "CT")
    spiked = detect_baseline(_brain_curve(30), "CT")
    assert (spiked.start, spiked.end, spiked.arrival_index) == (
        clean.start,
        clean.end,
        clean.arrival_index,
    )
    assert spiked.end < 16  # the bolus arrives at 20 s = frame 13.3


def test_a_moved_frame_without_motion_correction_is_still_analysed(tmp_path: Path) -> None:
    frames, truth, art = _head(noise=0.0)
    frames[30] = _move(frames[30], 5.0, 0.0)
    _write(frames, tmp_path / "dicom")
    r = analyse(
        tmp_path / "dicom", config=PerfusionConfig(motion_correction=False, write_dicom=False)
    )
    assert isinstance(r, PerfusionResult), r  # was refused: "no bolus"
    voxels = r.to_dict()["qc"]["curves"]["aif_voxels_zyx"]
    assert voxels and all(art[tuple(v)] for v in voxels), voxels
    assert _volume(r, "hypoperfusion") == pytest.approx(truth["hypo"], rel=0.1)
