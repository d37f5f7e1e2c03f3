"""A storage commitment report counts only from the node asked, for its own transaction
(Conformance 4.1.2.5, 4.2.5; PS3.4 J.3.3), and never for a node that was deleted.

Outside probe 38: an unregistered AE "EVIL" reported an instance Orthanc had reported
failed (0x0112) as committed, on a new association to our Store SCP (way 2), and Lucent
answered 0000 and turned the job from "2 committed, 1 failed" into "3 committed"; a
registered node's report on its own association (way 1) was applied to another node's
transaction; a deleted node's id went to the next node added, and the retry watcher sent
the deleted node's N-ACTIONs to it.

A real Lucent server and a real Orthanc (commitment SCP, reporting on way 2); the forged
reports come from small pynetdicom peers here: no real PACS forges reports on demand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import delete, insert, select

from lucent.api import schemas
from lucent.api.client import LucentClient
from lucent.net import commitment
from server import config
from server.context import ServerContext
from server.index.models import RemoteNode
from server.index.pacs_models import CommitmentRequest
from server.pacs.service import PacsService
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import Orthanc, free_port, run_storescu

T = TypeVar("T")
RETRY_SECONDS = 1.5
PROCESSING_FAILURE = 0x0110


def _until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _report(transaction_uid: str, committed: list[str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for uid in committed:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _status(rsp: Any) -> int | None:
    return int(rsp.Status) if rsp is not None and "Status" in rsp else None


def report_from(aet: str, port: int, report: Dataset) -> int | None:
    """Way 2 as an SCP does it: open an association to our Store SCP, N-EVENT-REPORT."""
    ae = AE(ae_title=aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)
    assoc = ae.associate("127.0.0.1", port, ae_title="LUCENT", ext_neg=[role])
    assert assoc.is_established
    try:
        rsp, _ = assoc.send_n_event_report(
            report, 1, StorageCommitmentPushModel, commitment.PUSH_MODEL_INSTANCE
        )
        return _status(rsp)
    finally:
        assoc.release()


class CommitPeer:
    """A pynetdicom commitment SCP: accepts every N-ACTION and keeps its report, or (with
    ``forge`` set) reports on the N-ACTION's association for that other transaction."""

    def __init__(self, aet: str) -> None:
        self.aet = aet
        self.port = free_port()
        self.actions: list[str] = []  # Transaction UIDs of the N-ACTIONs received
        self.forge: Dataset | None = None
        self.forged_status: list[int | None] = []
        self._server: Any = None

    def _action(self, event: Any) -> tuple[int, None]:
        self.actions.append(str(event.action_information.TransactionUID))
        forged = self.forge
        if forged is not None:

            def later() -> None:
                time.sleep(0.1)
                rsp, _ = event.assoc.send_n_event_report(
                    forged, 1, StorageCommitmentPushModel, commitment.PUSH_MODEL_INSTANCE
                )
                self.forged_status.append(_status(rsp))

            threading.Thread(target=later, daemon=True).start()
        return 0x0000, None

    def start(self) -> CommitPeer:
        ae = AE(self.aet)
        ae.add_supported_context(StorageCommitmentPushModel)
        handlers = [(evt.EVT_N_ACTION, self._action)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@dataclass
class Env:
    server: LucentServer
    api: LucentClient
    orthanc: Orthanc
    node: schemas.RemoteNodeOut
    work: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("commit-origin")
    port = free_port()
    server = LucentServer(
        work / "lucent",
        workers=1,
        pools=[{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}],
        settings={
            "pacs": {
                "commitment_wait_seconds": 2.0,
                "commitment_retry_seconds": RETRY_SECONDS,
                "commitment_max_attempts": 5,
            }
        },
    )
    orthanc = Orthanc(modalities={"lucent": ["LUCENT", "127.0.0.1", port]}, workdir=work / "o")
    with server, orthanc:
        api = server.client()
        node = api.add_node(
            schemas.RemoteNodeIn(
                name="orthanc", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.port,
                storage_commitment=True, timeout=5,
            )
        )  # fmt: skip
        yield Env(server, api, orthanc, node, work)
        api.close()


def _archive(env: Env, n: int, name: str) -> list[Path]:
    """``n`` new CT instances in our archive (through our Store SCP)."""
    files = samples.write_ct_series(env.work / name, n=n, rows=8, cols=8)
    assert run_storescu(files, "127.0.0.1", env.server.port).ok
    return files


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _add_peer_node(env: Env, peer: CommitPeer, name: str) -> schemas.RemoteNodeOut:
    node = env.api.add_node(
        schemas.RemoteNodeIn(
            name=name, ae_title=peer.aet, host="127.0.0.1", port=peer.port,
            storage_commitment=True, timeout=5,
        )
    )  # fmt: skip
    env.api.set_node_options(node.id, commitment_mode="same", commitment_wait=0.5)
    return node


def _items(env: Env, job_id: int) -> dict[str, tuple[str, int | None]]:
    return {
        c.sop_instance_uid: (c.state, c.failure_reason) for c in env.api.commitments(job_id=job_id)
    }


@pytest.fixture(scope="module")
def answered(env: Env) -> tuple[int, str, list[str]]:
    """An Orthanc commitment answered "2 committed, 1 failed": the job, its transaction
    and the UIDs (the last one failed, Orthanc does not hold it)."""
    files = _archive(env, 3, "answered")
    for f in files[:2]:
        env.orthanc.upload(f)
    uids = [_uid(f) for f in files]
    job = env.api.request_commitment(env.node.id, uids)

    def ended() -> schemas.JobOut | None:
        got = env.api.job(job.id)
        return got if got.state not in ("queued", "running", "waiting") else None

    done = _until(ended, 30, "Orthanc's commitment report")
    assert done.state == "partial", done.message
    assert (done.completed, done.failed) == (2, 1)
    assert _items(env, job.id)[uids[2]] == ("failed", 0x0112)
    (uid,) = {c.transaction_uid for c in env.api.commitments(job_id=job.id)}
    return job.id, uid, uids


def _assert_unchanged(env: Env, job_id: int, uids: list[str]) -> None:
    assert _items(env, job_id)[uids[2]] == ("failed", 0x0112)
    job = env.api.job(job_id)
    assert job.state == "partial" and (job.completed, job.failed) == (2, 1), job.message
    assert "2 committed, 1 failed" in job.message


@pytest.mark.parametrize("aet", ["EVIL", "ORTHANCX", "ORTHANC  "])
def test_a_report_from_another_ae_is_refused(
    env: Env, answered: tuple[int, str, list[str]], aet: str
) -> None:
    """Way 2 from an AE that is not the node asked (trailing spaces are not a difference:
    "ORTHANC  " is Orthanc, and its answered transaction is not rewritten either)."""
    job_id, transaction_uid, uids = answered
    code = report_from(aet, env.server.port, _report(transaction_uid, uids))
    assert code == PROCESSING_FAILURE  # was 0x0000, and the failed instance "committed"
    _assert_unchanged(env, job_id, uids)
    log = env.server.log_tail(200)
    assert f"from {aet.strip()} for transaction {transaction_uid} refused" in log


def test_the_node_asked_may_repeat_its_answer(
    env: Env, answered: tuple[int, str, list[str]]
) -> None:
    """The same answer again from the node asked changes nothing and is not an error."""
    job_id, transaction_uid, uids = answered
    report = _report(transaction_uid, uids[:2])
    failed = Dataset()
    failed.ReferencedSOPClassUID = CTImageStorage
    failed.ReferencedSOPInstanceUID = uids[2]
    failed.FailureReason = 0x0112
    report.FailedSOPSequence = [failed]
    assert report_from(env.orthanc.aet, env.server.port, report) == 0x0000
    _assert_unchanged(env, job_id, uids)


def test_a_report_on_our_association_for_another_transaction_is_refused(
    env: Env, answered: tuple[int, str, list[str]]
) -> None:
    """Way 1: a registered node, asked for its own transaction, reports on that
    association for another node's (one still waiting, and Orthanc's answered one)."""
    quiet, forger = CommitPeer("QUIETSCP").start(), CommitPeer("FORGER").start()
    try:
        quiet_node = _add_peer_node(env, quiet, "quiet")
        forger_node = _add_peer_node(env, forger, "forger")
        files = _archive(env, 2, "way1")
        uids = [_uid(f) for f in files]
        waiting = env.api.request_commitment(quiet_node.id, uids)
        _until(lambda: quiet.actions, 20, "the N-ACTION to QUIETSCP")
        forger.forge = _report(quiet.actions[0], uids)
        env.api.request_commitment(forger_node.id, uids[:1])
        _until(lambda: forger.forged_status, 20, "the forged report's answer")
        assert forger.forged_status == [PROCESSING_FAILURE]
        assert set(_items(env, waiting.id).values()) == {("pending", None)}  # was committed
        job_id, transaction_uid, answered_uids = answered
        forger.forge = _report(transaction_uid, answered_uids)
        env.api.request_commitment(forger_node.id, uids[:1])
        _until(lambda: len(forger.forged_status) == 2, 20, "the second forged report")
        assert forger.forged_status[1] == PROCESSING_FAILURE
        _assert_unchanged(env, job_id, answered_uids)
    finally:
        quiet.stop()
        forger.stop()


def test_deleting_a_node_ends_its_commitment_and_its_id_gets_none(env: Env) -> None:
    """GHOST (the highest id) waits for a report; it is deleted and NEWPACS added with the
    same id: the retries of GHOST's request went to NEWPACS."""
    ghost, newpacs = CommitPeer("GHOST").start(), CommitPeer("NEWPACS").start()
    try:
        node = _add_peer_node(env, ghost, "ghost")
        uids = [_uid(f) for f in _archive(env, 1, "ghost")]
        job = env.api.request_commitment(node.id, uids)
        _until(lambda: env.api.job(job.id).state == "waiting", 20, "the job to wait")
        env.api.delete_node(node.id)
        ended = env.api.job(job.id)
        assert ended.state == "failed", ended.message  # stayed "waiting"
        assert "the node was deleted" in ended.message
        assert {c.request_state for c in env.api.commitments(job_id=job.id)} == {"expired"}
        reused = _add_peer_node(env, newpacs, "newpacs")
        time.sleep(RETRY_SECONDS * 2 + 1)  # the retry watcher's due time and a round
        assert newpacs.actions == [], f"node {reused.id} got the deleted node's N-ACTION"
        assert ghost.actions  # it was asked; nobody is asked again
        assert env.api.job(job.id).state == "failed"
    finally:
        ghost.stop()
        newpacs.stop()


def test_the_retry_watcher_sends_nothing_to_a_node_that_took_the_id(tmp_path: Path) -> None:
    """Defence in depth: a node row replaced below the ORM (no delete hook ran) with another
    node under the same id: the request names the node it went to, the watcher checks."""
    ghost, newpacs = CommitPeer("GHOST").start(), CommitPeer("NEWPACS").start()
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": {"commitment_retry_seconds": RETRY_SECONDS, "commitment_max_attempts": 3},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        with ctx.WriteSession() as db, db.begin():
            row = RemoteNode(
                name="ghost", ae_title=ghost.aet, host="127.0.0.1", port=ghost.port,
                storage_commitment=True, timeout=5.0,
            )  # fmt: skip
            db.add(row)
            db.flush()
            node_id = row.id
        svc.set_options(node_id, commitment_mode="incoming")
        ref = commitment.Reference(CTImageStorage, generate_uid())
        assert svc.request_commitment(svc.node(node_id), [ref]).ok
        other = RemoteNode(name="newpacs", ae_title=newpacs.aet, host="127.0.0.1", port=0)
        with ctx.WriteSession() as db, db.begin():
            db.execute(delete(RemoteNode).where(RemoteNode.id == node_id))
            db.execute(
                insert(RemoteNode).values(
                    id=node_id, name=other.name, name_key=other.name_key,
                    ae_title=newpacs.aet, host="127.0.0.1", port=newpacs.port,
                    storage_commitment=True, timeout=5.0,
                )
            )  # fmt: skip
        time.sleep(RETRY_SECONDS + 0.2)
        assert svc.retry_commitments() == 0
        assert newpacs.actions == []  # the patient's UIDs went to NEWPACS
        with ctx.Session() as db:
            req = db.scalars(select(CommitmentRequest)).one()
            assert req.state == "expired"
            assert "now 'newpacs'" in req.message and "'ghost'" in req.message
    finally:
        svc.close()
        ctx.close()
        ghost.stop()
        newpacs.stop()
