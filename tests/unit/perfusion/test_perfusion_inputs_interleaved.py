"""Two time series interleaved in one series (lucent/perfusion/series.py), outside probe 30:
a dual-echo DSC series or two reconstructions are refused naming the cause, not as
"duplicate images ... the same image was sent twice"."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from lucent.perfusion import Refusal, RefusalCode
from lucent.perfusion.series import DUPLICATE_IMAGES, assemble
from tests.data import phantom as P

SPEC = P.PhantomSpec(matrix=32, n_slices=2, n_times=12, dt=1.5)


def _second_copy(paths: list[Path], **attrs: object) -> None:
    """Every image again, as another image with ``attrs`` changed (same position, time)."""
    for p in paths:
        ds = pydicom.dcmread(p)
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = int(ds.InstanceNumber) + 10000
        ds.save_as(p.with_name("E2" + p.name), enforce_file_format=True)


def test_dual_echo_dsc_is_refused_for_its_two_echo_times(tmp_path: Path) -> None:
    """Outside probe 30 (interleave.py dual_echo): "duplicate images ... the same image was
    sent twice" for a series holding TE 25 ms and TE 50 ms at every position and time."""
    spec = P.PhantomSpec(modality="MR", matrix=32, n_slices=2, n_times=12, dt=1.5, te_ms=25.0)
    ph = P.generate(spec, tmp_path / "in")
    _second_copy(ph.paths, EchoTime=50.0, EchoNumbers=2)
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal), r
    assert r.code == RefusalCode.UNSUPPORTED, r
    assert "2 echo times (25, 50 ms)" in r.reason and "dual-echo" in r.reason, r.reason
    assert "duplicate" not in r.reason


def test_dual_echo_a_few_ms_apart_is_not_one_time_series_at_twice_the_rate(
    tmp_path: Path,
) -> None:
    """Echoes timed a few ms apart are no duplicates: without the echo check they were one
    time series of 24 points whose signal jumped between the echoes."""
    spec = P.PhantomSpec(modality="MR", matrix=32, n_slices=2, n_times=12, dt=1.5, te_ms=25.0)
    ph = P.generate(spec, tmp_path / "in")
    _second_copy(ph.paths, EchoTime=50.0, EchoNumbers=2)
    for p in (tmp_path / "in").glob("E2*"):
        ds = pydicom.dcmread(p)
        t = _dt.datetime.strptime(str(ds.AcquisitionTime), "%H%M%S.%f")
        ds.AcquisitionTime = (t + _dt.timedelta(seconds=0.025)).strftime("%H%M%S.%f")  # +25 ms
        ds.save_as(p, enforce_file_format=True)
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal) and "echo times (25, 50 ms)" in r.reason, r


def test_two_reconstructions_in_one_series_are_named_not_duplicates(tmp_path: Path) -> None:
    ph = P.generate(SPEC, tmp_path / "in")
    _second_copy(ph.paths, ConvolutionKernel="BONE")
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal) and r.code == RefusalCode.UNSUPPORTED, r
    assert "2 interleaved time series" in r.reason and "Convolution Kernel" in r.reason, r
    assert "BONE" in r.reason


def test_an_image_sent_twice_is_still_a_duplicate(tmp_path: Path) -> None:
    ph = P.generate(SPEC, tmp_path / "in")
    _second_copy(ph.paths[:2])
    r = assemble(tmp_path / "in")
    assert isinstance(r, Refusal) and r.code == DUPLICATE_IMAGES, r
