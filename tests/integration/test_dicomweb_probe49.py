"""DICOMweb answers for what an archive accepts (outside probe 49), against the real server.

An instance stored by STOW-RS (200) or C-STORE (DCMTK storescu) with an empty value inside
a DS/IS/PN/SH list, or a DS/IS that is no number, made WADO-RS metadata (the instance and
its whole study) and QIDO-RS with includefield answer 500; NaN and infinite FL/FD/DS
values were written as bare NaN/Infinity tokens, which no strict JSON parser reads; STOW-RS
responses listed their attributes out of tag order; an empty XML search answer was a
multipart body without a part; a STOW-RS body that stalled was never timed out.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from server import config
from server.accounts import users
from server.api import body_limit
from server.api.app import create_app
from server.context import ServerContext
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import free_port

MR = "1.2.840.10008.5.1.4.1.1.4"
XML = 'multipart/related; type="application/dicom+xml"'
NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: a NaN/Infinity token is an error (as in JSON.parse)."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def instance(patient: str, study: str | None = None, **raw: tuple[str, bytes]) -> Dataset:
    """An MR image with some values set to exactly these bytes (keyword -> (VR, bytes)),
    which pydicom would not write itself."""
    ds = samples.make_instance(MR, patient_id=patient, study_uid=study)
    for keyword, (vr, value) in raw.items():
        tag = Tag(keyword)
        ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return ds


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(http: httpx.Client, datasets: list[Dataset], path: str = "/studies") -> httpx.Response:
    boundary = generate_uid().replace(".", "")
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(ds) + b"\r\n"
        for ds in datasets
    )
    body += f"--{boundary}--\r\n".encode()
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return http.post(path, content=body, headers={"Content-Type": ctype})


def series_path(ds: Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def xml_parts(r: httpx.Response) -> list[ET.Element]:
    boundary = r.headers["content-type"].split("boundary=")[1].strip('"').encode()
    out = []
    for chunk in r.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        out.append(ET.fromstring(chunk.partition(b"\r\n\r\n")[2].strip()))
    return out


def xml_values(doc: ET.Element, tag: str) -> list[str | None]:
    node = doc.find(f"d:DicomAttribute[@tag='{tag}']", NS)
    assert node is not None, tag
    return [v.text for v in node.findall("d:Value", NS)]


# keyword -> (VR, stored bytes, DICOM JSON "Value" we answer)
BAD_VALUES: dict[str, tuple[str, bytes, list[Any]]] = {
    "SpatialResolution": ("DS", b"1\\\\3 ", [1.0, None, 3.0]),  # empty middle value
    "PixelAspectRatio": ("IS", b"1\\ ", [1, None]),  # empty second value
    "PersonName": ("PN", b"A^B\\ ", [{"Alphabetic": "A^B"}, None]),
    "SliceThickness": ("DS", b"abc ", ["abc"]),  # no number: its stored text
    "AcquisitionNumber": ("IS", b"x1", ["x1"]),
    "ConvolutionKernel": ("SH", b"a\\\\c ", ["a", None, "c"]),  # F.2.5: null
}


def test_metadata_and_search_survive_values_that_are_not_numbers(
    http: httpx.Client, server: LucentServer, tmp_path: Path
) -> None:
    """PS3.18 F.2.5: an empty value inside a list is null; F.2.3 (Table F.2.3-1): DS and IS
    are Number or String, so one that is no number goes out as its stored text. Each was a
    500 for the instance's metadata, its whole study's metadata and QIDO with
    includefield, after the instance had been accepted (probe 49)."""
    study = generate_uid()
    raw = {kw: (vr, value) for kw, (vr, value, _) in BAD_VALUES.items()}
    by_stow = instance("P49-BAD", study, **raw)
    by_store = instance("P49-BAD", study, **raw)
    assert stow(http, [by_stow]).status_code == 200
    done = storescu(
        "127.0.0.1",
        server.port,
        server.ae_title,
        [samples.write(by_store, tmp_path / "bad.dcm")],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for ds in (by_stow, by_store):
        r = http.get(f"{series_path(ds)}/instances/{ds.SOPInstanceUID}/metadata")
        assert r.status_code == 200, r.text[:200]
        [meta] = strict_json(r.text)
        for kw, (_, _, expected) in BAD_VALUES.items():
            assert meta[f"{Tag(kw):08X}"].get("Value") == expected, kw
        for kw in BAD_VALUES:
            tag = f"{Tag(kw):08X}"
            r = http.get(f"{series_path(ds)}/instances", params={"includefield": tag})
            assert r.status_code == 200, (kw, r.text[:200])
            [found] = [
                m for m in strict_json(r.text) if m["00080018"]["Value"] == [ds.SOPInstanceUID]
            ]
            assert found[tag].get("Value") == BAD_VALUES[kw][2], kw
    r = http.get(f"/studies/{study}/metadata")
    assert r.status_code == 200, r.text[:200]
    assert len(strict_json(r.text)) == 2
    r = http.get(f"/studies/{study}/metadata", headers={"Accept": XML})
    assert r.status_code == 200, r.text[:200]
    for doc in xml_parts(r):
        assert xml_values(doc, "00181050") == ["1", None, "3"]
        assert xml_values(doc, "00181210") == ["a", None, "c"]
        assert xml_values(doc, "00180050") == ["abc"]


def test_non_finite_numbers_are_valid_json(http: httpx.Client) -> None:
    """RFC 8259 section 6 has no NaN or Infinity: an FD NaN, an FL +Inf and a DS "1e400"
    (valid, beyond a double) made the metadata unreadable to strict parsers. FL/FD ones
    are the strings "NaN"/"Infinity"/"-Infinity", a DS its stored text (F.2.3 note: a
    String preserves the original); the XML answer says the same (it wrote nan/inf)."""
    ds = instance("P49-NAN", SpatialResolution=("DS", b"1e400 "))
    ds.add_new(0x00189328, "FD", [1.5, float("nan")])  # Exposure Time in ms
    ds.add_new(0x00189184, "FL", float("inf"))
    ds.add_new(0x00189185, "FD", float("-inf"))
    assert stow(http, [ds]).status_code == 200
    path = f"{series_path(ds)}/instances/{ds.SOPInstanceUID}/metadata"
    r = http.get(path)
    assert r.status_code == 200
    [meta] = strict_json(r.text)
    assert meta["00189328"]["Value"] == [1.5, "NaN"]
    assert meta["00189184"]["Value"] == ["Infinity"]
    assert meta["00189185"]["Value"] == ["-Infinity"]
    assert meta["00181050"]["Value"] == ["1e400"]
    r = http.get(f"{series_path(ds)}/instances", params={"includefield": "00189328,00181050"})
    [found] = strict_json(r.text)
    assert found["00189328"]["Value"] == [1.5, "NaN"] and found["00181050"]["Value"] == ["1e400"]
    [doc] = xml_parts(http.get(path, headers={"Accept": XML}))
    assert xml_values(doc, "00189328") == ["1.5", "NaN"]
    assert xml_values(doc, "00189184") == ["Infinity"]
    assert xml_values(doc, "00181050") == ["1e400"]


def test_stow_response_attributes_in_tag_order(http: httpx.Client) -> None:
    """PS3.18 F.2.2: attribute objects in ascending tag order. A refused instance (409)
    answered 00081199 before 00081198; one stored and one refused (202) 00081190,
    00081199, 00081198."""
    here = instance("P49-ORDER")
    elsewhere = instance("P49-ORDER")
    study = f"/studies/{here.StudyInstanceUID}"
    for datasets, status in (([elsewhere], 409), ([here, elsewhere], 202)):
        r = stow(http, datasets, study)
        assert r.status_code == status, r.text[:200]
        keys = list(strict_json(r.text))
        assert keys == sorted(keys) and "00081198" in keys, keys
        items = r.json()["00081198"]["Value"]
        assert all(list(item) == sorted(item) for item in items)


def test_search_with_no_match(http: httpx.Client) -> None:
    """PS3.18 Table 10.6.3-1: 204 No Content when the search has zero results. As
    multipart/related XML we sent a body without a part, which RFC 2046 5.1.1 does not
    allow; JSON keeps 200 with an empty array (valid DICOM JSON)."""
    r = http.get("/studies", params={"PatientID": "P49-NOPE"}, headers={"Accept": XML})
    assert r.status_code == 204 and r.content == b""
    r = http.get("/studies", params={"PatientID": "P49-NOPE"})
    assert r.status_code == 200 and r.json() == []


# ------------------------------------------------------------------- stalled bodies
ADMIN = ("admin", "correct-horse-battery")


@pytest.fixture
def live_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, str]]:
    """The API app served by uvicorn on a loopback port, with a body timeout of 1.5 s
    (the real one is a minute): (port, admin token)."""
    monkeypatch.setattr(body_limit, "BODY_READ_TIMEOUT", 1.5, raising=False)
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "accounts": {"retention_interval_minutes": 0.0},
            "pools": [{"name": "DEFAULT", "ae_title": "LUCENT", "port": 0}],
        }
    )
    ctx = ServerContext(settings, migrate=True)
    with ctx.WriteSession() as db, db.begin():
        users.create_user(db, ADMIN[0], ADMIN[1], role="administrator")
    port = free_port()
    served = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not served.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": ADMIN[0], "password": ADMIN[1]},
        )
        assert r.status_code == 200, r.text
        yield port, r.json()["token"]
    finally:
        served.should_exit = True
        thread.join(30)
        ctx.close()


def _stall(port: int, head: str, sent: bytes, wait: float = 20.0) -> tuple[float, bytes]:
    """Send a request head and part of its body, then nothing: (seconds until the server
    answered, the answer)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + sent)
        s.settimeout(wait)
        start = time.monotonic()
        try:
            answer = s.recv(4096)
        except TimeoutError:
            return wait, b""
        return time.monotonic() - start, answer


