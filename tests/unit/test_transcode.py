"""lucent.dicom.transcode across byte orders: data stored Explicit VR Big Endian sent to a
peer that accepts only little endian (and back), pixel-identical, other values unchanged."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lucent.dicom import transcode

#: pydicom's big endian test files: 16-bit MR, 32-bit RT dose (OW of 32-bit words), RGB.
BIG_ENDIAN = ["MR_small_bigendian.dcm", "rtdose_expb_1frame.dcm", "SC_rgb_small_odd_big_endian.dcm"]


def _values(ds: object) -> dict[int, object]:
    """Every parsed value but the binary ones (the byte order shows only there)."""
    binary = ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ")
    return {int(e.tag): e.value for e in ds if e.tag.element and e.VR not in binary}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BIG_ENDIAN)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_big_endian_to_little_endian_keeps_pixels_and_values(name: str, target: str) -> None:
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    source = dcmread(io.BytesIO(raw))
    own = str(source.file_meta.TransferSyntaxUID)
    assert own == ExplicitVRBigEndian
    assert transcode.changes_byte_order(own, {target})
    assert not transcode.changes_byte_order(own, {target, ExplicitVRBigEndian})
    data, syntax, transcoded, error = transcode.prepare_part10(raw, own, {target}, "")
    assert data is not None, error
    out = dcmread(io.BytesIO(data))
    assert syntax == target == out.file_meta.TransferSyntaxUID and transcoded
    assert np.array_equal(out.pixel_array, source.pixel_array)
    assert _values(out) == _values(source)
    back, _, _, error = transcode.prepare_part10(data, target, {ExplicitVRBigEndian}, "")
    assert back is not None, error
    again = dcmread(io.BytesIO(back))
    assert again.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(again.pixel_array, source.pixel_array)
