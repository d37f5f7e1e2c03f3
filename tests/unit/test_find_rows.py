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


def test_character_set_after_its_values_goes_to_pydicom() -> None:
    """The one-pass reader decodes with the character set it has seen; a data set that names
    it only after a value it governs (out of tag order) is left to pydicom, which reads the
    whole data set first."""
    name = "Müller^Jörg".encode("iso8859_15")
    raw = (
        b"\x08\x00\x50\x00SH\x02\x00A1"  # Accession Number, before the character set
        + b"\x10\x00\x10\x00PN" + len(name).to_bytes(2, "little") + name
        + b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    )  # fmt: skip
    assert scu._row_from_bytes(raw, False) is None
    ordered = (
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
        + b"\x08\x00\x50\x00SH\x02\x00A1"
        + b"\x10\x00\x10\x00PN" + len(name).to_bytes(2, "little") + name
    )  # fmt: skip
    assert scu._row_from_bytes(ordered, False) == {
        "SpecificCharacterSet": "ISO_IR 100",
        "AccessionNumber": "A1",
        "PatientName": "Müller^Jörg",
    }


def test_multi_values_and_empty_values_read_like_pydicom() -> None:
    ident = Dataset()
    ident.ModalitiesInStudy = ["CT", "MR", "PT"]
    ident.StudyDescription = ""
    ident.OtherPatientIDs = ["A", "B2 "]
    ident.StudyComments = "  keeps leading spaces"
    for implicit in (True, False):
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, implicit
        write_dataset(out, ident)
        raw = out.getvalue()
        expected = _converted(decode(io.BytesIO(raw), implicit, True))
        assert scu._row_from_bytes(raw, implicit) == expected
