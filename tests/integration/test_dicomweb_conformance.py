"""DICOMweb conformance (PS3.18) against the real server: what standard clients send.

Each test names the PS3.18 section it checks. Clients: the `dicomweb-client` package and
plain httpx with the Accept headers OHIF/Cornerstone and curl users send.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from lucent.api.client import LucentClient
from tests.data import samples
from tests.support.lucent import LucentServer

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
IMPLICIT_LE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def studies(web: DICOMwebClient) -> list[Dataset]:
    """Two single-instance studies of one patient (PatientID CONF-1)."""
    out = [samples.make_instance(MR, patient_id="CONF-1", patient_name="Conf^Ann") for _ in "ab"]
    web.store_instances(out)
    return out


@pytest.fixture(scope="module")
def rle(web: DICOMwebClient) -> tuple[Dataset, np.ndarray]:
    """An instance stored RLE Lossless (encapsulated), with its native pixels."""
    ds = samples.make_instance(MR, patient_id="CONF-RLE")
    native = ds.pixel_array.copy()
    ds.compress(RLELossless)
    web.store_instances([ds])
    return ds, native


@pytest.fixture(scope="module")
def study3(web: DICOMwebClient) -> list[Dataset]:
    """One study: series 1 of three 64x64 MR images that differ, series 2 one enhanced MR
    of three frames."""
    study, first, second = generate_uid(), generate_uid(), generate_uid()
    out = [
        samples.make_instance(
            MR,
            patient_id="CONF-THUMB",
            study_uid=study,
            series_uid=first,
            instance_number=i + 1,
            seed=i,
            rows=64,
            cols=64,
        )
        for i in range(3)
    ]
    out.append(
        samples.make_instance(
            ENHANCED_MR,
            patient_id="CONF-THUMB",
            study_uid=study,
            series_uid=second,
            series_number=2,
            rows=64,
            cols=64,
        )
    )
    web.store_instances(out)
    return out


def _path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _multipart(r: httpx.Response) -> list[tuple[str, bytes]]:
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


def _locations(r: httpx.Response) -> list[str]:
    """The Content-Location of each part of a multipart/related response ('' if none)."""
    m = re.search(r'boundary="?([^";]+)"?', r.headers["content-type"])
    assert m, r.headers["content-type"]
    out = []
    for chunk in r.content.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head = chunk.partition(b"\r\n\r\n")[0]
        where = re.search(rb"(?im)^content-location:\s*(.+?)\s*$", head)
        out.append(where.group(1).decode() if where else "")
    return out


def _picture(data: bytes) -> np.ndarray:
    """A decoded JPEG/PNG, checked not to be blank (one flat grey)."""
    arr = np.asarray(Image.open(io.BytesIO(data)))
    assert arr.size and int(arr.max()) > int(arr.min()), "blank image"
    return arr


def _stow(
    http: httpx.Client, body: bytes, content_type: str, path: str = "/studies"
) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": content_type})


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------ QIDO-RS
def test_qido_limit_that_truncates_says_so_in_a_warning(
    http: httpx.Client, studies: list[Dataset]
) -> None:
    """PS3.18 8.3.4.4: a limit that leaves matches out is flagged with Warning 299."""
    r = http.get("/studies", params={"PatientID": "CONF-1", "limit": "1"})
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["content-type"].startswith("application/dicom+json")
    assert r.headers.get("warning", "").startswith("299 ")
    assert "additional results" in r.headers["warning"]
    r = http.get("/studies", params={"PatientID": "CONF-1", "limit": "2"})
    assert len(r.json()) == 2 and "warning" not in r.headers
    r = http.get("/studies", params={"PatientID": "CONF-1", "limit": "1", "offset": "1"})
    assert len(r.json()) == 1 and "warning" not in r.headers


def test_qido_unknown_attribute_is_400_and_unmatched_one_is_warned(
    http: httpx.Client, studies: list[Dataset]
) -> None:
    """PS3.18 8.3.4.1: a key that is no DICOM attribute (keyword or tag) is a bad request;
    one the index does not match is checked on each answer (PatientSex) or, where we keep
    no value (OperatorsName), named in a Warning: never silently "everything matches"."""
    for bad in ("NotAnAttribute", "ffffffff"):
        r = http.get("/studies", params={bad: "x"})
        assert r.status_code == 400, (bad, r.status_code)
    sex = str(studies[0].PatientSex)
    r = http.get("/studies", params={"PatientID": "CONF-1", "PatientSex": sex})
    assert len(r.json()) == 2 and "warning" not in r.headers
    other = "F" if sex != "F" else "M"
    r = http.get("/studies", params={"PatientID": "CONF-1", "PatientSex": other})
    assert r.status_code == 200 and r.json() == []
    r = http.get("/studies", params={"PatientID": "CONF-1", "OperatorsName": "Smith"})
    assert r.status_code == 200
    assert "OperatorsName" in r.headers.get("warning", "")
    by_tag = http.get("/studies", params={"00100020": "CONF-1"})
    assert len(by_tag.json()) == 2 and "warning" not in by_tag.headers


def test_qido_comma_separated_uid_list(http: httpx.Client, studies: list[Dataset]) -> None:
    """PS3.18 8.3.4.1: UID list matching takes a comma-separated list (as OHIF sends)."""
    uids = [str(d.StudyInstanceUID) for d in studies]
    r = http.get("/studies", params={"StudyInstanceUID": ",".join(uids)})
    assert r.status_code == 200
    assert sorted(s["0020000D"]["Value"][0] for s in r.json()) == sorted(uids)


def test_qido_invalid_date_and_time_values_are_400(
    http: httpx.Client, studies: list[Dataset]
) -> None:
    """PS3.18 8.3.4.1 / PS3.4 C.2.2.2.5: a DA/TM/DT key takes a value of its VR or a range
    of them; anything else is a bad request that says so, not 200 with nothing matched."""
    for key, bad in (
        ("StudyDate", "garbage"),
        ("StudyDate", "2020-13-45"),
        ("StudyDate", "20200230"),
        ("StudyDate", "20201231-20200101"),
        ("StudyTime", "2561"),
        ("00080020", "yesterday"),
    ):
        r = http.get("/studies", params={"PatientID": "CONF-1", key: bad})
        assert r.status_code == 400, (key, bad, r.status_code)
        assert "YYYYMMDD" in r.text or "HHMMSS" in r.text or "range" in r.text, r.text
    date = str(studies[0].StudyDate)
    for good in (date, f"{date[:4]}-{date[4:6]}-{date[6:]}", f"{date}-", f"-{date}", ""):
        r = http.get("/studies", params={"PatientID": "CONF-1", "StudyDate": good})
        assert r.status_code == 200 and len(r.json()) == 2, (good, r.status_code)
    r = http.get("/studies", params={"PatientID": "CONF-1", "StudyTime": "000000-235959.999"})
    assert r.status_code == 200


def test_urls_keep_the_port_for_dicomweb_client(
    server: LucentServer, web: DICOMwebClient, studies: list[Dataset]
) -> None:
    """dicomweb-client sends Host without the port: our RetrieveURL must still work."""
    found = web.search_for_studies(search_filters={"PatientID": "CONF-1"})
    url = found[0]["00081190"]["Value"][0]
    assert url.startswith(f"{server.api_url}/dicom-web/studies/"), url


# ------------------------------------------------------------------------------ WADO-RS
def test_frames_of_compressed_instance(
    http: httpx.Client, web: DICOMwebClient, rle: tuple[Dataset, np.ndarray]
) -> None:
    """PS3.18 8.7.3.3: octet-stream frames default to Explicit VR Little Endian (decoded),
    and each part names its transfer syntax, which Cornerstone/OHIF decodes by."""
    ds, native = rle
    url = _path(ds) + "/frames/1"
    r = http.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    [(ctype, payload)] = _multipart(r)
    assert ctype == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert np.array_equal(np.frombuffer(payload, native.dtype).reshape(native.shape), native)
    ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    [(ctype, payload)] = _multipart(http.get(url, headers={"Accept": ohif}))
    assert ctype == f"application/octet-stream; transfer-syntax={RLELossless}"
    assert payload != native.tobytes()
    meta = web.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert "BulkDataURI" in meta["7FE00010"] and "InlineBinary" not in meta["7FE00010"]
    [bulk] = web.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert bulk == native.tobytes()


def test_small_pixel_data_in_metadata_is_bulk_data(
    http: httpx.Client, studies: list[Dataset]
) -> None:
    """PS3.18 10.4.1.1.2 / F.2.6: metadata carries Pixel Data as a BulkDataURI, never inline."""
    [meta] = http.get(_path(studies[0]) + "/metadata").json()
    assert set(meta["7FE00010"]) == {"vr", "BulkDataURI"}
    assert meta["7FE00010"]["BulkDataURI"].endswith("/frames/1")


def test_instance_retrieve_transfer_syntax_and_single_part(
    http: httpx.Client, rle: tuple[Dataset, np.ndarray]
) -> None:
    """PS3.18 8.7.3.5.2: no transfer-syntax means Explicit VR Little Endian, '*' as stored;
    a single instance may be asked for as single part application/dicom."""
    ds, native = rle
    r = http.get(_path(ds), headers={"Accept": 'multipart/related; type="application/dicom"'})
    [(ctype, payload)] = _multipart(r)
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    got = dcmread(io.BytesIO(payload))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert got.SOPInstanceUID == ds.SOPInstanceUID  # transcoding keeps the instance's UID
    assert np.array_equal(got.pixel_array, native)
    star = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    [(ctype, payload)] = _multipart(http.get(_path(ds), headers={"Accept": star}))
    assert dcmread(io.BytesIO(payload)).file_meta.TransferSyntaxUID == RLELossless
    single = http.get(_path(ds), headers={"Accept": "application/dicom"})
    assert single.status_code == 200
    assert single.headers["content-type"].startswith("application/dicom")
    assert dcmread(io.BytesIO(single.content)).SOPInstanceUID == ds.SOPInstanceUID


def test_unacceptable_media_types_are_406(http: httpx.Client, studies: list[Dataset]) -> None:
    """PS3.18 8.7.1 / 10.4.3: what we cannot produce is 406, not some other media type."""
    path = _path(studies[0])
    assert http.get(path, headers={"Accept": "application/json"}).status_code == 406
    jls = 'multipart/related; type="image/jls"'
    assert http.get(path + "/frames/1", headers={"Accept": jls}).status_code == 406
    assert http.get(path + "/rendered", headers={"Accept": "image/webp"}).status_code == 406
    assert http.get(path + "/frames/%20").status_code == 400


def test_rendered_viewport_window_quality(http: httpx.Client, studies: list[Dataset]) -> None:
    """PS3.18 8.3.5.1: viewport scales, window sets the VOI, quality the JPEG quality;
    image/jpeg is the default rendered media type (Table 8.7.4-1)."""
    url = _path(studies[0]) + "/rendered"
    r = http.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    small = http.get(url, params={"viewport": "8,8"}, headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(small.content)).size == (8, 8)
    plain = np.asarray(
        Image.open(io.BytesIO(http.get(url, headers={"Accept": "image/png"}).content))
    )
    narrow = http.get(url, params={"window": "0,1,linear"}, headers={"Accept": "image/png"})
    windowed = np.asarray(Image.open(io.BytesIO(narrow.content)))
    assert windowed.shape == plain.shape and not np.array_equal(windowed, plain)
    assert set(np.unique(windowed)) <= {0, 255}
    big = {"viewport": "256,256"}
    low = http.get(url, params={**big, "quality": "5"}, headers={"Accept": "image/jpeg"})
    high = http.get(url, params={**big, "quality": "100"}, headers={"Accept": "image/jpeg"})
    assert len(low.content) < len(high.content)
    for bad in ({"viewport": "0,8"}, {"window": "1,2"}, {"quality": "500"}):
        assert http.get(url, params=bad).status_code == 400, bad


def test_thumbnails_of_study_series_instance_and_frame(
    http: httpx.Client, study3: list[Dataset]
) -> None:
    """PS3.18 10.4.1.1.4 / 10.4.3.3.4: one small image in a rendered media type (JPEG by
    default, PNG on request, else 406) at every level; viewport honoured. Ours: the middle
    instance of a series, the first series of a study, the middle frame of an instance."""
    png = {"Accept": "image/png"}
    study = f"/studies/{study3[0].StudyInstanceUID}"
    series = f"{study}/series/{study3[0].SeriesInstanceUID}"
    middle = _path(study3[1]) + "/thumbnail"
    r = http.get(middle)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert _picture(r.content).shape == (64, 64)  # fits the default size: not enlarged
    small = http.get(middle, params={"viewport": "32,32"}, headers=png)
    assert small.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(small.content)).size == (32, 32)
    _picture(small.content)
    own = _picture(http.get(middle, headers=png).content)
    first = _picture(http.get(_path(study3[0]) + "/thumbnail", headers=png).content)
    assert not np.array_equal(own, first)
    assert np.array_equal(_picture(http.get(f"{series}/thumbnail", headers=png).content), own)
    assert np.array_equal(_picture(http.get(f"{study}/thumbnail", headers=png).content), own)
    sized = http.get(f"{study}/thumbnail", params={"viewport": "20,10"}, headers=png)
    assert Image.open(io.BytesIO(sized.content)).size == (10, 10)  # fitted, aspect kept
    frame2 = _path(study3[3]) + "/frames/2"
    thumb = _picture(http.get(frame2 + "/thumbnail", headers=png).content)
    assert np.array_equal(thumb, _picture(http.get(frame2 + "/rendered", headers=png).content))
    assert np.array_equal(
        _picture(http.get(_path(study3[3]) + "/thumbnail", headers=png).content), thumb
    )
    for url in (middle, f"{series}/thumbnail", f"{study}/thumbnail", frame2 + "/thumbnail"):
        assert http.get(url, headers={"Accept": "image/webp"}).status_code == 406, url
    assert http.get(f"{study}/thumbnail", params={"viewport": "0,0"}).status_code == 400


def test_rendered_study_and_series_are_multipart(http: httpx.Client, study3: list[Dataset]) -> None:
    """PS3.18 10.4.1.1.3 / 10.4.3.3.3: a rendered study or series is multipart/related,
    one rendered image per instance (first frame), in the media type asked for."""
    study = f"/studies/{study3[0].StudyInstanceUID}"
    series = f"{study}/series/{study3[0].SeriesInstanceUID}"
    r = http.get(f"{study}/rendered")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("multipart/related")
    parts = _multipart(r)
    assert [c for c, _ in parts] == ["image/jpeg"] * 4
    for _, payload in parts:
        assert _picture(payload).shape == (64, 64)
    want = 'multipart/related; type="image/png"'
    r = http.get(f"{series}/rendered", params={"viewport": "16,16"}, headers={"Accept": want})
    parts = _multipart(r)
    assert [c for c, _ in parts] == ["image/png"] * 3
    assert all(_picture(p).shape == (16, 16) for _, p in parts)
    whole = [
        _picture(p) for _, p in _multipart(http.get(f"{series}/rendered", headers={"Accept": want}))
    ]
    for ds, got in zip(study3[:3], whole, strict=True):
        one = http.get(_path(ds) + "/rendered", headers={"Accept": "image/png"})
        assert np.array_equal(got, _picture(one.content))
    assert http.get(f"{study}/rendered", headers={"Accept": "image/webp"}).status_code == 406


def test_frames_rendered(http: httpx.Client, study3: list[Dataset]) -> None:
    """PS3.18 10.4.1.1.3: /frames/{list}/rendered; one frame is one image, a list is
    multipart/related; a frame that does not exist is 404."""
    frames = _path(study3[3]) + "/frames"
    png = {"Accept": "image/png"}
    one = http.get(f"{frames}/2/rendered", params={"viewport": "32,32"}, headers=png)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert _picture(one.content).shape == (32, 32)
    first = _picture(http.get(f"{frames}/1/rendered", headers=png).content)
    second = _picture(http.get(f"{frames}/2/rendered", headers=png).content)
    assert not np.array_equal(first, second)
    many = http.get(f"{frames}/1,2/rendered", headers=png)
    got = [_picture(p) for _, p in _multipart(many)]
    assert len(got) == 2 and np.array_equal(got[0], first) and np.array_equal(got[1], second)
    assert http.get(f"{frames}/4/rendered").status_code == 404
    assert http.get(f"{frames}/1/rendered", headers={"Accept": "image/webp"}).status_code == 406


def test_several_frames_never_go_out_as_one_single_part_body(
    http: httpx.Client, study3: list[Dataset]
) -> None:
    """A single-part body holds one frame: frames/1,2,3 with Accept
    application/octet-stream was 200 with the first frame alone (outside probe). It is 406,
    or multipart when a multipart range is acceptable too."""
    ds = study3[3]
    frames = _path(ds) + "/frames/1,2,3"
    octet = "application/octet-stream"
    refused = http.get(frames, headers={"Accept": octet})
    assert refused.status_code == 406 and "multipart" in refused.text
    either = f'{octet}, multipart/related; type="{octet}"'
    parts = _multipart(http.get(frames, headers={"Accept": either}))
    size = ds.Rows * ds.Columns * 2
    assert [len(p) for _, p in parts] == [size] * 3
    native = ds.pixel_array.reshape(3, -1).astype("<u2")
    assert [p for _, p in parts] == [f.tobytes() for f in native]
    one = http.get(_path(ds) + "/frames/2", headers={"Accept": octet})
    assert one.status_code == 200 and one.content == native[1].tobytes()


def test_accept_and_charset_query_parameters(http: httpx.Client, study3: list[Dataset]) -> None:
    """PS3.18 8.3.3: ``accept`` (for hyperlinks, where no header can be set) and ``charset``
    are content negotiation parameters: QIDO-RS answered 400 "unknown query attribute",
    rendered resources ignored ``accept``."""
    study = str(study3[0].StudyInstanceUID)
    for params in ({"accept": "application/dicom+json"}, {"charset": "utf-8"}):
        r = http.get("/studies", params={"StudyInstanceUID": study, **params})
        assert r.status_code == 200, (params, r.text)
        assert [s["0020000D"]["Value"] for s in r.json()] == [[study]]
    xml = 'multipart/related; type="application/dicom+xml"'
    r = http.get("/studies", params={"StudyInstanceUID": study, "accept": xml})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    rendered = _path(study3[0]) + "/rendered"
    for kind in ("image/png", "image/gif"):
        r = http.get(rendered, params={"accept": kind}, headers={"Accept": "image/*"})
        assert r.status_code == 200 and r.headers["content-type"] == kind
        assert _picture(r.content).shape[:2] == (64, 64)


def test_bulkdata_resources_match_metadata_uris(
    http: httpx.Client, study3: list[Dataset], rle: tuple[Dataset, np.ndarray]
) -> None:
    """PS3.18 10.4.1.1.5 / 10.4.3.3.5: study/series/instance bulkdata carry the bulk data
    of the instances, each part with the Content-Location of its metadata BulkDataURI."""
    series = f"/studies/{study3[0].StudyInstanceUID}/series/{study3[0].SeriesInstanceUID}"
    r = http.get(f"{series}/bulkdata")
    assert r.status_code == 200
    meta = http.get(f"{series}/metadata").json()
    uris = {m["00080018"]["Value"][0]: m["7FE00010"]["BulkDataURI"] for m in meta}
    parts, where = _multipart(r), _locations(r)
    assert [c for c, _ in parts] == [f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"] * 3
    for ds, (_, payload), location in zip(study3[:3], parts, where, strict=True):
        assert location == uris[ds.SOPInstanceUID]
        assert payload == ds.pixel_array.tobytes()
    enhanced = http.get(_path(study3[3]) + "/bulkdata")
    [(_, payload)] = _multipart(enhanced)
    assert payload == study3[3].pixel_array.tobytes()
    assert _locations(enhanced)[0].endswith("/frames/1,2,3")
    ds, native = rle
    [(_, payload)] = _multipart(http.get(_path(ds) + "/bulkdata"))
    assert payload == native.tobytes()  # decoded: Explicit VR Little Endian by default
    star = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    stored = http.get(_path(ds) + "/bulkdata", headers={"Accept": star})
    [(ctype, payload)] = _multipart(stored)
    assert ctype.endswith(f"transfer-syntax={RLELossless}") and payload != native.tobytes()
    assert _locations(stored)[0].endswith("/frames/1")
    study = http.get(f"/studies/{study3[0].StudyInstanceUID}/bulkdata")
    assert len(_multipart(study)) == 4


# ------------------------------------------------------------------------------ STOW-RS
def test_stow_body_without_parts_is_400(http: httpx.Client) -> None:
    """PS3.18 10.5.3: a body we cannot split (boundary mismatch) is not "200, all stored"."""
    body = b"--OTHER\r\nContent-Type: application/dicom\r\n\r\nxx\r\n--OTHER--\r\n"
    r = _stow(http, body, 'multipart/related; type="application/dicom"; boundary=XX')
    assert r.status_code == 400


def test_stow_metadata_and_bulk_data_form_is_415(http: httpx.Client) -> None:
    """PS3.18 10.5.2: we take type="application/dicom" only; the JSON form is 415."""
    body = b"--XX\r\nContent-Type: application/dicom+json\r\n\r\n[{}]\r\n--XX--\r\n"
    r = _stow(http, body, 'multipart/related; type="application/dicom+json"; boundary=XX')
    assert r.status_code == 415


def test_stow_study_mismatch_names_the_instance(http: httpx.Client, server: LucentServer) -> None:
    """PS3.18 10.5.3: each Failed SOP Sequence item names its SOP Class and Instance; a
    Study Instance UID other than the path's fails with 0xA900 and nothing is stored."""
    ds = samples.make_instance(MR, patient_id="CONF-MISMATCH")
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + _part10(ds) + b"\r\n--XX--\r\n"
    ctype = 'multipart/related; type="application/dicom"; boundary=XX'
    r = _stow(http, body, ctype, path=f"/studies/{generate_uid()}")
    assert r.status_code == 409
    [failed] = r.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert failed["00081150"]["Value"] == [MR]
    assert failed["00081197"]["Value"] == [0xA900]
    ok = _stow(http, body, ctype, path=f"/studies/{ds.StudyInstanceUID}")
    assert ok.status_code == 200
    assert ok.json()["00081190"]["Value"] == [
        f"{server.api_url}/dicom-web/studies/{ds.StudyInstanceUID}"
    ]


