"""Send jobs survive a restart, list every instance, can be retried, and follow the node's
``retries`` (Conformance 4.2.4; probe 38 #5 and #7, probe 39).

A real Lucent server subprocess (``LucentServer``) is stopped with SIGTERM or kill -9 and
started again on the same data directory; the store target is DCMTK ``storescp`` with
unique file names, so every C-STORE it took is one file (a second send of an instance is a
second file).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from lucent.api import schemas
from lucent.api.client import ApiError, LucentClient
from tests.data import samples
from tests.support.lucent import LucentServer
from tests.support.peers import StoreScp, free_port, run_storescu


def _server(tmp_path: Path, **pacs: Any) -> LucentServer:
    """One job at a time, one association per send: the order of events is fixed."""
    settings = {"job_threads": 1, "store_associations": 1, "retry_backoff_seconds": 0.2}
    return LucentServer(tmp_path / "lucent", settings={"pacs": settings | pacs})


class FixedPortScp(StoreScp):
    """``storescp`` on the port the node names, known before it starts (the node exists
    while nothing listens there)."""

    def __init__(self, output_dir: Path, port: int, extra: list[str]) -> None:
        super().__init__(output_dir, aet="RESUMESCP", extra_args=["+uf", *extra])
        self.fixed_port = port

    def _choose_ports(self) -> None:
        self.port = self.fixed_port


def _scp(tmp_path: Path, port: int, *extra: str) -> StoreScp:
    return FixedPortScp(tmp_path / "received", port, list(extra))


def _archive(server: LucentServer, tmp_path: Path, n: int, name: str) -> tuple[str, list[str]]:
    """``n`` CT instances of one new series stored with DCMTK storescu: (series, SOP UIDs)."""
    files = samples.write_ct_series(tmp_path / name, n=n, rows=8, cols=8)
    sets = [dcmread(f, stop_before_pixels=True) for f in files]
    run_storescu(files, "127.0.0.1", server.port, server.ae_title)  # answered once indexed
    return str(sets[0].SeriesInstanceUID), [str(ds.SOPInstanceUID) for ds in sets]


def _node(api: LucentClient, port: int) -> int:
    node = api.add_node(
        schemas.RemoteNodeIn(
            name="resume-scp",
            ae_title="RESUMESCP",
            host="127.0.0.1",
            port=port,
            query_retrieve=False,
            store_target=True,
            storage_commitment=False,
        )  # fmt: skip
    )
    return node.id


def _received(scp: StoreScp) -> Counter[str]:
    """C-STOREs the peer took, by SOP Instance UID."""
    return Counter(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in scp.files())


def _rows(server: LucentServer, job_id: int) -> list[tuple[str, int | None, str]]:
    """A job's per-instance rows read from the index file while the server is down."""
    db = sqlite3.connect(server.data_dir / "index.sqlite3")
    try:
        return list(
            db.execute(
                "SELECT sop_instance_uid, status, reason FROM pacs_sent_instances "
                "WHERE job_pk = ? ORDER BY id",
                (job_id,),
            )
        )
    finally:
        db.close()


@pytest.fixture
def scp_port() -> Iterator[int]:
    yield free_port()


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_unfinished_sends_resume_after_a_restart(tmp_path: Path, scp_port: int, how: str) -> None:
    """13 sends (11 of them queued) all ended "interrupted" after a SIGTERM or kill -9 and
    the PACS got 0 of 46 objects (probe 39). The peer is down at first: the first job waits
    for its retry, the others are queued; after the restart all of them go out."""
    server = _server(tmp_path, store_retries=1, retry_backoff_seconds=30.0).start()
    scp = _scp(tmp_path, scp_port)
    try:
        api = server.client()
        node_id = _node(api, scp_port)
        sent: dict[int, list[str]] = {}
        for k in range(3):
            series, uids = _archive(server, tmp_path, 2 + k, f"s{k}")
            sent[api.send(node_id, series_uid=series, commit=False).id] = uids
        first = min(sent)
        server.wait_until(
            lambda: "to retry" in api.job(first).message, 30, "the first send to wait to retry"
        )
        assert {api.job(j).state for j in sent if j != first} == {"queued"}
        if how == "kill":
            server.kill()
        else:
            server.stop()
        for job_id, uids in sent.items():  # every instance has a row, none was stored
            rows = _rows(server, job_id)
            assert sorted(r[0] for r in rows) == sorted(uids)
            assert all(r[1] is None for r in rows), rows
        scp.start()
        server.start()
        api = server.client()
        for job_id in sent:
            job = api.wait_job(job_id, timeout=60)
            assert job.state == "done", (job_id, job.state, job.message)
            assert job.message.startswith("resumed after a server restart"), job.message
            assert job.completed == len(sent[job_id])
        got = _received(scp)
        wanted = [u for uids in sent.values() for u in uids]
        assert sorted(got) == sorted(wanted) and set(got.values()) == {1}, got
    finally:
        server.stop()
        scp.stop()


