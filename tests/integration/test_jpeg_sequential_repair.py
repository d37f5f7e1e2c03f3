"""A sequential JPEG whose scan says spectral selection 0..0 (ITU T.81 B.2.3 wants 0..63)
is stored, rendered, served as frames and decompressed for C-GET like DCMTK decodes it
(outside probe 55: pydicom's ``JPEG-lossy.dcm`` was answered 0000, then 406 rendered, 422
as a frame and A702 on C-GET). Real server, DCMTK storescu/getscu/dcmdjpeg."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from lucent.dicom import jpeg_sequential_repair
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

SOURCE = Path(get_testdata_file("JPEG-lossy.dcm"))  # type: ignore[arg-type]


def _dcmtk_pixels(tmp_path: Path) -> np.ndarray:
    """DCMTK's decoding of the file (it repairs the scan with a warning)."""
    out = tmp_path / "dcmtk.dcm"
    subprocess.run(["dcmdjpeg", str(SOURCE), str(out)], check=True, capture_output=True)
    return dcmread(out).pixel_array


def test_the_scan_header_is_repaired_and_decodes_like_dcmtk(tmp_path: Path) -> None:
    ds = dcmread(SOURCE)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    ours = ds.pixel_array  # pydicom with the plugin installed (lucent.dicom imported)
    assert ours.shape == (1024, 256)
    # lossy DCT: two IDCT implementations may round one step apart
    assert np.abs(ours.astype(int) - _dcmtk_pixels(tmp_path).astype(int)).max() <= 1
    # a valid stream has nothing to repair
    valid = dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # type: ignore[arg-type]
    frame = next(generate_frames(valid.PixelData, number_of_frames=1))
    assert jpeg_sequential_repair.repaired_scan(frame) is None


def test_the_server_renders_serves_and_decompresses_it(
    server: LucentServer, api: LucentClient, http: httpx.Client, tmp_path: Path
) -> None:
    # a copy with UIDs of its own: the shared server holds the original in another
    # module's study (test_dicomweb_mixed_syntaxes)
    ds = dcmread(SOURCE)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    copy = tmp_path / "jpeg-lossy-copy.dcm"
    ds.save_as(copy)
    stored = storescu("127.0.0.1", server.port, server.ae_title, [copy], "-xx")
    assert stored.returncode == 0 and "Success" in stored.stdout + stored.stderr, stored.stderr
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    r = http.get(path + "/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text[:300]
    assert Image.open(io.BytesIO(r.content)).size == (256, 1024)
    # C-GET into DCMTK getscu (a registered node: Q/R is closed to others), which proposes
    # only uncompressed syntaxes: decompressed
    node = api.add_node(
        schemas.RemoteNodeIn(name="jpeg-repair-get", ae_title="GETTER", host="127.0.0.1", port=104)
    )
    out = tmp_path / "get"
    out.mkdir()
    got = subprocess.run(
        [shutil.which("getscu") or "getscu", "-S", "-aet", "GETTER", "-aec", server.ae_title,
         "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
         "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
         "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    api.delete_node(node.id)
    files = list(out.iterdir())
    assert len(files) == 1, got.stdout + got.stderr
    back = dcmread(files[0])
    assert back.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    assert np.abs(back.pixel_array.astype(int) - _dcmtk_pixels(tmp_path).astype(int)).max() <= 1
