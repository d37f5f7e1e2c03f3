"""C-MOVE to a configured destination we cannot reach, driven by DCMTK movescu.

A801 "Move Destination unknown" means an AE title we do not know; a known destination that
is down or refuses us is "Refused: Out of resources - Unable to perform sub-operations"
(A702, PS3.4 C.4.2.1.5, as DCMTK dcmqrscp answers) with the reason in the Error Comment.
pynetdicom answered A801 for both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from lucent.api import schemas
from lucent.api.client import LucentClient
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import StoreScp, dcmtk_tool, dicom_env, free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
A702 = "0xa702: Refused: Out of resources - Unable to perform sub-operations"
SCU = "UNREACHSCU"


@pytest.fixture(scope="module")
def study(
    server: LucentServer, api: LucentClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One stored CT study, and our movescu as a configured Q/R node."""
    folder = tmp_path_factory.mktemp("move-unreachable")
    study_uid = generate_uid()
    ds = samples.make_instance(CT, patient_id="UNREACH-1", study_uid=study_uid)
    assert (
        storescu(
            "127.0.0.1", server.port, server.ae_title, [samples.write(ds, folder / "a.dcm")]
        ).returncode
        == 0
    )
    node = api.add_node(
        schemas.RemoteNodeIn(name="unreach-scu", ae_title=SCU, host="127.0.0.1", port=104)
    )
    yield study_uid
    api.delete_node(node.id)


def _movescu(server: LucentServer, destination: str, study: str) -> str:
    done = subprocess.run(
        [dcmtk_tool("movescu"), "-v", "-d", "-aet", SCU, "-aec", server.ae_title, "-S",
         "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


def _destination(api: LucentClient, ae_title: str, port: int) -> schemas.RemoteNodeOut:
    return api.add_node(
        schemas.RemoteNodeIn(
            name=f"dest-{ae_title.lower()}", ae_title=ae_title, host="127.0.0.1", port=port,
            query_retrieve=False,
        )
    )  # fmt: skip


def test_known_destination_with_nothing_listening_is_a702_not_a801(
    server: LucentServer, api: LucentClient, study: str
) -> None:
    port = free_port()
    node = _destination(api, "DOWNDEST", port)
    try:
        out = _movescu(server, "DOWNDEST", study)
    finally:
        api.delete_node(node.id)
    assert A702 in out, out[-3000:]
    assert "MoveDestinationUnknown" not in out
    assert f"DOWNDEST at 127.0.0.1:{port} unreachable" in out, out[-3000:]


def test_known_destination_that_rejects_the_association_is_a702(
    server: LucentServer, api: LucentClient, study: str, tmp_path: Path
) -> None:
    with StoreScp(tmp_path / "dest", aet="REFUSING", extra_args=["--refuse"]) as dest:
        node = _destination(api, "REFUSING", dest.port)
        try:
            out = _movescu(server, "REFUSING", study)
        finally:
            api.delete_node(node.id)
        assert not list(dest.files())
    assert A702 in out, out[-3000:]
    assert "REFUSING rejected the association" in out or "REFUSING at 127.0.0.1" in out, out[-3000:]


def test_unknown_destination_is_still_a801(server: LucentServer, study: str) -> None:
    out = _movescu(server, "NOSUCHDEST", study)
    assert "0xa801" in out.lower(), out[-3000:]
