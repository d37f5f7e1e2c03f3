"""A send job with storage commitment reads "waiting" until its report arrives, on any of
the three ways of Conformance 4.1.2.5, or the request expires (4.2.5.3); then its final
state, its counts, GET /jobs/{id}/instances and POST /jobs/{id}/retry agree.

Outside probe 52: the send read "done" (final, finished_at set) with "waiting for the
commitment report of 10 of 10 instance(s)" in its message, GET /jobs?state=waiting
answered [], and on expiry it turned "partial" with completed 10 -> 0, failed 0 -> 10,
while its instances read status 0 and the retry answered 409 "nothing to retry".

The in-process API and PACS service on a real index; our own Store SCP's AE and handlers
in-process for way 2; the commitment SCP is the scripted pynetdicom peer (no real PACS
withholds or delays its report on demand), the way-2 report a real association from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from lucent.api import schemas
from lucent.api.client import LucentClient
from server.dimse import handlers
from server.dimse.listener import build_ae
from server.index.models import RemoteNode
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_accounts_support import make_app
from tests.integration.test_commitment_report_origin import _report, report_from
from tests.integration.test_pacs_commitment_retry import CountingPeer
from tests.support.peers import free_port

RETRY_SECONDS = 0.6


@dataclass
class Env:
    api: LucentClient
    svc: PacsService
    peer: CountingPeer
    nodes: dict[str, int]  # commitment mode -> node id
    port: int  # our Store SCP (way 2)
    work: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("send-commit")
    port = free_port()
    peer = CountingPeer().start()
    pacs = {"commitment_retry_seconds": RETRY_SECONDS, "commitment_max_attempts": 2}
    pools = [{"name": "DEFAULT", "ae_title": "LUCENT", "port": port}]
    try:
        with make_app(work, {"pacs": pacs}, pools) as app:
            svc = PacsService(app.ctx, start_watcher=False)  # retries run here, on time
            app.app.state.pacs = svc  # the routes use this one
            scp = build_ae(app.ctx.settings)
            scp.start_server(
                ("127.0.0.1", port), block=False,
                evt_handlers=handlers.bindings(app.ctx, app.ctx.settings.pools[0]),
            )  # fmt: skip
            try:
                nodes: dict[str, int] = {}
                for mode in ("same", "incoming", "reopen"):
                    with app.ctx.WriteSession() as db, db.begin():
                        node = RemoteNode(
                            name=f"pacs-{mode}", ae_title=peer.aet, host=peer.host,
                            port=peer.port, store_target=True, storage_commitment=True,
                            timeout=10.0,
                        )  # fmt: skip
                        db.add(node)
                        db.flush()
                        nodes[mode] = node.id
                    svc.set_options(nodes[mode], commitment_mode=mode, commitment_wait=0.5)
                yield Env(app.admin_client(), svc, peer, nodes, port, work)
            finally:
                scp.shutdown()
                svc.close()
    finally:
        peer.stop()


def _archived(env: Env, name: str, n: int = 2) -> list[str]:
    files = samples.write_ct_series(env.work / name, n=n, rows=8, cols=8)
    for f in files:
        assert env.svc.ctx.store(f.read_bytes(), pool="DEFAULT", source="TEST").ok
    return sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)


def _after_storing(env: Env, job_id: int) -> tuple[schemas.JobOut, list[str]]:
    """The job once its C-STOREs and N-ACTION are over, and every state it showed."""
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = env.api.job(job_id)
        seen.append(job.state)
        if job.state not in ("queued", "running"):
            return job, seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job.state}")


def _waiting(env: Env, mode: str, uids: list[str]) -> schemas.JobOut:
    """A send with commitment whose report the SCP keeps: waiting, not "done"."""
    env.peer.commit_mode = "incoming"  # accepts the N-ACTION, reports nothing (yet)
    sent = env.api.send(env.nodes[mode], sop_instance_uids=uids, commit=True)
    job, seen = _after_storing(env, sent.id)
    assert job.state == "waiting", job.message  # was "done" with the report outstanding
    assert not job.finished and job.finished_at is None, job
    assert set(seen) <= {"queued", "running", "waiting"}, seen
    assert f"waiting for the commitment report of {len(uids)} of {len(uids)}" in job.message
    assert job.id in [j.id for j in env.api.jobs(state="waiting")]  # was []
    rows = env.api.job_instances(job.id)
    assert {(r.status, r.commitment) for r in rows} == {(0, "pending")}
    return job


def _retry_commitments(env: Env) -> None:
    time.sleep(RETRY_SECONDS + 0.1)
    env.svc.retry_commitments()


def _not_good(rows: list[schemas.SentInstanceOut]) -> int:
    """Instances the list shows as not stored or not committed."""
    return sum(1 for r in rows if r.status != 0 or r.commitment in ("failed", "unconfirmed"))


def test_a_send_waits_for_its_report_and_ends_failed_when_it_expires(env: Env) -> None:
    uids = _archived(env, "expires")
    job = _waiting(env, "same", uids)
    _retry_commitments(env)  # request 2, no report either
    job = env.api.job(job.id)
    assert job.state == "waiting" and "request 2" in job.message, job.message
    _retry_commitments(env)  # the last attempt had no report: the request expires
    job = env.api.job(job.id)
    assert job.state == "failed" and job.finished_at is not None, job.message
    assert (job.total, job.completed, job.failed) == (2, 0, 2)
    assert "2 of 2 instance(s) stored" in job.message
    assert "2 of 2 instance(s) never confirmed" in job.message, job.message
    assert "a retry of this job sends them again" in job.message
    rows = env.api.job_instances(job.id)
    # stored (C-STORE 0000), never confirmed: the counts say what the list says
    assert {(r.status, r.commitment) for r in rows} == {(0, "unconfirmed")}
    assert _not_good(rows) == job.failed
    assert job.id not in [j.id for j in env.api.jobs(state="waiting")]

    env.peer.commit_mode = "same"  # the PACS reports now
    again = env.api.retry_job(job.id)  # was 409 "every instance ... was stored"
    assert again.params["retry_of"] == job.id
    assert sorted(again.params["sop_instance_uids"]) == uids  # type: ignore[arg-type]
    done = env.api.wait_job(again.id, timeout=20)
    assert done.state == "done", done.message
    assert (done.completed, done.failed) == (2, 0)
    rows = env.api.job_instances(done.id)
    assert {(r.status, r.commitment) for r in rows} == {(0, "committed")}


@pytest.mark.parametrize(
    "mode",
    [
        "same",  # way 1: the retry's N-ACTION is answered on its association
        "reopen",  # way 3: the SCP reports when we open a new association to it
    ],
)
def test_a_late_report_on_our_association_ends_the_send_done(env: Env, mode: str) -> None:
    uids = _archived(env, f"late-{mode}")
    job = _waiting(env, mode, uids)
    env.peer.commit_mode = mode
    _retry_commitments(env)
    job = env.api.job(job.id)
    assert job.state == "done" and job.finished_at is not None, job.message
    assert (job.completed, job.failed, job.progress) == (2, 0, 1.0)
    assert job.message.endswith("storage commitment report: 2 committed, 0 failed"), job.message
    rows = env.api.job_instances(job.id)
    assert {(r.status, r.commitment) for r in rows} == {(0, "committed")}
    with pytest.raises(Exception, match=f"job {job.id} is done"):
        env.api.retry_job(job.id)  # nothing to send again


def test_a_report_on_a_new_association_ends_the_send(env: Env) -> None:
    """Way 2: the SCP opens an association to our Store SCP; one instance failed (0112)."""
    uids = _archived(env, "way2")
    job = _waiting(env, "incoming", uids)
    (tuid,) = {c.transaction_uid for c in env.api.commitments(job_id=job.id)}
    report = _report(tuid, uids[:1])
    failed = Dataset()
    failed.ReferencedSOPClassUID = CTImageStorage
    failed.ReferencedSOPInstanceUID = uids[1]
    failed.FailureReason = 0x0112
    report.FailedSOPSequence = [failed]
    assert report_from(env.peer.aet, env.port, report) == 0x0000
    job = env.api.job(job.id)
    assert job.state == "partial" and job.finished_at is not None, job.message
    assert (job.completed, job.failed) == (1, 1)
    assert "storage commitment report: 1 committed, 1 failed" in job.message, job.message
    rows = {r.sop_instance_uid: (r.status, r.commitment) for r in env.api.job_instances(job.id)}
    assert rows == {uids[0]: (0, "committed"), uids[1]: (0, "failed")}
    assert _not_good(env.api.job_instances(job.id)) == job.failed
    again = env.api.retry_job(job.id)  # the one not committed, sent and asked for again
    assert again.params["sop_instance_uids"] == [uids[1]]
    resent, _ = _after_storing(env, again.id)
    assert resent.state == "waiting", resent.message  # for the node's report on way 2
    assert "waiting for the commitment report of 1 of 1" in resent.message
    assert [(r.status, r.commitment) for r in env.api.job_instances(again.id)] == [(0, "pending")]