NATIVE = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def _xml_values(node: ET.Element, keyword: str) -> list[str]:
    """The Value texts of the attribute ``keyword`` directly under ``node``."""
    for attr in node.findall(f"{NATIVE}DicomAttribute"):
        if attr.get("keyword") == keyword:
            return [v.text or "" for v in attr.findall(f"{NATIVE}Value")]
    raise AssertionError(f"no {keyword}")


def test_stow_response_media_type_follows_accept(http: httpx.Client, server: LucentServer) -> None:
    """PS3.18 10.5.3: the response is application/dicom+json or application/dicom+xml
    (PS3.19 Native DICOM Model) as the client accepts; one it cannot take is 406, and
    nothing is stored then."""
    ctype = 'multipart/related; type="application/dicom"; boundary=XX'

    def post(ds: Dataset, accept: str, path: str = "/studies") -> httpx.Response:
        body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + _part10(ds) + b"\r\n--XX--\r\n"
        return http.post(path, content=body, headers={"Content-Type": ctype, "Accept": accept})

    refused = samples.make_instance(MR, patient_id="CONF-STOW-406")
    r = post(refused, "text/html")
    assert r.status_code == 406
    assert http.get("/studies", params={"PatientID": "CONF-STOW-406"}).json() == []

    ds = samples.make_instance(MR, patient_id="CONF-STOW-XML")
    r = post(ds, "application/dicom+xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+xml")
    root = ET.fromstring(r.content)
    assert root.tag == f"{NATIVE}NativeDicomModel"
    assert _xml_values(root, "RetrieveURL") == [
        f"{server.api_url}/dicom-web/studies/{ds.StudyInstanceUID}"
    ]
    [seq] = [a for a in root if a.get("keyword") == "ReferencedSOPSequence"]
    assert seq.get("vr") == "SQ" and seq.get("tag") == "00081199"
    [item] = seq.findall(f"{NATIVE}Item")
    assert _xml_values(item, "ReferencedSOPInstanceUID") == [ds.SOPInstanceUID]
    assert _xml_values(item, "ReferencedSOPClassUID") == [MR]

    mismatch = post(
        samples.make_instance(MR), "application/dicom+xml", f"/studies/{generate_uid()}"
    )
    assert mismatch.status_code == 409
    [failed] = [
        a for a in ET.fromstring(mismatch.content) if a.get("keyword") == "FailedSOPSequence"
    ]
    assert _xml_values(failed.find(f"{NATIVE}Item"), "FailureReason") == [str(0xA900)]

    for accept in (
        "application/dicom+json",
        "*/*",
        "application/dicom+xml;q=0.5, application/json",
    ):
        r = post(samples.make_instance(MR, patient_id="CONF-STOW-JSON"), accept)
        assert r.status_code == 200 and r.headers["content-type"].startswith(
            "application/dicom+json"
        )
        assert "00081199" in r.json()


