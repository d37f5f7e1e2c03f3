"""Perfusion inputs of outside probe 30: timing across midnight, Enhanced CT timed by the
Nominal Cardiac Trigger Delay Time, implausible sampling intervals."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lucent.perfusion import Refusal, RefusalCode
from lucent.perfusion.model import PerfusionSeries
from lucent.perfusion.series import assemble
from tests.data import phantom as P

SPEC = P.PhantomSpec(matrix=32, n_slices=2, n_times=12, dt=1.5)


def _seconds(tm: str) -> float:
    return int(tm[0:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


def _tm(seconds: float) -> str:
    seconds %= 86400.0
    t = _dt.datetime(2024, 1, 1) + _dt.timedelta(seconds=seconds)
    return t.strftime("%H%M%S.%f")


def _shift_acquisition_time(paths: list[Path], start: float) -> None:
    """Move the acquisition to start at ``start`` s after midnight, the date unchanged."""
    first = min(_seconds(str(pydicom.dcmread(p).AcquisitionTime)) for p in paths)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.AcquisitionTime = _tm(_seconds(str(ds.AcquisitionTime)) - first + start)
        ds.save_as(p, enforce_file_format=True)


def test_a_midnight_crossing_without_a_date_change_keeps_the_frames_in_time_order(
    tmp_path: Path,
) -> None:
    """Outside probe 30: frames came out [after midnight..., before midnight...] because the
    raw times of day were sorted before the unwrap; the run was refused as "no brain"."""
    P.generate(SPEC, tmp_path / "ref")
    ph = P.generate(SPEC, tmp_path / "in")
    reference = assemble(tmp_path / "ref")
    _shift_acquisition_time(ph.paths, 86400.0 - 7.0)  # 23:59:53, 12 x 1.5 s: past midnight
    s = assemble(tmp_path / "in")
    assert isinstance(reference, PerfusionSeries) and isinstance(s, PerfusionSeries), s
    assert s.timing_source == "acquisition_time"
    np.testing.assert_allclose(s.times[:, 0], np.arange(12) * 1.5, atol=1e-3)
    np.testing.assert_array_equal(s.frames, reference.frames)


def _to_enhanced_ct_by_trigger(paths: list[Path], out: Path, dt_ms: float) -> Path:
    """The phantom's images as one Enhanced CT timed only by the Cardiac Synchronization
    module's Nominal Cardiac Trigger Delay Time (ms, PS3.3 C.7.6.16.2.7)."""
    items = [pydicom.dcmread(p) for p in paths]
    items.sort(key=lambda d: (str(d.AcquisitionTime), float(d.ImagePositionPatient[2])))
    start = _seconds(str(items[0].AcquisitionTime))
    first = items[0]
    ds = Dataset()
    for key in (
        "PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
        "FrameOfReferenceUID", "Modality", "Rows", "Columns", "SamplesPerPixel",
        "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
        "PixelRepresentation",
    ):  # fmt: skip
        setattr(ds, key, first.data_element(key).value)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(items)
    shared, measures, orientation, transform = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform.RescaleSlope, transform.RescaleIntercept = first.RescaleSlope, first.RescaleIntercept
    transform.RescaleType = "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for d in items:
        item, position, cardiac = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = d.ImagePositionPatient
        t = round((_seconds(str(d.AcquisitionTime)) - start) / (SPEC.dt))
        cardiac.NominalCardiacTriggerDelayTime = t * dt_ms
        item.PlanePositionSequence = [position]
        item.CardiacSynchronizationSequence = [cardiac]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(d.PixelData for d in items)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.mkdir(parents=True)
    ds.save_as(out / "enhanced.dcm", enforce_file_format=True)
    return out


def test_enhanced_ct_timed_by_the_nominal_cardiac_trigger_delay_reads_milliseconds(
    tmp_path: Path,
) -> None:
    """Outside probe 30: 1500 ms read as 1500 s; whole-brain hypoperfusion marked reliable."""
    ph = P.generate(SPEC, tmp_path / "single")
    s = assemble(_to_enhanced_ct_by_trigger(ph.paths, tmp_path / "enh", 1500.0))
    assert isinstance(s, PerfusionSeries), s
    assert s.timing_source == "trigger_time"
    np.testing.assert_allclose(s.times[:, 0], np.arange(12) * 1.5, atol=1e-6)


def test_an_implausible_sampling_interval_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A 1500 s interval (timing in the wrong units) is refused, never analysed."""
    ph = P.generate(SPEC, tmp_path / "single")
    r = assemble(_to_enhanced_ct_by_trigger(ph.paths, tmp_path / "enh", 1.5e6))
    assert isinstance(r, Refusal), r
    assert r.code == RefusalCode.MISSING_TIMING
    assert "implausible timing" in r.reason and "1500 s" in r.reason, r.reason


def test_a_malformed_or_truncated_file_is_named_not_an_internal_error(tmp_path: Path) -> None:
    """Outside probe 30: a two-value Image Position stopped the run as "internal error:
    ValueError" and truncated pixel data as a bare decoder error; now the malformed file is
    left out (the series then reads as incomplete) and the truncated one is named."""
    ph = P.generate(SPEC, tmp_path / "bad_ipp")
    ds = pydicom.dcmread(ph.paths[3])
    ds.ImagePositionPatient = [0.0, 0.0]
    ds.save_as(ph.paths[3], enforce_file_format=True)
    refused = assemble(tmp_path / "bad_ipp")
    assert isinstance(refused, Refusal) and refused.code == RefusalCode.INCOMPLETE, refused

    ph = P.generate(SPEC, tmp_path / "truncated")
    victim = ph.paths[5]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 600])  # pixel data cut short
    refused = assemble(tmp_path / "truncated")
    assert isinstance(refused, Refusal) and refused.code == RefusalCode.CORRUPT_IMAGES, refused
    assert victim.name in refused.reason


def test_tilted_slices_keep_their_own_positions(tmp_path: Path) -> None:
    """Outside probe 30: with gantry tilt each slice is offset in-plane from the last; the
    map frames were placed as if stacked along the normal (15 mm off at 20 degrees)."""
    ph = P.generate(SPEC, tmp_path / "in")
    shift = np.tan(np.radians(20.0))
    for p in ph.paths:
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + z * shift, z]  # the gantry's tilt moves y with z
        ds.save_as(p, enforce_file_format=True)
    s = assemble(tmp_path / "in")
    assert isinstance(s, PerfusionSeries), s
    sources: dict[float, list[float]] = {}
    for p in ph.paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        position = [float(v) for v in ds.ImagePositionPatient]
        sources[round(position[2], 3)] = position
    expected = [sources[k] for k in sorted(sources)]
    got = [list(s.slice_position(z)) for z in range(s.shape[1])]
    if got[0][2] > got[-1][2]:
        got = got[::-1]
    np.testing.assert_allclose(got, expected, atol=1e-3)
