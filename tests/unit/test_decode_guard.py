"""Malformed JPEG streams never reach a decoder (outside probe 45).

GDCM, the first JPEG decoder pydicom tries here, aborts the whole process on some malformed
streams (an uncaught C++ exception, "terminate called after throwing gdcm::Exception"): one
archived instance took the server's API and DICOM listener down at its first frame
request. Such streams are now refused at ingest (``codestream``: the JPEG marker walk goes
on to the scan header; an Extended Offset Table must describe one fragment per frame, of
its length), and screened before any decode for what was archived earlier
(``pixels.decode_frame``). Each decode runs in a child process here, so a regression shows
as a failed test, not a dead test worker.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from lucent.dicom import codestream
from lucent.net import status


def _item(value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(value)) + value


def _jpeg() -> bytes:
    grey = (np.add.outer(np.arange(64), np.arange(64)) * 2).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey, "L").save(out, format="JPEG", quality=90)
    return out.getvalue()


def _dataset(pixel_data: bytes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def junk_before_scan() -> Dataset:
    """8 zero bytes between the last table and the SOS marker, after the SOF."""
    j = _jpeg()
    k = j.index(b"\xff\xda")
    return _dataset(_item(b"") + _item(j[:k] + bytes(8) + j[k:]))


def extended_table_over_two_fragments() -> Dataset:
    """One frame split into an SOI-only fragment and the rest, with an Extended Offset
    Table whose length takes in the second item's header."""
    j = _jpeg()
    first, second = _item(j[:2]), _item(j[2:])
    ds = _dataset(_item(b"") + first + second)
    ds.ExtendedOffsetTable = struct.pack("<Q", 0)
    ds.ExtendedOffsetTableLengths = struct.pack("<Q", len(first) + len(second) - 8)
    return ds


CASES = {
    "junk_before_scan": junk_before_scan,
    "eot_two_fragments": extended_table_over_two_fragments,
}


def _geometry(ds: Dataset) -> codestream.Geometry:
    return codestream.Geometry(ds.Rows, ds.Columns, 1, 8, 1)


@pytest.mark.parametrize("name", list(CASES))
def test_ingest_check_refuses_the_stream(name: str) -> None:
    ds = CASES[name]()
    value = ds.PixelData
    eot = ds.get("ExtendedOffsetTable")
    lengths = ds.get("ExtendedOffsetTableLengths")
    problem = codestream.check(value, 0, len(value), JPEGBaseline8Bit, _geometry(ds), eot, lengths)
    assert problem is not None and problem[0] == status.CANNOT_UNDERSTAND, problem


def test_a_good_jpeg_and_a_good_extended_table_pass() -> None:
    j = _jpeg()
    ds = _dataset(_item(b"") + _item(j))
    assert codestream.frame_problem(ds) is None
    ds.ExtendedOffsetTable = struct.pack("<Q", 0)
    ds.ExtendedOffsetTableLengths = struct.pack("<Q", len(j))
    assert codestream.frame_problem(ds) is None


_CHILD = """
import sys
from pydicom import dcmread
from lucent.dicom import pixels
from workstation.model.pipeline import frames_from_dataset
ds = dcmread(sys.argv[1])
try:
    if sys.argv[2] == "viewer":
        frames_from_dataset(ds)
    else:
        pixels.decode_frame(ds, 0)
    print("decoded")
except Exception as exc:
    print("refused:", exc)
"""


def _assert_refused_in_a_child(ds: Dataset, path: Path, decoder: str) -> None:
    """Decode ``ds`` in a child process (``decoder``: "api" or "viewer"): it must exit
    normally, refusing the stream as malformed (an abort shows as a negative exit code)."""
    ds.save_as(path, enforce_file_format=True)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), decoder],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert done.stdout.startswith("refused:") and "malformed" in done.stdout, done.stdout


@pytest.mark.parametrize("name", list(CASES))
def test_decoding_an_archived_malformed_stream_is_an_error_not_an_abort(
    name: str, tmp_path: Path
) -> None:
    _assert_refused_in_a_child(CASES[name](), tmp_path / f"{name}.dcm", "api")


def test_the_viewer_refuses_a_malformed_stream_without_aborting(tmp_path: Path) -> None:
    """The workstation decodes what it downloads with the same decoders."""
    _assert_refused_in_a_child(junk_before_scan(), tmp_path / "junk.dcm", "viewer")