def test_big_endian_instance_retrieved_as_explicit_little_endian(
    http: httpx.Client, server: LucentServer, tmp_path: Path
) -> None:
    """Data archived Explicit VR Big Endian (as sent) and retrieved with the default
    syntax (Explicit VR Little Endian, PS3.18 8.7.3.5.2): pydicom refused to save across
    byte orders and WADO-RS answered 500. Same UID, same pixels."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRBigEndian

    from tests.data import transfer_syntaxes as ts_samples
    from tests.integration.dicom_io import storescu

    ds = dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    native = ds.pixel_array.copy()
    ds.PatientID = "CONF-BE"  # fresh UIDs: other modules may send the same file
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in "abc")
    path = tmp_path / "be.dcm"
    ds.save_as(path)
    args = ts_samples.write_storescu_config(
        tmp_path / "be.cfg", [(str(ds.SOPClassUID), str(ExplicitVRBigEndian))]
    )
    done = storescu("127.0.0.1", server.port, server.ae_title, [path], *args)
    assert done.returncode == 0, done.stdout + done.stderr
    star = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    [(_, stored)] = _multipart(http.get(_path(ds), headers={"Accept": star}))
    assert dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    r = http.get(_path(ds), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text[:300]
    [(ctype, payload)] = _multipart(r)
    got = dcmread(io.BytesIO(payload))
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(got.pixel_array, native)


# ------------------------------------------------------------- outside tester's findings
def _uids(r: httpx.Response, tag: str) -> list[str]:
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return sorted(a[tag]["Value"][0] for a in r.json())


def test_qido_series_and_instance_keys_select_their_parents(
    http: httpx.Client, studies: list[Dataset], study3: list[Dataset]
) -> None:
    """PS3.18 8.3.4.1: a study matches a Series or SOP Instance UID key when it holds that
    series or instance (a series, that instance), as for Modality; these keys were dropped
    and every study (series) answered, with no Warning."""
    study = str(study3[0].StudyInstanceUID)
    r = http.get("/studies", params={"SeriesInstanceUID": study3[0].SeriesInstanceUID})
    assert _uids(r, "0020000D") == [study] and "warning" not in r.headers
    r = http.get("/studies", params={"SOPInstanceUID": studies[1].SOPInstanceUID})
    assert _uids(r, "0020000D") == [studies[1].StudyInstanceUID]
    r = http.get("/series", params={"SOPInstanceUID": study3[3].SOPInstanceUID})
    assert _uids(r, "0020000E") == [study3[3].SeriesInstanceUID]
    both = f"{study3[1].SOPInstanceUID},{studies[0].SOPInstanceUID}"
    r = http.get("/studies", params={"SOPInstanceUID": both})
    assert _uids(r, "0020000D") == sorted([study, str(studies[0].StudyInstanceUID)])
    r = http.get(f"/studies/{study}/series", params={"SOPInstanceUID": study3[0].SOPInstanceUID})
    assert _uids(r, "0020000E") == [study3[0].SeriesInstanceUID]
    for params in (
        {"SeriesInstanceUID": generate_uid()},
        {"SOPInstanceUID": study3[0].SOPInstanceUID, "StudyInstanceUID": generate_uid()},
    ):
        assert http.get("/studies", params=params).json() == [], params
    assert http.get("/series", params={"SOPInstanceUID": generate_uid()}).json() == []


def test_qido_limit_and_offset_are_non_negative_integers(
    http: httpx.Client, studies: list[Dataset]
) -> None:
    """PS3.18 8.3.4.4: limit and offset are non-negative integers; -1 answered everything,
    0 one result. limit=0 is at most zero results (the Warning says more exist)."""
    for key, bad in (("limit", "-1"), ("offset", "-1"), ("limit", "1.5"), ("offset", "x")):
        r = http.get("/studies", params={"PatientID": "CONF-1", key: bad})
        assert r.status_code == 400 and key in r.text, (key, bad, r.status_code)
    r = http.get("/studies", params={"PatientID": "CONF-1", "limit": "0"})
    assert r.status_code == 200 and r.json() == []
    huge = http.get("/studies", params={"PatientID": "CONF-1", "offset": "9" * 40})
    assert huge.status_code == 200 and huge.json() == []  # capped, not a 500
    assert "additional results" in r.headers.get("warning", "")


def test_qido_repeated_key_is_400_naming_it(http: httpx.Client, studies: list[Dataset]) -> None:
    """PS3.18 8.3.4.1: one value per matching key (a list goes in that value); the last
    of two values used to win silently. includefield may repeat."""
    for query in (
        "ModalitiesInStudy=MR&ModalitiesInStudy=CT",
        "PatientID=CONF-1&00100020=OTHER",
        "PatientID=CONF-1&limit=1&limit=2",
    ):
        r = http.get(f"/studies?{query}")
        assert r.status_code == 400, (query, r.status_code)
        assert query.split("&")[-1].split("=")[0] in r.text, r.text
    r = http.get("/studies?PatientID=CONF-1&ModalitiesInStudy=CT,MR")
    assert len(r.json()) == 2
    r = http.get("/studies?PatientID=CONF-1&includefield=PatientSex&includefield=00100040")
    assert r.status_code == 200 and len(r.json()) == 2


@pytest.fixture(scope="module")
def weighed(web: DICOMwebClient) -> Dataset:
    """One MR image with a Patient's Weight and Slice Thickness 0.8."""
    ds = samples.make_instance(MR, patient_id="CONF-FIELDS")
    ds.PatientWeight = "72.5"
    ds.SliceThickness = "0.8"
    web.store_instances([ds])
    return ds


