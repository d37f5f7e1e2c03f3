"""Query/Retrieve SCP conformance (PS3.4 Annex C) as outside testers probe it.

Real SCUs against the real server: DCMTK movescu/findscu and pynetdicom, which reports the
exact status codes and sub-operation counts the standard asks for.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import StoreScp, dcmtk_tool, dicom_env, free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SCU = "CONFSCU"  # the calling AE title of every request here (a configured Q/R node)


@pytest.fixture(scope="module")
def data(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One study of two series (CT and MR) with Latin and non-ASCII text, stored once."""
    folder = tmp_path_factory.mktemp("qr-conformance")
    study_uid, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    files = []
    for i, (cls, series) in enumerate([(CT, ct_series)] * 3 + [(MR, mr_series)] * 2):
        ds = samples.make_instance(
            cls, patient_id="QRC-1", patient_name="Ünal^Zoë", study_uid=study_uid,
            series_uid=series, instance_number=i + 1, series_number=1 if cls == CT else 2,
        )  # fmt: skip
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyDescription = "Head CT"
        ds.SeriesDescription = "Axial"
        files.append(samples.write(ds, folder / f"{i}.dcm"))
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    return {"study": study_uid, "ct": ct_series, "mr": mr_series, "files": files}


@pytest.fixture(scope="module")
def caller(api: LucentClient) -> Iterator[str]:
    """Our SCU as a configured remote node: Q/R is closed to anyone else."""
    node = api.add_node(
        schemas.RemoteNodeIn(name="qr-conformance", ae_title=SCU, host="127.0.0.1", port=104)
    )
    yield SCU
    api.delete_node(node.id)


@pytest.fixture
def destination(api: LucentClient, tmp_path: Path) -> Iterator[StoreScp]:
    """A storescp that accepts only Implicit VR Little Endian, the default transfer syntax
    every DICOM receiver must support (PS3.5 10.1), registered as C-MOVE destination."""
    with StoreScp(tmp_path / "dest", aet="IMPLICITONLY", extra_args=["+xi"]) as dest:
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="implicit-only",
                ae_title="IMPLICITONLY",
                host="127.0.0.1",
                port=dest.port,
                query_retrieve=False,
            )
        )
        try:
            yield dest
        finally:
            api.delete_node(node.id)


def _identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _find(
    server: LucentServer, identifier: Dataset, model: Any
) -> list[tuple[int, Dataset | None]]:
    """C-FIND with pynetdicom: every (status, identifier) response in order."""
    ae = AE(ae_title=SCU)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        out: list[tuple[int, Dataset | None]] = []
        for st, ds in assoc.send_c_find(identifier, model):
            failed = ds is None and int(st.Status) not in (0x0000, 0xFE00)
            out.append((int(st.Status), st if failed else ds))
        return out
    finally:
        assoc.release()


def _move(server: LucentServer, identifier: Dataset, destination: str) -> list[Dataset]:
    """C-MOVE with pynetdicom: every response's command set, in order."""
    model = StudyRootQueryRetrieveInformationModelMove
    ae = AE(ae_title=SCU)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [st for st, _ in assoc.send_c_move(identifier, destination, model)]
    finally:
        assoc.release()


def _get_study(
    server: LucentServer, study: str, classes: set[str], caller: str
) -> tuple[Dataset, Dataset | None, list[str], int]:
    """C-GET of a study with pynetdicom, storage offered in Explicit and Implicit VR LE:
    (final response, its identifier, SOP Instance UIDs received, C-ECHO status after)."""
    model = StudyRootQueryRetrieveInformationModelGet
    ae = AE(ae_title=caller)
    ae.add_requested_context(model)
    ae.add_requested_context(Verification)
    for uid in classes:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1", server.port, ae_title=server.ae_title,
        ext_neg=[build_role(uid, scp_role=True) for uid in classes],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    try:
        ident = _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=study)
        final, failed = list(assoc.send_c_get(ident, model))[-1]
        echo = int(assoc.send_c_echo().Status)
    finally:
        assoc.release()
    return final, failed, received, echo