def test_stalled_body_is_timed_out(live_app: tuple[int, str]) -> None:
    """RFC 9110 15.5.9: a body that stops arriving is answered 408 and the connection
    closed. A STOW-RS that declared 100000 bytes and sent 7 had no answer after 600 s
    (uvicorn has no body timeout); the small JSON bodies (login) are bounded the same way."""
    port, token = live_app
    stow_head = (
        "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b49\r\n'
        "Content-Length: 100000\r\n\r\n"
    )
    waited, answer = _stall(port, stow_head, b"--b49\r\n")
    assert answer.startswith(b"HTTP/1.1 408"), (waited, answer[:200])
    assert waited < 10
    login_head = (
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    waited, answer = _stall(port, login_head, b'{"user')
    assert answer.startswith(b"HTTP/1.1 408"), (waited, answer[:200])
    # a body that keeps coming, however slowly, is read to its end
    ds = samples.make_instance(MR, patient_id="P49-SLOW")
    body = b"--b49\r\nContent-Type: application/dicom\r\n\r\n" + part10(ds) + b"\r\n--b49--\r\n"
    head = stow_head.replace("Content-Length: 100000", f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode())
        for at in range(0, len(body), len(body) // 3 + 1):
            time.sleep(1.0)  # under the timeout between pieces, over it in all
            s.sendall(body[at : at + len(body) // 3 + 1])
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
