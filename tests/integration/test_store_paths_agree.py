"""The Store SCP's two receive paths write the same thing: associations proposing only
storage take the fast path (server.dimse.fast_store), any other (here: storage plus a
C-FIND context) goes through pynetdicom. Outside probe: the pynetdicom path archived files
naming pynetdicom as their implementation, without the Source AE Title, and sent reason
texts with non-ASCII bytes in the Error Comment."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

from lucent.api.client import LucentClient
from lucent.net import upper_layer
from tests.data import samples
from tests.support.lucent import LucentServer


def _send(server: LucentServer, ds: Dataset, *, full_stack: bool) -> Dataset:
    ae = AE(ae_title="PATHTEST")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    if full_stack:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert answer is not None and "Status" in answer
    return answer


@pytest.mark.parametrize("full_stack", [False, True], ids=["fast", "pynetdicom"])
def test_archived_file_meta_names_us_and_the_caller(
    server: LucentServer, api: LucentClient, full_stack: bool
) -> None:
    ds = samples.make_instance(CTImageStorage, patient_id="PATHS-1", study_uid=generate_uid())
    assert _send(server, ds, full_stack=full_stack).Status == 0
    back = dcmread(io.BytesIO(api.instance_file(ds.SOPInstanceUID)))
    meta = back.file_meta
    assert meta.ImplementationClassUID == upper_layer.IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == upper_layer.IMPLEMENTATION_VERSION
    assert meta.SourceApplicationEntityTitle.strip() == "PATHTEST"
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.PixelData == ds.PixelData


@pytest.mark.parametrize("full_stack", [False, True], ids=["fast", "pynetdicom"])
def test_error_comment_stays_in_the_default_repertoire(
    server: LucentServer, full_stack: bool
) -> None:
    ds = samples.make_instance(CTImageStorage, patient_id="PATHS-2")
    ds.Rows = 3  # pixel data no longer fit: refused with a reason that says "3 × ..."
    answer = _send(server, ds, full_stack=full_stack)
    assert answer.Status != 0
    comment = answer.get("ErrorComment", "")
    assert comment and str(comment).isascii(), comment
