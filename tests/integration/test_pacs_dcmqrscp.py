"""DCMTK dcmqrscp as a second, differently behaving PACS: case-sensitive name matching.

The FAQ case: on such a PACS "schmidt" finds nothing and "Schmidt" does. Our case-insensitive
search queries the spellings we can derive and says that others may be hidden (issue 3).
Also: association rejected for an unknown called AE title, and a SERIES level C-MOVE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, generate_uid

from lucent.api import schemas
from lucent.api.client import ApiError
from tests.data import samples
from tests.support.dcmqrscp import LucentWithQr, ct_files, lucent_with_dcmqrscp


@dataclass
class Env(LucentWithQr):
    study: str
    series: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("pacs-dcmqrscp")
    study, series = generate_uid(), generate_uid()
    files = ct_files(
        work, 3, "qr", patient_id="PAT-QR", patient_name="Schmidt^Anna", study_uid=study,
        series_uid=series,
    )  # fmt: skip
    with lucent_with_dcmqrscp(work, files) as up:
        yield Env(up.server, up.api, up.qr, up.node, study, series)


def test_echo_rejected_for_unknown_called_ae(env: Env) -> None:
    assert env.api.echo_node(env.node.id).ok
    wrong = env.api.add_node(
        schemas.RemoteNodeIn(
            name="wrong-ae", ae_title="NOTHERE", host="127.0.0.1", port=env.qr.port
        )
    )
    result = env.api.echo_node(wrong.id)
    assert not result.ok and result.kind == "rejected"
    assert "Called AE" in result.message or "called AE" in result.message


def test_case_sensitive_pacs_finds_nothing_for_lower_case(env: Env) -> None:
    out = env.api.pacs_query([env.node.id], "STUDY", PatientName="schmidt*")
    assert out.nodes[0].outcome == "success" and out.patients == []


def test_case_insensitive_search_finds_it_and_warns(env: Env) -> None:
    out = env.api.pacs_query([env.node.id], "STUDY", PatientName="schmidt*", case_insensitive=True)
    assert [s.attrs["StudyInstanceUID"] for p in out.patients for s in p.studies] == [env.study]
    result = out.nodes[0]
    assert result.case_sensitive is True and result.hidden_matches_possible
    assert "case-sensitively" in result.case_note and "'Schmidt*'" in result.case_note


def test_retrieve_series_from_dcmqrscp(env: Env) -> None:
    job = env.api.wait_job(
        env.api.retrieve(env.node.id, env.study, series_uid=env.series).id, timeout=60
    )
    assert job.state == "done", job.message
    assert job.completed == 3 and job.params["level"] == "SERIES"
    assert len(env.api.instances(env.series)) == 3


def test_retrieve_needs_a_valid_study_uid(env: Env) -> None:
    """An empty Study Instance UID is universal matching: dcmqrscp would move its whole
    archive into our pool. Found by driving the API as an outside client."""
    before = env.api.studies()
    for bad in ("", "  ", "*", "not a uid!!", "1.2.3\\"):
        with pytest.raises(Exception, match="Study Instance UID"):
            env.api.retrieve(env.node.id, bad)
    with pytest.raises(Exception, match="Series Instance UID"):
        env.api.retrieve(env.node.id, env.study, series_uid="1.2.*")
    assert env.api.studies() == before


def test_query_with_an_unknown_key_is_refused(env: Env) -> None:
    """A misspelt key used to be dropped silently: the PACS answered every study."""
    with pytest.raises(Exception, match="PatientsName"):
        env.api.pacs_query([env.node.id], "STUDY", PatientsName="Nobody*")
    with pytest.raises(Exception, match="PixelData"):
        env.api.pacs_query([env.node.id], "STUDY", PixelData="x")  # was a 500
    with pytest.raises(Exception, match="Rows"):
        env.api.pacs_query([env.node.id], "IMAGE", Rows="abc")  # was a 500 too


def test_series_and_image_queries_name_the_levels_above(env: Env) -> None:
    """Hierarchical search (PS3.4 C.4.1.2.2.1): a SERIES query without the Study Instance
    UID made dcmqrscp answer series of every patient (it ignores patient keys there) while
    Orthanc filtered them; now a 422 naming the key, before any association."""
    with pytest.raises(ApiError, match="StudyInstanceUID") as err:
        env.api.pacs_query([env.node.id], "SERIES", PatientID="PAT-QR")
    assert err.value.status == 422
    with pytest.raises(ApiError, match="SeriesInstanceUID"):
        env.api.pacs_query([env.node.id], "IMAGE", StudyInstanceUID=env.study)
    with pytest.raises(ApiError, match="StudyInstanceUID"):
        env.api.pacs_query([env.node.id], "SERIES", StudyInstanceUID="1.2.*")
    out = env.api.pacs_query([env.node.id], "SERIES", StudyInstanceUID=env.study)
    assert out.rows and {r.attrs["StudyInstanceUID"] for r in out.rows} == {env.study}


def test_merged_rows_name_every_node_that_has_them(env: Env) -> None:
    """Two nodes holding the same study: the merged row lists both names and both ids."""
    twin = env.api.add_node(
        schemas.RemoteNodeIn(
            name="dcmqrscp-twin", ae_title=env.qr.aet, host="127.0.0.1",
            port=env.qr.port, timeout=5,
        )
    )  # fmt: skip
    out = env.api.pacs_query(
        [env.node.id, twin.id, env.node.id], "STUDY", StudyInstanceUID=env.study
    )
    assert [n.node_id for n in out.nodes] == [env.node.id, twin.id]  # each node queried once
    [patient] = out.patients
    [study] = patient.studies
    assert study.nodes == ["dcmqrscp", "dcmqrscp-twin"]
    assert study.node_ids == [env.node.id, twin.id]
    # what each node answered, aligned with the names: counts differ between PACS that
    # hold parts of a study, and the merged row showed only the first (outside probe)
    assert [a["StudyInstanceUID"] for a in study.node_attrs] == [env.study, env.study]


def test_query_with_a_non_ascii_name(env: Env, tmp_path: Path) -> None:
    """'Müller*' went out as Latin-1 bytes with no Specific Character Set: dcmqrscp found
    nothing although it holds the study (findscu with ISO_IR 100 finds it)."""
    ds = samples.make_instance(CTImageStorage, patient_id="PAT-MU", patient_name="Müller^Jörg")
    ds.SpecificCharacterSet = "ISO_IR 100"
    env.qr.add_files([samples.write(ds, tmp_path / "mueller.dcm")])
    out = env.api.pacs_query([env.node.id], "STUDY", PatientName="Müller*")
    assert out.nodes[0].outcome == "success", out.nodes[0].message
    assert [p.patient_name for p in out.patients] == ["Müller^Jörg"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("StudyDate", "2024"),
        ("StudyDate", "20241301"),
        ("StudyDate", "20241231-20240101"),  # a range that ends before it begins
        ("PatientBirthDate", "1970-02-30"),
        ("StudyTime", "2561"),
    ],
)
def test_query_with_an_invalid_date_is_refused(env: Env, key: str, value: str) -> None:
    """An invalid date went to the PACS and came back as an empty 200 ("no studies"),
    indistinguishable from an empty PACS. The QIDO-RS / local-list check answers it now."""
    with pytest.raises(ApiError) as err:
        env.api.pacs_query([env.node.id], "STUDY", **{key: value})
    assert err.value.status == 422
    assert key in err.value.detail
    assert ("YYYYMMDD" if "Date" in key else "HHMMSS") in err.value.detail or (
        "ends before it begins" in err.value.detail
    )


@pytest.mark.parametrize("value", ["1.2.*", "1.2.840.1000?"])
def test_query_with_a_wildcard_uid_is_refused(env: Env, value: str) -> None:
    """PS3.4 C.2.2.2.2: UIDs match exactly or as a list; "1.2.*" went out to the PACS."""
    with pytest.raises(ApiError) as err:
        env.api.pacs_query([env.node.id], "SERIES", StudyInstanceUID=value)
    assert err.value.status == 422 and "wildcards are not allowed" in err.value.detail


def test_query_with_valid_dates_still_matches(env: Env) -> None:
    day = samples.STUDY_DATE
    iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    for value in (day, f"{day}-", f"-{day}", f"{day}-{day}", iso):
        out = env.api.pacs_query([env.node.id], "STUDY", StudyDate=value, PatientID="PAT-QR")
        assert out.nodes[0].outcome == "success", (value, out.nodes[0].message)
        found = [s.attrs["StudyInstanceUID"] for p in out.patients for s in p.studies]
        assert found == [env.study], value


def test_permanent_rejection_is_not_retried(env: Env) -> None:
    """dcmqrscp answers an unknown called AE title with A-ASSOCIATE-RJ result 1
    (rejected-permanent): the retrieve and the send tried it 3 more times (~14 s) for the
    same answer. They fail at once now, with the reason."""
    wrong = env.api.add_node(
        schemas.RemoteNodeIn(
            name="wrong-ae-jobs", ae_title="NOTHERE", host="127.0.0.1", port=env.qr.port
        )
    )
    job = env.api.wait_job(env.api.retrieve(wrong.id, env.study).id, timeout=60)
    assert job.state == "failed" and job.attempts == 1, job  # no retry (no wall-clock test)
    assert "Called AE title not recognised" in job.message and "permanent" in job.message

    env.api.wait_job(env.api.retrieve(env.node.id, env.study).id, timeout=60)
    job = env.api.wait_job(env.api.send(wrong.id, series_uid=env.series, commit=False).id)
    assert job.state == "failed" and job.attempts == 1, job
    assert "Called AE title not recognised" in job.message and "permanent" in job.message
    results = env.api.job_instances(job.id)
    assert len(results) == 3 and all(r.attempts == 1 and r.status is None for r in results)


def test_retrieve_that_matches_nothing_says_so(env: Env) -> None:
    """dcmqrscp answers a C-MOVE for a study it does not hold with success and no
    sub-operations: the job said "done" with nothing to show for it."""
    job = env.api.wait_job(env.api.retrieve(env.node.id, generate_uid()).id, timeout=60)
    assert job.state == "done" and job.completed == 0 and job.total == 0
    assert "matched no instances" in job.message and "study" in job.message
