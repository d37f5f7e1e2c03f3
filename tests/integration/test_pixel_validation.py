"""Validation of Pixel Data and the Image Pixel module against the real server (probe 28):
DCMTK storescu and a raw pynetdicom C-STORE into our Store SCP, then the API's placeholders
(Conformance 4.1.3.2) and frames."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.uid import RLELossless

from lucent.api.client import ApiError, LucentClient
from lucent.api.schemas import PlaceholderOut
from tests.data import bad_inputs
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

STORESCU_CASES = [
    bad_inputs.high_bit_not_bits_stored_minus_one,
    bad_inputs.monochrome_with_three_samples,
    bad_inputs.rgb_with_one_sample,
    bad_inputs.unknown_photometric,
    bad_inputs.pixel_representation_invalid,
    bad_inputs.image_class_beyond_table1_without_pixels,
]


def _entries(api: LucentClient, sop_uid: str) -> list[PlaceholderOut]:
    return [e for e in api.placeholders() if e.sop_instance_uid == sop_uid]


def test_storescu_inconsistent_pixel_modules_get_a900_placeholders(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Stored with 0000 before: High Bit != Bits Stored - 1, MONOCHROME2 with three
    samples, RGB with one, an unknown Photometric Interpretation, Pixel Representation 7,
    and a Breast Projection X-Ray (not in Table 1) without Pixel Data."""
    cases = [make() for make in STORESCU_CASES]
    files = [case.write(tmp_path) for case in cases]
    profile = ts_samples.write_storescu_config(
        tmp_path / "profile.cfg", [(c.sop_class_uid, c.transfer_syntax) for c in cases]
    )
    out = storescu("127.0.0.1", server.port, server.ae_title, files, "-nh", *profile)
    log = out.stdout + out.stderr
    assert log.count("Received Store Response") == len(cases), log[-3000:]
    for case in cases:
        entries = _entries(api, case.sop_instance_uid)
        assert entries, f"no placeholder for {case.name}"
        entry = entries[0]
        assert bad_inputs.status_matches(entry.status, bad_inputs.A900), (case.name, entry)
        assert entry.reason.startswith(case.reason), (case.name, entry.reason)
        assert entry.patient_id == case.patient_id
        with pytest.raises(ApiError) as missing:  # nothing was archived
            api.instance(case.sop_instance_uid)
        assert missing.value.status == 404


RAW_CASES = [
    (bad_inputs.encapsulated_syntax_native_pixels, "defined length"),
    (bad_inputs.native_syntax_encapsulated_pixels, "native syntax"),
    (bad_inputs.non_item_in_pixel_sequence, "where an item belongs"),
    (bad_inputs.pixel_fragment_overruns, "before the sequence delimiter"),
    (bad_inputs.encapsulated_pixels_without_delimiter, "no sequence delimiter"),
    (bad_inputs.encapsulated_pixels_cut_in_fragment, "truncated in fragment 1"),
    (bad_inputs.sequences_nested_too_deep, "nested too deep"),
]


@pytest.mark.parametrize(("make", "words"), RAW_CASES, ids=lambda v: getattr(v, "__name__", v))
def test_broken_pixel_encoding_is_refused_under_its_patient_and_study(
    make: object, words: str, server: LucentServer, api: LucentClient
) -> None:
    """C-range, nothing archived, and the placeholder under the instance's own patient and
    study with what is wrong: the unreadable ones landed under UNKNOWN with "no DICOM
    attributes could be recognised"; the others were stored with 0000."""
    case: bad_inputs.BadInput = make()  # type: ignore[operator]
    code = bad_inputs.send_raw_c_store(case, "127.0.0.1", server.port, called_ae=server.ae_title)
    assert code is not None and bad_inputs.status_matches(code, bad_inputs.C000), code
    entries = _entries(api, case.sop_instance_uid)
    assert entries, f"no placeholder for {case.name}"
    assert entries[0].patient_id == case.patient_id
    assert entries[0].study_uid
    assert words in entries[0].reason, entries[0].reason
    with pytest.raises(ApiError) as missing:
        api.instance(case.sop_instance_uid)
    assert missing.value.status == 404


def test_frame_that_cannot_be_decoded_answers_422_with_the_reason(
    server: LucentServer, api: LucentClient
) -> None:
    """Well-formed encapsulation and a well-formed RLE header (one segment per sample byte,
    PS3.5 G) around segments far too short for the image: archived (we never decode on
    ingest, only the codestream headers are checked), and its frame answered a bare 500
    with a traceback in the log."""
    ds = bad_inputs._ct()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(256)
    data = bad_inputs.encode(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    rle = struct.pack("<16L", 1, 64, *[0] * 14) + b"\x00\x00"  # one byte, 256 needed
    items = bad_inputs._fragment(b"") + bad_inputs._fragment(rle) + bad_inputs.SEQUENCE_DELIMITER
    case = bad_inputs.BadInput(
        "short_rle_segment", "", "", data[:at] + head + items, bad_inputs.CT,
        str(ds.SOPInstanceUID), RLELossless,
    )  # fmt: skip
    code = bad_inputs.send_raw_c_store(case, "127.0.0.1", server.port, called_ae=server.ae_title)
    assert code == 0x0000
    with pytest.raises(ApiError) as failed:
        api.frame(case.sop_instance_uid, 1)
    assert failed.value.status == 422
    assert "pixel data cannot be decoded" in failed.value.detail
