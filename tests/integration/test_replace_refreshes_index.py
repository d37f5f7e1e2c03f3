"""A corrected re-send (same SOP Instance UID, duplicate policy "replace", the default)
must change what the lists and searches show, not only the archived bytes.

Outside probe 41: a modality re-sent an instance with the patient's name, the Modality and
the descriptions corrected; the archive served the new copy, but the API lists and QIDO-RS
kept the first copy's name, modality and descriptions, and a search for the corrected name
found nothing. The second copy of a series this server process has seen took the ingest
fast path, which only rewrote the instance row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

SC = "1.2.840.10008.5.1.4.1.1.7"
"""Secondary Capture: any Modality is valid for it (CT Image Storage refuses "MR")."""


def _copies(tmp_path: Path, patient_id: str, extra: int) -> tuple[list[Path], list[Path]]:
    """``extra`` + 1 instances of one series as first sent (CT, a typo in the name) and
    the same UIDs corrected (MR, new name, descriptions, birth date)."""
    first = samples.make_instance(SC, patient_id=patient_id, patient_name="Wrnog^Anna")
    uids = {
        "study_uid": str(first.StudyInstanceUID),
        "series_uid": str(first.SeriesInstanceUID),
    }
    sent, corrected = [], []
    for i in range(extra + 1):
        ds = samples.make_instance(
            SC, patient_id=patient_id, patient_name="Wrnog^Anna", instance_number=i + 1, **uids
        )
        ds.Modality, ds.SeriesDescription, ds.StudyDescription = "CT", "first", "first"
        sent.append(samples.write(ds, tmp_path / f"a{i}.dcm"))
        ds.PatientName, ds.PatientBirthDate = "Wrong^Anna", "19700101"
        ds.Modality, ds.SeriesDescription, ds.StudyDescription = "MR", "corrected", "corrected"
        corrected.append(samples.write(ds, tmp_path / f"b{i}.dcm"))
    return sent, corrected


@pytest.mark.parametrize(
    ("extra", "one_association"),
    [(0, False), (3, False), (3, True)],
    ids=["one-instance", "series-of-four", "same-association"],
)
def test_a_corrected_resend_is_what_lists_and_searches_show(
    server: LucentServer,
    api: LucentClient,
    web: DICOMwebClient,
    tmp_path: Path,
    extra: int,
    one_association: bool,
) -> None:
    """In one association the corrected copies surely meet a series the serving process
    has cached (the ingest fast path); in two they may reach another worker process."""
    patient_id = f"REFRESH-{extra}-{one_association}"
    sent, corrected = _copies(tmp_path, patient_id, extra)
    batches = [sent + corrected] if one_association else [sent, corrected]
    for batch in batches:
        assert storescu("127.0.0.1", server.port, server.ae_title, batch).returncode == 0
    study_uid = str(dcmread(sent[0]).StudyInstanceUID)

    [study] = api.studies(study_uid=study_uid)
    assert (study.patient_name, study.description) == ("Wrong^Anna", "corrected")
    assert study.modalities == ["MR"]
    [series] = api.series(study_uid)
    assert (series.modality, series.description) == ("MR", "corrected")
    assert series.instance_count == extra + 1
    [patient] = api.patients(patient_id=patient_id)
    assert (patient.name, patient.birth_date) == ("Wrong^Anna", "19700101")
    # the corrected name is found, the typo is not
    named = api.studies(patient_name="Wrong^Anna", patient_id=patient_id)
    assert [s.study_uid for s in named] == [study_uid]
    assert api.studies(patient_name="Wrnog^Anna", patient_id=patient_id) == []
    found = web.search_for_studies(
        search_filters={"PatientName": "Wrong^Anna", "PatientID": patient_id}
    )
    assert [s["0020000D"]["Value"][0] for s in found] == [study_uid]
    [qido_series] = web.search_for_series(study_uid)
    assert qido_series["00080060"]["Value"] == ["MR"]
    assert qido_series["0008103E"]["Value"] == ["corrected"]


def test_an_unchanged_resend_keeps_the_lists(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """The same copy again changes nothing that is listed (the fast path's common case)."""
    sent, _ = _copies(tmp_path, "REFRESH-SAME", 2)
    for _ in range(2):
        assert storescu("127.0.0.1", server.port, server.ae_title, sent).returncode == 0
    study_uid = str(dcmread(sent[0]).StudyInstanceUID)
    [study] = api.studies(study_uid=study_uid)
    assert (study.patient_name, study.description, study.modalities) == (
        "Wrnog^Anna",
        "first",
        ["CT"],
    )
    [series] = api.series(study_uid)
    assert series.instance_count == 3
