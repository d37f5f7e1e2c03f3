"""Images that are in the perfusion input but not time points of its regular run (outside
probe 50): a localizer (Image Type LOCALIZER, PS3.3 C.8.2.1.1.1) in the perfusion's series
refused the study, and a contrast-free mask volume imaged 10-14 s before the regular frames
was interpolated across the gap, ~14 made-up grid frames that outweighed the baseline."""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from lucent.perfusion import PerfusionConfig, Refusal, analyse
from lucent.perfusion.pipeline import PerfusionResult
from lucent.perfusion.series import assemble
from tests.data import phantom as P

FAST = PerfusionConfig(motion_correction=False)
SPEC = P.PhantomSpec(noise=1.0, seed=5)
MAPS = ("cbf", "cbv", "mtt", "tmax")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[P.Phantom, PerfusionResult]:
    """The phantom without extra images, analysed: what every variant must reproduce."""
    folder = tmp_path_factory.mktemp("plain")
    ph = P.generate(SPEC, folder)
    r = analyse(folder, config=FAST)
    assert isinstance(r, PerfusionResult), r
    return ph, r


def _copy(ph: P.Phantom, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in ph.paths:
        shutil.copy(p, dest / p.name)


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def _localizer(template: Path, dest: Path, *, sagittal: bool, own_series: bool = False) -> None:
    """A scout (Image Type ORIGINAL\\PRIMARY\\LOCALIZER) made from a perfusion image: sagittal
    with another matrix, or axial at the template's slice position (same matrix)."""
    ds = pydicom.dcmread(template)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.InstanceNumber = 0
    ds.AcquisitionTime = "115940"  # 20 s before the run
    if sagittal:
        ds.Rows, ds.Columns = 64, 100
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [0.0, -150.0, 100.0]
        img = np.full((64, 100), 1024 - 1000, np.uint16)
        img[10:54, 20:80] = 1024 + 30
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = img.tobytes()
    if own_series:
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = 1
    _save(ds, dest / f"SCOUT{int(sagittal)}{int(own_series)}.dcm")


def _same_result(r: PerfusionResult, ref: PerfusionResult) -> None:
    for name in MAPS:
        np.testing.assert_allclose(r.maps[name], ref.maps[name], rtol=0.02, atol=1e-3)
    for key in ("core_ml", "hypoperfusion_ml"):
        assert r.summary[key] == pytest.approx(ref.summary[key], rel=0.02, abs=0.1), key


@pytest.mark.parametrize("sagittal", [True, False], ids=["sagittal", "axial"])
def test_a_localizer_in_the_series_is_left_out_with_a_warning(
    tmp_path: Path, plain: tuple[P.Phantom, PerfusionResult], sagittal: bool
) -> None:
    """Was refused: "inconsistent geometry: 1 of 481 images of the series have matrix
    64x100" (sagittal) or "incomplete: ... an image is missing" (axial, one image too
    many at one position). A localizer of a series of its own is not counted."""
    ph, ref = plain
    _copy(ph, tmp_path)
    _localizer(ph.paths[3], tmp_path, sagittal=sagittal)
    _localizer(ph.paths[3], tmp_path, sagittal=True, own_series=True)
    r = analyse(tmp_path, config=FAST)
    assert isinstance(r, PerfusionResult), r
    notes = [w for w in r.warnings if "localizer" in w]
    assert len(notes) == 1 and notes[0].startswith("1 localizer image(s) left out"), r.warnings
    assert "SCOUT" in notes[0] and "LOCALIZER" in notes[0]
    assert r.series.shape[0] == ref.series.shape[0]
    _same_result(r, ref)


def _mask(ph: P.Phantom, dest: Path, before_s: float) -> None:
    """A contrast-free mask volume of the phantom's series acquired ``before_s`` seconds
    before its first time point (Acquisition Time, the phantom's timing attribute): the
    first time point imaged once more with noise of its own (a copy would share the first
    time point's noise)."""
    spec = replace(ph.spec, n_times=1, seed=ph.spec.seed + 1000, drop_time_point=None)
    extra = P.generate(spec, dest / "mask")
    for z, path in enumerate(extra.paths):
        first = pydicom.dcmread(ph.paths[z], stop_before_pixels=True)
        ds = pydicom.dcmread(path)
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            setattr(ds, key, first.get(key))
        assert ds.ImagePositionPatient == first.ImagePositionPatient
        t = _dt.datetime.strptime(f"20240101{first.AcquisitionTime}", "%Y%m%d%H%M%S.%f")
        ds.AcquisitionTime = (t - _dt.timedelta(seconds=before_s)).strftime("%H%M%S.%f")
        ds.InstanceNumber = 9000 + z
        _save(ds, dest / f"MASK{z:03d}.dcm")
    shutil.rmtree(dest / "mask")


def test_a_mask_volume_before_a_gap_is_left_out_of_the_time_grid(
    tmp_path: Path, plain: tuple[P.Phantom, PerfusionResult]
) -> None:
    """Mask at -12 s, regular frames every 1 s with 20 pre-bolus frames: the result is that
    of the regular frames alone (was interpolated across the 12 s gap: 11 made-up frames)."""
    ph, ref = plain
    _copy(ph, tmp_path)
    _mask(ph, tmp_path, 12.0)
    s = assemble(tmp_path)
    assert not isinstance(s, Refusal), s
    assert s.shape[0] == SPEC.n_times and np.allclose(np.diff(s.times, axis=0), 1.0)
    r = analyse(tmp_path, config=FAST)
    assert isinstance(r, PerfusionResult), r
    notes = [w for w in r.warnings if "mask volume" in w]
    assert len(notes) == 1 and "left out of the time grid" in notes[0], r.warnings
    assert "12.0 s before" in notes[0]
    assert not any(w.startswith("gap of") for w in r.warnings), r.warnings
    assert r.series.shape[0] == ref.series.shape[0]
    _same_result(r, ref)


def test_a_missing_time_point_after_a_mask_volume_is_still_interpolated(tmp_path: Path) -> None:
    spec = replace(SPEC, matrix=32, n_times=30, drop_time_point=20)
    ph = P.generate(spec, tmp_path)
    _mask(ph, tmp_path, 12.0)
    s = assemble(tmp_path)
    assert not isinstance(s, Refusal), s
    assert s.shape[0] == spec.n_times - 1
    assert any("mask volume" in w and "left out" in w for w in s.warnings), s.warnings
    gaps = [w for w in s.warnings if w.startswith("gap of 2.0 s")]
    assert gaps and "interpolated to a uniform grid" in gaps[0], s.warnings


def test_a_mask_volume_is_kept_as_baseline_when_the_run_has_none(tmp_path: Path) -> None:
    """The bolus arrives with the first regular frame: the mask is their only baseline. It is
    kept one interval before them, not interpolated across the gap, and the maps match
    those of a run that started early enough."""
    late = replace(SPEC, t0=0.0, n_times=50)
    ph = P.generate(late, tmp_path / "late")
    _mask(ph, tmp_path / "late", 12.0)
    s = assemble(tmp_path / "late")
    assert not isinstance(s, Refusal), s
    assert s.shape[0] == late.n_times + 1
    np.testing.assert_allclose(np.diff(s.times, axis=0), 1.0, atol=1e-6)
    r = analyse(tmp_path / "late", config=FAST)
    assert isinstance(r, PerfusionResult), r
    notes = [w for w in r.warnings if "mask volume" in w]
    assert len(notes) == 1 and "kept as the baseline" in notes[0], r.warnings
    # the same curves with a baseline of their own (bolus at 8 s): CBF/CBV/MTT medians
    # within 5 % (CBF 0.99x; the mask left out, 0.94x; interpolated across the gap, 0.93x),
    # Tmax in seconds, compared as a difference
    early = replace(SPEC, t0=8.0, n_times=58)
    P.generate(early, tmp_path / "early")
    e = analyse(tmp_path / "early", config=FAST)
    assert isinstance(e, PerfusionResult), e
    sel = r.tissue & e.tissue
    for name in ("cbf", "cbv", "mtt"):
        ratio = np.median(r.maps[name][sel]) / np.median(e.maps[name][sel])
        assert abs(ratio - 1) < 0.05, (name, ratio)
    assert abs(np.median(r.maps["tmax"][sel] - e.maps["tmax"][sel])) <= 1.0