def test_includefield_returns_the_instances_values(http: httpx.Client, weighed: Dataset) -> None:
    """PS3.18 8.3.4.3: included attributes come with the instance's values (they came
    with no Value); one the instance lacks is left out; includefield=all adds the data set
    but its bulk data; a name that is no attribute is 400. Study level: left out."""
    study = str(weighed.StudyInstanceUID)
    fields = "00180050,PixelSpacing,ImagePositionPatient,PatientWeight,OperatorsName"
    r = http.get("/instances", params={"StudyInstanceUID": study, "includefield": fields})
    [found] = r.json()
    assert found["00180050"] == {"vr": "DS", "Value": [0.8]}
    assert found["00280030"]["Value"] == [1.0, 1.0]
    assert found["00200032"]["Value"] == [-8.0, -8.0, 0.0]
    assert found["00101030"] == {"vr": "DS", "Value": [72.5]}
    assert "00081070" not in found  # Operators' Name: not in the instance
    [whole] = http.get(
        "/instances", params={"StudyInstanceUID": study, "includefield": "all"}
    ).json()
    assert whole["00101030"]["Value"] == [72.5]
    assert whole["00280004"]["Value"] == [weighed.PhotometricInterpretation]
    assert "7FE00010" not in whole
    bad = http.get("/instances", params={"StudyInstanceUID": study, "includefield": "Bogus"})
    assert bad.status_code == 400 and "Bogus" in bad.text
    [at_study] = http.get(
        "/studies", params={"StudyInstanceUID": study, "includefield": "PatientWeight"}
    ).json()
    assert "00101030" not in at_study


