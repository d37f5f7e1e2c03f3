"""DICOM TLS (PS3.15 BCP 195) in both directions, against DCMTK built with OpenSSL.

Our pool listens on a second port that speaks only TLS and requires a client certificate
signed by the trusted file. DCMTK ``echoscu``/``storescu``/``findscu`` with a trusted
certificate are served; without TLS, with anonymous TLS, or with a certificate from another
CA they are refused before any DICOM byte. As SCU we reach a TLS-only ``storescp``.
"""

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
from tests.support.certs import Authority, Pair
from tests.support.lucent import LucentServer
from tests.support.peers import StoreScp, dcmtk_tool, dicom_env, free_port

CT = "1.2.840.10008.5.1.4.1.1.2"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder)
        self.server = self.ca.issue("server", "lucent.test")
        self.client = self.ca.issue("client", "modality.test")
        stranger_ca = Authority(folder / "stranger", "Stranger CA")
        self.stranger = stranger_ca.issue("stranger", "intruder.test")
        self.stranger_ca = stranger_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LucentServer]:
    pools = [
        {"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port(), "tls_port": free_port()}
    ]
    settings = {
        "dimse": {
            "tls_cert": str(pki.server.cert),
            "tls_key": str(pki.server.key),
            "tls_ca_file": str(pki.ca.ca_file),
            "tls_require_client_cert": True,
        }
    }
    with LucentServer(tmp_path_factory.mktemp("tls"), pools=pools, settings=settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(tls_server: LucentServer) -> Iterator[LucentClient]:
    with tls_server.client() as client:
        yield client


def _tls_port(server: LucentServer) -> int:
    return int(server.pools[0]["tls_port"])


def _dcmtk(
    tool: str,
    server: LucentServer,
    identity: Pair | None,
    *args: str,
    trust: Path | None = None,
    files: list[Path] | None = None,
) -> subprocess.CompletedProcess[str]:
    tls: list[str] = []
    if identity is not None:
        tls = ["+tls", str(identity.key), str(identity.cert)]
    if trust is not None:
        tls += ["+cf", str(trust)]
    return subprocess.run(
        [dcmtk_tool(tool), "-aec", server.ae_title, "-to", "20", "-ta", "20", "-td", "20", *tls,
         *args, "127.0.0.1", str(_tls_port(server)), *map(str, files or [])],
        capture_output=True, text=True, env=dicom_env(True), timeout=120,
    )  # fmt: skip


def test_trusted_client_certificate_echoes_and_stores(
    tls_server: LucentServer, api: LucentClient, pki: Pki, tmp_path: Path
) -> None:
    echo = _dcmtk("echoscu", tls_server, pki.client, trust=pki.ca.ca_file)
    assert echo.returncode == 0, echo.stdout + echo.stderr

    study_uid = generate_uid()
    files = [
        samples.write(
            samples.make_instance(CT, patient_id="TLS-1", study_uid=study_uid, instance_number=i),
            tmp_path / f"{i}.dcm",
        )
        for i in range(1, 4)
    ]
    store = _dcmtk("storescu", tls_server, pki.client, "-v", trust=pki.ca.ca_file, files=files)
    assert store.returncode == 0, store.stdout + store.stderr
    stored = api.studies(patient_id="TLS-1")
    assert [s.study_uid for s in stored] == [study_uid]
    assert sum(len(api.instances(se.series_uid)) for se in api.series(study_uid)) == 3
    # IHE ATNA: one "DICOM Instances Transferred" (110104, action C) record for the study
    received = [r for r in api.audit(event_id="110104", object_id=study_uid) if r.action == "C"]
    assert len(received) == 1, received
    assert received[0].user == "STORESCU" and "3 instance(s) received" in received[0].detail


@pytest.mark.parametrize("who", ["plain", "anonymous", "stranger", "no-trust"])
def test_callers_without_a_trusted_certificate_are_refused(
    tls_server: LucentServer, pki: Pki, who: str
) -> None:
    if who == "plain":  # DICOM without TLS on the TLS port
        done = _dcmtk("echoscu", tls_server, None)
    elif who == "anonymous":  # TLS, but no client certificate
        done = _dcmtk("echoscu", tls_server, None, "+tla", trust=pki.ca.ca_file)
    elif who == "stranger":  # a certificate from a CA we do not trust
        done = _dcmtk("echoscu", tls_server, pki.stranger, trust=pki.ca.ca_file)
    else:  # the caller does not trust our certificate
        done = _dcmtk("echoscu", tls_server, pki.client, trust=pki.stranger_ca.ca_file)
    assert done.returncode != 0, done.stdout + done.stderr
    # the server keeps serving trusted callers afterwards
    ok = _dcmtk("echoscu", tls_server, pki.client, trust=pki.ca.ca_file)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_plain_port_still_serves_and_tls_is_logged(tls_server: LucentServer, pki: Pki) -> None:
    done = subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", tls_server.ae_title, "127.0.0.1", str(tls_server.port)],
        capture_output=True, text=True, env=dicom_env(True), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = tls_server.log_path.read_text(errors="replace")
    assert "(certificate 'modality.test')" in log
    assert "refused" in log


def test_refused_tls_peers_are_audited(
    tls_server: LucentServer, api: LucentClient, pki: Pki
) -> None:
    assert _dcmtk("echoscu", tls_server, pki.stranger, trust=pki.ca.ca_file).returncode != 0
    alerts = api.audit(event_id="110113")
    node_auth = [r for r in alerts if r.event_type == "110126"]  # Node Authentication
    assert node_auth and node_auth[0].outcome == 4 and "TLS" in node_auth[0].detail
    assert api.audit_verify().intact


def test_query_over_tls_goes_through_the_full_stack(
    tls_server: LucentServer, api: LucentClient, pki: Pki, tmp_path: Path
) -> None:
    """C-FIND is handed from our fast path to pynetdicom with the TLS session intact."""
    node = api.add_node(
        schemas.RemoteNodeIn(name="tls-find", ae_title="FINDSCU", host="127.0.0.1", port=104)
    )
    try:
        files = [
            samples.write(
                samples.make_instance(CT, patient_id="TLS-Q", patient_name="Tls^Query"),
                tmp_path / "q.dcm",
            )
        ]
        stored = _dcmtk("storescu", tls_server, pki.client, trust=pki.ca.ca_file, files=files)
        assert stored.returncode == 0, stored.stderr
        done = _dcmtk(
            "findscu", tls_server, pki.client, "-v", "-aet", "FINDSCU", "-S",
            "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=TLS-Q", "-k", "PatientName",
            trust=pki.ca.ca_file,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "Tls^Query" in out
    finally:
        api.delete_node(node.id)


def test_scu_sends_to_a_tls_peer_and_explains_an_untrusted_one(
    tls_server: LucentServer, api: LucentClient, pki: Pki, tmp_path: Path
) -> None:
    """Our SCU side: C-ECHO and C-STORE to DCMTK storescp that speaks only TLS and requires
    our certificate; a peer whose certificate we do not trust gives a 'tls' failure."""
    peer_pair = pki.ca.issue("peer", "pacs.test")
    with StoreScp(
        tmp_path / "in",
        aet="TLSPACS",
        extra_args=["+tls", str(peer_pair.key), str(peer_pair.cert), "+cf",
                    str(pki.ca.ca_file), "-rc", "-v"],
        workdir=tmp_path / "peer",
    ) as peer:  # fmt: skip
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="tls-pacs", ae_title="TLSPACS", host="127.0.0.1", port=peer.port,
                store_target=True, tls=True,
            )
        )  # fmt: skip
        try:
            echo = api.echo_node(node.id)
            assert echo.ok, echo.message
            uid = generate_uid()
            files = [
                samples.write(
                    samples.make_instance(CT, patient_id="TLS-S", study_uid=uid,
                                          instance_number=i),
                    tmp_path / f"s{i}.dcm",
                )
                for i in range(1, 5)
            ]  # fmt: skip
            stored = _dcmtk("storescu", tls_server, pki.client, trust=pki.ca.ca_file, files=files)
            assert stored.returncode == 0, stored.stderr
            before = peer.log_path.read_text().count("Association Received")
            job = api.wait_job(api.send(node.id, study_uid=uid, commit=False).id)
            assert job.state == "done" and job.completed == 4, job
            assert len(peer.files()) == 4
            # [pacs] store_associations = 2 (default): the job used two associations at once
            assert peer.log_path.read_text().count("Association Received") - before == 2
        finally:
            api.delete_node(node.id)

    stranger = pki.stranger_ca.issue("stranger-peer", "evil.test")
    with StoreScp(
        tmp_path / "in2",
        aet="EVILPACS",
        extra_args=["+tls", str(stranger.key), str(stranger.cert), "-ic"],
        workdir=tmp_path / "peer2",
    ) as evil:  # fmt: skip
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="evil-pacs", ae_title="EVILPACS", host="127.0.0.1", port=evil.port,
                store_target=True, tls=True,
            )
        )  # fmt: skip
        try:
            echo = api.echo_node(node.id)
            assert not echo.ok
            assert echo.kind == "tls", echo
            assert "not trusted" in echo.message
        finally:
            api.delete_node(node.id)


