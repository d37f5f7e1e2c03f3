"""What the index hands the viewer per instance (server.index.records.display_attributes).
Real SQLite index, real archive folder."""

from __future__ import annotations

import io

from server.context import ServerContext
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_slice_location_reaches_the_viewer_attributes(ctx: ServerContext) -> None:
    """The workstation's overlay shows Slice Location when the server hands it over."""
    ds = samples.make_instance(CT, patient_id="KS-2")
    ds.SliceLocation = "-42.5"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    result = ctx.store(buf.getvalue(), pool="DEFAULT")
    assert result.ok
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None and inst.attrs["SliceLocation"] == [-42.5]
