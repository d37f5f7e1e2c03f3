"""WADO-RS of a study whose instances are stored in different transfer syntaxes (probe 40).

pydicom's JPEG2000.dcm (JPEG 2000, decodable) and JPEG-lossy.dcm (12-bit JPEG Extended)
share one study and series. JPEG-lossy.dcm's scan reads spectral selection 0..0, which we
repair and decode since probe 55 (``lucent.dicom.jpeg_sequential_repair``); stored here with
0..5 instead, no decoder we ship reads it. PS3.18 8.7.3.5 / 8.7.5: the
media type is chosen for each instance (each part) from the ranges the client accepts;
an instance none of them fits is left out with 206 and a Warning, 406 only when none fits.
Loaded with DCMTK storescu, as a modality would send them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import pydicom.data
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames

from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

FILES = Path(pydicom.data.__file__).parent / "test_files"
J2K_FILE, JPEG12_FILE = FILES / "JPEG2000.dcm", FILES / "JPEG-lossy.dcm"
J2K, JPEG_EXTENDED = "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.51"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM = 'multipart/related; type="application/dicom"'


def _undecodable(dest: Path) -> Path:
    """JPEG12_FILE (same UIDs) with its scan's spectral selection 0..5: neither libjpeg nor
    our 0..0 repair reads it."""
    ds = dcmread(JPEG12_FILE)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    sos = frame.find(b"\xff\xda")
    spectral = sos + 5 + 2 * frame[sos + 4]
    assert frame[spectral : spectral + 2] == b"\x00\x00"
    frame[spectral + 1] = 5
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(dest)
    return dest


@pytest.fixture(scope="module")
def loaded(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both files stored over DIMSE as they are (storescu proposes JPEG 2000 with -xw,
    12-bit JPEG with -xx); SOP Instance UID -> stored transfer syntax."""
    jpeg12 = _undecodable(tmp_path_factory.mktemp("mixed") / "jpeg12-undecodable.dcm")
    for path, propose in ((J2K_FILE, "-xw"), (jpeg12, "-xx")):
        done = storescu("127.0.0.1", server.port, server.ae_title, [path], propose)
        assert done.returncode == 0, done.stderr
    found = {}
    for path in (J2K_FILE, JPEG12_FILE):
        ds = dcmread(path, stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID)
    return found