def _movescu(server: LucentServer, caller: str, destination: str, study: str) -> str:
    """DCMTK movescu of a study to ``destination``; its verbose output."""
    done = subprocess.run(
        [dcmtk_tool("movescu"), "-v", "-aet", caller, "-aec", server.ae_title, "-S",
         "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_move_to_destination_that_accepts_only_the_default_syntax(
    server: LucentServer, data: dict[str, Any], caller: str, destination: StoreScp
) -> None:
    """PS3.5 10.1: Implicit VR Little Endian is the one syntax every receiver accepts, so a
    C-MOVE must offer it; offering only the stored syntax got the sub-association rejected
    and the whole C-MOVE answered A801."""
    out = _movescu(server, caller, "IMPLICITONLY", data["study"])
    assert "Received Final Move Response (Success)" in out, out[-2000:]
    received = {str(dcmread(f).SOPInstanceUID) for f in destination.files()}
    assert received == {str(dcmread(f).SOPInstanceUID) for f in data["files"]}


def test_move_with_incomplete_identifier_is_refused_with_a900(
    server: LucentServer, data: dict[str, Any], caller: str, destination: StoreScp
) -> None:
    """PS3.4 C.4.2.1.4: a STUDY-level C-MOVE needs the Study Instance UID; without it the
    answer is A900 (Identifier does not match SOP Class), not a C5xx handler error."""
    responses = _move(
        server, _identifier(QueryRetrieveLevel="STUDY", PatientID="QRC-1"), "IMPLICITONLY"
    )
    assert responses, "no C-MOVE response"
    final = responses[-1]
    assert int(final.Status) == 0xA900, hex(final.Status)
    assert "StudyInstanceUID" in str(final.get("ErrorComment", ""))
    # Nothing was attempted: no sub-operation counts, no (empty) Failed SOP Instance UID
    # List (PS3.4 Table C.4-2; it said 1 failed before), no association to the destination.
    assert "NumberOfFailedSuboperations" not in final
    assert destination.files() == []


def test_identifier_error_towards_a_destination_that_is_down_is_a900(
    server: LucentServer, api: LucentClient, data: dict[str, Any], caller: str
) -> None:
    """The identifier is judged before any association to the destination: with the
    destination down, the same bad C-MOVE came back A801 "Move Destination unknown"."""
    node = api.add_node(
        schemas.RemoteNodeIn(
            name="down-dest", ae_title="DOWNDEST", host="127.0.0.1", port=free_port(),
            query_retrieve=False,
        )
    )  # fmt: skip
    try:
        responses = _move(
            server, _identifier(QueryRetrieveLevel="STUDY", PatientID="QRC-1"), "DOWNDEST"
        )
    finally:
        api.delete_node(node.id)
    assert [hex(int(r.Status)) for r in responses] == [hex(0xA900)]


@pytest.mark.parametrize(
    ("model", "keys", "missing"),
    [
        (
            PatientRootQueryRetrieveInformationModelFind,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
            "PatientID",
        ),
        (
            PatientRootQueryRetrieveInformationModelFind,
            {"QueryRetrieveLevel": "STUDY", "PatientID": "QRC-*", "StudyInstanceUID": ""},
            "PatientID",
        ),
        (
            StudyRootQueryRetrieveInformationModelFind,
            {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "", "Modality": ""},
            "StudyInstanceUID",
        ),
        (
            StudyRootQueryRetrieveInformationModelFind,
            {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "<study>", "SOPInstanceUID": ""},
            "SeriesInstanceUID",
        ),
    ],
    ids=["patient-root-study-no-pid", "patient-root-study-wildcard-pid", "series", "image"],
)
def test_find_without_unique_keys_above_the_level_is_refused(
    server: LucentServer,
    data: dict[str, Any],
    caller: str,
    model: Any,
    keys: dict[str, str],
    missing: str,
) -> None:
    """PS3.4 C.2.2.1.1/C.4.1.3.1.1: without relational-query negotiation each unique key
    above the query level is required with a single value; we answered such queries as a
    relational search across every patient instead of failing them with A900."""
    keys = {k: data["study"] if v == "<study>" else v for k, v in keys.items()}
    responses = _find(server, _identifier(**keys), model)
    assert [code for code, _ in responses] == [0xA900], [hex(c) for c, _ in responses]
    assert missing in str(responses[0][1].get("ErrorComment", ""))  # type: ignore[union-attr]


def test_find_with_unique_keys_above_the_level_still_answers(
    server: LucentServer, data: dict[str, Any], caller: str
) -> None:
    """The hierarchical forms of the same queries keep working (Patient Root down to IMAGE)."""
    model = PatientRootQueryRetrieveInformationModelFind
    ident = _identifier(
        QueryRetrieveLevel="IMAGE", PatientID="QRC-1", StudyInstanceUID=data["study"],
        SeriesInstanceUID=data["mr"], SOPInstanceUID="", SOPClassUID="", InstanceNumber="",
    )  # fmt: skip
    responses = _find(server, ident, model)
    assert [code for code, _ in responses] == [0xFF00, 0xFF00, 0x0000]
    answers = [ds for code, ds in responses if code == 0xFF00 and ds is not None]
    assert {str(ds.SOPClassUID) for ds in answers} == {MR}
    assert sorted(int(ds.InstanceNumber) for ds in answers) == [4, 5]


def test_findscu_patient_root_study_query_without_patient_id(
    server: LucentServer, data: dict[str, Any], caller: str
) -> None:
    """What DCMTK findscu -P users see: a clean failure status, no matches, no crash."""
    done = subprocess.run(
        [dcmtk_tool("findscu"), "-v", "-aet", caller, "-aec", server.ae_title, "-P",
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
         "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=60,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in out, out[-2000:]  # A900
    assert str(data["study"]) not in out


def test_patient_root_get_without_patient_id_is_refused(
    server: LucentServer, data: dict[str, Any], caller: str
) -> None:
    """PS3.4 C.4.2.1.4.1: a Patient Root STUDY-level C-GET carries the Patient ID too; we
    sent the study without it. With it, every instance comes (CT and MR, role selection)."""
    model = PatientRootQueryRetrieveInformationModelGet
    ae = AE(ae_title=caller)
    ae.add_requested_context(model)
    for uid in (CT, MR):
        ae.add_requested_context(uid)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    roles = [build_role(CT, scp_role=True), build_role(MR, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1", server.port, ae_title=server.ae_title, ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )  # fmt: skip
    assert assoc.is_established
    try:
        bad = _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=data["study"])
        answers = list(assoc.send_c_get(bad, model))
        final, identifier = answers[-1]
        assert int(final.Status) == 0xA900 and received == []
        assert "NumberOfFailedSuboperations" not in final and not identifier
        good = _identifier(
            QueryRetrieveLevel="STUDY", PatientID="QRC-1", StudyInstanceUID=data["study"]
        )
        final = [st for st, _ in assoc.send_c_get(good, model)][-1]
        assert int(final.Status) == 0x0000
        assert int(final.NumberOfCompletedSuboperations) == 5
    finally:
        assoc.release()
    assert sorted(received) == sorted(str(dcmread(f).SOPInstanceUID) for f in data["files"])


@pytest.mark.parametrize(
    ("level", "key", "value", "expected"),
    [
        ("STUDY", "StudyDescription", "Head CT", 1),
        ("STUDY", "StudyDescription", "head ct", 0),
        ("STUDY", "StudyDescription", "HEAD*", 0),
        ("SERIES", "SeriesDescription", "Axial", 2),
        ("SERIES", "SeriesDescription", "axial", 0),
    ],
)
def test_text_matching_is_case_sensitive_except_for_names(
    server: LucentServer,
    data: dict[str, Any],
    caller: str,
    level: str,
    key: str,
    value: str,
    expected: int,
) -> None:
    """PS3.4 C.2.2.2.1: single value and wildcard matching is case-sensitive for every VR
    but PN; "head ct" matched a study described "Head CT"."""
    keys = {"QueryRetrieveLevel": level, "PatientID": "QRC-1", key: value}
    if level == "SERIES":
        keys |= {"StudyInstanceUID": data["study"], "SeriesInstanceUID": ""}
    else:
        keys["StudyInstanceUID"] = ""
    responses = _find(server, _identifier(**keys), StudyRootQueryRetrieveInformationModelFind)
    assert responses[-1][0] == 0x0000
    assert len(responses) - 1 == expected


def test_non_conformant_data_is_never_a_query_answer(
    server: LucentServer,
    api: LucentClient,
    data: dict[str, Any],
    caller: str,
    tmp_path: Path,
) -> None:
    """A refused instance leaves a "non-conformant data" placeholder under its patient; it
    has no SOP Instance to retrieve, so Patient Root answers must not list that patient
    (we answered it with Number of Patient Related Studies 0) nor its study or image."""
    ds = samples.make_instance(CT, patient_id="QRC-REFUSED", patient_name="Refused^Only")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # refused with A900
    storescu("127.0.0.1", server.port, server.ae_title, [samples.write(ds, tmp_path / "bad.dcm")])
    assert api.placeholders(patient_id="QRC-REFUSED"), "the refusal left no placeholder"
    model = PatientRootQueryRetrieveInformationModelFind
    patients = _find(
        server,
        _identifier(QueryRetrieveLevel="PATIENT", PatientID="QRC-*", PatientName=""),
        model,
    )
    assert [str(ds.PatientID) for code, ds in patients if code == 0xFF00] == ["QRC-1"]
    for level, keys in (
        ("STUDY", {"StudyInstanceUID": ""}),
        ("IMAGE", {"StudyInstanceUID": ds.StudyInstanceUID,
                   "SeriesInstanceUID": ds.SeriesInstanceUID, "SOPInstanceUID": ""}),
    ):  # fmt: skip
        ident = _identifier(QueryRetrieveLevel=level, PatientID="QRC-REFUSED", **keys)
        assert [code for code, _ in _find(server, ident, model)] == [0x0000], level


def test_optional_keys_are_matched_or_flagged(
    server: LucentServer, data: dict[str, Any], caller: str
) -> None:
    """PS3.4 C.4.1.1.4/Table C.4-1: an optional matching key is applied, or the SCP answers
    Pending FF01 to say it was not. We ignored both kinds: "PatientSex=M" found every
    patient of any sex, and keys we do not keep were silently treated as universal."""
    model = StudyRootQueryRetrieveInformationModelFind
    sex = str(dcmread(data["files"][0]).PatientSex)
    base = {"QueryRetrieveLevel": "STUDY", "PatientID": "QRC-1", "StudyInstanceUID": ""}
    other = "M" if sex != "M" else "F"
    assert [c for c, _ in _find(server, _identifier(**base, PatientSex=other), model)] == [0]
    found = _find(server, _identifier(**base, PatientSex=sex), model)
    assert [c for c, _ in found] == [0xFF00, 0x0000]
    flagged = _find(server, _identifier(**base, PatientSex="", OtherPatientIDs="X"), model)
    assert [c for c, _ in flagged] == [0xFF01, 0x0000]
    assert str(flagged[0][1].PatientSex) == sex  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("asked", "answered"),
    [("ISO_IR 100", "ISO_IR 100"), ("ISO_IR 192", "ISO_IR 192"), (None, "ISO_IR 192")],
)
def test_answers_use_the_character_set_of_the_query(
    server: LucentServer, data: dict[str, Any], caller: str, asked: str | None, answered: str
) -> None:
    """PS3.4 C.4.1.1.3.2: a Latin-1 (ISO_IR 100) SCU gets its answers in Latin-1 when they
    fit, so it can show "Ünal^Zoë"; we always answered in UTF-8 (ISO_IR 192)."""
    keys: dict[str, Any] = {"QueryRetrieveLevel": "STUDY", "PatientName": "Ünal*"}
    keys |= {"PatientID": "", "StudyInstanceUID": ""}
    if asked:
        keys = {"SpecificCharacterSet": asked, **keys}
    found = _find(server, _identifier(**keys), StudyRootQueryRetrieveInformationModelFind)
    answers = [ds for code, ds in found if code == 0xFF00 and ds is not None]
    assert len(answers) == 1 and found[-1][0] == 0x0000
    assert answers[0].SpecificCharacterSet == answered
    assert str(answers[0].PatientName) == "Ünal^Zoë"


def test_answers_in_the_default_repertoire_carry_no_character_set(
    server: LucentServer, data: dict[str, Any], caller: str
) -> None:
    """PS3.4 C.4.1.1.3.2: Specific Character Set is included only if an answer needs more
    than the default repertoire."""
    ident = _identifier(
        SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="SERIES",
        StudyInstanceUID=data["study"], SeriesInstanceUID="", SeriesDescription="",
    )  # fmt: skip
    found = _find(server, ident, StudyRootQueryRetrieveInformationModelFind)
    answers = [ds for code, ds in found if code == 0xFF00 and ds is not None]
    assert len(answers) == 2
    assert all("SpecificCharacterSet" not in ds for ds in answers)


@pytest.mark.parametrize(
    ("level", "key", "value", "expected"),
    [
        ("STUDY", "ModalitiesInStudy", "M?", 1),
        ("STUDY", "ModalitiesInStudy", "X*", 0),
        ("SERIES", "Modality", "C*", 1),
        ("SERIES", "Modality", ["PT", "M*"], 1),
    ],
)
def test_wildcards_in_modality_keys(
    server: LucentServer,
    data: dict[str, Any],
    caller: str,
    level: str,
    key: str,
    value: str | list[str],
    expected: int,
) -> None:
    """PS3.4 C.2.2.2.4: wildcard matching applies to CS values such as Modality; "C*" and
    "M?" matched nothing because the values were compared as a plain list."""
    keys: dict[str, Any] = {"QueryRetrieveLevel": level, "PatientID": "QRC-1", key: value}
    if level == "SERIES":
        keys |= {"StudyInstanceUID": data["study"], "SeriesInstanceUID": ""}
    else:
        keys["StudyInstanceUID"] = ""
    found = _find(server, _identifier(**keys), StudyRootQueryRetrieveInformationModelFind)
    assert found[-1][0] == 0x0000
    assert len(found) - 1 == expected


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
#: Compressed samples made by DCMTK: (syntax, pixel kind, tool, options).
COMPRESSED = [
    (JPEG_BASELINE, "rgb", "dcmcjpeg", ("+eb", "+un")),
    (JPEG_LS_LOSSLESS, "mr", "dcmcjpls", ("+el",)),
    (RLE_LOSSLESS, "rgb", "dcmcrle", ()),
]


@pytest.fixture(scope="module")
def compressed(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One study of JPEG baseline, JPEG-LS and RLE instances (DCMTK encoders), stored as
    sent (compressed), plus the pixels a decoder must give for each SOP Instance UID:
    the source array for lossless syntaxes, pydicom's decode of the file for JPEG."""
    folder = tmp_path_factory.mktemp("qr-compressed")
    study_uid = generate_uid()
    files: list[Path] = []
    expected: dict[str, np.ndarray] = {}
    syntax: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for ts, kind, tool, opts in COMPRESSED:
        sample = ts_samples._dcmtk(folder / f"{tool}.dcm", ts, kind, folder, tool, *opts)
        ds = dcmread(sample.path)
        ds.PatientID, ds.PatientName = "QRC-TS", "Compressed^Samples"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
        ds.save_as(sample.path)
        uid = str(ds.SOPInstanceUID)
        lossless = sample.expected is not None and sample.lossless
        expected[uid] = sample.expected if lossless else ts_samples.decoded(sample.path)
        syntax[uid] = ts
        pairs.append((str(ds.SOPClassUID), ts))
        files.append(sample.path)
    # one context per (SOP class, syntax): sent, and archived, as they are
    args = ts_samples.write_storescu_config(folder / "as-stored.cfg", pairs)
    done = storescu("127.0.0.1", server.port, server.ae_title, files, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"study": study_uid, "files": files, "expected": expected, "syntax": syntax}


def _assert_same_pixels(received: list[Path], compressed: dict[str, Any]) -> None:
    """Every instance came once, uncompressed, same UID, with the pixels a decoder of the
    stored file gives (identical for the lossless syntaxes)."""
    by_uid = {str(dcmread(f).SOPInstanceUID): f for f in received}
    assert sorted(by_uid) == sorted(compressed["expected"])
    for uid, path in by_uid.items():
        ds = dcmread(path)
        assert not ds.file_meta.TransferSyntaxUID.is_compressed, compressed["syntax"][uid]
        assert np.array_equal(ds.pixel_array, compressed["expected"][uid]), compressed["syntax"][
            uid
        ]


def test_getscu_with_defaults_gets_compressed_data_decompressed(
    server: LucentServer, compressed: dict[str, Any], caller: str, tmp_path: Path
) -> None:
    """DCMTK getscu proposes only uncompressed syntaxes for the storage sub-operations by
    default; data stored JPEG/JPEG-LS/RLE failed every one. Like Orthanc and dcm4chee we
    decompress on demand (PS3.4 C.4.3: the SCP chooses an accepted syntax), keeping the
    SOP Instance UID."""
    out = tmp_path / "got"
    out.mkdir()
    done = subprocess.run(
        [dcmtk_tool("getscu"), "-v", "-aet", caller, "-aec", server.ae_title, "-S",
         "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={compressed['study']}", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-2000:]
    _assert_same_pixels(sorted(p for p in out.iterdir() if p.is_file()), compressed)


def test_move_of_compressed_data_to_an_implicit_only_destination(
    server: LucentServer, compressed: dict[str, Any], caller: str, destination: StoreScp
) -> None:
    """storescp +xi accepts only Implicit VR Little Endian: compressed instances must be
    decompressed for it (0 failed sub-operations), not refused one by one."""
    responses = _move(
        server,
        _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=compressed["study"]),
        "IMPLICITONLY",
    )
    final = responses[-1]
    assert int(final.Status) == 0x0000, hex(final.Status)
    assert int(final.get("NumberOfFailedSuboperations", 0)) == 0
    assert int(final.NumberOfCompletedSuboperations) == len(COMPRESSED)
    received = destination.files()
    assert all(dcmread(f).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian for f in received)
    _assert_same_pixels(received, compressed)


def test_an_undecodable_instance_fails_only_its_own_sub_operation(
    server: LucentServer, compressed: dict[str, Any], caller: str, tmp_path: Path
) -> None:
    """A decoder failure is that sub-operation's failure: counted in Failed, its UID in the
    Failed SOP Instance UID List (PS3.4 C.4.3.3.1); the other instance still arrives and
    the association stays up."""
    study = generate_uid()
    good = dcmread(compressed["files"][1])  # JPEG-LS, decodes
    bad = dcmread(compressed["files"][2])  # RLE whose segments become two bytes each
    segments = int(bad.SamplesPerPixel) * ((int(bad.BitsAllocated) + 7) // 8)
    offsets = [64 + 2 * i for i in range(segments)] + [0] * (15 - segments)
    short = struct.pack("<16L", segments, *offsets) + bytes(2 * segments)
    bad.PixelData = encapsulate([short] * (len(list(generate_fragments(bad.PixelData))) - 1))
    for i, ds in enumerate((good, bad)):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / f"{i}.dcm")
    files = [tmp_path / "0.dcm", tmp_path / "1.dcm"]
    args = ts_samples.write_storescu_config(
        tmp_path / "as-stored.cfg",
        [(str(good.SOPClassUID), JPEG_LS_LOSSLESS), (str(bad.SOPClassUID), RLE_LOSSLESS)],
    )
    stored = storescu("127.0.0.1", server.port, server.ae_title, files, *args)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    classes = {str(good.SOPClassUID), str(bad.SOPClassUID)}
    final, failed, received, echo = _get_study(server, study, classes, caller)
    assert int(final.Status) == 0xB000, hex(final.Status)
    assert int(final.NumberOfFailedSuboperations) == 1
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert failed is not None and failed.FailedSOPInstanceUIDList == bad.SOPInstanceUID
    assert echo == 0x0000
    assert received == [str(good.SOPInstanceUID)]


def test_find_with_more_matches_than_allowed_is_refused_not_shortened(tmp_path: Path) -> None:
    """``dimse.max_find_results``: a query matching more is answered A700 with the reason,
    never with a silently shortened list; one within the limit is answered in full."""
    settings = {"dimse": {"max_find_results": 2, "restrict_query_retrieve": False}}
    with LucentServer(tmp_path / "srv", workers=1, settings=settings) as server:
        files = [
            samples.write(
                samples.make_instance(CT, patient_id=f"CAP-{i}", study_uid=generate_uid()),
                tmp_path / f"{i}.dcm",
            )
            for i in range(3)
        ]
        assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
        model = StudyRootQueryRetrieveInformationModelFind
        every = _find(server, _identifier(QueryRetrieveLevel="STUDY", PatientID="CAP-*"), model)
        assert [st for st, _ in every] == [0xA700]
        assert "narrow the query" in str(every[0][1].ErrorComment)  # type: ignore[union-attr]
        one = _identifier(QueryRetrieveLevel="STUDY", PatientID="CAP-1", StudyInstanceUID="")
        assert [st for st, _ in _find(server, one, model)] == [0xFF00, 0x0000]


def test_an_unreadable_archive_object_fails_only_its_own_sub_operation(tmp_path: Path) -> None:
    """An instance whose archive object no longer authenticates (disk damage, tampering)
    is that C-GET sub-operation's failure, listed by UID; the rest of the study is sent."""
    settings = {"dimse": {"restrict_query_retrieve": False}}
    with LucentServer(tmp_path / "srv", workers=1, settings=settings) as server:
        archive = tmp_path / "srv" / "data" / "archive"
        study = generate_uid()
        bad, good = (
            samples.make_instance(CT, study_uid=study, instance_number=i + 1) for i in range(2)
        )
        for name, ds in (("bad", bad), ("good", good)):
            path = samples.write(ds, tmp_path / f"{name}.dcm")
            assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
            if name == "bad":  # flip a byte in every object it left: none authenticates
                for obj in (p for p in archive.glob("*/*") if p.stat().st_size):
                    data = bytearray(obj.read_bytes())
                    data[-1] ^= 0xFF
                    obj.write_bytes(bytes(data))
        final, failed, received, _ = _get_study(server, study, {CT}, "ANYSCU")
        assert int(final.Status) == 0xB000, hex(final.Status)
        assert int(final.NumberOfFailedSuboperations) == 1
        assert failed is not None and failed.FailedSOPInstanceUIDList == bad.SOPInstanceUID
        assert received == [str(good.SOPInstanceUID)]


def test_move_of_big_endian_data_to_an_implicit_only_destination(
    server: LucentServer, caller: str, destination: StoreScp, tmp_path: Path
) -> None:
    """Explicit VR Big Endian archived as sent (pydicom's test files, 16- and 32-bit pixels,
    RGB), moved to a receiver that takes only Implicit VR Little Endian: pynetdicom
    re-encoded the values but sent Pixel Data's bytes unswapped, so the receiver got
    scrambled images with status Success."""
    from pydicom.data import get_testdata_file

    study_uid, files = generate_uid(), []
    expected: dict[str, np.ndarray] = {}
    for name in (
        "MR_small_bigendian.dcm",
        "rtdose_expb_1frame.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
    ):
        ds = dcmread(get_testdata_file(name))
        expected_pixels = ds.pixel_array.copy()
        ds.PatientID, ds.StudyInstanceUID = "QRC-BE", study_uid
        ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
        path = tmp_path / name
        ds.save_as(path)  # still big endian
        expected[str(ds.SOPInstanceUID)] = expected_pixels
        files.append(path)
    pairs = [(str(dcmread(f).SOPClassUID), str(ExplicitVRBigEndian)) for f in files]
    args = ts_samples.write_storescu_config(tmp_path / "big-endian.cfg", pairs)
    done = storescu("127.0.0.1", server.port, server.ae_title, files, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    responses = _move(
        server, _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid), "IMPLICITONLY"
    )
    assert int(responses[-1].Status) == 0x0000, hex(responses[-1].Status)
    received = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in destination.files()}
    assert sorted(received) == sorted(expected)
    for uid, ds in received.items():
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, expected[uid]), ds.get("Modality")


def test_studies_without_patient_id_are_never_one_patient(
    server: LucentServer, api: LucentClient, caller: str, tmp_path: Path
) -> None:
    """Patient ID is Type 2: empty is legal but identifies no one. Two people's studies that
    both lack it were filed under one invented "UNKNOWN" patient, and C-FIND answered both
    with that ID and whichever name came last (an outside tester's find)."""
    studies = {}
    for i, name in enumerate(("NoId^First", "NoId^Second")):
        study = generate_uid()
        files = []
        for k in range(2):  # the second instance takes the known-series fast path
            ds = samples.make_instance(
                CT, patient_id="", patient_name=name, study_uid=study,
                series_uid=studies.get("series", generate_uid()), instance_number=k + 1,
            )  # fmt: skip
            studies["series"] = ds.SeriesInstanceUID
            files.append(samples.write(ds, tmp_path / f"{i}-{k}.dcm"))
        studies.pop("series")
        assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
        studies[study] = name
    answers = _find(
        server,
        _identifier(QueryRetrieveLevel="STUDY", PatientName="NoId^*", PatientID="",
                    StudyInstanceUID=""),
        StudyRootQueryRetrieveInformationModelFind,
    )  # fmt: skip
    found = {str(ds.StudyInstanceUID): ds for st, ds in answers if st in (0xFF00, 0xFF01)}
    assert set(found) == set(studies)
    for uid, name in studies.items():
        assert str(found[uid].PatientName) == name and found[uid].PatientID in ("", None)
    patients = [p for p in api.patients(name="NoId^*") if p.patient_id == ""]
    assert len(patients) == 2, patients
    assert not [p for p in api.patients(patient_id="UNKNOWN") if p.study_count]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("StudyDate", "-20231231", {"dated"}),
        ("StudyDate", "20230101-", {"dated"}),
        ("StudyTime", "-090000", {"dated"}),
        ("StudyTime", "0830", {"dated"}),  # a TM of lower precision: 08:30:00-08:30:59
        ("StudyTime", "08:30", {"dated"}),
        ("StudyTime", "0831", set()),
        ("StudyDate", "", {"dated", "undated"}),
    ],
)
def test_ranges_never_match_empty_values_and_times_match_at_their_precision(
    server: LucentServer,
    caller: str,
    tmp_path: Path,
    key: str,
    value: str,
    expected: set[str],
) -> None:
    """PS3.4 C.2.2.2.5: "-20231231" listed every study without a date (an empty value is
    in no range); "0830" found nothing stored at 083000 (dcmqrscp finds it)."""
    uids = {}
    files = []
    for name, date, time in (("dated", "20230101", "083000"), ("undated", "", "")):
        ds = samples.make_instance(CT, patient_id="QRC-RANGE", patient_name="Range^Test")
        ds.StudyDate, ds.StudyTime = date, time
        uids[str(ds.StudyInstanceUID)] = name
        files.append(samples.write(ds, tmp_path / f"{name}.dcm"))
    assert storescu("127.0.0.1", server.port, server.ae_title, files).returncode == 0
    keys = {"QueryRetrieveLevel": "STUDY", "PatientID": "QRC-RANGE", "StudyInstanceUID": ""}
    responses = _find(
        server, _identifier(**keys, **{key: value}), StudyRootQueryRetrieveInformationModelFind
    )
    assert responses[-1][0] == 0x0000
    found = {uids.get(str(ds.StudyInstanceUID)) for _, ds in responses[:-1] if ds is not None}
    assert expected <= found and not (found - expected) - {None}