def test_required_return_attributes(http: httpx.Client, weighed: Dataset) -> None:
    """PS3.18 Tables 10.6.3-3..5: InstanceAvailability at study and instance level,
    BitsAllocated for instances, the PPS start date/time and the Request Attribute
    Sequence for series (zero-length: the index does not keep them)."""
    study = str(weighed.StudyInstanceUID)
    [st] = http.get("/studies", params={"StudyInstanceUID": study}).json()
    assert st["00080056"]["Value"] == ["ONLINE"]
    [inst] = http.get(f"/studies/{study}/instances").json()
    assert inst["00080056"]["Value"] == ["ONLINE"]
    assert inst["00280100"]["Value"] == [weighed.BitsAllocated]
    [se] = http.get(f"/studies/{study}/series").json()
    for tag, vr in (("00400244", "DA"), ("00400245", "TM"), ("00400275", "SQ")):
        assert se[tag]["vr"] == vr and not se[tag].get("Value"), tag


def test_qido_and_metadata_media_types(http: httpx.Client, studies: list[Dataset]) -> None:
    """PS3.18 8.7.5 / 10.6.3: search results and metadata are DICOM JSON or
    multipart/related PS3.19 XML (one part per data set); anything else is 406 (it got
    JSON)."""
    meta = _path(studies[0]) + "/metadata"
    for accept in ("image/png", "text/html"):
        assert http.get("/studies", headers={"Accept": accept}).status_code == 406, accept
        assert http.get(meta, headers={"Accept": accept}).status_code == 406, accept
    xml = 'multipart/related; type="application/dicom+xml"'
    r = http.get("/studies", params={"PatientID": "CONF-1"}, headers={"Accept": xml})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    parts = _multipart(r)
    assert [c for c, _ in parts] == ["application/dicom+xml"] * 2
    got = sorted(_xml_values(ET.fromstring(p), "StudyInstanceUID")[0] for _, p in parts)
    assert got == sorted(str(d.StudyInstanceUID) for d in studies)
    [(ctype, payload)] = _multipart(http.get(meta, headers={"Accept": xml}))
    root = ET.fromstring(payload)
    assert _xml_values(root, "SOPInstanceUID") == [studies[0].SOPInstanceUID]
    [pixel] = [a for a in root if a.get("tag") == "7FE00010"]
    bulk = pixel.find(f"{NATIVE}BulkData")
    assert bulk is not None and bulk.get("uri", "").endswith("/frames/1")
    assert http.get(meta, headers={"Accept": "application/json"}).status_code == 200


