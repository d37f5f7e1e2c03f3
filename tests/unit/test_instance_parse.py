"""Validation before import (Conformance 4.1.3.2) on bytes, without a network."""

from __future__ import annotations

import io
import zlib

import pytest
from pydicom import dcmread, dcmwrite

from lucent.dicom import instance, transfer_syntaxes
from lucent.net import status
from tests.data import bad_inputs, samples


def _parse(data: bytes, **kw: object) -> instance.Parsed | instance.Refusal:
    return instance.parse(data, max_inflated=256 * 1024 * 1024, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", bad_inputs.all_bad_inputs(), ids=lambda c: c.name)
def test_bad_inputs_are_refused_with_their_status_class(case: bad_inputs.BadInput) -> None:
    result = _parse(
        case.part10(),
        expected_sop_class=case.sop_class_uid,
        expected_sop_instance=case.sop_instance_uid or None,
    )
    assert isinstance(result, instance.Refusal), case.name
    assert bad_inputs.status_matches(result.status, case.status), (case.name, result)
    assert result.reason


def test_valid_instance_reports_pixel_span() -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2")
    data = bad_inputs.BadInput(
        "ok", "", "", bad_inputs.encode(ds), ds.SOPClassUID, ds.SOPInstanceUID
    ).part10()
    parsed = _parse(data, expected_sop_class=ds.SOPClassUID)
    assert isinstance(parsed, instance.Parsed)
    assert data[parsed.pixel_start : parsed.pixel_end] == ds.PixelData


def test_inflate_refuses_bombs_and_accepts_normal_data() -> None:
    normal = bytes(range(256)) * 4096
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = c.compress(normal) + c.flush()
    assert instance.inflate_bounded(packed, 1 << 30) == normal
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = c.compress(b"\0" * (64 * 1024 * 1024)) + c.flush()
    with pytest.raises(ValueError, match="bomb"):
        instance.inflate_bounded(bomb, 1 << 30)


def test_status_codes_are_in_their_dicom_ranges() -> None:
    assert 0xA700 <= status.OUT_OF_RESOURCES <= 0xA7FF
    assert 0xA900 <= status.DATASET_MISMATCH <= 0xA9FF
    assert 0xC000 <= status.CANNOT_UNDERSTAND <= 0xCFFF


@pytest.mark.parametrize("vr, value", [("OB", b"\x10\x00"), ("US", [16, 12])], ids=["bytes", "two"])
def test_bits_stored_that_is_not_one_number_is_refused_not_raised(vr: str, value: object) -> None:
    """Fuzz find: BitsStored with its VR changed (bytes) or two values (a list) made
    ``int()`` raise inside validation, so the C-STORE failed with 0110 and a traceback."""
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", rows=16, cols=16)
    ds["BitsStored"].VR = vr
    ds["BitsStored"].value = value
    case = bad_inputs.BadInput(
        "bits", "A900", "", bad_inputs.encode(ds), ds.SOPClassUID, ds.SOPInstanceUID
    )
    result = _parse(case.part10(), expected_sop_class=ds.SOPClassUID)
    assert isinstance(result, instance.Refusal)
    assert bad_inputs.status_matches(result.status, "A900"), result
    assert "BitsStored" in result.reason


def _undefined_length(implicit: bool) -> bytes:
    """A CT whose empty Referring Physician's Name (PN) has undefined length, closed by a
    sequence delimiter (implicit VR), or whose Slice Thickness is an undefined-length UT
    (explicit VR)."""
    import io
    import struct

    from pydicom import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", rows=16, cols=16)
    ds.ReferringPhysicianName = ""
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    body, delimiter = buf.getvalue(), struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    if implicit:
        empty_pn = struct.pack("<HHL", 0x0008, 0x0090, 0)
        assert body.count(empty_pn) == 1
        body = body.replace(empty_pn, struct.pack("<HHL", 0x0008, 0x0090, 0xFFFFFFFF) + delimiter)
    else:
        value = str(ds.SliceThickness).encode().ljust(2, b" ")
        value += b" " * (len(value) % 2)
        old = struct.pack("<HH2sH", 0x0018, 0x0050, b"DS", len(value)) + value
        assert body.count(old) == 1
        new = struct.pack("<HH2sHL", 0x0018, 0x0050, b"UT", 0, 0xFFFFFFFF) + value + delimiter
        body = body.replace(old, new)
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    case = bad_inputs.BadInput("undef", "C000", "", body, ds.SOPClassUID, ds.SOPInstanceUID, ts)
    return case.part10()


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-empty-pn", "explicit-ut"])
def test_undefined_length_outside_sequences_is_refused(implicit: bool) -> None:
    """Fuzz find: pydicom reads an undefined-length non-SQ element up to the next delimiter,
    so it was stored with 0000; PS3.5 7.1.1 allows undefined length only for SQ/UN and
    encapsulated Pixel Data. (The implicit case passed the header walk's fast path.)"""
    result = _parse(_undefined_length(implicit), expected_sop_class="1.2.840.10008.5.1.4.1.1.2")
    assert isinstance(result, instance.Refusal), result
    assert result.status == status.INVALID_ENCODING
    assert "undefined length" in result.reason


def _mislabelled(implicit_body: bool, label: str) -> tuple[bytes, object]:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", patient_name="Lie^Label")
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=implicit_body, little_endian=True, enforce_file_format=False)
    body = buf.getvalue()
    case = bad_inputs.BadInput("x", "", "", body, ds.SOPClassUID, ds.SOPInstanceUID, label)
    return case.part10(), ds


@pytest.mark.parametrize(
    ("implicit_body", "label", "actual"),
    [
        (False, transfer_syntaxes.IMPLICIT_LE, transfer_syntaxes.EXPLICIT_LE),
        (True, transfer_syntaxes.EXPLICIT_LE, transfer_syntaxes.IMPLICIT_LE),
    ],
)
def test_a_data_set_encoded_otherwise_than_negotiated_is_archived_under_its_real_syntax(
    implicit_body: bool, label: str, actual: str
) -> None:
    """Outside probe: Explicit VR bytes on an Implicit VR context were archived labelled
    Implicit (pydicom guessed and read them; DCMTK could not read the archived file)."""
    data, ds = _mislabelled(implicit_body, label)
    parsed = _parse(data, expected_sop_class=ds.SOPClassUID)  # type: ignore[attr-defined]
    assert isinstance(parsed, instance.Parsed), parsed
    assert parsed.transfer_syntax == actual
    back = dcmread(io.BytesIO(parsed.file_bytes))
    assert back.file_meta.TransferSyntaxUID == actual
    assert str(back.PatientName) == "Lie^Label"
    assert back.PixelData == ds.PixelData  # type: ignore[attr-defined]


def test_implicit_vr_under_an_encapsulated_syntax_is_refused() -> None:
    data, ds = _mislabelled(True, "1.2.840.10008.1.2.4.70")
    result = _parse(data, expected_sop_class=ds.SOPClassUID)  # type: ignore[attr-defined]
    assert isinstance(result, instance.Refusal)
    assert result.status == status.INVALID_ENCODING and "Implicit VR" in result.reason