def test_a_send_cut_by_kill_resumes_without_sending_what_was_stored(
    tmp_path: Path, scp_port: int
) -> None:
    """kill -9 in the middle of a send: the restart sends the rest; the instances recorded
    as stored before the kill reach the peer once."""
    scp = _scp(tmp_path, scp_port, "--sleep-after", "1").start()
    server = _server(tmp_path).start()
    try:
        api = server.client()
        node_id = _node(api, scp_port)
        series, uids = _archive(server, tmp_path, 8, "cut")
        job_id = api.send(node_id, series_uid=series, commit=False).id

        def stored() -> list[str]:
            return [i.sop_instance_uid for i in api.job_instances(job_id) if i.status == 0]

        before = server.wait_until(lambda: len(stored()) >= 2 and stored(), 60, "2 stored")
        server.kill()
        assert len(before) < len(uids), "the send finished before the kill"
        server.start()
        api = server.client()
        job = api.wait_job(job_id, timeout=90)
        assert job.state == "done" and job.completed == len(uids), job.message
        assert "resumed after a server restart" in job.message
        rows = api.job_instances(job_id)
        assert sorted(r.sop_instance_uid for r in rows) == sorted(uids)
        assert all(r.status == 0 for r in rows)
        got = _received(scp)
        assert set(got) == set(uids)
        assert all(got[u] == 1 for u in before), {u: got[u] for u in before}
    finally:
        server.stop()
        scp.stop()


def test_a_cancelled_send_lists_every_instance(tmp_path: Path, scp_port: int) -> None:
    """ "cancelled after 8 of 23 ... 15 not sent" while GET /jobs/{id}/instances listed the
    8 stored only (probe 38 #7): the others are listed as "not sent: cancelled"."""
    scp = _scp(tmp_path, scp_port, "--sleep-after", "1").start()
    server = _server(tmp_path).start()
    try:
        api = server.client()
        node_id = _node(api, scp_port)
        series, uids = _archive(server, tmp_path, 6, "cancel")
        job_id = api.send(node_id, series_uid=series, commit=False).id
        server.wait_until(lambda: api.job(job_id).completed >= 1, 60, "one stored")
        api.cancel_job(job_id)
        job = api.wait_job(job_id, timeout=60)
        assert job.state == "cancelled", job.message
        rows = api.job_instances(job_id)
        assert sorted(r.sop_instance_uid for r in rows) == sorted(uids)
        unsent = [r for r in rows if r.status is None]
        assert unsent and all(r.reason == "not sent: cancelled" for r in unsent), rows
        assert len(rows) - len(unsent) == job.completed
        # the retry route sends exactly those, as a new job
        retry = api.retry_job(job_id)
        assert retry.id != job_id and retry.params["retry_of"] == job_id
        done = api.wait_job(retry.id, timeout=60)
        assert done.state == "done" and done.completed == len(unsent), done.message
        assert sorted(r.sop_instance_uid for r in api.job_instances(retry.id)) == sorted(
            r.sop_instance_uid for r in unsent
        )
        assert set(_received(scp)) == set(uids) and set(_received(scp).values()) == {1}
        assert api.job(job_id).state == "cancelled"  # the old job keeps its history
    finally:
        server.stop()
        scp.stop()


def test_retry_route_resends_a_failed_send(tmp_path: Path, scp_port: int) -> None:
    """There was no way to retry a failed send. POST /jobs/{id}/retry sends what has no
    successful result; a job with nothing left to send is a 409."""
    server = _server(tmp_path, store_retries=0).start()
    scp = _scp(tmp_path, scp_port)
    try:
        api = server.client()
        node_id = _node(api, scp_port)
        series, uids = _archive(server, tmp_path, 3, "failed")
        job = api.wait_job(api.send(node_id, series_uid=series, commit=False).id, timeout=60)
        assert job.state == "failed", job.message
        scp.start()
        retry = api.wait_job(api.retry_job(job.id).id, timeout=60)
        assert retry.state == "done" and retry.completed == 3, retry.message
        assert set(_received(scp)) == set(uids)
        with pytest.raises(ApiError) as refused:
            api.retry_job(retry.id)
        assert refused.value.status == 409, refused.value
        details = [a.detail for a in api.audit(limit=1000)]
        assert any(d.startswith(f"send job {retry.id} ") for d in details), details[:20]
    finally:
        server.stop()
        scp.stop()


def test_the_node_retries_option_governs_its_sends(tmp_path: Path, scp_port: int) -> None:
    """PUT /pacs/nodes/{id}/options retries=2 was ignored for C-STORE: only
    pacs.store_retries (0 here) applied (probe 38 #5). A node whose options leave retries
    unset keeps the global default."""
    server = _server(tmp_path, store_retries=0, retry_backoff_seconds=0.1).start()
    try:
        api = server.client()
        node_id = _node(api, scp_port)  # nothing listens there: every attempt fails
        series, _uids = _archive(server, tmp_path, 1, "retries")
        api.set_node_options(node_id, dimse_timeout=5.0)
        job = api.wait_job(api.send(node_id, series_uid=series, commit=False).id, timeout=60)
        assert (job.state, job.attempts) == ("failed", 1), job.message
        api.set_node_options(node_id, retries=2)
        job = api.wait_job(api.send(node_id, series_uid=series, commit=False).id, timeout=60)
        assert (job.state, job.attempts) == ("failed", 3), job.message
    finally:
        server.stop()
