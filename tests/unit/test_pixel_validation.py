"""Validation before import of Pixel Data and the Image Pixel module, on bytes (probe 28).

PS3.5 A.4 (encapsulated Pixel Data: undefined length, a Basic Offset Table item, fragment
items, a sequence delimiter; native: a defined length), PS3.3 C.7.6.3.1 (the Image Pixel
module's values agree), Conformance 4.1.3.2 (a refused instance is filed under its patient
and study with a reason a person can act on; the Error Comment keeps 64 characters).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from lucent.dicom import instance, sop_classes, walk
from lucent.net import status
from tests.data import bad_inputs, samples

MAX_INFLATED = 256 * 1024 * 1024


def _parse(case: bad_inputs.BadInput) -> instance.Parsed | instance.Refusal:
    return instance.parse(
        case.part10(),
        max_inflated=MAX_INFLATED,
        expected_sop_class=case.sop_class_uid,
        expected_sop_instance=case.sop_instance_uid or None,
    )


ENCODING_CASES = [
    bad_inputs.encapsulated_syntax_native_pixels,
    bad_inputs.native_syntax_encapsulated_pixels,
    bad_inputs.non_item_in_pixel_sequence,
    bad_inputs.pixel_fragment_overruns,
]


@pytest.mark.parametrize("make", ENCODING_CASES, ids=lambda m: m.__name__)
def test_broken_pixel_encoding_is_refused_as_not_understood(make: object) -> None:
    """Were stored with 0000 (probe 28 c21, c22, c23b, c23d); c22's items happened to total
    Rows x Columns x 2 bytes and were served as an image starting with item headers."""
    case: bad_inputs.BadInput = make()  # type: ignore[operator]
    result = _parse(case)
    assert isinstance(result, instance.Refusal), result
    assert result.status == status.INVALID_ENCODING, result
    assert result.reason.startswith(case.reason), result
    assert result.ids.get("PatientID") == case.patient_id  # filed under its patient


UNREADABLE_CASES = [
    (bad_inputs.encapsulated_pixels_without_delimiter, "no sequence delimiter"),
    (bad_inputs.encapsulated_pixels_cut_in_fragment, "truncated in fragment 1"),
    (bad_inputs.sequences_nested_too_deep, "nested too deep"),
]


@pytest.mark.parametrize(
    ("make", "words"), UNREADABLE_CASES, ids=lambda v: getattr(v, "__name__", v)
)
def test_unreadable_data_set_is_filed_under_its_patient_with_what_is_wrong(
    make: object, words: str
) -> None:
    """pydicom reads these as an empty data set or raises RecursionError: the refusal had
    no identifying values (placeholder under UNKNOWN) and said "no DICOM attributes could
    be recognised" although Patient ID and Study UID were plainly there (probe 28)."""
    case: bad_inputs.BadInput = make()  # type: ignore[operator]
    result = _parse(case)
    assert isinstance(result, instance.Refusal), result
    assert bad_inputs.status_matches(result.status, bad_inputs.C000), result
    assert result.ids.get("PatientID") == case.patient_id
    assert result.ids.get("StudyInstanceUID")
    assert result.ids.get("SOPInstanceUID") == case.sop_instance_uid
    assert words in result.reason, result.reason
    assert "recognised" not in result.reason


def test_truncated_fragment_reason_gives_the_byte_counts_within_the_error_comment() -> None:
    result = _parse(bad_inputs.encapsulated_pixels_cut_in_fragment())
    assert isinstance(result, instance.Refusal)
    comment = status.error_comment(result.reason)
    assert comment.startswith("Pixel Data truncated in fragment 1: ")
    assert comment.endswith(" of 1030 bytes")


PIXEL_MODULE_CASES = [
    bad_inputs.high_bit_not_bits_stored_minus_one,
    bad_inputs.monochrome_with_three_samples,
    bad_inputs.rgb_with_one_sample,
    bad_inputs.unknown_photometric,
    bad_inputs.pixel_representation_invalid,
]


@pytest.mark.parametrize("make", PIXEL_MODULE_CASES, ids=lambda m: m.__name__)
def test_inconsistent_image_pixel_module_is_refused_with_the_values(make: object) -> None:
    """Were stored with 0000 (probe 28 c10-c14): PS3.3 C.7.6.3.1."""
    case: bad_inputs.BadInput = make()  # type: ignore[operator]
    result = _parse(case)
    assert isinstance(result, instance.Refusal), result
    assert result.status == status.DATASET_INVALID_VALUE, result
    assert status.error_comment(result.reason).startswith(case.reason), result.reason