def test_move_to_a_node_that_is_no_store_target_is_refused(
    server: LucentServer, api: LucentClient, data: dict[str, Any], caller: str, tmp_path: Path
) -> None:
    """A node marked "no store target" (an API send to it is refused with 409) received the
    study by C-MOVE all the same (outside probe): it is no move destination (A801)."""
    with StoreScp(tmp_path / "dest", aet="NOSTORE") as dest:
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="no-store", ae_title="NOSTORE", host="127.0.0.1", port=dest.port,
                query_retrieve=False, store_target=False,
            )
        )  # fmt: skip
        try:
            out = _movescu(server, caller, "NOSTORE", data["study"])
            assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in out, out
            assert not list(dest.files())
        finally:
            api.delete_node(node.id)


@pytest.mark.parametrize("name", ["Yamada^Tarou", "Yamada*", "山田^太郎", "山田*", "やまだ*"])
def test_person_names_match_each_component_group(
    server: LucentServer, caller: str, tmp_path: Path, name: str
) -> None:
    """PS3.5 6.2.1: a PN holds alphabetic, ideographic and phonetic groups; a query for one
    group found nothing unless it matched the whole value (outside probe)."""
    ds = samples.make_instance(
        CT, patient_id="QRC-PN", patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう"
    )
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert (
        storescu(
            "127.0.0.1", server.port, server.ae_title, [samples.write(ds, tmp_path / "pn.dcm")]
        ).returncode
        == 0
    )
    keys = {"QueryRetrieveLevel": "STUDY", "PatientID": "QRC-PN", "StudyInstanceUID": "",
            "SpecificCharacterSet": "ISO_IR 192", "PatientName": name}  # fmt: skip
    responses = _find(server, _identifier(**keys), StudyRootQueryRetrieveInformationModelFind)
    assert responses[-1][0] == 0x0000
    assert str(ds.StudyInstanceUID) in {str(r.StudyInstanceUID) for _, r in responses[:-1] if r}