def _uids(path: Path) -> tuple[str, str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _parts(r: httpx.Response) -> list[tuple[str, bytes]]:
    """(part Content-Type, payload) of a multipart/related response."""
    m = re.search(r'boundary="?([^";]+)"?', r.headers["content-type"])
    assert m, r.headers["content-type"]
    parts = []
    for chunk in r.content.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        ctype = re.search(rb"(?im)^content-type:\s*(.+?)\s*$", head)
        parts.append((ctype.group(1).decode() if ctype else "", payload[:-2]))
    return parts


def _syntaxes(r: httpx.Response) -> dict[str, str]:
    """SOP Instance UID -> transfer syntax of each part, checked against its label."""
    out = {}
    for ctype, payload in _parts(r):
        ds = dcmread(io.BytesIO(payload))
        syntax = str(ds.file_meta.TransferSyntaxUID)
        assert f"transfer-syntax={syntax}" in ctype
        out[str(ds.SOPInstanceUID)] = syntax
    return out


@pytest.mark.parametrize("level", ["study", "series"])
def test_each_instance_comes_in_its_own_stored_syntax_when_both_are_accepted(
    http: httpx.Client, loaded: dict[str, str], level: str
) -> None:
    """Both stored syntaxes accepted: each instance as stored, 200 (was 406 'cannot
    transcode to 1.2.840.10008.1.2.4.91' for the JPEG one)."""
    study, series, _ = _uids(J2K_FILE)
    path = f"/studies/{study}" + (f"/series/{series}" if level == "series" else "")
    accept = f"{DICOM}; transfer-syntax={J2K}, {DICOM}; transfer-syntax={JPEG_EXTENDED}"
    r = http.get(path, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert _syntaxes(r) == loaded


def test_the_most_preferred_range_is_chosen_per_instance(
    http: httpx.Client, loaded: dict[str, str]
) -> None:
    """Native preferred (q=1), '*' at q=0.5: the JPEG 2000 instance decoded, the one no
    decoder reads as stored (both went out as stored)."""
    study, _, j2k_uid = _uids(J2K_FILE)
    jpeg_uid = _uids(JPEG12_FILE)[2]
    accept = f"{DICOM}; transfer-syntax={EXPLICIT_LE}, {DICOM}; transfer-syntax=*; q=0.5"
    r = http.get(f"/studies/{study}", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert _syntaxes(r) == {j2k_uid: EXPLICIT_LE, jpeg_uid: loaded[jpeg_uid]}


def test_an_instance_that_cannot_be_produced_is_left_out_with_206(
    server: LucentServer, web: DICOMwebClient, http: httpx.Client, loaded: dict[str, str]
) -> None:
    """dicomweb-client's default (native only): the JPEG 2000 instance decoded, the other
    left out, 206 with a Warning naming it (the whole study was 406)."""
    study, _, j2k_uid = _uids(J2K_FILE)
    jpeg_uid = _uids(JPEG12_FILE)[2]
    got = web.retrieve_study(study)
    assert [(str(d.SOPInstanceUID), str(d.file_meta.TransferSyntaxUID)) for d in got] == [
        (j2k_uid, EXPLICIT_LE)
    ]
    r = http.get(f"/studies/{study}", headers={"Accept": DICOM})
    assert r.status_code == 206, r.text
    assert jpeg_uid in r.headers["warning"]
    assert r.headers["warning"].startswith("299 ")
    only = f"{DICOM}; transfer-syntax={JPEG_EXTENDED}"  # the JPEG 2000 one cannot be
    r = http.get(f"/studies/{study}", headers={"Accept": only})
    assert r.status_code == 206, r.text
    assert _syntaxes(r) == {jpeg_uid: JPEG_EXTENDED}
    none = f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert http.get(f"/studies/{study}", headers={"Accept": none}).status_code == 406


def test_frames_fall_back_to_the_next_acceptable_range(
    http: httpx.Client, loaded: dict[str, str]
) -> None:
    """Frames of the undecodable instance: native preferred, '*' next: as stored (was 406
    'cannot decode')."""
    study, series, sop = _uids(JPEG12_FILE)
    octets = "multipart/related; type=application/octet-stream"
    accept = f"{octets}; transfer-syntax={EXPLICIT_LE}, {octets}; transfer-syntax=*; q=0.5"
    path = f"/studies/{study}/series/{series}/instances/{sop}/frames/1"
    r = http.get(path, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert [ctype for ctype, _ in _parts(r)] == [
        f"application/octet-stream; transfer-syntax={JPEG_EXTENDED}"
    ]
    r = http.get(path, headers={"Accept": f"{octets}; transfer-syntax={EXPLICIT_LE}"})
    assert r.status_code == 406


def test_bulkdata_of_the_study_is_chosen_per_instance(
    http: httpx.Client, loaded: dict[str, str]
) -> None:
    """Study bulk data, native preferred and '*' next: the JPEG 2000 pixels decoded, the
    JPEG ones as stored (the undecodable instance made it 406)."""
    study, _, _ = _uids(J2K_FILE)
    octets = "multipart/related; type=application/octet-stream"
    accept = f"{octets}; transfer-syntax={EXPLICIT_LE}, {octets}; transfer-syntax=*; q=0.5"
    r = http.get(f"/studies/{study}/bulkdata", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    kinds = {ctype for ctype, _ in _parts(r)}
    assert kinds == {
        f"application/octet-stream; transfer-syntax={EXPLICIT_LE}",
        f"application/octet-stream; transfer-syntax={JPEG_EXTENDED}",
    }
    r = http.get(f"/studies/{study}/bulkdata", headers={"Accept": octets})
    assert r.status_code == 206, r.text
    assert {ctype for ctype, _ in _parts(r)} == {
        f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    }


def test_rendered_instance_without_a_decoder_is_406_not_500(
    server: LucentServer, http: httpx.Client, loaded: dict[str, str]
) -> None:
    """No codec for the stored syntax: 406 with the reason, as the other WADO routes give
    for the same instance (it was 500), and no traceback in the server log."""
    study, series, sop = _uids(JPEG12_FILE)
    before = server.log_path.read_text(errors="replace")
    r = http.get(
        f"/studies/{study}/series/{series}/instances/{sop}/rendered",
        headers={"Accept": "image/jpeg"},
    )
    assert r.status_code == 406, r.text
    assert JPEG_EXTENDED in r.json()["detail"]
    after = server.log_path.read_text(errors="replace")[len(before) :]
    assert "Traceback" not in after
