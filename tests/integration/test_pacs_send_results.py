"""A send job leaves no instance without a result and says what the peer's statuses mean
(Conformance 4.2.4; outside probe 26).

The PACS service runs in-process on a real index. A peer that stops answering C-STORE or
aborts on one instance, and peers answering failure or warning statuses without an Error
Comment, are the scripted pynetdicom peer (no real PACS does either on demand); the
compressed-only peer is DCMTK ``storescp`` with a one-syntax profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from sqlalchemy import select

from lucent.net import status
from server import config
from server.context import ServerContext
from server.index.models import RemoteNode
from server.index.pacs_models import Job, SentInstance
from server.pacs.service import PacsService
from tests.data import samples
from tests.integration.test_pacs_scripted import ABORT, HANG, ScriptedPeer
from tests.integration.test_pacs_store_compressed import JPEG_LS_LOSSLESS, OneSyntaxStoreScp


@contextmanager
def _service(
    tmp_path: Path, aet: str, host: str, port: int, pacs: dict[str, Any]
) -> Iterator[tuple[PacsService, int]]:
    """The service on a fresh data directory, the peer at ``host:port`` its store target
    (one association at a time: the order of the instances is the order they are sent)."""
    settings = config.parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "archive": {"min_free_mb": 1},
            "pacs": {"store_associations": 1, "retry_backoff_seconds": 0.1, **pacs},
        }
    )
    ctx = ServerContext(settings, migrate=True)
    svc = PacsService(ctx, start_watcher=False)
    try:
        with ctx.WriteSession() as db, db.begin():
            node = RemoteNode(name=aet.lower(), ae_title=aet, host=host, port=port,
                              store_target=True, timeout=10.0)  # fmt: skip
            db.add(node)
            db.flush()
            node_id = node.id
        yield svc, node_id
    finally:
        svc.close()
        ctx.close()


def _archive(svc: PacsService, tmp_path: Path, n: int) -> tuple[str, list[str]]:
    """``n`` CT instances of one series in the archive: (series UID, SOP Instance UIDs in
    the order a send takes them)."""
    files = samples.write_ct_series(tmp_path / "ct", n=n, rows=8, cols=8)
    sets = [dcmread(f, stop_before_pixels=True) for f in files]
    for f in files:
        assert svc.ctx.store(f.read_bytes(), pool="DEFAULT", source="TEST").ok
    sets.sort(key=lambda ds: int(ds.InstanceNumber))
    return str(sets[0].SeriesInstanceUID), [str(ds.SOPInstanceUID) for ds in sets]


def _ended(svc: PacsService, job_id: int) -> tuple[Job, dict[str, SentInstance]]:
    """The finished job and its per-instance results by SOP Instance UID."""
    assert svc.jobs.wait_idle(120)
    with svc.ctx.Session() as db:
        job = db.get(Job, job_id)
        assert job is not None
        rows = list(db.scalars(select(SentInstance).where(SentInstance.job_pk == job_id)))
        db.expunge_all()
    assert len(rows) == len({r.sop_instance_uid for r in rows})  # one result per instance
    return job, {r.sop_instance_uid: r for r in rows}


@contextmanager
def _scripted(tmp_path: Path, pacs: dict[str, Any]) -> Iterator[tuple[PacsService, int, Any]]:
    peer = ScriptedPeer(aet="SCRIPTED").start()
    try:
        with _service(tmp_path, peer.aet, peer.host, peer.port, pacs) as (svc, node_id):
            yield svc, node_id, peer
    finally:
        peer.stop()


# ------------------------------------------------------------------ defect 1: lost association


def test_a_peer_that_stops_answering_leaves_no_instance_without_a_result(
    tmp_path: Path,
) -> None:
    """A peer that takes the association and answers no C-STORE (DIMSE timeout): the job
    ended failed=6 of 6, progress 0.33, while /jobs/{id}/instances listed 2 rows."""
    with _scripted(tmp_path, {"store_retries": 1}) as (svc, node_id, peer):
        svc.set_options(node_id, dimse_timeout=1.0)
        series, uids = _archive(svc, tmp_path, 6)
        peer.store_statuses = dict.fromkeys(uids, HANG)
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
    assert job.state == "failed" and (job.total, job.failed, job.completed) == (6, 6, 0)
    assert job.progress == 1.0
    assert sorted(rows) == sorted(uids)
    for row in rows.values():
        assert row.status is None
        assert row.reason.startswith(
            ("no C-STORE response", "not attempted: association lost after")
        ), row.reason
    # each attempt tried instances not tried before: four of six got the C-STORE
    tried = [u for u in uids if rows[u].reason.startswith("no C-STORE response")]
    assert len(tried) == 4, [rows[u].reason for u in uids]


def test_an_instance_the_peer_aborts_on_does_not_starve_the_others(tmp_path: Path) -> None:
    """The peer aborts on the first instance: the others go on a new association in the
    same attempt (they got nothing: the abort ended the send of the whole lane)."""
    with _scripted(tmp_path, {"store_retries": 0}) as (svc, node_id, peer):
        series, uids = _archive(svc, tmp_path, 5)
        peer.store_statuses = {uids[0]: ABORT}
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
    assert job.state == "partial" and (job.completed, job.failed) == (4, 1), job.message
    assert job.progress == 1.0
    assert [rows[u].status for u in uids] == [None, 0, 0, 0, 0]
    assert "no C-STORE response" in rows[uids[0]].reason and "abort" in rows[uids[0]].reason


def test_instances_the_peer_aborts_on_go_to_the_back_of_the_retry(tmp_path: Path) -> None:
    """Two instances that abort at the front of the lane: the first attempt stops after two
    associations with no answer (a peer that answers nothing costs the DIMSE timeout per
    association); the retry sends the four never tried before those two again."""
    with _scripted(tmp_path, {"store_retries": 1}) as (svc, node_id, peer):
        series, uids = _archive(svc, tmp_path, 6)
        peer.store_statuses = {uids[0]: ABORT, uids[1]: ABORT}
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
    assert job.state == "partial" and (job.completed, job.failed) == (4, 2), job.message
    assert job.progress == 1.0 and job.attempts == 2
    assert [rows[u].status for u in uids] == [None, None, 0, 0, 0, 0]
    assert all("no C-STORE response" in rows[u].reason for u in uids[:2])
    assert all(rows[u].attempts == 2 for u in uids)


# ------------------------------------------------------------------ defect 2: status meanings


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (0xA700, "Refused: Out of resources"),
        (0xC000, "Error: Cannot understand"),
        (0x0122, "Refused: SOP Class not supported"),
        (0xA900, "Error: Data Set does not match SOP Class"),
    ],
)
def test_a_failure_status_without_error_comment_is_explained(
    tmp_path: Path, code: int, meaning: str
) -> None:
    """The reason was empty and the job said only "1 failed: 0xA700"; a B000 warning made
    the job done with warning=1 and the message did not mention it."""
    with _scripted(tmp_path, {"store_retries": 0}) as (svc, node_id, peer):
        series, uids = _archive(svc, tmp_path, 3)
        peer.store_statuses = {uids[1]: code, uids[2]: 0xB000}
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
    expected = f"{meaning} (0x{code:04X})"
    assert rows[uids[1]].status == code and rows[uids[1]].reason == expected
    assert f"1 failed: {expected}" in job.message, job.message
    warning = "Warning: Coercion of data elements (0xB000)"
    assert rows[uids[2]].status == 0xB000 and rows[uids[2]].reason == warning
    assert job.warning == 1 and f"1 with a warning: {warning}" in job.message, job.message
    assert job.state == "partial" and job.completed == 2


def test_a_warning_alone_is_named_in_a_done_job(tmp_path: Path) -> None:
    with _scripted(tmp_path, {"store_retries": 0}) as (svc, node_id, peer):
        series, uids = _archive(svc, tmp_path, 2)
        peer.store_statuses = {uids[0]: 0xB007}
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
    assert job.state == "done" and job.warning == 1
    assert status.describe(0xB007) in job.message and "with a warning" in job.message
    assert rows[uids[0]].reason == "Warning: Data Set does not match SOP Class (0xB007)"


# ------------------------------------------------------------------ defect 4: compressed only


def test_a_compressed_only_peer_names_the_propose_compressed_option(tmp_path: Path) -> None:
    """storescp taking JPEG-LS lossless only, the node's propose_compressed off: every
    instance failed with "accepted none of the proposed presentation contexts" (which
    blamed the SOP class too); the message names the option, and the option works."""
    peer = OneSyntaxStoreScp(JPEG_LS_LOSSLESS, tmp_path / "in", tmp_path / "p")
    with peer, _service(tmp_path, peer.aet, peer.host, peer.port, {}) as (svc, node_id):
        series, uids = _archive(svc, tmp_path, 2)
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
        assert job.state == "failed" and job.attempts == 1, job.message
        assert sorted(rows) == sorted(uids)
        for text in [job.message, *(r.reason for r in rows.values())]:
            assert "accepted none of the uncompressed transfer syntaxes proposed" in text
            assert "CT Image Storage" in text
            assert "turn on the node's propose_compressed option" in text, text
        svc.set_options(node_id, propose_compressed=True)  # the fix the message names
        job, rows = _ended(svc, svc.send(node_id, series_uid=series, commit=False))
        assert job.state == "done", job.message
        assert {r.transfer_syntax_uid for r in rows.values()} == {JPEG_LS_LOSSLESS}
        assert len(peer.files()) == 2
    assert {r.sop_class_uid for r in rows.values()} == {CTImageStorage}