def test_c_move_to_a_tls_node_goes_over_tls_with_our_calling_ae(
    tls_server: LucentServer, api: LucentClient, pki: Pki, tmp_path: Path
) -> None:
    """Our C-MOVE SCP ignored the destination node's TLS setting (sub-operations in clear
    text; a TLS-only destination unreachable, A801) and called it as "PYNETDICOM" instead
    of our calling AE title (outside probe 25)."""
    peer_pair = pki.ca.issue("peer", "viewer.test")
    uid = generate_uid()
    files = [
        samples.write(
            samples.make_instance(CT, patient_id="TLS-M", study_uid=uid, instance_number=i),
            tmp_path / f"m{i}.dcm",
        )
        for i in range(1, 4)
    ]
    stored = _dcmtk("storescu", tls_server, pki.client, trust=pki.ca.ca_file, files=files)
    assert stored.returncode == 0, stored.stderr
    with StoreScp(
        tmp_path / "in",
        aet="TLSVIEW",
        extra_args=["+tls", str(peer_pair.key), str(peer_pair.cert), "+cf",
                    str(pki.ca.ca_file), "-rc", "-v"],
        workdir=tmp_path / "peer",
    ) as peer:  # fmt: skip
        added = [
            api.add_node(
                schemas.RemoteNodeIn(
                    name="tls-view",
                    ae_title="TLSVIEW",
                    host="127.0.0.1",
                    port=peer.port,
                    store_target=True,
                    tls=True,
                )
            ),  # fmt: skip
            api.add_node(
                schemas.RemoteNodeIn(name="mover", ae_title="MOVESCU", host="127.0.0.1", port=104)
            ),
        ]
        try:
            done = subprocess.run(
                [dcmtk_tool("movescu"), "-v", "-S", "-aet", "MOVESCU", "-aec",
                 tls_server.ae_title, "-aem", "TLSVIEW", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(tls_server.port)],
                capture_output=True, text=True, env=dicom_env(True), timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            # the destination speaks only TLS: the three arrived over it
            assert len(peer.files()) == 3, done.stdout + done.stderr
            for f in peer.files():  # storescp records the calling AE title as Source AE
                source = dcmread(f, stop_before_pixels=True).file_meta
                assert source.SourceApplicationEntityTitle.strip() == "LUCENT"
        finally:
            for node in added:
                api.delete_node(node.id)
