"""Our Query/Retrieve SCP driven by DCMTK findscu, movescu and getscu."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import StoreScp, dcmtk_tool, dicom_env

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def study(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("qr")
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i in range(3):
        ds = samples.make_instance(
            CT, patient_id="QR-1", patient_name="Müller^Jürgen", study_uid=study_uid,
            series_uid=series_uid, instance_number=i + 1,
        )  # fmt: skip
        ds.AccessionNumber = "ACC-QR-1"
        files.append(samples.write(ds, folder / f"{i}.dcm"))
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    return {"study": study_uid, "series": series_uid, "files": files}


@pytest.fixture(scope="module")
def nodes(api: LucentClient) -> Iterator[None]:
    added = [
        api.add_node(
            schemas.RemoteNodeIn(name=f"qr-{aet}", ae_title=aet, host="127.0.0.1", port=104)
        )
        for aet in ("FINDSCU", "MOVESCU", "GETSCU")
    ]
    yield
    for n in added:
        api.delete_node(n.id)


def _tool(name: str, server: LucentServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool(name), "-v", "-aet", name.upper(), "-aec", server.ae_title, *args,
         "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip


def test_find_study_level_returns_requested_keys(
    server: LucentServer, study: dict[str, object], nodes: None
) -> None:
    done = _tool(
        "findscu", server, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=QR-1",
        "-k", "PatientName", "-k", "StudyInstanceUID", "-k", "AccessionNumber",
        "-k", "NumberOfStudyRelatedInstances", "-k", "ModalitiesInStudy",
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert str(study["study"]) in out
    assert "ACC-QR-1" in out
    assert "PN [Müller^Jürgen ]" in out  # UTF-8 (ISO_IR 192) answer, decoded by DCMTK
    counts = [line for line in out.splitlines() if "NumberOfStudyRelatedInstances" in line]
    assert "IS [3 ]" in counts[-1]


def test_find_series_and_image_levels(
    server: LucentServer, study: dict[str, object], nodes: None
) -> None:
    done = _tool(
        "findscu", server, "-S", "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={study['study']}", "-k", "SeriesInstanceUID", "-k", "Modality",
    )  # fmt: skip
    assert str(study["series"]) in done.stdout + done.stderr
    done = _tool(
        "findscu", server, "-S", "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={study['study']}", "-k", f"SeriesInstanceUID={study['series']}",
        "-k", "SOPInstanceUID",
    )  # fmt: skip
    out = done.stdout + done.stderr
    for f in study["files"]:  # type: ignore[attr-defined]
        assert str(dcmread(f).SOPInstanceUID) in out


def test_patient_root_find(server: LucentServer, study: dict[str, object], nodes: None) -> None:
    done = _tool(
        "findscu", server, "-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=QR-*",
        "-k", "PatientName",
    )  # fmt: skip
    assert "QR-1" in done.stdout + done.stderr


def test_unknown_caller_is_refused(
    server: LucentServer, study: dict[str, object], tmp_path: Path
) -> None:
    """A Q/R association from an unknown caller is rejected at once with the reason: a
    C-FIND-only one, and a C-GET one whose storage contexts are for receiving (getscu
    proposes them with the SCP role), so it carries no storage towards us."""
    for tool, extra in (("findscu", []), ("getscu", ["-od", str(tmp_path)])):
        done = subprocess.run(
            [dcmtk_tool(tool), "-v", "-aet", "STRANGER", "-aec", server.ae_title, "-S",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['study']}",
             *extra, "127.0.0.1", str(server.port)],
            capture_output=True, text=True, env=dicom_env(True), timeout=60,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert "Association Rejected" in out, out
        # getscu -v does not print the reason; findscu does
        assert tool == "getscu" or "Calling AE Title Not Recognized" in out, out
        assert str(study["series"]) not in out
    assert not list(tmp_path.iterdir())


def test_unknown_caller_storing_and_querying_is_refused_per_request(
    server: LucentServer, study: dict[str, object]
) -> None:
    """An association that also offers storage towards us stays open (storage is open to
    all callers, Conformance 4.2.3.5); its C-FIND is refused with 0x0124."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = str(study["study"])
        answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [int(s.Status) for s, _ in answers] == [0x0124]
        assert all(ident is None for _, ident in answers)
    finally:
        assoc.release()


def test_move_study_to_configured_destination(
    server: LucentServer,
    api: LucentClient,
    study: dict[str, object],
    nodes: None,
    tmp_path: Path,
) -> None:
    with StoreScp(tmp_path / "dest", aet="DESTSCP") as dest:
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="dest",
                ae_title="DESTSCP",
                host="127.0.0.1",
                port=dest.port,
                query_retrieve=False,
            )
        )
        try:
            done = _tool(
                "movescu", server, "-S", "-aem", "DESTSCP", "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={study['study']}",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            received = {str(dcmread(f).SOPInstanceUID) for f in dest.files()}
            sent = {str(dcmread(f).SOPInstanceUID) for f in study["files"]}  # type: ignore[attr-defined]
            assert received == sent
            unknown = _tool(
                "movescu", server, "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={study['study']}",
            )  # fmt: skip
            assert "a801" in (
                unknown.stdout + unknown.stderr
            ).lower() or "MoveDestinationUnknown" in (unknown.stdout + unknown.stderr)
        finally:
            api.delete_node(node.id)


def test_get_series(
    server: LucentServer, study: dict[str, object], nodes: None, tmp_path: Path
) -> None:
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    done = _tool(
        "getscu", server, "-S", "-od", str(out_dir), "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={study['study']}", "-k", f"SeriesInstanceUID={study['series']}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = sorted(p for p in out_dir.iterdir())
    assert len(got) == 3
    originals = {str(dcmread(f).SOPInstanceUID): f for f in study["files"]}  # type: ignore[attr-defined]
    for p in got:
        ds = dcmread(p)
        assert ds.PixelData == dcmread(originals[str(ds.SOPInstanceUID)]).PixelData


def test_network_access_is_audited(
    server: LucentServer, api: LucentClient, study: dict[str, object], nodes: None
) -> None:
    """IHE ATNA for the DIMSE side: receipt, queries, retrievals and refusals by remote
    nodes appear in the audit trail with the caller's AE title and address."""
    uid = str(study["study"])
    received = [r for r in api.audit(event_id="110104", object_id=uid) if r.action == "C"]
    assert len(received) == 1 and "3 instance(s) received" in received[0].detail
    assert received[0].address == "127.0.0.1"
    queries = api.audit(event_id="110112", user="FINDSCU")
    assert any("PatientID=QR-1" in q.objects[0]["id"] for q in queries), queries
    sent = [r for r in api.audit(event_id="110104", object_id=uid) if r.action == "R"]
    assert {r.user for r in sent} >= {"MOVESCU", "GETSCU"}, sent
    assert any("C-MOVE of 3 instance(s) to DESTSCP" in r.detail for r in sent)
    refused = api.audit(event_id="110113", user="STRANGER")
    assert refused and "not a configured remote node" in refused[0].detail
    assert api.audit_verify().intact
