"""A data set may hold each element once (PS3.5 7.1) and one kind of pixel data: pydicom
keeps one copy without a word, so two Pixel Data elements holding two images were stored
and the second served (outside probe 33). Real SQLite index, real archive folder."""

from __future__ import annotations

import io
import struct

import pytest

from lucent.net import status
from server.context import ServerContext
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"


def _with_extra_element(tag: int, value: bytes) -> tuple[bytes, str]:
    """A CT whose data set ends with one more top-level element (after Pixel Data)."""
    ds = samples.make_instance(CT, rows=16, cols=16)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    group, element = tag >> 16, tag & 0xFFFF
    extra = struct.pack("<HH2sHL", group, element, b"OW", 0, len(value)) + value
    return buf.getvalue() + extra, str(ds.SOPInstanceUID)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [(0x7FE00010, status.CANNOT_UNDERSTAND), (0x7FE00008, status.DATASET_MISMATCH)],
    ids=["pixel-data-twice", "float-and-integer-pixel-data"],
)
def test_a_second_pixel_element_is_refused(ctx: ServerContext, tag: int, expected: int) -> None:
    data, uid = _with_extra_element(tag, b"\x01\x00" * 256)
    result = ctx.store(data, pool="DEFAULT", expected_sop_class=CT, expected_sop_instance=uid)
    assert result.status == expected, result
    assert ctx.find_instance(uid) is None
