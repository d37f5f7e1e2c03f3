"""The real-peer launchers start, answer and stop cleanly (tests/support/peers.py, postgres.py).

Every other integration test and benchmark relies on them, so a broken launcher should fail
here, with its own name, and fast.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.support import peers
from tests.support.peers import (
    DcmQrScp,
    Orthanc,
    StoreScp,
    dicom_echo_ok,
    free_port,
    run_storescu,
    wait_for_port,
)
from tests.support.postgres import TemporaryPostgres, postgres_available

needs_dcmtk = pytest.mark.skipif(
    shutil.which("/usr/bin/storescu") is None and shutil.which("storescu") is None,
    reason="DCMTK not installed (Debian package dcmtk)",
)


def _has_orthanc() -> bool:
    try:
        peers.orthanc_binary()
    except peers.PeerError:
        return False
    return True


def write_small_ct(folder: Path, n: int = 1) -> list[Path]:
    """n tiny CT images of one series (64x64), enough to prove that data arrives."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Peer^Test"
        ds.PatientID = "PEER0001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "CT"
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.full((64, 64), i, dtype="<i2").tobytes()
        path = folder / f"ct{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_free_port_is_free_and_not_repeated() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_dcmtk_tool_is_the_native_binary_not_pynetdicoms_app() -> None:
    """pynetdicom puts Python apps named storescu/echoscu in .venv/bin: never run those."""
    if shutil.which("/usr/bin/echoscu") is None:
        pytest.skip("DCMTK not installed")
    assert peers.dcmtk_tool("echoscu") == "/usr/bin/echoscu"


@needs_dcmtk
def test_storescp_answers_echo_and_receives_a_file(tmp_path: Path) -> None:
    files = write_small_ct(tmp_path / "in", 2)
    with StoreScp(tmp_path / "out") as scp:
        assert scp.echo_ok()
        result = run_storescu(files, scp.host, scp.port, scp.aet)
        assert result.ok, result.output
        assert set(result.statuses.values()) == {"Success"}
        assert len(scp.files()) == 2
    assert scp.proc is None


@needs_dcmtk
def test_storescu_parallel_associations_and_a_refusal_code(tmp_path: Path) -> None:
    """N associations split the files; with status_codes the numeric DIMSE status is kept."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    files = write_small_ct(tmp_path / "in", 4)
    ae = AE()
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0xA700)],
    )
    try:
        result = run_storescu(files, "127.0.0.1", port, "ANY", associations=2, status_codes=True)
    finally:
        server.shutdown()
    assert len(result.returncodes) == 2
    assert result.sent == 0 and result.failed == 4
    assert set(result.codes.values()) == {0xA700}


@needs_dcmtk
def test_dcmqrscp_answers_echo_and_stores(tmp_path: Path) -> None:
    files = write_small_ct(tmp_path / "in", 1)
    with DcmQrScp(peers={"lucent": ("LUCENT", "127.0.0.1", free_port())}) as qr:
        assert qr.echo_ok()
        result = run_storescu(files, qr.host, qr.port, qr.aet)
        assert result.ok, result.output + qr.log_tail()
        assert any(p.name != "index.dat" for p in qr.storage_dir.iterdir())


@needs_dcmtk
@pytest.mark.skipif(not _has_orthanc(), reason="Orthanc not installed (Debian package orthanc)")
def test_orthanc_answers_echo_rest_and_storescu(tmp_path: Path) -> None:
    files = write_small_ct(tmp_path / "in", 2)
    modalities = {"lucent": ["LUCENT", "127.0.0.1", 11112]}
    with Orthanc(modalities=modalities, user=("bench", "secret")) as orthanc:
        assert orthanc.echo_ok()
        assert orthanc.get("/system")["DicomAet"] == "ORTHANC"
        assert "lucent" in orthanc.get("/modalities")
        result = run_storescu(files[:1], orthanc.host, orthanc.dicom_port, orthanc.aet)
        assert result.ok, result.output
        assert orthanc.upload(files[1])["Status"] == "Success"
        assert orthanc.count_instances() == 2
        orthanc.delete_all()
        assert orthanc.count_instances() == 0
    assert not dicom_echo_ok(orthanc.host, orthanc.dicom_port, orthanc.aet, timeout=2)


def test_wait_for_port_reports_a_dead_process() -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(peers.PeerError, match="exited with code 3"):
        wait_for_port("127.0.0.1", free_port(), 5, proc=proc)


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 not installed")
def test_temporary_postgres_accepts_connections() -> None:
    import psycopg

    pg = TemporaryPostgres()
    with pg as url:
        assert url.startswith("postgresql+psycopg://lucent:")
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("select current_database()").fetchone() == ("lucent",)
        other = pg.create_database("second")
        assert other.endswith("/second")
        root = pg.root
    assert root is not None and not root.exists()
