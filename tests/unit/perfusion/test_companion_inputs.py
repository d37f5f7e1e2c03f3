"""DWI and FLAIR inputs (issue 6: "Optional DWI (ADC) and FLAIR series of the same
patient"; outside probe 8): ``--dwi``/``--flair`` took any series, so a plain CT head, a
DWI trace image or another patient's series became the "ADC map" (core 591 mL instead of
11.5, DEFUSE-3 not met, no warning). Such an input is now not used, with a QC flag, a
warning and a line on stderr; the core comes from rCBF.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from lucent.perfusion.cli import main
from lucent.perfusion.companion import adc_problem, patient_mismatch, problem
from lucent.perfusion.series import StaticVolume, load_volume
from tests.data import phantom as P

SPEC = P.PhantomSpec(n_slices=4, n_times=30)
"""Small enough for a few seconds per analysis (2 shared cores), big enough for an AIF."""


def _rewrite(paths: list[Path], out: Path, **values: object) -> Path:
    """Copies of ``paths`` in ``out`` as a new series with ``values`` set."""
    out.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for key, value in values.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


def _trace(adc: list[Path], out: Path) -> Path:
    """The phantom's ADC series as a DWI b=1000 trace image would be labelled and valued:
    tissue bright (~450), CSF dark (free water loses its signal)."""
    out = _rewrite(adc, out, ImageType=["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"])
    for path in out.iterdir():
        ds = pydicom.dcmread(path)
        adc_values = ds.pixel_array.astype(float)
        signal = np.where(adc_values > 0, 1000 * np.exp(-1000 * adc_values * 1e-6), 0)
        ds.PixelData = signal.astype(np.uint16).tobytes()
        ds.add_new(0x00189087, "FD", 1000.0)  # Diffusion b-value
        ds.save_as(path, enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inputs")
    ph = P.generate(SPEC, tmp / "ctp")
    adc = P.write_adc(ph, tmp / "adc")
    first = ph.paths[: SPEC.n_slices]  # the first time point: a plain CT head
    return {
        "ctp": tmp / "ctp",
        "adc": tmp / "adc",
        "cthead": _rewrite(first, tmp / "cthead", SeriesDescription="CT head"),
        "trace": _trace(adc, tmp / "trace"),
        "other": _rewrite(adc, tmp / "other", PatientID="OTHER-999", PatientName="Other^Pat"),
    }


@pytest.fixture(scope="module")
def ct_head_as_dwi(
    inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, dict[str, object], str]:
    out = tmp_path_factory.mktemp("dwi") / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(
            [
                "analyse",
                str(inputs["ctp"]),
                "--out",
                str(out),
                "--quiet",
                "--no-motion-correction",
                "--no-dicom",
                "--dwi",
                str(inputs["cthead"]),
            ]
        )
    return rc, json.loads((out / "result.json").read_text()), err.getvalue()


def test_a_ct_head_given_as_dwi_is_not_used_and_says_why(
    ct_head_as_dwi: tuple[int, dict[str, object], str],
) -> None:
    rc, doc, err = ct_head_as_dwi
    assert rc == 0
    v = doc["volumes"]
    assert str(v["core_source"]).startswith("rCBF")  # type: ignore[index]
    assert doc["input"]["dwi"] is False  # type: ignore[index]
    flags = [f for f in doc["qc"]["flags"] if f["code"] == "dwi_not_used"]  # type: ignore[index]
    assert len(flags) == 1 and "a CT series" in flags[0]["reason"]
    assert any("DWI input not used" in w for w in doc["warnings"])  # type: ignore[union-attr]
    assert "warning: DWI input not used: not an ADC map: a CT series" in err


def test_a_dwi_too_thin_to_coregister_is_not_used_instead_of_crashing(tmp_path: Path) -> None:
    """ITK cannot smooth fewer than 4 slices: a 3-slice perfusion with a DWI crashed (exit 1)."""
    ph = P.generate(P.PhantomSpec(n_slices=3, n_times=30), tmp_path / "ctp")
    P.write_adc(ph, tmp_path / "adc")
    argv = ["analyse", str(tmp_path / "ctp"), "--out", str(tmp_path / "out"), "--quiet"]
    rc = main([*argv, "--no-dicom", "--no-motion-correction", "--dwi", str(tmp_path / "adc")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    [flag] = [f for f in doc["qc"]["flags"] if f["code"] == "dwi_not_used"]
    assert "too few slices to coregister" in flag["reason"]


def test_the_adc_map_of_the_same_patient_is_used(inputs: dict[str, Path]) -> None:
    vol = load_volume(inputs["adc"])
    ctp = pydicom.dcmread(next(inputs["ctp"].iterdir()), stop_before_pixels=True)
    assert isinstance(vol, StaticVolume)
    assert problem("dwi", ctp, vol.header, vol.values) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("cthead", "a CT series"),
        ("trace", "diffusion-weighted image (Image Type ORIGINAL\\PRIMARY\\DIFFUSION\\TRACEW"),
        ("other", "another patient: Patient ID 'OTHER-999'"),
    ],
)
def test_series_that_are_not_this_patients_adc_map_are_refused(
    inputs: dict[str, Path], name: str, why: str
) -> None:
    vol = load_volume(inputs[name])
    ctp = pydicom.dcmread(next(inputs["ctp"].iterdir()), stop_before_pixels=True)
    reason = problem("dwi", ctp, vol.header, vol.values)  # type: ignore[union-attr]
    assert reason is not None and why in reason, reason


def test_a_folder_with_trace_and_adc_images_gives_the_adc_map(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """A DWI export often holds the trace and the ADC series of one plane together: they
    were merged into one volume by geometry (first image per position)."""
    both = tmp_path / "both"
    shutil.copytree(inputs["trace"], both)
    for path in inputs["adc"].iterdir():
        shutil.copy(path, both / f"adc-{path.name}")
    vol = load_volume(both, prefer=lambda ds: "ADC" in list(ds.ImageType))
    assert "ADC" in list(vol.header.ImageType)  # type: ignore[union-attr]
    ctp = pydicom.dcmread(next(inputs["ctp"].iterdir()), stop_before_pixels=True)
    assert problem("dwi", ctp, vol.header, vol.values) is None  # type: ignore[union-attr]


def _patient(**values: object) -> Dataset:
    ds = Dataset()
    ds.PatientID = "PAT-1"
    ds.PatientName = "Müller^Hans Peter"
    ds.PatientBirthDate = "19500101"
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    "same",
    [
        {},
        {"PatientID": " pat-1 "},
        {"PatientName": "MULLER^HANS"},
        {"PatientName": "Muller^Hans Peter^^^"},
        {"PatientName": "MULLER HANS PETER"},
        {"PatientName": ""},
        {"PatientBirthDate": "1950-01-01"},
        {"PatientBirthDate": ""},
        {"IssuerOfPatientID": "HOSPITAL_A"},  # the other side names no issuer
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # "1950-01-01" on purpose
def test_formatting_differences_are_the_same_patient(same: dict[str, object]) -> None:
    assert patient_mismatch(_patient(), _patient(**same)) is None


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ({"PatientID": "PAT-2"}, "Patient ID"),
        ({"PatientID": ""}, "Patient ID"),
        ({"PatientName": "Meier^Hans"}, "Patient's Name"),
        ({"PatientName": "Muller^Anna"}, "Patient's Name"),
        ({"PatientBirthDate": "19500102"}, "Birth Date"),
    ],
)
def test_another_patient_is_recognised(other: dict[str, object], why: str) -> None:
    reason = patient_mismatch(_patient(), _patient(**other))
    assert reason is not None and why in reason, reason


def test_another_issuer_of_the_same_id_is_another_patient() -> None:
    a, b = _patient(IssuerOfPatientID="HOSPITAL_A"), _patient(IssuerOfPatientID="HOSPITAL_B")
    assert "Issuer of Patient ID" in (patient_mismatch(a, b) or "")


def test_adc_values_in_other_units_or_without_free_water_are_refused() -> None:
    header = Dataset()
    header.Modality = "MR"
    header.ImageType = ["DERIVED", "PRIMARY", "ADC"]
    rng = np.random.default_rng(1)
    tissue = rng.normal(800, 60, 20000)
    csf = rng.normal(3000, 150, 2000)
    good = np.concatenate([tissue, csf, np.zeros(5000)])
    assert adc_problem(header, good) is None
    assert "10^-6" in (adc_problem(header, good / 1000) or "")  # stored in 10^-3 mm²/s
    assert "free water" in (adc_problem(header, tissue) or "")  # CSF dark: not an ADC map


def test_an_mr_core_without_a_usable_dwi_does_not_say_none_was_given(tmp_path: Path) -> None:
    """Outside probe 35: with a DWI given but refused (another patient), core_without_dwi
    said "no DWI given"; the reader must learn that the one given was not used."""
    ph = P.generate(P.PhantomSpec(modality="MR", n_slices=4, n_times=30), tmp_path / "mrp")
    adc = P.write_adc(ph, tmp_path / "adc")
    for path in adc:
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = "SOMEONE-ELSE", "Else^Someone"
        ds.save_as(path)
    argv = ["analyse", str(tmp_path / "mrp"), "--out", str(tmp_path / "out"), "--quiet"]
    rc = main([*argv, "--no-dicom", "--no-motion-correction", "--dwi", str(tmp_path / "adc")])
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    flags = {f["code"]: f["reason"] for f in doc["qc"]["flags"]}
    assert "dwi_not_used" in flags
    assert "not used" in flags["core_without_dwi"]
    assert "no DWI given" not in flags["core_without_dwi"]
