"""Query/Retrieve from a registered node while the index database is down (probe 58).

With PostgreSQL stopped, C-ECHO worked but findscu got "Peer aborted Association": the
association check looks the caller up in the remote nodes table, and the database error
aborted it with a traceback per association. Now such an association is rejected as
transient (PS3.8 9.3.4: rejected-transient, service provider (presentation), temporary
congestion), a request on an association that is already open answers a failure status
(C001, "index database unavailable"), the log says so in one line, and everything is
answered normally once PostgreSQL is back, without a restart.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from lucent.api import schemas
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env, free_port
from tests.support.postgres import PG_BIN, TemporaryPostgres, postgres_available

CT = "1.2.840.10008.5.1.4.1.1.2"
SCU = "PROBE58QR"
FIND = StudyRootQueryRetrieveInformationModelFind
MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet


class Setup:
    def __init__(self, pg: TemporaryPostgres, server: LucentServer, study: str, port: int):
        self.pg, self.server, self.study, self.move_port = pg, server, study, port

    def stop_pg(self) -> None:
        done = self.pg._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.pg.data_dir), "-m", "fast", "-w", "stop"]
        )
        assert done.returncode == 0, done.stderr

    def start_pg(self) -> None:
        done = self.pg._pg_ctl_start()
        assert done.returncode == 0, done.stderr

    def findscu(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dcmtk_tool("findscu"), "-v", "-aet", SCU, "-aec", self.server.ae_title, "-S",
             "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT58*",
             "-k", "StudyInstanceUID", "127.0.0.1", str(self.server.port)],
            capture_output=True, text=True, env=dicom_env(True), timeout=60,
        )  # fmt: skip

    def movescu(self, out: Path) -> subprocess.CompletedProcess[str]:
        out.mkdir(exist_ok=True)
        return subprocess.run(
            [dcmtk_tool("movescu"), "-v", "-aet", SCU, "-aec", self.server.ae_title,
             "-aem", SCU, "+P", str(self.move_port), "-od", str(out), "-S",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={self.study}",
             "127.0.0.1", str(self.server.port)],
            capture_output=True, text=True, env=dicom_env(True), timeout=60,
        )  # fmt: skip

    def on_open_association(self) -> dict[str, list[Dataset]]:
        """C-FIND, C-MOVE and C-GET on an association that also proposes storage (handed
        to pynetdicom, no caller check at association time): the statuses they answer."""
        ae = AE(ae_title=SCU)
        for model in (FIND, MOVE, GET):
            ae.add_requested_context(model)
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", self.server.port, ae_title=self.server.ae_title)
        assert assoc.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = "PAT58*"
            query.StudyInstanceUID = ""
            find = [status for status, _ in assoc.send_c_find(query, FIND)]
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = self.study
            move = [status for status, _ in assoc.send_c_move(query, "NOWHERE58", MOVE)]
            get = [status for status, _ in assoc.send_c_get(query, GET)]
            return {"find": find, "move": move, "get": get}
        finally:
            assoc.release()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    folder = tmp_path_factory.mktemp("probe58-qr")
    pg = TemporaryPostgres()
    url = pg.start()
    try:
        with LucentServer(
            folder / "srv", workers=1, settings={"index": {"database_url": url}}
        ) as srv:
            ds = samples.make_instance(CT, patient_id="PAT58-1")
            sent = storescu(
                "127.0.0.1", srv.port, srv.ae_title, [samples.write(ds, folder / "a.dcm")]
            )
            assert sent.returncode == 0, sent.stderr[-2000:]
            move_port = free_port()
            api = srv.client()
            api.add_node(
                schemas.RemoteNodeIn(
                    name="probe58", ae_title=SCU, host="127.0.0.1", port=move_port, timeout=5
                )
            )
            api.close()
            yield Setup(pg, srv, str(ds.StudyInstanceUID), move_port)
    finally:
        pg.stop()


def _text(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr).lower()


@pytest.mark.postgres
def test_query_retrieve_while_the_index_is_down_is_refused_transiently(
    setup: Setup, tmp_path: Path
) -> None:
    before = setup.findscu()
    assert before.returncode == 0 and "pending" in _text(before), before.stderr[-2000:]
    setup.stop_pg()
    try:
        for done in (setup.findscu(), setup.findscu(), setup.movescu(tmp_path / "down")):
            text = _text(done)
            assert "aborted" not in text, text[-2000:]
            assert "rejected transient" in text, text[-2000:]
            assert "service provider (presentation" in text, text[-2000:]
            assert "temporary congestion" in text, text[-2000:]
        answered = setup.on_open_association()
        for operation, statuses in answered.items():
            assert [int(s.Status) for s in statuses] == [0xC001], (operation, statuses)
            comment = str(statuses[0].get("ErrorComment", ""))
            assert "index database unavailable" in comment, (operation, statuses)
        assert not list((tmp_path / "down").glob("*"))
    finally:
        setup.start_pg()
    log = setup.server.log_path.read_text(errors="replace")
    assert "association from 127.0.0.1 failed" not in log, log[-4000:]
    assert "query_retrieve_caller" not in log, log[-4000:]  # no traceback through it
    assert "C-FIND failed" not in log, log[-4000:]
    outage = [line for line in log.splitlines() if "Query/Retrieve refused" in line]
    assert len(outage) == 1, outage  # one line for the outage, not one per association

    after = setup.findscu()
    assert after.returncode == 0 and "pending" in _text(after), after.stderr[-2000:]
    answered = setup.on_open_association()
    assert [int(s.Status) for s in answered["find"]] == [0xFF00, 0x0000], answered
    assert [int(s.Status) for s in answered["move"]] == [0xA801], answered  # unknown AE
    moved = setup.movescu(tmp_path / "up")
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert len(list((tmp_path / "up").glob("*"))) == 1, _text(moved)[-2000:]
    log = setup.server.log_path.read_text(errors="replace")
    assert "index database available again" in log
