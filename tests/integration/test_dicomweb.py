"""DICOMweb against the real server with the standard `dicomweb-client` package."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import ADMIN_PASSWORD, ADMIN_USER, LucentServer

MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def mr(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> list:
    folder = tmp_path_factory.mktemp("web")
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i in range(2):
        ds = samples.make_instance(
            MR,
            patient_id="WEB-1",
            patient_name="Web^Walter",
            study_uid=study,
            series_uid=series,
            instance_number=i + 1,
        )
        ds.ImagePositionPatient = [-8.0, -8.0, float(i)]  # two slices of one volume
        ds.FrameOfReferenceUID = frame  # one volume: one Frame of Reference
        out.append(ds)
        samples.write(ds, folder / f"{i}.dcm")
    files = sorted(folder.iterdir())
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    return out


def test_qido_and_wado_roundtrip(web: DICOMwebClient, mr: list) -> None:
    first = mr[0]
    studies = web.search_for_studies(search_filters={"PatientID": "WEB-1"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [first.StudyInstanceUID]
    series = web.search_for_series(study_instance_uid=first.StudyInstanceUID)
    assert series[0]["0020000E"]["Value"][0] == first.SeriesInstanceUID
    instances = web.search_for_instances(
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=first.SeriesInstanceUID
    )
    assert {i["00080018"]["Value"][0] for i in instances} == {d.SOPInstanceUID for d in mr}
    got = web.retrieve_instance(
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    )
    assert got.SOPInstanceUID == first.SOPInstanceUID
    assert np.array_equal(got.pixel_array, first.pixel_array)
    whole = web.retrieve_study(first.StudyInstanceUID)
    assert {d.SOPInstanceUID for d in whole} == {d.SOPInstanceUID for d in mr}
    meta = web.retrieve_series_metadata(first.StudyInstanceUID, first.SeriesInstanceUID)
    assert {m["00080018"]["Value"][0] for m in meta} == {d.SOPInstanceUID for d in mr}
    frames = web.retrieve_instance_frames(
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID, frame_numbers=[1]
    )
    arr = np.frombuffer(frames[0], dtype=first.pixel_array.dtype).reshape(first.pixel_array.shape)
    assert np.array_equal(arr, first.pixel_array)


def test_case_insensitive_qido_with_fuzzymatching(web: DICOMwebClient, mr: list) -> None:
    hits = web.search_for_studies(search_filters={"PatientName": "web*"}, fuzzymatching=True)
    assert hits and hits[0]["00100020"]["Value"][0] == "WEB-1"
    assert web.search_for_studies(search_filters={"PatientName": "web*"}) == []


def test_stow_then_read_back(web: DICOMwebClient, api: LucentClient) -> None:
    ds = samples.make_instance(MR, patient_id="STOW-1")
    web.store_instances([ds])
    assert api.instance(str(ds.SOPInstanceUID)).sop_class_uid == MR
    stored = dcmread(io.BytesIO(api.instance_file(str(ds.SOPInstanceUID))))
    assert np.array_equal(stored.pixel_array, ds.pixel_array)


def test_stow_bad_instance_is_reported_failed(server: LucentServer, api: LucentClient) -> None:
    ds = samples.make_instance(MR, patient_id="STOW-BAD")
    del ds.StudyInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + buf.getvalue() + b"\r\n--XX--\r\n"
    r = httpx.post(
        f"{server.api_url}/dicom-web/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {api.token}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=XX',
        },
    )
    assert r.status_code == 409
    failed = r.json()["00081198"]["Value"][0]
    assert 0xA900 <= failed["00081197"]["Value"][0] <= 0xA9FF


def test_basic_auth_and_no_anonymous_access(server: LucentServer, mr: list) -> None:
    url = f"{server.api_url}/dicom-web/studies"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=(ADMIN_USER, "wrong-password")).status_code == 401
    ok = httpx.get(url, auth=(ADMIN_USER.upper(), ADMIN_PASSWORD), params={"PatientID": "WEB-1"})
    assert ok.status_code == 200 and ok.json()
    for path in (
        "/api/v1/studies",
        "/api/v1/patients",
        f"/api/v1/instances/{mr[0].SOPInstanceUID}/file",
    ):
        assert httpx.get(server.api_url + path).status_code == 401


def test_rendered_png(server: LucentServer, api: LucentClient, mr: list, tmp_path: Path) -> None:
    d = mr[0]
    r = httpx.get(
        f"{server.api_url}/dicom-web/studies/{d.StudyInstanceUID}/series/{d.SeriesInstanceUID}"
        f"/instances/{d.SOPInstanceUID}/rendered",
        headers={"Authorization": f"Bearer {api.token}", "Accept": "image/png"},
    )
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape[:2] == d.pixel_array.shape[:2] and img.max() > img.min()


def test_volume_api(api: LucentClient, mr: list) -> None:
    vol = api.volume(str(mr[0].SeriesInstanceUID))
    assert vol.array.shape[0] == 2
    by_uid = {d.SOPInstanceUID: d for d in mr}
    for k, s in enumerate(vol.geometry.slices):
        assert np.array_equal(vol.array[k], by_uid[s.sop_instance_uid].pixel_array)
