"""native_frame decodes exactly as pydicom does (masking, sign extension, byte order)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from lucent.dicom.pixels import native_frame


@pytest.mark.parametrize(
    "bits,stored,signed,big",
    [
        (16, 12, False, False),
        (16, 12, True, False),
        (16, 16, True, False),
        (8, 8, False, False),
        (32, 32, True, False),
        (16, 12, True, True),
        (16, 10, False, True),
    ],
)
def test_matches_pydicom(bits: int, stored: int, signed: bool, big: bool) -> None:
    rng = np.random.default_rng(bits + stored)
    raw = rng.integers(0, 2**bits, size=(7, 5), dtype=np.uint64).astype(f"u{bits // 8}")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian if big else ExplicitVRLittleEndian
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    data = raw.astype(raw.dtype.newbyteorder(">" if big else "<")).tobytes()
    ds.PixelData = data
    got = native_frame(data, 7, 5, bits, stored, signed, big_endian=big)
    assert np.array_equal(got, ds.pixel_array)
    # same kind and width; ours is always in native byte order (pydicom keeps big-endian)
    assert got.dtype == ds.pixel_array.dtype.newbyteorder("=")
