"""Attributes of every result object (issue 6, Conformance 8.1.1/8.1.3; outside probe 8).

- The Secondary Captures dropped Issuer of Patient ID and the rest of the Patient module
  that the Parametric Maps and the SR kept: an archive with ``uid_conflict = "refuse"``
  refused 52 of 58 results as another patient's.
- dciodvfy errors on every SC (Patient Orientation, Laterality) and PM (Laterality); the
  SC carried the source's Frame of Reference UID although a rendered page has no position.
- The Parametric Maps lacked Series/Acquisition Date and Time, Institution Name and
  Performing Physician's Name that the SC carries.
- Every SC said "oSVD" whatever the method; no output named the thresholds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from lucent.perfusion.cli import main
from lucent.perfusion.identity import COPIED
from tests.data import phantom as P

SPEC = P.PhantomSpec(n_slices=3, n_times=30)
SC = "1.2.840.10008.5.1.4.1.1.7"
PM = "1.2.840.10008.5.1.4.1.1.30"
SR = "1.2.840.10008.5.1.4.1.1.88.22"


def _identity(ds: Dataset) -> None:
    """Patient/study attributes a hospital's CT sends beyond the phantom's."""
    ds.IssuerOfPatientID = "HOSPITAL_A"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = "1.2.826.0.1.3680043.10.1455"
    qualifiers.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    other = Dataset()
    other.PatientID = "OLD-77"
    other.IssuerOfPatientID = "HOSPITAL_B"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [other]
    ds.PatientName = "Müller^Jürgen"
    ds.PatientComments = "allergic to iodine"
    ds.PatientAge = "074Y"
    ds.PatientWeight = 81.5
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.InstitutionName = "Stroke Centre"
    ds.AdmittingDiagnosesDescription = "left MCA stroke"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("attrs")
    ph = P.generate(SPEC, tmp / "in")
    for path in ph.paths:
        ds = pydicom.dcmread(path)
        _identity(ds)
        ds.save_as(path, enforce_file_format=True)
    argv = ["analyse", str(tmp / "in"), "--out", str(tmp / "out"), "--quiet"]
    rc = main([*argv, "--no-motion-correction", "--method", "tikhonov", "--threshold-tmax", "7"])
    assert rc == 0
    return tmp, json.loads((tmp / "out" / "result.json").read_text())


def _files(outputs: tuple[Path, dict[str, object]]) -> list[tuple[Path, Dataset]]:
    tmp, doc = outputs
    names = [p for p in doc["outputs"] if p.endswith(".dcm")]  # type: ignore[union-attr]
    return [(tmp / "out" / p, pydicom.dcmread(tmp / "out" / p)) for p in names]


def test_every_output_carries_the_whole_patient_module_identically(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    tmp, _ = outputs
    src = pydicom.dcmread(next((tmp / "in").iterdir()), stop_before_pixels=True)
    expected = {k: src[k] for k in COPIED if k in src}
    assert "IssuerOfPatientID" in expected and "OtherPatientIDsSequence" in expected
    files = _files(outputs)
    assert {str(d.SOPClassUID) for _, d in files} == {SC, PM, SR}
    for path, d in files:
        for key, element in expected.items():
            assert key in d, (path.name, d.SOPClassUID, key)
            assert d[key].value == element.value, (path.name, key)
        assert d.SpecificCharacterSet == src.SpecificCharacterSet


def test_series_level_attributes_are_the_same_on_every_kind_of_output(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    files = [d for _, d in _files(outputs)]
    shared = ("SeriesDate", "SeriesTime", "ContentDate", "Manufacturer", "SoftwareVersions")
    for key in (*shared, "InstitutionName"):
        values = {str(d.get(key)) for d in files}
        assert len(values) == 1 and "None" not in values, (key, values)
    images = [d for d in files if d.SOPClassUID in (SC, PM)]
    for key in ("AcquisitionDate", "AcquisitionTime", "PerformingPhysicianName"):
        values = {str(d.get(key)) for d in images}
        assert len(values) == 1 and "None" not in values, (key, values)
    assert all(d.BodyPartExamined == "HEAD" for d in images)
    assert {d.AcquisitionDate for d in images} == {files[0].SeriesDate}


def test_secondary_captures_have_patient_orientation_and_no_frame_of_reference(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    sc = [d for _, d in _files(outputs) if d.SOPClassUID == SC]
    maps = [d for d in sc if d.SeriesDescription.endswith("(colour)")]
    pages = [d for d in sc if d.SeriesDescription == "Perfusion summary and QC"]
    assert maps and pages
    assert all(list(d.PatientOrientation) == ["L", "P"] for d in maps)  # axial source
    assert all(d.PatientOrientation == "" for d in pages)
    assert not [d for d in sc if "FrameOfReferenceUID" in d]


def test_method_and_thresholds_are_recorded_everywhere(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    _, doc = outputs
    p = doc["parameters"]
    assert p["method"] == "tikhonov" and p["threshold_tmax"] == 7.0  # type: ignore[index]
    assert p["threshold_core"] == 0.3 and p["min_island_ml"] == 0.5  # type: ignore[index]
    assert p["threshold_adc"] == 620.0 and p["threshold_tmax_severe"] == 10.0  # type: ignore[index]
    assert p["ct_core_cbf"] == "model"  # type: ignore[index]  # README: --config switches it
    files = [d for _, d in _files(outputs)]
    sc = [d for d in files if d.SOPClassUID == SC]
    assert all("Tikhonov" in d.DerivationDescription for d in sc)
    assert not [d for d in files if "oSVD" in str(d.get("DerivationDescription", ""))]
    overlay = next(d for d in sc if "overlay" in d.SeriesDescription)
    assert "Tmax > 7 s" in overlay.DerivationDescription
    pm = next(d for d in files if d.SOPClassUID == PM)
    frame = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert "Tikhonov" in frame.DerivationDescription and "Tikhonov" in pm.ContentDescription
    sr = next(d for d in files if d.SOPClassUID == SR)
    items = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i
        for box in sr.ContentSequence
        for i in box.get("ContentSequence", [])
    }
    assert items["Deconvolution method"].TextValue.startswith("Tikhonov SVD")
    tmax = items["Hypoperfusion threshold, Tmax"].MeasuredValueSequence[0]
    assert float(tmax.NumericValue) == 7.0
    assert tmax.MeasurementUnitsCodeSequence[0].CodeValue == "s"


def test_dciodvfy_finds_no_errors_in_any_output(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dicom3tools dciodvfy not installed")
    seen: set[str] = set()
    for path, d in _files(outputs):
        kind = f"{d.SOPClassUID} {d.SeriesDescription}"
        if kind in seen:
            continue  # one object of each series: the same attributes
        seen.add(kind)
        done = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (done.stderr + done.stdout).splitlines() if "Error" in line]
        assert not errors, (kind, errors)
    assert len(seen) >= 5 + 2 + 5 + 1


def test_parametric_maps_carry_the_content_identification_macro(
    outputs: tuple[Path, dict[str, object]],
) -> None:
    """PS3.3 C.8.32.2 includes Table 10-12: Content Label (1), Content Description and
    Content Creator's Name (2, present even when empty). The name was missing from every
    map (outside probe 44; DCMTK's rules agree)."""
    maps = [d for _, d in _files(outputs) if d.SOPClassUID == PM]
    assert len(maps) == 5
    for d in maps:
        assert d.ContentLabel
        assert "ContentDescription" in d
        assert "ContentCreatorName" in d, d.SeriesDescription