def test_instance_retrieve_takes_the_first_range_it_can_serve(
    http: httpx.Client, rle: tuple[Dataset, np.ndarray]
) -> None:
    """RFC 9110 12.5.1, PS3.18 8.7.3.5: a range we cannot transcode to is passed over for
    the next acceptable one (it was 406 "cannot transcode")."""
    ds, _ = rle
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    star = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    r = http.get(_path(ds), headers={"Accept": f"{jpeg}, {star}"})
    assert r.status_code == 200, r.text[:200]
    [(ctype, payload)] = _multipart(r)
    assert dcmread(io.BytesIO(payload)).file_meta.TransferSyntaxUID == RLELossless
    assert http.get(_path(ds), headers={"Accept": jpeg}).status_code == 406


def _stow_one(http: httpx.Client, data: bytes) -> httpx.Response:
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--XX--\r\n"
    return _stow(http, body, 'multipart/related; type="application/dicom"; boundary=XX')


def test_stow_item_retrieve_url_is_the_instance(http: httpx.Client, server: LucentServer) -> None:
    """PS3.18 Tables 10.5.3-2/-3: the response's Retrieve URL is the study's, each
    Referenced SOP Sequence item's that of its instance (it was the study's)."""
    ds = samples.make_instance(MR, patient_id="CONF-STOW-URL")
    r = _stow_one(http, _part10(ds))
    assert r.status_code == 200
    base = f"{server.api_url}/dicom-web"
    assert r.json()["00081190"]["Value"] == [f"{base}/studies/{ds.StudyInstanceUID}"]
    [item] = r.json()["00081199"]["Value"]
    assert item["00081190"]["Value"] == [base + _path(ds)]
    assert http.get(_path(ds), headers={"Accept": "application/dicom"}).status_code == 200


def test_stow_refuses_unknown_sop_class_and_mismatched_file_meta(http: httpx.Client) -> None:
    """PS3.18 10.5.3: a SOP Class the Store SCP does not take fails with 0122 (it was
    stored); a file meta naming another SOP Instance than the data set fails with A900."""
    ds = samples.make_instance(MR, patient_id="CONF-STOW-CLASS")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6"
    r = _stow_one(http, _part10(ds))
    assert r.status_code == 409
    [failed] = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0122]
    assert failed["00081150"]["Value"] == ["1.2.3.4.5.6"]
    other = samples.make_instance(MR, patient_id="CONF-STOW-META")
    uid = str(other.SOPInstanceUID).encode()
    another = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    data = _part10(other).replace(uid, another, 1)  # the first: in the file meta
    meta = dcmread(io.BytesIO(data))
    assert meta.file_meta.MediaStorageSOPInstanceUID == another.decode() != meta.SOPInstanceUID
    r = _stow_one(http, data)
    assert r.status_code == 409
    [failed] = r.json()["00081198"]["Value"]
    assert 0xA900 <= failed["00081197"]["Value"][0] <= 0xA9FF
    for patient in ("CONF-STOW-CLASS", "CONF-STOW-META"):
        assert http.get("/studies", params={"PatientID": patient}).json() == []


def test_stow_bare_data_set_without_file_meta(http: httpx.Client, api: LucentClient) -> None:
    """A data set written without preamble and file meta (pydicom ``write_dataset``), in
    Implicit or Explicit VR Little Endian, is stored as it is (it was 409 "no DICM"); '*'
    retrieves it in Explicit VR Little Endian (PS3.18 8.6.2: never implicit)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    for implicit in (True, False):
        ds = samples.make_instance(MR, patient_id="CONF-STOW-BARE")
        native = ds.pixel_array.copy()
        del ds.file_meta
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)
        r = _stow_one(http, fp.getvalue())
        assert r.status_code == 200, (implicit, r.status_code, r.text[:300])
        single = http.get(_path(ds), headers={"Accept": "application/dicom; transfer-syntax=*"})
        got = dcmread(io.BytesIO(single.content))
        assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
        stored = dcmread(io.BytesIO(api.instance_file(str(ds.SOPInstanceUID))))
        assert stored.file_meta.TransferSyntaxUID == (IMPLICIT_LE if implicit else EXPLICIT_LE)
        assert np.array_equal(got.pixel_array, native)
    r = _stow_one(http, b"\x08\x00\x16\x00UI\x04\x001.2\x00")  # no SOP Instance UID
    assert r.status_code == 409


def test_rendered_and_thumbnail_as_gif(http: httpx.Client, study3: list[Dataset]) -> None:
    """PS3.18 Table 8.7.4-1: image/gif is a required rendered media type for single-frame
    images (it was 406)."""
    for url in (_path(study3[0]) + "/rendered", _path(study3[0]) + "/thumbnail"):
        r = http.get(url, headers={"Accept": "image/gif"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif", url
        assert r.content[:4] == b"GIF8"
        _picture(r.content)


def test_structured_report_rendered_as_html_and_text(
    http: httpx.Client, web: DICOMwebClient
) -> None:
    """PS3.18 Table 8.7.4-1: a text object's rendered form is text/html (the default) or
    text/plain; an SR's /rendered was 406 (no pixel data)."""
    sr = samples.make_instance("1.2.840.10008.5.1.4.1.1.88.22", patient_id="CONF-SR")
    finding = next(i for i in sr.ContentSequence if i.ValueType == "TEXT")
    finding.TextValue = "Small <hyperdense> focus & no mass effect"
    web.store_instances([sr])
    path = _path(sr) + "/rendered"
    r = http.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<h1>Radiology Report</h1>" in r.text
    assert "Small &lt;hyperdense&gt; focus &amp; no mass effect" in r.text  # escaped
    plain = http.get(path, headers={"Accept": "text/plain"})
    assert plain.headers["content-type"].startswith("text/plain")
    assert "Finding: Small <hyperdense> focus & no mass effect" in plain.text
    assert http.get(path, headers={"Accept": "image/jpeg"}).status_code == 406


