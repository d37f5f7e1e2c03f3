"""C-STORE SCU with a node's ``propose_compressed`` against DCMTK ``storescp`` configured to
accept one transfer syntax only (Conformance 4.2.4.2; issue 3: "per node, optionally the
compressed list of 4.2.4.2; transcode when the peer only accepts another syntax").

An outside tester's peer that took only Deflated, JPEG-LS lossless or JPEG 2000 lossless got
"accepted none of the proposed presentation contexts". Each instance must now arrive in the
one accepted lossless syntax and decode to the very pixels we hold; a peer that accepts only
a lossy syntax gets nothing of lossless data (a per-instance failure that says why).
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage

from lucent.net import scu
from tests.data import samples
from tests.support.peers import StoreScp, dcmtk_tool

DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"
#: DCMTK's symbolic names (dcmdata/dcxfer.cc) of the syntaxes a test peer accepts.
DCMTK_NAME = {
    DEFLATED: "DeflatedLittleEndianExplicit",
    JPEG_LS_LOSSLESS: "JPEGLSLossless",
    J2K_LOSSLESS: "JPEG2000LosslessOnly",
    RLE_LOSSLESS: "RLELossless",
    JPEG_BASELINE: "JPEGBaseline",
    JPEG_LOSSLESS_SV1: "JPEGLossless:Non-hierarchical-1stOrderPrediction",
    JPEG_LOSSLESS_P14: "JPEGLossless:Non-hierarchical:Process14",
}
#: pydicom test files in other stored syntaxes: 16-bit signed MR, big endian and RLE.
OTHER_STORED = ["MR_small_bigendian.dcm", "MR_small_RLE.dcm"]


class OneSyntaxStoreScp(StoreScp):
    """``storescp`` whose only presentation contexts take ``syntax`` (a ``-xf`` profile:
    the ``+x`` options only set a preference and still accept uncompressed data)."""

    def __init__(self, syntax: str, output_dir: Path, workdir: Path) -> None:
        super().__init__(output_dir, aet="ONESYNTAX", workdir=workdir)
        self.config = self.workdir / "one-syntax.cfg"
        self.config.write_text(
            "[[TransferSyntaxes]]\n[Only]\n"
            f"TransferSyntax1 = {DCMTK_NAME[syntax]}\n"
            "[[PresentationContexts]]\n[OnlyContexts]\n"
            "PresentationContext1 = CTImageStorage\\Only\n"
            "PresentationContext2 = MRImageStorage\\Only\n"
            "PresentationContext3 = SecondaryCaptureImageStorage\\Only\n"
            "[[Profiles]]\n[OnlyProfile]\nPresentationContexts = OnlyContexts\n"
        )

    def _command(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super()._command()
        cmd.remove("+xa")
        cmd.remove("-pm")  # promiscuous mode does not go with a config file
        return [*cmd[:-1], "-xf", str(self.config), "OnlyProfile", cmd[-1]], env


def _sources(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # 64 x 64: openjpeg needs 32 pixels a side for its 6 resolutions (smaller: a J2K-only
    # peer gets a per-instance failure saying so)
    ct = samples.make_instance(CTImageStorage, patient_id="COMP-1", rows=64, cols=64, seed=7)
    paths = [samples.write(ct, folder / "ct.dcm")]
    for name in OTHER_STORED:
        path = folder / name
        path.write_bytes(Path(get_testdata_file(name)).read_bytes())  # type: ignore[arg-type]
        paths.append(path)
    return paths


def _outgoing(path: Path) -> scu.Outgoing:
    ds = dcmread(path, stop_before_pixels=True)
    return scu.Outgoing(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.file_meta.TransferSyntaxUID),
        path.read_bytes,
    )


def _pixels(ds: Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


@pytest.mark.parametrize(
    "syntax",
    [DEFLATED, JPEG_LS_LOSSLESS, J2K_LOSSLESS, RLE_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14],
)
def test_peer_that_takes_one_lossless_syntax_gets_identical_pixels(
    tmp_path: Path, syntax: str
) -> None:
    files = _sources(tmp_path / "src")
    with OneSyntaxStoreScp(syntax, tmp_path / "in", tmp_path / "p") as peer:
        target = scu.Peer(peer.aet, peer.host, peer.port)
        outcomes = scu.store(target, [_outgoing(f) for f in files], compressed=True)
        received = {str(dcmread(p).SOPInstanceUID): p for p in peer.files()}
    assert [o.status for o in outcomes] == [0x0000] * len(files), [o.message for o in outcomes]
    stored = [str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files]
    assert [o.sent_transfer_syntax for o in outcomes] == [syntax] * len(files)
    assert [o.transcoded for o in outcomes] == [ts != syntax for ts in stored]
    for path in files:
        source = dcmread(path)
        got = dcmread(received[str(source.SOPInstanceUID)])  # the same SOP Instance UID
        assert got.file_meta.TransferSyntaxUID == syntax
        assert np.array_equal(_pixels(got), _pixels(source)), path.name
        assert "LossyImageCompression" not in got or got.LossyImageCompression == "00"
        if syntax in (JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14):
            # the peer's own decoder reads the same pixels (the signed 16-bit MR included):
            # JPEG Lossless was encoded by GDCM, DCMTK decodes it (probe 38: a peer taking
            # only SV1 got nothing)
            plain = tmp_path / f"dcmdjpeg-{path.name}"
            done = subprocess.run(
                [dcmtk_tool("dcmdjpeg"), str(received[str(source.SOPInstanceUID)]), str(plain)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert np.array_equal(_pixels(dcmread(plain)), _pixels(source)), path.name


def test_without_propose_compressed_such_a_peer_accepts_nothing(tmp_path: Path) -> None:
    files = _sources(tmp_path / "src")[:1]
    with OneSyntaxStoreScp(JPEG_LS_LOSSLESS, tmp_path / "in", tmp_path / "p") as peer:
        target = scu.Peer(peer.aet, peer.host, peer.port)
        with pytest.raises(scu.AssociationError, match="accepted none"):
            scu.store(target, [_outgoing(f) for f in files])


def test_lossless_data_is_never_sent_lossy(tmp_path: Path) -> None:
    """The peer takes JPEG Baseline: what is stored in it goes as is; an instance of the
    same class stored uncompressed is not JPEG-compressed for it (a per-instance failure)."""
    folder = tmp_path / "src"
    folder.mkdir()
    jpeg = folder / "jpeg.dcm"
    jpeg.write_bytes(Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes())  # type: ignore[arg-type]
    native = samples.write(
        samples.make_instance(SecondaryCaptureImageStorage, rows=64, cols=64), folder / "sc.dcm"
    )
    with OneSyntaxStoreScp(JPEG_BASELINE, tmp_path / "in", tmp_path / "p") as peer:
        target = scu.Peer(peer.aet, peer.host, peer.port)
        outcomes = scu.store(target, [_outgoing(jpeg), _outgoing(native)], compressed=True)
        assert len(peer.files()) == 1
    assert outcomes[0].status == 0x0000 and not outcomes[0].transcoded
    assert outcomes[0].sent_transfer_syntax == JPEG_BASELINE
    assert outcomes[1].status is None and outcomes[1].permanent
    assert "lossy" in outcomes[1].message
