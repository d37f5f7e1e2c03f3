"""C-FIND answers decoded from raw bytes read the same as pydicom's full conversion,
in every character set pydicom ships test files for (ISO 2022 ones take pydicom's path)."""

from __future__ import annotations

import io
import warnings

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import decode

from lucent.net import scu

KEYS = ["SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "StudyDate",
        "StudyDescription", "ReferringPhysicianName", "AccessionNumber", "StudyInstanceUID",
        "InstitutionName", "Modality"]  # fmt: skip


def _converted(ds: Dataset) -> dict[str, str]:
    return {
        e.keyword: scu._text(e.value)
        for e in ds
        if e.keyword and e.VR != "SQ" and e.keyword != "QueryRetrieveLevel"
    }


def _answer(path: str, implicit: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = dcmread(path, stop_before_pixels=True)
    ident = Dataset()
    for key in KEYS:
        if key in src:
            ident[key] = src[key]
    ident.QueryRetrieveLevel = "STUDY"
    ident.ModalitiesInStudy = ["CT", "MR"]
    ident.NumberOfStudyRelatedInstances = "12"
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ident)
    return out.getvalue()


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("path", get_charset_files("*.dcm"), ids=lambda p: p.rsplit("/", 1)[-1])
def test_raw_rows_match_pydicom(path: str, implicit: bool) -> None:
    raw = _answer(path, implicit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _converted(decode(io.BytesIO(raw), implicit, True))
        got = scu._row(decode(io.BytesIO(raw), implicit, True))
    assert got == expected
    assert got["ModalitiesInStudy"] == "CT\\MR" and "QueryRetrieveLevel" not in got
    # The byte-level reader the direct C-FIND association uses: the same rows, or None
    # (pydicom's path) for ISO 2022 code extensions, and the same result through _Query.row.
    direct = scu._row_from_bytes(raw, implicit)
    assert direct is None or direct == expected
    syntax = scu.IMPLICIT_LE if implicit else scu.EXPLICIT_LE
    assert scu._Query(1, syntax).row(raw) == expected


def test_raw_rows_fall_back_for_sequences_and_binary_values() -> None:
    ident = Dataset()
    ident.PatientName = "Seq^Case"
    ident.ReferencedStudySequence = [Dataset()]
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ident)
    assert scu._row_from_bytes(out.getvalue(), False) is None
    assert scu._Query(1, scu.EXPLICIT_LE).row(out.getvalue()) == {"PatientName": "Seq^Case"}