def test_head_answers_like_get_without_a_body(
    http: httpx.Client, server: LucentServer, studies: list[Dataset]
) -> None:
    """RFC 9110 9.3.2: HEAD is GET without the body (it was 405 on every route); the rights
    check is the GET's."""
    path = _path(studies[0])
    for url in ("/studies", path + "/metadata", path):
        got, head = http.get(url), http.head(url)
        assert head.status_code == got.status_code == 200, url
        assert head.content == b"" and got.content
        media = head.headers["content-type"].split(";")[0]  # a multipart boundary is new
        assert media == got.headers["content-type"].split(";")[0]
    anonymous = httpx.head(f"{server.api_url}/dicom-web/studies", timeout=30)
    assert anonymous.status_code == 401


def test_float_pixel_data_frames_and_rendering(http: httpx.Client, tmp_path: Path) -> None:
    """Our own perfusion maps are Parametric Maps with Float Pixel Data (7FE0,0008):
    frames/1 answered 404 "no pixel data" and /rendered 406 (outside probe)."""
    pm = samples.parametric_map(tmp_path / "ct", frames=2, size=16)
    assert "FloatPixelData" in pm and "PixelData" not in pm
    assert _stow_one(http, _part10(pm)).status_code == 200
    accept = 'multipart/related; type="application/octet-stream"'
    r = http.get(_path(pm) + "/frames/2", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    [(_, part)] = _multipart(r)
    values = np.frombuffer(part, "<f4")
    assert np.array_equal(values, pm.pixel_array[1].ravel())
    rendered = http.get(_path(pm) + "/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200, rendered.text
    img = np.asarray(Image.open(io.BytesIO(rendered.content)).convert("L"))
    assert img.shape == (16, 16) and int(img.max()) - int(img.min()) > 100  # not blank


# ----------------------------------------------------------- QA tester's DICOMweb findings
def _big_endian(ds: Dataset) -> bytes:
    """``ds`` as Part-10 bytes in Explicit VR Big Endian (pixels and OW words swapped)."""
    from lucent.dicom import transcode

    transcode.swap_byte_order(ds, EXPLICIT_BE)
    transcode.set_syntax(ds, EXPLICIT_BE)
    return _part10(ds)


def test_big_endian_frames_bulkdata_and_inline_binary_are_little_endian(
    http: httpx.Client,
) -> None:
    """Frames and bulk data are labelled Explicit VR Little Endian (PS3.18 8.7.3.3), and
    DICOM JSON InlineBinary has no syntax of its own (F.2.7): all three went out in the
    stored big endian order, wrong pixels in every viewer (QA probe)."""
    ds = samples.make_instance(MR, patient_id="CONF-BE-FRAMES")
    lut = np.array([1, 0x0203, 0xFFFE, 7], "<u2")
    ds.RedPaletteColorLookupTableData = lut.tobytes()  # OW, small enough to come inline
    native = ds.pixel_array.astype("<u2").tobytes()
    assert _stow_one(http, _big_endian(ds)).status_code == 200
    octets = 'multipart/related; type="application/octet-stream"'
    for accept in (
        octets,
        octets + "; transfer-syntax=*",
        octets + f"; transfer-syntax={EXPLICIT_LE}",
    ):
        r = http.get(_path(ds) + "/frames/1", headers={"Accept": accept})
        assert r.status_code == 200, r.text
        [(ctype, frame)] = _multipart(r)
        assert ctype == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}", accept
        assert frame == native, accept
    r = http.get(_path(ds) + "/bulkdata", headers={"Accept": octets})
    assert r.status_code == 200, r.text
    assert [payload for _, payload in _multipart(r)] == [native]
    meta = http.get(_path(ds) + "/metadata").json()[0]
    assert base64.b64decode(meta["00281201"]["InlineBinary"]) == lut.tobytes()
    search = f"/studies/{ds.StudyInstanceUID}/instances"
    [found] = http.get(search, params={"includefield": "00281201"}).json()
    assert base64.b64decode(found["00281201"]["InlineBinary"]) == lut.tobytes()


def test_enhanced_ct_renders_with_its_functional_groups(http: httpx.Client) -> None:
    """PS3.3 C.7.6.16: an Enhanced CT keeps Rescale and Window in its functional groups;
    /rendered read only the top level, so a HU window rendered white and each frame was
    auto-windowed on its own (QA probe). Every pixel is 40 HU: mid-grey in C40/W400."""
    from tests.unit.test_pixels_functional_groups import enhanced_ct

    ds = enhanced_ct()
    ds.PatientID = "CONF-ENH-CT"
    assert _stow_one(http, _part10(ds)).status_code == 200

    def grey(path: str, **params: str) -> set[int]:
        r = http.get(_path(ds) + path, params=params, headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        return set(np.unique(np.asarray(Image.open(io.BytesIO(r.content)).convert("L"))))

    assert grey("/frames/2/rendered", window="40,400,linear") == {127}
    assert grey("/frames/1/rendered") == {127}  # shared Frame VOI LUT
    assert grey("/frames/3/rendered") == {63}  # its own Frame VOI LUT: C140/W400
    assert grey("/frames/3/thumbnail") == {63}


def _unrenderable(**kwargs: object) -> Dataset:
    """An MR stored RLE Lossless whose only fragment is a well-formed RLE header (two
    segments for 16 bits, PS3.5 G) over two bytes each: it stores and retrieves (ingest
    reads headers, never decodes), but no decoder can make pixels of it."""
    from pydicom.encaps import encapsulate

    ds = samples.make_instance(MR, **kwargs)  # type: ignore[arg-type]
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([struct.pack("<16L", 2, 64, 66, *[0] * 13) + bytes(4)])
    return ds


def test_ybr_rct_colour_and_broken_instances_render(http: httpx.Client) -> None:
    """A JPEG 2000 YBR_RCT image rendered 500 (converted again after the decoder made it
    RGB), and made the whole study's rendered and thumbnail 500 with it; an instance that
    cannot be rendered is now left out of study and series resources, and on its own is a
    JSON error that says why (QA probe)."""
    from pydicom.data import get_testdata_file

    study = generate_uid()
    broken = _unrenderable(patient_id="CONF-YBR", study_uid=study, series_number=1)
    colour = dcmread(get_testdata_file("examples_jpeg2k.dcm"))
    colour.PatientID, colour.StudyInstanceUID, colour.SeriesNumber = "CONF-YBR", study, 2
    colour.SeriesInstanceUID = generate_uid()
    colour.SOPInstanceUID = colour.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for ds in (broken, colour):
        assert _stow_one(http, _part10(ds)).status_code == 200
    png = {"Accept": "image/png"}
    r = http.get(_path(colour) + "/rendered", headers=png)
    assert r.status_code == 200, r.text
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.array_equal(img, colour.pixel_array)
    for path in ("/thumbnail", "/frames/1/rendered"):
        assert http.get(_path(colour) + path, headers=png).status_code == 200, path
    many = {"Accept": 'multipart/related; type="image/png"'}
    r = http.get(f"/studies/{study}/rendered", headers=many)
    # the broken instance left out, and said: 206 with a Warning naming it (outside probe 51)
    assert r.status_code == 206, r.text
    assert str(broken.SOPInstanceUID) in r.headers["warning"]
    [(_, part)] = _multipart(r)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(part))), colour.pixel_array)
    r = http.get(f"/studies/{study}/thumbnail", headers=png)  # first series: the broken one
    assert r.status_code == 200, r.text
    for path in ("/rendered", "/thumbnail", "/frames/1/rendered"):
        r = http.get(_path(broken) + path, headers=png)
        assert r.status_code == 500, (path, r.status_code)
        assert r.json()["detail"].startswith("cannot render frame 1"), r.text
    r = http.get(f"/studies/{study}/series/{broken.SeriesInstanceUID}/rendered", headers=many)
    assert r.status_code == 500 and "cannot render" in r.json()["detail"]


