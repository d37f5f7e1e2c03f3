"""Which transfer syntax the Store SCP takes when one context proposes several: the first
one the REQUESTOR lists that we accept, on both receive paths.

We used to take the first in our own list (native first, lossy JPEG before lossless), so
DCMTK ``storescu +C`` proposing [JPEG-LS, Explicit LE, ...] for a JPEG-LS file got Explicit
LE, could not decompress and stored nothing, and [JPEG Lossless, JPEG Baseline] got the lossy
one (outside probe 23)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from lucent.api.client import LucentClient
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US = "1.2.840.10008.5.1.4.1.1.6.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"

PROPOSALS = {
    CT: [JPEG_LS, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    MR: [JPEG_LOSSLESS_SV1, JPEG_BASELINE],
    US: [ImplicitVRLittleEndian, RLE, ExplicitVRLittleEndian],
}


@pytest.mark.parametrize("path", ["fast path", "pynetdicom path"])
def test_the_requestors_first_acceptable_syntax_is_taken(server: LucentServer, path: str) -> None:
    ae = AE(ae_title="TSCHOICE")
    for sop, syntaxes in PROPOSALS.items():
        ae.add_requested_context(sop, syntaxes)
    ext = []
    if path == "pynetdicom path":  # a user identity item hands the association to pynetdicom
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 1
        identity.primary_field = b"someone"
        ext.append(identity)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title, ext_neg=ext)
    try:
        assert assoc.is_established
        chosen = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    finally:
        assoc.release()
    assert chosen == {sop: syntaxes[0] for sop, syntaxes in PROPOSALS.items()}


def test_storescu_combined_context_stores_a_compressed_file_as_it_is(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """``storescu -xt +C`` proposes [the file's JPEG-LS, Explicit LE, Explicit BE, Implicit
    LE] in one context: the file goes as it is and is archived byte-identical."""
    sample = ts_samples._dcmtk(tmp_path / "jls.dcm", JPEG_LS, "mr", tmp_path, "dcmcjpls", "+el")
    done = storescu("127.0.0.1", server.port, server.ae_title, [sample.path], "-xt", "+C", "-R")
    assert done.returncode == 0 and "Success" in done.stdout + done.stderr, done.stderr
    sent = dcmread(sample.path)
    archived = api.instance_file(str(sent.SOPInstanceUID))
    got = dcmread(io.BytesIO(archived))
    assert got.file_meta.TransferSyntaxUID == JPEG_LS
    assert got.PixelData == sent.PixelData
