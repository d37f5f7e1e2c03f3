"""PACS connectivity against a real Orthanc (issue 3; Conformance 4.2.1, 4.2.2, 4.2.4, 4.2.5).

One Orthanc and one Lucent server per module (Orthanc takes ~3 s to stop). Our server knows
Orthanc as a remote node; Orthanc knows our pool AE as a modality (C-MOVE destination and
receiver of its storage commitment reports, which it sends on a new association: way 2).
Our server listens on "::" (dual stack), so the IPv6 C-ECHO goes to ::1.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, RLELossless, generate_uid

from lucent.api import schemas
from lucent.api.client import ApiError, LucentClient
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import (
    Orthanc,
    dcmtk_tool,
    dicom_env,
    end_process,
    free_port,
    run_storescu,
)


@dataclass
class Env:
    server: LucentServer
    api: LucentClient
    orthanc: Orthanc
    node: schemas.RemoteNodeOut
    study: str
    series: str
    mr_study: str
    files: list[Path]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("pacs-orthanc")
    port = free_port()
    server = LucentServer(
        work / "lucent",
        workers=1,
        pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}],
        settings={
            "dimse": {"bind_address": "::"},
            "pacs": {"retry_backoff_seconds": 0.2, "commitment_wait_seconds": 2.0},
        },
    )
    orthanc = Orthanc(modalities={"lucent": ["LUCENT", "127.0.0.1", port]}, workdir=work / "o")
    with server, orthanc:
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="orthanc",
                ae_title=orthanc.aet,
                host="127.0.0.1",
                port=orthanc.port,
                storage_commitment=True,
                timeout=5,
            )
        )
        study, series, mr_study = generate_uid(), generate_uid(), generate_uid()
        files = []
        for i in range(4):
            ds = samples.make_instance(
                CTImageStorage, patient_id="PAT-1", patient_name="Schmidt^Anna",
                study_uid=study, series_uid=series, instance_number=i + 1,
            )  # fmt: skip
            files.append(samples.write(ds, work / f"ct{i}.dcm"))
        ds = samples.make_instance(
            MRImageStorage, patient_id="PAT-1", patient_name="Schmidt^Anna", study_uid=mr_study
        )
        files.append(samples.write(ds, work / "mr.dcm"))
        for f in files:
            orthanc.upload(f)
        yield Env(server, api, orthanc, node, study, series, mr_study, files)
        api.close()


def _add_node(api: LucentClient, name: str, **kw: object) -> schemas.RemoteNodeOut:
    body = {"ae_title": "ANY", "host": "127.0.0.1", "port": free_port(), "timeout": 2.0} | kw
    return api.add_node(schemas.RemoteNodeIn(name=name, **body))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- nodes / C-ECHO


def test_echo_per_node_with_clear_failures(env: Env) -> None:
    ok = env.api.echo_node(env.node.id)
    assert ok.ok and ok.kind == "ok" and ok.status == 0
    refused = env.api.echo_node(_add_node(env.api, "down").id)
    assert not refused.ok and refused.kind == "refused"
    assert "connection refused" in refused.message
    # a port that accepts TCP but never answers the A-ASSOCIATE-RQ
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        node = _add_node(env.api, "silent", port=mute.getsockname()[1], timeout=1.0)
        silent = env.api.echo_node(node.id)
    assert not silent.ok and silent.kind == "timeout" and "within 1 s" in silent.message


def test_echo_over_ipv6(env: Env) -> None:
    node = _add_node(env.api, "self-v6", ae_title="LUCENT", host="::1", port=env.server.port)
    result = env.api.echo_node(node.id)
    assert result.ok, result.message
    assert "[::1]" in result.message


def test_node_edit_and_options(env: Env) -> None:
    node = _add_node(env.api, "editable")
    changed = env.api.update_node(
        node.id, schemas.RemoteNodeIn(name="edited", ae_title="NEWAE", host="::1", port=104)
    )
    assert (changed.name, changed.ae_title, changed.host) == ("edited", "NEWAE", "::1")
    opts = env.api.set_node_options(node.id, propose_compressed=True, commitment_mode="reopen")
    assert opts.propose_compressed and opts.commitment_mode == "reopen"
    with pytest.raises(Exception, match="commitment_mode"):
        env.api.set_node_options(node.id, commitment_mode="pigeon")


def _raw_node(api: LucentClient, method: str, path: str, **change: object) -> ApiError:
    """POST/PUT a node body as an outside client would (no client-side schema check)."""
    body = {"name": "raw", "ae_title": "ANY", "host": "127.0.0.1", "port": 104} | change
    with pytest.raises(ApiError) as err:
        api._request(method, path, json=body)
    return err.value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "   "),
        ("ae_title", "    "),
        ("ae_title", "A\\B"),
        ("ae_title", "AE\tTAB"),
        ("ae_title", "AE\x1bESC"),
        ("ae_title", "MÜLLER"),
        ("ae_title", "A" * 17),
        ("host", "[::1"),
        ("host", "[127.0.0.1]"),
        ("host", "999.1.1.1"),
        ("port", 0),
        ("port", 65536),
    ],
)
def test_node_fields_are_validated(env: Env, field: str, value: object) -> None:
    """PS3.5 AE: at most 16 characters of the default repertoire, no backslash, no control
    characters; blank titles and names, and ports outside 1-65535, were stored as sent."""
    existing = _add_node(env.api, f"target-{field}-{uuid.uuid4().hex[:8]}")
    for method, path in (("POST", "/api/v1/nodes"), ("PUT", f"/api/v1/nodes/{existing.id}")):
        error = _raw_node(env.api, method, path, **{field: value})
        assert error.status == 422 and field in error.detail, (method, error)
    assert all(n.ae_title == "ANY" for n in env.api.nodes() if n.id == existing.id)


def test_node_values_are_stored_normalised(env: Env) -> None:
    """ "[::1]" was stored as typed and every association then failed as "unknown host";
    spaces around an AE title are not significant (PS3.5 6.2) and are dropped."""
    node = env.api.add_node(
        schemas.RemoteNodeIn(
            name=" self-bracketed ", ae_title=" LUCENT  ", host="[::1]", port=env.server.port
        )
    )
    assert (node.name, node.ae_title, node.host) == ("self-bracketed", "LUCENT", "::1")
    result = env.api.echo_node(node.id)
    assert result.ok, result.message
    changed = env.api.update_node(
        node.id,
        schemas.RemoteNodeIn(
            name="self-bracketed", ae_title="LUCENT", host=" [::1] ", port=env.server.port
        ),
    )
    assert changed.host == "::1"


# --------------------------------------------------------------------------- C-FIND


def test_find_study_level_grouped_by_patient(env: Env) -> None:
    out = env.api.pacs_query([env.node.id], "STUDY", PatientID="PAT-1")
    assert out.nodes[0].outcome == "success"
    assert len(out.patients) == 1
    patient = out.patients[0]
    assert patient.patient_name == "Schmidt^Anna"
    assert {s.attrs["StudyInstanceUID"] for s in patient.studies} == {env.study, env.mr_study}
    attrs = next(s.attrs for s in patient.studies if s.attrs["StudyInstanceUID"] == env.study)
    for key in ("StudyDate", "StudyTime", "ModalitiesInStudy", "PatientBirthDate",
                "AccessionNumber", "StudyDescription", "ReferringPhysicianName"):  # fmt: skip
        assert key in attrs  # Conformance 4.2.1.4 return keys
    assert attrs["ModalitiesInStudy"] == "CT"


def test_find_series_and_image_level(env: Env) -> None:
    series = env.api.pacs_query([env.node.id], "SERIES", StudyInstanceUID=env.study)
    assert [r.attrs["SeriesInstanceUID"] for r in series.rows] == [env.series]
    assert series.rows[0].attrs["Modality"] == "CT"
    images = env.api.pacs_query(
        [env.node.id], "IMAGE", StudyInstanceUID=env.study, SeriesInstanceUID=env.series
    )
    assert len(images.rows) == 4
    assert {r.attrs["SOPClassUID"] for r in images.rows} == {CTImageStorage}


def test_find_limit_and_several_nodes(env: Env) -> None:
    down = _add_node(env.api, "down-q")
    out = env.api.pacs_query([env.node.id, down.id], "STUDY", PatientID="PAT-1", limit=1)
    by_node = {n.node: n for n in out.nodes}
    assert by_node["orthanc"].outcome == "truncated" and by_node["orthanc"].count == 1
    assert by_node["down-q"].outcome == "no-association"  # other queries continued
    assert "refused" in by_node["down-q"].message
    assert sum(len(p.studies) for p in out.patients) == 1


def test_case_insensitive_search_on_orthanc(env: Env) -> None:
    out = env.api.pacs_query([env.node.id], "STUDY", PatientName="schmidt*", case_insensitive=True)
    assert sum(len(p.studies) for p in out.patients) == 2
    # Orthanc matches names case-insensitively: nothing hidden, no note
    assert out.nodes[0].case_sensitive is False
    assert not out.nodes[0].hidden_matches_possible


# --------------------------------------------------------------------------- C-MOVE


def test_retrieve_study_into_pool_with_progress(env: Env) -> None:
    job = env.api.retrieve(env.node.id, env.study)
    assert job.kind == "retrieve" and job.state in ("queued", "running", "done")
    job = env.api.wait_job(job.id, timeout=60)
    assert job.state == "done", job.message
    assert (job.completed, job.failed, job.total, job.progress) == (4, 0, 4, 1.0)
    assert job.pool == "DEFAULT"
    studies = env.api.studies(study_uid=env.study)
    assert len(studies) == 1 and studies[0].instance_count == 4
    assert any(j.id == job.id for j in env.api.jobs(kind="retrieve"))


def test_retrieve_single_instance(env: Env) -> None:
    sop = str(dcmread(env.files[4]).SOPInstanceUID)
    series = str(dcmread(env.files[4]).SeriesInstanceUID)
    job = env.api.wait_job(
        env.api.retrieve(env.node.id, env.mr_study, series_uid=series, sop_instance_uid=sop).id
    )
    assert job.state == "done" and job.completed == 1
    assert env.api.instance(sop).sop_instance_uid == sop


def test_retrieve_of_data_we_refuse_names_it_and_is_not_retried(env: Env, tmp_path: Path) -> None:
    """Orthanc holds an instance our Store SCP refuses (pixel data shorter than Rows x
    Columns): the move failed C000 and was retried 7 times (33 s) with nothing pointing at
    the refusal (outside probe). One attempt, and the message names our placeholder."""
    study, series = generate_uid(), generate_uid()
    good = samples.make_instance(CTImageStorage, patient_id="PAT-R", study_uid=study,
                                 series_uid=series, instance_number=1)  # fmt: skip
    bad = samples.make_instance(CTImageStorage, patient_id="PAT-R", study_uid=study,
                                series_uid=series, instance_number=2)  # fmt: skip
    bad.PixelData = bad.PixelData[: len(bad.PixelData) // 2]
    for i, ds in enumerate((good, bad)):
        env.orthanc.upload(samples.write(ds, tmp_path / f"{i}.dcm"))
    job = env.api.wait_job(env.api.retrieve(env.node.id, study).id, timeout=90)
    assert job.state in ("failed", "partial") and job.attempts == 1, (job.state, job.message)
    assert "refused by this archive as non-conformant data" in job.message
    assert [p for p in env.api.placeholders(patient_id="PAT-R")]


def test_retrieve_into_unknown_pool_is_refused(env: Env) -> None:
    with pytest.raises(Exception, match="no data pool"):
        env.api.retrieve(env.node.id, env.study, pool="NOPE")


# --------------------------------------------------------------------------- C-STORE + commitment


def test_send_series_with_storage_commitment(env: Env) -> None:
    env.api.wait_job(env.api.retrieve(env.node.id, env.study).id)  # make sure we hold it
    env.orthanc.delete_all()
    job = env.api.wait_job(env.api.send(env.node.id, series_uid=env.series).id, timeout=60)
    assert job.state == "done", job.message
    assert job.completed == 4 and env.orthanc.count_instances() == 4
    results = env.api.job_instances(job.id)
    assert len(results) == 4 and all(r.status == 0 for r in results)
    assert {r.transfer_syntax_uid for r in results} == {"1.2.840.10008.1.2.1"}
    # way 2: Orthanc sends the N-EVENT-REPORT on a new association to our Store SCP
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = env.api.commitments(job_id=job.id)
        if records and all(r.state != "pending" for r in records):
            break
        time.sleep(0.2)
    assert len(records) == 4
    assert {r.state for r in records} == {"committed"}
    assert {r.request_state for r in records} == {"answered"}


def test_commitment_failure_reason_recorded(env: Env) -> None:
    env.api.wait_job(env.api.retrieve(env.node.id, env.study).id)
    sops = [i.sop_instance_uid for i in env.api.instances(env.series)]
    env.orthanc.delete_all()  # Orthanc no longer has them: commitment must fail
    job = env.api.wait_job(env.api.request_commitment(env.node.id, sops[:2]).id)
    # failed when the report came within the wait; done until a later report arrives
    assert job.state in ("failed", "done"), job.message
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = env.api.commitments(job_id=job.id)
        if records and all(r.state != "pending" for r in records):
            break
        time.sleep(0.2)
    assert {r.state for r in records} == {"failed"}
    assert all(r.failure_reason is not None and r.failure_text for r in records)
    # the job's counts say what the report said (they stayed 0 / 0 of 2)
    job = env.api.job(job.id)
    assert (job.total, job.completed, job.failed) == (2, 0, 2), job
    assert "0 committed, 2 failed" in job.message
    assert job.state == "failed"  # nothing committed is not "done" (outside probe)
    for f in env.files:  # restore Orthanc's content for the other tests
        env.orthanc.upload(f)


def test_send_transcodes_for_a_peer_that_wants_uncompressed(env: Env, tmp_path: Path) -> None:
    """We hold RLE data; DCMTK storescp (no +xa) accepts only uncompressed: we decompress."""
    ds = samples.make_instance(CTImageStorage, patient_id="PAT-RLE", patient_name="Rle^Test")
    ds.compress(RLELossless)
    path = samples.write(ds, tmp_path / "rle.dcm")
    sent = run_storescu([path], "127.0.0.1", env.server.port, "LUCENT")
    assert sent.ok, sent.output
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen(
        [dcmtk_tool("storescp"), "-aet", "PLAIN", "-od", str(out), str(port)],
        env=dicom_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        node = _add_node(env.api, "plain-storescp", ae_title="PLAIN", port=port)
        env.api.set_node_options(node.id, propose_compressed=True)
        job = env.api.wait_job(
            env.api.send(node.id, sop_instance_uids=[str(ds.SOPInstanceUID)], commit=False).id
        )
        assert job.state == "done", job.message
        [result] = env.api.job_instances(job.id)
        assert result.transcoded and result.transfer_syntax_uid in (
            "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
        )  # fmt: skip
        [received] = list(out.iterdir())
        got = dcmread(received)
        assert not got.file_meta.TransferSyntaxUID.is_compressed
        # a lossless change of syntax keeps the instance's identity (pydicom would make a
        # new UID by default, and the peer would then hold an instance we never recorded)
        assert got.SOPInstanceUID == ds.SOPInstanceUID == result.sop_instance_uid
    finally:
        end_process(proc)


def test_send_to_a_down_node_fails_per_instance(env: Env) -> None:
    node = _add_node(env.api, "down-store")
    job = env.api.wait_job(env.api.send(node.id, series_uid=env.series, commit=False).id)
    assert job.state == "failed" and "refused" in job.message
    results = env.api.job_instances(job.id)
    assert len(results) == 4 and all(r.status is None for r in results)
    assert all(r.attempts == 3 for r in results)  # store_retries = 2 extra attempts


def test_commit_request_needs_instances_and_a_commitment_node(env: Env) -> None:
    """An empty list asked Orthanc to commit every instance of our archive; a node not
    configured as a storage commitment SCP was asked anyway. Found by driving the API."""
    env.api.wait_job(env.api.retrieve(env.node.id, env.study).id)
    sops = [i.sop_instance_uid for i in env.api.instances(env.series)]
    before = len(env.api.jobs(kind="commit"))
    with pytest.raises(Exception, match="name the SOP Instance"):
        env.api.request_commitment(env.node.id, [])
    plain = _add_node(env.api, "no-commitment", ae_title=env.orthanc.aet, port=env.orthanc.port)
    with pytest.raises(Exception, match="not a storage commitment SCP"):
        env.api.request_commitment(plain.id, sops[:1])
    assert len(env.api.jobs(kind="commit")) == before
    # a UID that is not archived is named, not silently left out of the request
    with pytest.raises(Exception, match="not in the archive: 1.2.3.999"):
        env.api.request_commitment(env.node.id, [sops[0], "1.2.3.999"])
    with pytest.raises(Exception, match="not in the archive: 1.2.3.999"):
        env.api.send(env.node.id, sop_instance_uids=[sops[0], "1.2.3.999"], commit=False)
    assert len(env.api.jobs(kind="commit")) == before
