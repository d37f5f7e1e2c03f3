"""Result objects for anonymised sources, partial results, and geometry refusals (issue 6).

Found by an outside probe with its own phantom generator: a source without Patient's Birth
Date or Accession Number (Type 2, often absent after anonymisation) crashed the Enhanced SR
(exit 1, no result.json) and the Parametric Maps were dropped silently; one time point with
another pixel spacing was dropped and interpolated instead of refused, and one shifted in z
was refused as "an image is missing".
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lucent.perfusion import Refusal, RefusalCode, dicom_out
from lucent.perfusion.cli import EXIT_OK, EXIT_PARTIAL, main
from lucent.perfusion.series import assemble
from lucent.perfusion.sr import TYPE2_PATIENT_STUDY, highdicom_sources
from tests.data import phantom as P

SMALL = P.PhantomSpec(n_slices=2, n_times=30)
"""Small enough for a few seconds per analysis (2 shared cores), big enough for an AIF."""
PM = "1.2.840.10008.5.1.4.1.1.30"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
SC = "1.2.840.10008.5.1.4.1.1.7"


def _strip(paths: list[Path], keys: tuple[str, ...]) -> None:
    """Anonymiser-style: remove attributes outright (not emptied)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for key in keys:
            if key in ds:
                delattr(ds, key)
        ds.save_as(path, enforce_file_format=True)


def _analyse(src: Path, out: Path) -> tuple[int, dict[str, object], list[Dataset]]:
    rc = main(["analyse", str(src), "--out", str(out), "--quiet", "--no-motion-correction"])
    doc = json.loads((out / "result.json").read_text())
    files = [pydicom.dcmread(out / p) for p in doc.get("outputs", []) if p.endswith(".dcm")]
    return rc, doc, files


def _by_class(files: list[Dataset]) -> dict[str, list[Dataset]]:
    out: dict[str, list[Dataset]] = {}
    for d in files:
        out.setdefault(str(d.SOPClassUID), []).append(d)
    return out


def _assert_every_output(rc: int, doc: dict[str, object], files: list[Dataset], n_z: int) -> None:
    assert rc == EXIT_OK, doc.get("output_failures")
    assert doc["status"] == "ok"
    assert not doc["qc"].get("output_failures")  # type: ignore[union-attr]
    kinds = _by_class(files)
    assert len(kinds[PM]) == 5 and len(kinds[SR]) == 1
    assert len(kinds[SC]) >= 5 * n_z + n_z + 3


# ---------- 1. Type 2 patient/study attributes absent ----------


def test_highdicom_sources_fill_absent_type2_without_touching_the_source() -> None:
    a = Dataset()
    a.PatientName, a.PatientID, a.StudyInstanceUID = "DOE^JANE", "P1", generate_uid()
    full = Dataset()
    for key in TYPE2_PATIENT_STUDY:
        setattr(full, key, "")
    out = highdicom_sources([a, a, full])
    assert out[0] is out[1] and out[2] is full  # one copy per distinct header, none if complete
    assert "PatientBirthDate" not in a and "AccessionNumber" not in a
    assert out[0].PatientName == "DOE^JANE" and out[0].PatientID == "P1"
    for key in TYPE2_PATIENT_STUDY:
        assert key in out[0]
    assert out[0].PatientBirthDate == "" and out[0].AccessionNumber == ""


def test_every_output_is_written_without_type2_patient_and_study_attributes(
    tmp_path: Path,
) -> None:
    ph = P.generate(SMALL, tmp_path / "in")
    src = pydicom.dcmread(ph.paths[0])
    absent = tuple(k for k in TYPE2_PATIENT_STUDY if k not in ("PatientName", "PatientID"))
    _strip(ph.paths, absent)
    rc, doc, files = _analyse(tmp_path / "in", tmp_path / "out")
    _assert_every_output(rc, doc, files, SMALL.n_slices)
    for d in files:  # identity kept, absent Type 2 present and empty
        assert d.PatientName == src.PatientName and d.PatientID == src.PatientID
        assert d.StudyInstanceUID == src.StudyInstanceUID
        for key in absent:
            assert key in d and not d[key].value, (d.SOPClassUID, key)


def test_every_output_is_written_without_any_type2_patient_or_study_attribute(
    tmp_path: Path,
) -> None:
    ph = P.generate(SMALL, tmp_path / "in")
    _strip(ph.paths, TYPE2_PATIENT_STUDY)
    rc, doc, files = _analyse(tmp_path / "in", tmp_path / "out")
    _assert_every_output(rc, doc, files, SMALL.n_slices)


