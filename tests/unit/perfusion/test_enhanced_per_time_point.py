"""Enhanced CT stored as one multi-frame instance per time point (all slices of that time in
one file): every file is decoded once. The frames were read slice by slice, each slice
visiting every time point's file, and only the last file was kept decoded: a 320-slice,
30-time-point study decoded 9,600 multi-frame files instead of 30."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lucent.perfusion import series
from lucent.perfusion.model import PerfusionSeries
from lucent.perfusion.series import assemble
from tests.data import phantom as P
from tests.unit.perfusion.test_outputs_and_geometry import _to_enhanced_ct

SPEC = P.PhantomSpec(n_slices=4, n_times=12)


def _per_time_point(paths: list[Path], out: Path) -> Path:
    by_time: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        by_time[str(pydicom.dcmread(p, stop_before_pixels=True).AcquisitionTime)].append(p)
    assert len(by_time) == SPEC.n_times
    for k, (_, group) in enumerate(sorted(by_time.items())):
        _to_enhanced_ct(group, out / f"t{k:02d}", ())
    return out


def test_each_time_point_file_is_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ph = P.generate(SPEC, tmp_path / "single")
    src = _per_time_point(ph.paths, tmp_path / "enhanced")
    decoded: list[Path] = []
    stored_values = series._stored_values

    def counting(path: Path) -> np.ndarray:
        decoded.append(path)
        return stored_values(path)

    monkeypatch.setattr(series, "_stored_values", counting)
    enhanced = assemble(src)
    assert isinstance(enhanced, PerfusionSeries), enhanced
    assert len(decoded) == len(set(decoded)) == SPEC.n_times, len(decoded)
    # the same values as from the single-frame files
    single = assemble(tmp_path / "single")
    assert isinstance(single, PerfusionSeries), single
    assert (
        enhanced.frames.shape
        == single.frames.shape
        == (SPEC.n_times, SPEC.n_slices) + (single.frames.shape[2:])
    )
    assert np.array_equal(enhanced.frames, single.frames)
