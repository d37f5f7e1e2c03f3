"""Perfusion input timing (lucent/perfusion/series.py), outside probe 30: the timing source
that resolves the time points wins over a coarser one (Acquisition Time in whole seconds),
and the choice is reported."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pydicom

from lucent.perfusion.model import PerfusionSeries
from lucent.perfusion.series import assemble, timing_quantum
from tests.data import phantom as P

SPEC = P.PhantomSpec(matrix=32, n_slices=2, n_times=12, dt=1.5)


def _retime(paths: list[Path], acquisition: int, content_offset: list[float] | None = None) -> None:
    """Acquisition Time cut to ``acquisition`` characters (6: whole seconds); Content Time
    the exact time plus an offset per image (default none)."""
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        exact = str(ds.AcquisitionTime)
        seconds = int(exact[0:2]) * 3600 + int(exact[2:4]) * 60 + float(exact[4:])
        seconds += content_offset[k] if content_offset else 0.0
        hms = _dt.datetime(2024, 1, 1) + _dt.timedelta(seconds=seconds)
        ds.ContentDate = ds.AcquisitionDate
        ds.ContentTime = hms.strftime("%H%M%S.%f")
        ds.AcquisitionTime = exact[:acquisition]
        ds.save_as(p, enforce_file_format=True)


def test_timing_quantum_is_the_resolution_the_times_are_written_with() -> None:
    assert timing_quantum([100.0, 101.0, 103.0]) == 1.0
    assert timing_quantum([100.0, 101.5, 103.0]) == 0.1
    assert timing_quantum([7.3e10, 7.3e10 + 1.25]) == 0.01
    assert timing_quantum([0.0, 0.0004]) == 0.0


def test_whole_second_acquisition_time_gives_way_to_finer_content_time(tmp_path: Path) -> None:
    """Acquisition Time in whole seconds, 1.5 s sampling: the frames were put at 0, 1, 3,
    4, 6 ... s (and a "gap" warning) although Content Time held them to the microsecond."""
    ph = P.generate(SPEC, tmp_path / "in")
    _retime(ph.paths, 6)
    s = assemble(tmp_path / "in")
    assert isinstance(s, PerfusionSeries), s
    assert s.timing_source == "content_time"
    np.testing.assert_allclose(s.times[:, 0], np.arange(12) * 1.5, atol=1e-3)
    assert any("acquisition time is written to 1 s only" in w for w in s.warnings), s.warnings
    assert not any("gap" in w for w in s.warnings), s.warnings


def test_fine_acquisition_time_stays_the_timing_source(tmp_path: Path) -> None:
    """Content Time as fine as Acquisition Time (0.3 s later, reconstruction): no change."""
    ph = P.generate(SPEC, tmp_path / "in")
    _retime(ph.paths, 13, [0.3] * len(ph.paths))
    s = assemble(tmp_path / "in")
    assert isinstance(s, PerfusionSeries) and s.timing_source == "acquisition_time", s
    assert s.warnings == []


def test_coarse_acquisition_time_stays_when_content_time_is_another_clock(tmp_path: Path) -> None:
    """Content Time finer but seconds apart from Acquisition Time image by image (the
    reconstruction's own schedule): it does not refine Acquisition Time."""
    ph = P.generate(SPEC, tmp_path / "in")
    rng = np.random.default_rng(3)
    _retime(ph.paths, 6, list(rng.uniform(0.0, 4.0, len(ph.paths))))
    s = assemble(tmp_path / "in")
    assert isinstance(s, PerfusionSeries), s
    assert s.timing_source == "acquisition_time"
