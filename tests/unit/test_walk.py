"""The one-pass header walk ingest reads values from: it must agree with pydicom on every
value and on where Pixel Data lies, and step aside (None) whenever it is unsure."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lucent.dicom import instance, transfer_syntaxes, walk
from tests.data import bad_inputs, samples

MAX = 256 * 1024 * 1024


def _part10_files() -> list[Path]:
    out = []
    for name in get_testdata_files("*") + get_charset_files("*"):
        path = Path(name)
        head = path.read_bytes()[:132] if path.is_file() else b""
        if len(head) == 132 and head[128:132] == b"DICM":
            out.append(path)
    return out


FILES = _part10_files()


def _part10(ds: Dataset) -> bytes:
    return bad_inputs.BadInput(
        "t", "", "", bad_inputs.encode(ds), ds.SOPClassUID, ds.SOPInstanceUID
    ).part10()


def test_every_value_read_from_the_walk_equals_pydicoms() -> None:
    """Differential check over pydicom's test and character-set files: same type, same value,
    for every top-level element (sequences come from pydicom itself)."""
    compared = walked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in FILES:
            framed = instance.frame(path.read_bytes(), max_inflated=MAX)
            if isinstance(framed, instance.Refusal) or framed.top is None:
                continue
            walked += 1
            reference = dcmread(io.BytesIO(framed.data), force=True)
            for tag in sorted(reference.keys()):
                keyword = keyword_for_tag(tag)
                if not keyword or tag >> 16 == 0x7FE0:
                    continue
                expected, got = reference.get(keyword), framed.top.get(keyword)
                assert type(got) is type(expected), (path.name, keyword)
                assert got == expected or str(got) == str(expected), (path.name, keyword)
                assert tag in framed.top
                assert (keyword in framed.top) == (keyword in reference)  # repeating groups
                compared += 1
    assert walked >= 60 and compared >= 3000  # the charset files are among them
    assert walked >= len(FILES) // 2


def test_pixel_span_agrees_with_the_full_parse_or_steps_aside() -> None:
    agreed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in FILES:
            parsed = instance.parse(path.read_bytes(), max_inflated=MAX)
            if isinstance(parsed, instance.Refusal):
                continue
            _, start = instance._split_meta(parsed.file_bytes)
            span = walk.pixel_span(parsed.file_bytes, start, parsed.transfer_syntax)
            if parsed.transfer_syntax == transfer_syntaxes.EXPLICIT_BE:
                assert span is None
            elif span is not None:
                assert span == (parsed.pixel_start, parsed.pixel_end), path.name
                agreed += 1
    assert agreed >= 40


def test_absent_values_missing_attributes_and_defaults_read_like_a_dataset() -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2")
    if "LossyImageCompression" in ds:
        del ds.LossyImageCompression
    framed = instance.frame(_part10(ds), max_inflated=MAX)
    assert not isinstance(framed, instance.Refusal) and framed.top is not None
    top = framed.top
    assert top.get("AccessionNumberX") is None  # not a keyword
    assert top.get("LossyImageCompression", "") == ""  # absent, default returned
    assert "LossyImageCompression" not in top
    with pytest.raises(AttributeError):
        _ = top.LossyImageCompression
    assert str(top.SOPInstanceUID) == ds.SOPInstanceUID
    assert int(top.Rows) == ds.Rows


def test_nested_undefined_length_sequences_are_skipped_and_read_from_pydicom() -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2")
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    outer = Dataset()
    outer.CodeValue = "BRAIN"
    outer.AnatomicRegionModifierSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([outer, outer])
    ds.AnatomicRegionSequence.is_undefined_length = True
    for item in ds.AnatomicRegionSequence:
        item.is_undefined_length_sequence_item = True
        item.AnatomicRegionModifierSequence.is_undefined_length = True
    data = _part10(ds)
    framed = instance.frame(data, max_inflated=MAX)
    assert not isinstance(framed, instance.Refusal) and framed.top is not None
    parsed = instance.parse(data, max_inflated=MAX)
    assert isinstance(parsed, instance.Parsed)
    assert framed.pixel_hint == (parsed.pixel_start, parsed.pixel_end)
    assert data[parsed.pixel_start : parsed.pixel_end] == ds.PixelData
    regions = framed.top.get("AnatomicRegionSequence")
    assert len(regions) == 2
    assert regions[1].AnatomicRegionModifierSequence[0].CodeValue == "T-A0100"


@pytest.mark.parametrize(
    "case",
    [bad_inputs.odd_length_value(), bad_inputs.truncated_pixel_data()],
    ids=lambda c: c.name,
)
def test_what_the_full_parse_must_judge_is_left_to_it(case: bad_inputs.BadInput) -> None:
    """Odd lengths and truncation give no TopLevel: the full parse refuses them as before."""
    framed = instance.frame(case.part10(), max_inflated=MAX)
    assert not isinstance(framed, instance.Refusal)
    assert framed.top is None
    assert isinstance(instance.parse_framed(framed), instance.Refusal)


def test_elements_out_of_order_or_item_tags_at_top_level_leave_it_unsure() -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2")
    data = _part10(ds)
    ts, start = instance._split_meta(data)
    element = struct.pack("<HH2sH", 0x0008, 0x0060, b"CS", 2) + b"MR"  # Modality again
    swapped = data + element  # a lower tag after Pixel Data
    walked = walk.walk(swapped, start, ts)
    assert walked is not None and walked[1] is None
    item_tag = data[:start] + struct.pack("<HHL", 0xFFFE, 0xE000, 0) + data[start:]
    assert walk.walk(item_tag, start, ts) is None
    implicit_in_explicit = data[:start] + struct.pack("<HHL", 0x0008, 0x0020, 0) + data[start:]
    assert walk.walk(implicit_in_explicit, start, ts) is None
    assert walk.walk(data[:-3], start, ts) is None  # truncated


def test_shared_value_cache_keeps_character_sets_and_mutable_values_apart() -> None:
    """Values repeat across a series, so converted ones are shared between data sets; the
    same bytes under another Specific Character Set must still decode on their own, and a
    multi-valued result (a list a caller could change) is never shared."""
    name = "Günther^Jörg".encode("latin-1")
    for charset, expected in (("ISO_IR 100", "Günther^Jörg"), ("ISO_IR 192", None)):
        ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2")
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        framed = instance.frame(_part10(ds), max_inflated=MAX)
        assert not isinstance(framed, instance.Refusal) and framed.top is not None
        reference = dcmread(io.BytesIO(framed.data), force=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = str(framed.top.get("PatientName"))
            assert got == str(reference.PatientName)
        if expected is not None:
            assert got == expected
        else:
            assert got != "Günther^Jörg"  # latin-1 bytes are not UTF-8: replaced, not reused
        first = framed.top.get("ImageOrientationPatient")
        again = instance.frame(_part10(ds), max_inflated=MAX)
        assert not isinstance(again, instance.Refusal) and again.top is not None
        assert again.top.get("ImageOrientationPatient") is not first
