"""Bits above High Bit are ignored in every decoded transfer syntax (PS3.5 8.1.1).

DCMTK's dcmcjpls compresses a 12-bit image (Bits Stored 12, High Bit 11) as JPEG-LS
precision 16 with whatever the source words hold in their top 4 bits; the decoder gives
those bits back, so 0 read as 61440 (probe 22: white noise in the viewer, wrong /frames and
/volume). The native path masks them; the compressed paths must do the same.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from lucent.dicom import pixels
from tests.data.samples import make_instance, write
from workstation.model.pipeline import frames_from_dataset

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def _twelve_bit(signed: bool) -> tuple[Dataset, np.ndarray]:
    """A 16-bit image with Bits Stored 12 whose top 4 bits are junk; the true values."""
    rng = np.random.default_rng(12 + signed)
    lo, hi = (-2048, 2048) if signed else (0, 4096)
    values = rng.integers(lo, hi, size=(16, 24)).astype(np.int32)
    values[0, :4] = [lo, hi - 1, 0, 1]
    junk = rng.integers(1, 16, size=values.shape).astype(np.uint32) << 12
    words = ((values.astype(np.uint32) & 0x0FFF) | junk).astype(np.uint16)
    ds = make_instance(CT)
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = int(signed)
    ds.PixelData = words.tobytes()
    return ds, values


def _dcmcjpls(ds: Dataset, tmp_path: Path) -> Dataset:
    src, dst = tmp_path / "native.dcm", tmp_path / "jls.dcm"
    write(ds, src)
    done = subprocess.run(["dcmcjpls", str(src), str(dst)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = dcmread(dst)
    assert out.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    return out


@pytest.mark.skipif(shutil.which("dcmcjpls") is None, reason="DCMTK dcmcjpls not installed")
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_dcmcjpls_twelve_bit_decodes_without_the_junk_bits(signed: bool, tmp_path: Path) -> None:
    ds, values = _twelve_bit(signed)
    native = pixels.decode_frame(ds, 0)
    assert np.array_equal(native, values)  # the native path (pydicom) was right already
    jls = _dcmcjpls(ds, tmp_path)
    got = pixels.decode_frame(jls, 0)
    assert np.array_equal(got.astype(np.int32), values), (got.min(), got.max())
    assert got.dtype.kind == ("i" if signed else "u")
    # the viewer decodes the file itself: same values there
    (frame,) = frames_from_dataset(jls)
    assert np.array_equal(frame.stored.astype(np.int32), values)
    # and what the server's /rendered draws: a full-range window over 12 bits, not 16
    assert pixels.render(jls, 0).shape == values.shape


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_decoded_array_bits_above_high_bit_ignored(signed: bool) -> None:
    """Independent of the codec: what a decoder hands back is masked / sign-extended."""
    ds, values = _twelve_bit(signed)
    words = np.frombuffer(ds.PixelData, np.uint16).reshape(values.shape)
    raw = words.view(np.int16) if signed else words
    got = pixels.ignore_bits_above_high_bit(ds, raw)
    assert np.array_equal(got.astype(np.int32), values)
    assert np.array_equal(raw, words.view(raw.dtype))  # the input is left as it was
    ds.BitsStored, ds.HighBit = 16, 15
    assert pixels.ignore_bits_above_high_bit(ds, raw) is raw
    floats = raw.astype(np.float32)
    assert pixels.ignore_bits_above_high_bit(ds, floats) is floats


@pytest.mark.skipif(shutil.which("dcmcjpls") is None, reason="DCMTK dcmcjpls not installed")
def test_the_perfusion_reader_drops_the_junk_bits_too(tmp_path: Path) -> None:
    """lucent.perfusion read pixel_array as decoded: a 12-bit JPEG-LS perfusion series gave
    concentration curves of values like 61440 + HU."""
    from lucent.perfusion import series

    ds, values = _twelve_bit(signed=False)
    _dcmcjpls(ds, tmp_path)
    got = series._stored_values(tmp_path / "jls.dcm")
    assert np.array_equal(got, values)
