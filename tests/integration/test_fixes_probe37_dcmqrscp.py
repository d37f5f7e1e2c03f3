"""Outside tester probe 37 against DCMTK dcmqrscp (case-sensitive name matching, issue 3)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.uid import CTImageStorage, generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import DcmQrScp, free_port


@dataclass
class Env:
    server: LucentServer
    api: LucentClient
    qr: DcmQrScp
    node: schemas.RemoteNodeOut
    study: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("probe37-dcmqrscp")
    port = free_port()
    server = LucentServer(
        work / "lucent", workers=1, pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}]
    )
    qr = DcmQrScp(peers={"lucent": ("LUCENT", "127.0.0.1", port)}, workdir=work / "qr")
    study = generate_uid()
    ds = samples.make_instance(
        CTImageStorage, patient_id="PAT-37", patient_name="Schmidt^Anna", study_uid=study
    )
    with server, qr:
        qr.add_files([samples.write(ds, work / "schmidt.dcm")])
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="dcmqrscp", ae_title=qr.aet, host="127.0.0.1", port=qr.port, timeout=5
            )
        )
        yield Env(server, api, qr, node, study)
        api.close()


@pytest.mark.parametrize("pattern", ["schm?dt*", "s*midt*", "SCHM?DT^ANNA", "*schmidt^anna"])
def test_case_insensitive_search_with_inner_wildcards_finds_title_case(
    env: Env, pattern: str
) -> None:
    """The Title variant capitalised the letter after a wildcard ('schm?dt*' -> 'Schm?Dt*'):
    dcmqrscp matches case-sensitively, so 'Schmidt^Anna' was missing (patient safety)."""
    out = env.api.pacs_query([env.node.id], "STUDY", PatientName=pattern, case_insensitive=True)
    assert out.nodes[0].outcome == "success", out.nodes[0].message
    found = [s.attrs["StudyInstanceUID"] for p in out.patients for s in p.studies]
    assert found == [env.study], out.nodes[0].case_note