def _to_enhanced_ct(paths: list[Path], out: Path, drop: tuple[str, ...]) -> Path:
    """The phantom's single-frame CT images as one Enhanced CT multi-frame instance."""
    items = [pydicom.dcmread(p) for p in paths]
    items.sort(key=lambda d: (str(d.AcquisitionTime), float(d.ImagePositionPatient[2])))
    first = items[0]
    ds = Dataset()
    for key in (
        "SpecificCharacterSet",
        *TYPE2_PATIENT_STUDY,
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "SeriesNumber",
        "Manufacturer",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        if key in first and key not in drop:
            setattr(ds, key, first.data_element(key).value)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.NumberOfFrames = len(items)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform = Dataset()
    transform.RescaleSlope = first.RescaleSlope
    transform.RescaleIntercept = first.RescaleIntercept
    transform.RescaleType = "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for d in items:
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = d.ImagePositionPatient
        content.FrameAcquisitionDateTime = f"{d.AcquisitionDate}{d.AcquisitionTime}"
        item.PlanePositionSequence = [position]
        item.FrameContentSequence = [content]
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


def test_enhanced_ct_without_birth_date_and_accession_gets_every_output(
    tmp_path: Path,
) -> None:
    ph = P.generate(SMALL, tmp_path / "single")
    src = _to_enhanced_ct(ph.paths, tmp_path / "in", ("PatientBirthDate", "AccessionNumber"))
    rc, doc, files = _analyse(src, tmp_path / "out")
    _assert_every_output(rc, doc, files, SMALL.n_slices)
    pm = _by_class(files)[PM][0]
    assert pm.NumberOfFrames == SMALL.n_slices and pm.PatientID == "PHANTOM-001"


def test_an_output_that_cannot_be_made_is_reported_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = dicom_out.parametric_map

    def failing(result: object, name: str, *args: object, **kwargs: object) -> Dataset:
        if name == "cbv":
            raise ValueError("simulated highdicom refusal")
        return make(result, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dicom_out, "parametric_map", failing)
    P.generate(SMALL, tmp_path / "in")
    rc, doc, files = _analyse(tmp_path / "in", tmp_path / "out")
    assert rc == EXIT_PARTIAL
    assert doc["status"] == "partial"
    assert doc["output_failures"] == [
        {"output": "parametric map cbv", "reason": "ValueError: simulated highdicom refusal"}
    ]
    assert any("parametric map cbv" in w for w in doc["warnings"])  # type: ignore[union-attr]
    kinds = _by_class(files)
    assert sorted(d.ContentLabel for d in kinds[PM]) == ["CBF", "MTT", "TMAX", "TTP"]
    assert len(kinds[SR]) == 1
    on_disk = sorted(p.name for p in (tmp_path / "out" / "dicom").iterdir())
    assert on_disk == sorted(Path(p).name for p in doc["outputs"] if p.endswith(".dcm"))


# ---------- 2. geometry ----------

GEOM = P.PhantomSpec(n_slices=3, n_times=12, matrix=32)
"""Header-level checks only (assemble, no analysis): tiny."""


def _edit(paths: list[Path], t: int, n_z: int, **values: object) -> list[Path]:
    """Set attributes on every image of time point ``t`` (generate writes t-major)."""
    chosen = paths[t * n_z : (t + 1) * n_z]
    for path in chosen:
        ds = pydicom.dcmread(path)
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)
    return chosen


def test_one_time_point_with_other_pixel_spacing_is_refused_not_interpolated(
    tmp_path: Path,
) -> None:
    ph = P.generate(GEOM, tmp_path)
    px = GEOM.fov_mm / GEOM.matrix
    odd = _edit(ph.paths, 6, GEOM.n_slices, PixelSpacing=[px * 1.1, px * 1.1])
    r = assemble(tmp_path)
    assert isinstance(r, Refusal), r.warnings
    assert r.code == RefusalCode.INCONSISTENT_GEOMETRY
    assert "pixel spacing" in r.reason and "time point 7" in r.reason, r.reason
    assert odd[0].name in r.reason


def test_one_time_point_with_other_matrix_or_orientation_is_refused(tmp_path: Path) -> None:
    ph = P.generate(GEOM, tmp_path / "m")
    _edit(ph.paths, 3, GEOM.n_slices, ImageOrientationPatient=[1, 0, 0, 0, 0.9962, 0.0872])
    r = assemble(tmp_path / "m")
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCONSISTENT_GEOMETRY
    assert "orientation" in r.reason and "time point 4" in r.reason, r.reason


def test_one_time_point_shifted_along_z_is_inconsistent_geometry_not_incomplete(
    tmp_path: Path,
) -> None:
    ph = P.generate(GEOM, tmp_path)
    for path in ph.paths[5 * GEOM.n_slices : 6 * GEOM.n_slices]:
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 2]
        ds.save_as(path, enforce_file_format=True)
    r = assemble(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCONSISTENT_GEOMETRY, r
    assert "slice position" in r.reason and "+2.00" in r.reason, r.reason
    assert "time point 6" in r.reason, r.reason


def test_missing_image_is_still_incomplete(tmp_path: Path) -> None:
    P.generate(replace(GEOM, drop_instance=(4, 1)), tmp_path)
    r = assemble(tmp_path)
    assert isinstance(r, Refusal) and r.code == RefusalCode.INCOMPLETE


def test_other_series_in_the_folder_are_still_ignored(tmp_path: Path) -> None:
    """A localizer and a thin-slice head CT of their own series are not the perfusion."""
    P.generate(GEOM, tmp_path / "perf")
    P.generate(replace(GEOM, n_times=1, n_slices=6, matrix=48, slice_mm=2.0), tmp_path / "ct")
    scout = P.generate(replace(GEOM, n_times=1, n_slices=1), tmp_path / "scout")
    _edit(scout.paths, 0, 1, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    r = assemble(tmp_path)
    assert not isinstance(r, Refusal), r
    assert r.shape == (GEOM.n_times, GEOM.n_slices, GEOM.matrix, GEOM.matrix)
    assert len(r.series_uids) == 1 and not r.warnings


def test_spacing_that_differs_only_by_rounding_is_accepted(tmp_path: Path) -> None:
    ph = P.generate(GEOM, tmp_path)
    px = GEOM.fov_mm / GEOM.matrix
    _edit(ph.paths, 2, GEOM.n_slices, PixelSpacing=[f"{px:.6f}", f"{px + 0.0006:.6f}"])
    r = assemble(tmp_path)
    assert not isinstance(r, Refusal), r
    assert r.shape[0] == GEOM.n_times and not r.warnings
