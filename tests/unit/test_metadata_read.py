"""ServerContext.metadata_bytes: an instance's data set from its metadata object alone (no
pixel object decrypted), for WADO-RS metadata and QIDO includefield. Every transfer syntax
family: native little and big endian, implicit, and encapsulated pixel data."""

from __future__ import annotations

import io
import warnings

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from server.context import ServerContext

FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",  # encapsulated
    "SC_rgb_rle.dcm",
    "rtdose.dcm",  # multi-frame
]
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@pytest.mark.parametrize("name", FILES)
def test_metadata_bytes_hold_every_element_but_the_pixel_values(
    ctx: ServerContext, name: str
) -> None:
    warnings.simplefilter("ignore")
    raw = open(get_testdata_file(name), "rb").read()  # noqa: SIM115
    result = ctx.store(raw, pool="DEFAULT")
    assert result.ok, result.reason
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None
    full = dcmread(io.BytesIO(ctx.instance_bytes(inst)))
    meta = dcmread(io.BytesIO(ctx.metadata_bytes(inst)))
    assert meta.file_meta.TransferSyntaxUID == full.file_meta.TransferSyntaxUID
    others = [e.tag for e in full if int(e.tag) not in PIXEL_TAGS]
    assert [e.tag for e in meta if int(e.tag) not in PIXEL_TAGS] == others
    for tag in others:
        assert meta[tag].value == full[tag].value, tag
    pixel = next(t for t in PIXEL_TAGS if t in full)
    assert meta[pixel].VR == full[pixel].VR and not meta[pixel].value