def test_image_class_beyond_table1_without_pixels_does_not_match_its_class() -> None:
    """Breast Projection X-Ray (not in Table 1) without Pixel Data was stored with 0000."""
    case = bad_inputs.image_class_beyond_table1_without_pixels()
    result = _parse(case)
    assert isinstance(result, instance.Refusal), result
    assert result.status == status.DATASET_MISMATCH
    assert "without Pixel Data" in result.reason
    assert sop_classes.requires_pixels(bad_inputs.BREAST_PROJECTION)
    # non-image classes beyond Table 1 still need none
    assert not sop_classes.requires_pixels("1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive 3D SR


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # signed, Bits Stored 16
        "693_J2KI.dcm",  # signed, Bits Stored 14 in JPEG 2000
        "JPEG-lossy.dcm",  # Bits Stored 12 in 16
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # YBR_FULL_422 from JPEG baseline
        "examples_ybr_color.dcm",  # multi-frame YBR_FULL_422 ultrasound
        "SC_ybr_full_422_uncompressed.dcm",  # native 4:2:2, two thirds the length
        "GDCMJ2K_TextGBR.dcm",  # YBR_RCT
        "rtdose.dcm",  # RT Dose, 32-bit, 15 frames
        "SC_rgb_rle_32bit_2frame.dcm",
        "MR_small_RLE.dcm",
    ],
)
def test_real_files_keep_passing_the_stricter_checks(name: str) -> None:
    """Strict only where the standard is unambiguous and real data agrees."""
    path = get_testdata_file(name)
    assert path is not None
    data = Path(path).read_bytes()
    result = instance.parse(data, max_inflated=MAX_INFLATED)
    if isinstance(result, instance.Refusal):
        # pydicom's test files that lack identifying attributes are refused for those only
        assert result.status == status.DATASET_MISSING_ATTRIBUTE, (name, result)
        assert "required attribute" in result.reason
    else:
        assert isinstance(result, instance.Parsed)


@pytest.mark.parametrize("sop_class", [c.uid for c in sop_classes.TABLE_1])
def test_every_table1_sample_still_passes(sop_class: str, tmp_path: Path) -> None:
    """Segmentations (Bits Allocated 1), signed images, RT Dose 32-bit, colour classes."""
    path = samples.write(samples.make_instance(sop_class), tmp_path / "sample.dcm")
    result = instance.parse(path.read_bytes(), max_inflated=MAX_INFLATED)
    assert isinstance(result, instance.Parsed), result


def test_pixel_count_reason_puts_the_numbers_in_the_error_comment() -> None:
    """The Error Comment (LO, 64) showed "pixel data is 510 bytes but Rows?Columns?Frames?
    Samples?Bits say" and cut off what they say."""
    result = _parse(bad_inputs.pixel_data_too_short())
    assert isinstance(result, instance.Refusal)
    assert status.error_comment(result.reason).startswith(
        "pixel data 256 B, expected 512 (16x16x1x1x16"
    )


@pytest.mark.parametrize("case", bad_inputs.all_bad_inputs(), ids=lambda c: c.name)
def test_every_refusal_reason_is_plain_ascii(case: bad_inputs.BadInput) -> None:
    """The Error Comment is ASCII (default repertoire): "×" went out as "?"."""
    result = _parse(case)
    assert isinstance(result, instance.Refusal)
    assert result.reason.isascii(), result.reason


def test_class_mismatch_reason_names_both_classes_within_64_characters() -> None:
    result = _parse(bad_inputs.sop_class_mismatch())
    assert isinstance(result, instance.Refusal)
    comment = status.error_comment(result.reason)
    assert "CT Image Storage" in comment and "MR Image Storage" in comment, comment


# --------------------------------------------------------------------------------------------
# The encapsulation walk itself


def _encapsulated(items: bytes, delimiter: bool = True) -> tuple[bytes, int, int]:
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    tail = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if delimiter else b""
    data = b"\x00" * 16 + head + items + tail
    start = 16 + len(head)
    return data, start, start + len(items)


def _item(value: bytes, claimed: int | None = None) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(value) if claimed is None else claimed) + value


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        (_item(b"") + _item(b"\xff\xd8\xff\xd9"), None),
        (_item(struct.pack("<2I", 0, 12)) + _item(b"ab" * 2) + _item(b"cd" * 3), None),
        (_item(b""), "no fragment"),
        (_item(b"") + _item(b"abc"), "odd length 3"),
        (_item(b"") + _item(b"", claimed=0xFFFFFFFF), "odd length 4294967295"),
        (_item(b"") + struct.pack("<HHI", 0xFFFE, 0xE00D, 0), "(FFFE,E00D) inside Pixel Data"),
        (_item(b"") + _item(b"ab", claimed=8), "fragment 1: 8 bytes, only 2"),
        (_item(b"", claimed=16), "Basic Offset Table: 16 bytes, only 0"),
    ],
)
def test_pixel_encoding_problem_walks_item_headers(items: bytes, problem: str | None) -> None:
    data, start, end = _encapsulated(items)
    found = walk.pixel_encoding_problem(data, start, end, encapsulated=True)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_pixel_encoding_problem_needs_the_sequence_delimiter() -> None:
    data, start, end = _encapsulated(_item(b"") + _item(b"ab"), delimiter=False)
    found = walk.pixel_encoding_problem(data, start, end, encapsulated=True)
    assert found is not None and "no sequence delimiter" in found


def test_native_pixel_data_is_left_to_the_length_check() -> None:
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 4)
    data = b"\x00" * 16 + head + b"\x01\x02\x03\x04"
    start = 16 + len(head)
    assert walk.pixel_encoding_problem(data, start, start + 4, encapsulated=False) is None
    found = walk.pixel_encoding_problem(data, start, start + 4, encapsulated=True)
    assert found is not None and "defined length 4" in found
