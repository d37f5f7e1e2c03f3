"""Outside tester probe 37 against DCMTK dcmqrscp (case-sensitive name matching, issue 3)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.uid import generate_uid

from lucent.api import schemas
from lucent.api.client import ApiError
from tests.support.dcmqrscp import LucentWithQr, ct_files, lucent_with_dcmqrscp
from tests.support.peers import dcmtk_tool, dicom_env


@dataclass
class Env(LucentWithQr):
    study: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("probe37-dcmqrscp")
    study = generate_uid()
    files = ct_files(
        work, 1, "schmidt", patient_id="PAT-37", patient_name="Schmidt^Anna", study_uid=study
    )
    with lucent_with_dcmqrscp(work, files) as up:
        yield Env(up.server, up.api, up.qr, up.node, study)


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


def _findscu_into_lucent(env: Env, calling_ae: str) -> str:
    done = subprocess.run(
        [dcmtk_tool("findscu"), "-v", "-aet", calling_ae, "-aec", env.server.ae_title, "-S",
         "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-37",
         "127.0.0.1", str(env.server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=60,
    )  # fmt: skip
    return done.stdout + done.stderr


def _node_in(env: Env, **roles: bool) -> schemas.RemoteNodeIn:
    return schemas.RemoteNodeIn(
        name="dcmqrscp", ae_title=env.qr.aet, host="127.0.0.1", port=env.qr.port, timeout=5,
        **roles,
    )  # fmt: skip


def test_we_query_a_pacs_that_may_not_query_us(env: Env) -> None:
    """One flag, query_retrieve, meant both "we C-FIND/C-MOVE from it" and "it may query
    and retrieve from us": clinic IT could not query a hospital PACS without letting it
    pull our patients (probe 37). The two directions are two flags now."""
    try:
        node = env.api.update_node(
            env.node.id, _node_in(env, query_retrieve=True, inbound_query_retrieve=False)
        )
        assert node.query_retrieve is True and node.inbound_query_retrieve is False
        out = env.api.pacs_query([env.node.id], "STUDY", PatientID="PAT-37")
        assert out.nodes[0].outcome == "success", out.nodes[0].message
        assert [s.attrs["StudyInstanceUID"] for p in out.patients for s in p.studies] == [env.study]
        refused = _findscu_into_lucent(env, env.qr.aet)
        assert "Association Rejected" in refused, refused

        node = env.api.update_node(
            env.node.id, _node_in(env, query_retrieve=False, inbound_query_retrieve=True)
        )
        assert node.query_retrieve is False and node.inbound_query_retrieve is True
        out = env.api.pacs_query([env.node.id], "STUDY", PatientID="PAT-37")
        assert out.nodes[0].outcome == "failed" and "Q/R source" in out.nodes[0].message
        with pytest.raises(ApiError, match="query/retrieve source"):
            env.api.retrieve(env.node.id, env.study)
        allowed = _findscu_into_lucent(env, env.qr.aet)
        assert "Association Rejected" not in allowed and "Association Accepted" in allowed

        # a client that predates the split sends query_retrieve only: both, as before
        node = env.api.update_node(env.node.id, _node_in(env, query_retrieve=False))
        assert node.query_retrieve is False and node.inbound_query_retrieve is False
        assert [n.inbound_query_retrieve for n in env.api.nodes() if n.id == env.node.id] == [False]
    finally:
        env.api.update_node(env.node.id, _node_in(env))


def test_plain_search_says_matches_may_be_hidden(env: Env) -> None:
    """A plain (case-sensitive) 'schmidt*' on dcmqrscp found nothing of 'Schmidt^Anna' and
    said hidden_matches_possible false with no note (probe 37)."""
    fresh = env.api.add_node(  # a node not searched yet: how it matches is not known
        schemas.RemoteNodeIn(
            name="dcmqrscp-plain", ae_title=env.qr.aet, host="127.0.0.1", port=env.qr.port
        )
    )
    out = env.api.pacs_query([fresh.id], "STUDY", PatientName="schmidt*")
    result = out.nodes[0]
    assert result.outcome == "success" and out.patients == []
    assert result.hidden_matches_possible and result.case_sensitive is None
    assert "may match names case-sensitively" in result.case_note
    assert "case-insensitive search" in result.case_note

    # once a case-insensitive search showed how this PACS matches, a plain one says so
    env.api.pacs_query([fresh.id], "STUDY", PatientName="schmidt*", case_insensitive=True)
    result = env.api.pacs_query([fresh.id], "STUDY", PatientName="schmidt*").nodes[0]
    assert result.case_sensitive is True and result.hidden_matches_possible
    assert "this PACS matches names case-sensitively" in result.case_note

    # no letters, nothing to hide
    result = env.api.pacs_query([fresh.id], "STUDY", PatientID="PAT-37").nodes[0]
    assert not result.hidden_matches_possible and result.case_note == ""
    env.api.delete_node(fresh.id)
