"""Several PACS queried at once: the merged STUDY row takes what any of them answered
(Conformance 4.2.1.4; outside tester, issue 3).

DCMTK ``dcmqrscp`` returns no ModalitiesInStudy and no NumberOfStudyRelatedInstances; an
Orthanc holding the same study does. The merged row was the first PACS's answer only, so
those keys were missing although another PACS had sent them (they were only in
``node_attrs``). A second Orthanc holds the study's MR series: the merged modalities are
the union of both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.uid import MRImageStorage, generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.support.dcmqrscp import ct_files, lucent_with_dcmqrscp
from tests.support.peers import LOOPBACK, Orthanc


@dataclass
class Env:
    api: LucentClient
    nodes: dict[str, int]
    study: str


def _orthanc_node(api: LucentClient, name: str, orthanc: Orthanc) -> int:
    node = api.add_node(
        schemas.RemoteNodeIn(
            name=name, ae_title=orthanc.aet, host=LOOPBACK, port=orthanc.port, timeout=5
        )
    )
    return node.id


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("pacs-query-merge")
    study = generate_uid()
    person = {"patient_id": "PAT-MERGE", "patient_name": "Merge^Anna", "study_uid": study}
    ct = ct_files(work / "ct", 3, series_uid=generate_uid(), **person)
    mr = samples.write(samples.make_instance(MRImageStorage, **person), work / "mr.dcm")
    with lucent_with_dcmqrscp(work, ct) as up:
        # Orthanc answers a C-FIND only from a modality it knows: our calling AE
        known = {"lucent": ["LUCENT", LOOPBACK, up.server.port]}
        with (
            Orthanc(aet="ORTHANCCT", modalities=known, workdir=work / "o-ct") as ortho_ct,
            Orthanc(aet="ORTHANCMR", modalities=known, workdir=work / "o-mr") as ortho_mr,
        ):
            for f in ct:
                ortho_ct.upload(f)
            ortho_mr.upload(mr)
            nodes = {
                "dcmqrscp": up.node.id,
                "orthanc-ct": _orthanc_node(up.api, "orthanc-ct", ortho_ct),
                "orthanc-mr": _orthanc_node(up.api, "orthanc-mr", ortho_mr),
            }
            yield Env(up.api, nodes, study)


def _study(env: Env, *names: str) -> schemas.PacsMatch:
    # ModalitiesInStudy and NumberOfStudyRelatedInstances are return keys of every
    # STUDY query (Conformance 4.2.1.4)
    out = env.api.pacs_query([env.nodes[n] for n in names], "STUDY", StudyInstanceUID=env.study)
    assert [n.outcome for n in out.nodes] == ["success"] * len(names), out.nodes
    [patient] = out.patients
    [study] = patient.studies
    assert study.nodes == list(names)
    return study


def test_merged_study_takes_keys_the_first_pacs_did_not_return(env: Env) -> None:
    study = _study(env, "dcmqrscp", "orthanc-ct")
    qr, ortho = study.node_attrs
    # what each PACS answered, as it answered it
    assert not qr.get("ModalitiesInStudy") and not qr.get("NumberOfStudyRelatedInstances"), qr
    assert ortho["ModalitiesInStudy"] == "CT" and ortho["NumberOfStudyRelatedInstances"] == "3"
    # the merged row: the first non-empty answer in node order
    assert study.attrs["ModalitiesInStudy"] == "CT", study.attrs
    assert study.attrs["NumberOfStudyRelatedInstances"] == "3", study.attrs
    for key, value in qr.items():
        if value:  # what the first PACS did return stays the merged value
            assert study.attrs[key] == value, (key, study.attrs)
    assert study.attrs["PatientName"] == "Merge^Anna"


def test_merged_modalities_are_the_union_in_node_order(env: Env) -> None:
    study = _study(env, "dcmqrscp", "orthanc-ct", "orthanc-mr")
    assert [a.get("ModalitiesInStudy", "") for a in study.node_attrs] == ["", "CT", "MR"]
    assert study.attrs["ModalitiesInStudy"] == "CT\\MR", study.attrs
    # counts are not added up: the first PACS (in node order) that gave one
    assert study.attrs["NumberOfStudyRelatedInstances"] == "3"
    again = _study(env, "orthanc-mr", "dcmqrscp", "orthanc-ct")
    assert again.attrs["ModalitiesInStudy"] == "MR\\CT", again.attrs
    assert again.attrs["NumberOfStudyRelatedInstances"] == "1"
    assert [a.get("ModalitiesInStudy", "") for a in again.node_attrs] == ["MR", "", "CT"]