def test_instance_pydicom_cannot_decompress_is_retrieved_native(http: httpx.Client) -> None:
    """J2K_pixelrep_mismatch.dcm: the default retrieve (Explicit VR Little Endian) was 406
    "cannot decompress ... output array is read-only" though its frames decode (QA probe)."""
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        "CONF-J2K-PR",
        *(generate_uid() for _ in "ab"),
    )
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert _stow_one(http, _part10(ds)).status_code == 200
    r = http.get(_path(ds), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text
    [(ctype, payload)] = _multipart(r)
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    assert np.array_equal(dcmread(io.BytesIO(payload)).pixel_array, ds.pixel_array)


def test_implicit_vr_is_never_sent(http: httpx.Client) -> None:
    """PS3.18 8.6.2: DICOM web services use explicit VR only. An instance stored Implicit
    VR Little Endian came back implicit for transfer-syntax=*, and an explicit request for
    1.2.840.10008.1.2 was served (QA probe): '*' is now Explicit VR Little Endian, the
    implicit request 406 unless the Accept header offers another range."""
    ds = samples.make_instance(MR, patient_id="CONF-IMPLICIT")
    ds.file_meta.TransferSyntaxUID = IMPLICIT_LE
    assert _stow_one(http, _part10(ds)).status_code == 200
    dicom = 'multipart/related; type="application/dicom"'
    r = http.get(_path(ds), headers={"Accept": dicom + "; transfer-syntax=*"})
    [(ctype, payload)] = _multipart(r)
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    got = dcmread(io.BytesIO(payload))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE and not got.original_encoding[0]
    assert np.array_equal(got.pixel_array, ds.pixel_array)
    implicit = f"{dicom}; transfer-syntax={IMPLICIT_LE}"
    for accept in (implicit, f"application/dicom; transfer-syntax={IMPLICIT_LE}"):
        r = http.get(_path(ds), headers={"Accept": accept})
        assert r.status_code == 406 and "8.6.2" in r.json()["detail"], accept
    r = http.get(_path(ds), headers={"Accept": f"{implicit}, {dicom}; q=0.5"})
    assert r.status_code == 200 and _multipart(r)[0][0].endswith(EXPLICIT_LE)
    octets = 'multipart/related; type="application/octet-stream"'
    r = http.get(_path(ds) + "/frames/1", headers={"Accept": f"{octets}; transfer-syntax=*"})
    assert _multipart(r)[0][0].endswith(f"transfer-syntax={EXPLICIT_LE}")
    frames = f"{octets}; transfer-syntax={IMPLICIT_LE}"
    assert http.get(_path(ds) + "/frames/1", headers={"Accept": frames}).status_code == 406


def test_qido_person_name_matches_each_component_group(http: httpx.Client) -> None:
    """PS3.5 6.2.1: a stored Yamada^Tarou=山田^太郎=やまだ^たろう is found by its
    alphabetic group and, with a non-ASCII pattern, by its ideographic or phonetic one, as
    most archives match (QA probe; matching is server.index.queries._pn_clause)."""
    ds = samples.make_instance(MR, patient_id="CONF-PN-GROUPS")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert _stow_one(http, _part10(ds)).status_code == 200

    def found(name: str) -> bool:
        r = http.get("/studies", params={"PatientName": name, "PatientID": "CONF-PN-GROUPS"})
        assert r.status_code == 200, r.text
        return [s["0020000D"]["Value"][0] for s in r.json()] == [ds.StudyInstanceUID]

    for name in ("Yamada^Tarou", "Yamada*", "山田*", "やまだ^たろう", str(ds.PatientName)):
        assert found(name), name
    assert not found("Tarou^Yamada")

    def fuzzy(name: str) -> bool:  # fuzzymatching folded only the alphabetic group
        params = {"PatientName": name, "PatientID": "CONF-PN-GROUPS", "fuzzymatching": "true"}
        r = http.get("/studies", params=params)
        assert r.status_code == 200, r.text
        return len(r.json()) == 1

    for name in ("yamada*", "山田*", "やまだ*"):
        assert fuzzy(name), name
