"""Where a refused instance's "non-conformant data" entry is listed (Conformance 4.1.3.2:
"under its patient/study, or under an 'unknown' patient"), against the real server: DCMTK
storescu and a raw pynetdicom C-STORE into our Store SCP, STOW-RS over HTTP (outside
probe 28)."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from lucent.api.schemas import PlaceholderOut
from tests.data import bad_inputs, samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

CT = bad_inputs.CT


def _ct(patient_id: str, **kwargs: object) -> Dataset:
    return samples.make_instance(
        CT, patient_id=patient_id, patient_name="Filing^Probe", rows=16, cols=16, **kwargs
    )


def _short_pixels(ds: Dataset) -> Dataset:
    """Well-formed, refused with A900: Pixel Data holds half of Rows x Columns x 16 bits."""
    bad = copy.deepcopy(ds)
    bad.PixelData = bad.PixelData[: len(bad.PixelData) // 2]
    return bad


def _entries(api: LucentClient, sop_uid: str) -> list[PlaceholderOut]:
    """The placeholders of one SOP Instance (the route filters by patient/study keys)."""
    return [e for e in api.placeholders() if e.sop_instance_uid == sop_uid]


def _storescu(server: LucentServer, tmp_path: Path, name: str, ds: Dataset) -> None:
    path = samples.write(ds, tmp_path / f"{name}.dcm")
    out = storescu("127.0.0.1", server.port, server.ae_title, [path])
    assert "Received Store Response" in out.stdout + out.stderr, out.stderr[-2000:]


def test_refused_instance_of_patient_with_issuer_joins_that_patient(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """The entry goes under the archived patient (Patient ID + Issuer of Patient ID), not
    under a second "ghost" patient of the same ID without an issuer: the refusal could not
    read the issuer and filed it under issuer ""."""
    pid = "PH-ISSUER-" + generate_uid()[-8:]
    good = _ct(pid)
    good.IssuerOfPatientID = "HOSP"
    _storescu(server, tmp_path, "good", good)
    # one more of the archived study (the study names the patient), refused
    same_study = _short_pixels(good)
    same_study.SOPInstanceUID = generate_uid()
    _storescu(server, tmp_path, "same_study", same_study)
    # one of a study never archived: the only patient with this ID
    new_study = _short_pixels(good)
    new_study.SOPInstanceUID, new_study.StudyInstanceUID = generate_uid(), generate_uid()
    new_study.SeriesInstanceUID = generate_uid()
    _storescu(server, tmp_path, "new_study", new_study)
    entries = api.placeholders(patient_id=pid)
    assert {e.sop_instance_uid for e in entries} == {
        str(same_study.SOPInstanceUID),
        str(new_study.SOPInstanceUID),
    }
    patients = [(p.issuer, p.study_count, p.non_conformant) for p in api.patients(patient_id=pid)]
    assert patients == [("HOSP", 1, 2)]


@pytest.fixture
def own_server(fresh_server: LucentServer) -> Iterator[LucentServer]:
    """A server of its own: the test checks the UNKNOWN entry, which others fill."""
    fresh_server.start()
    yield fresh_server


def test_placeholder_moves_to_its_patient_when_a_better_copy_is_refused(
    own_server: LucentServer, tmp_path: Path
) -> None:
    """A copy cut off before its Patient ID is listed under UNKNOWN; a complete copy of the
    same SOP Instance refused for its pixel data moves the one entry to its patient (it
    stayed under UNKNOWN with the new study UID), and the emptied UNKNOWN entry goes. A
    copy that names nobody again leaves it where the better one put it."""
    api = own_server.client()
    pid = "PH-MOVE-1"
    [first, second] = samples.ct_series(2)
    for ds in (first, second):
        ds.PatientID, ds.PatientName = pid, "Move^Probe"
    _storescu(own_server, tmp_path, "first", first)  # the study is archived under pid
    second.PixelData = second.PixelData[: len(second.PixelData) // 2]
    uid = str(second.SOPInstanceUID)
    encoded = bad_inputs.encode(copy.deepcopy(second))
    cut = encoded[: encoded.index(b"Move^Probe") + 4]  # inside Patient's Name
    truncated = replace(
        bad_inputs.BadInput("cut", bad_inputs.C000, "", b""),
        dataset=cut,
        sop_class_uid=str(second.SOPClassUID),
        sop_instance_uid=uid,
    )
    code = bad_inputs.send_raw_c_store(
        truncated, "127.0.0.1", own_server.port, called_ae=own_server.ae_title
    )
    assert code is not None and code >= 0xA000, code
    [entry] = _entries(api, uid)
    assert entry.patient_id == "UNKNOWN"
    _storescu(own_server, tmp_path, "second", second)
    [entry] = _entries(api, uid)
    assert 0xA900 <= entry.status <= 0xA9FF, hex(entry.status)
    assert (entry.patient_id, entry.study_uid) == (pid, str(second.StudyInstanceUID))
    assert api.patients(patient_id="UNKNOWN") == []
    [patient] = api.patients(patient_id=pid)
    assert (patient.study_count, patient.non_conformant) == (1, 1)
    code = bad_inputs.send_raw_c_store(
        truncated, "127.0.0.1", own_server.port, called_ae=own_server.ae_title
    )
    assert code is not None and code >= 0xA000, code
    [entry] = _entries(api, uid)
    assert (entry.patient_id, entry.study_uid) == (pid, str(second.StudyInstanceUID))
    assert entry.status >= 0xC000  # the newest refusal's status and reason
    assert api.patients(patient_id="UNKNOWN") == []
    api.close()


def test_stow_of_unsupported_sop_class_leaves_a_placeholder(
    server: LucentServer, api: LucentClient
) -> None:
    """Seed 4.1.3.2: an unsupported SOP Class is "treated the same way" as invalid data: a
    "non-conformant data" entry with the reason, besides the 0122 failure (STOW-RS refused
    it before the ingest path, which records the entry)."""
    pid = "PH-STOW-CLASS-" + generate_uid()[-8:]
    ds = _ct(pid)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6"
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
        timeout=60,
    )
    assert r.status_code == 409, r.text
    [failed] = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0122]
    assert failed["00081155"]["Value"] == [str(ds.SOPInstanceUID)]
    [entry] = _entries(api, str(ds.SOPInstanceUID))
    assert (entry.patient_id, entry.study_uid) == (pid, str(ds.StudyInstanceUID))
    assert entry.status == 0x0122 and entry.sop_class_uid == "1.2.3.4.5.6"
    assert "1.2.3.4.5.6" in entry.reason
    assert not [s for s in api.studies(patient_id=pid) if not s.placeholder]
