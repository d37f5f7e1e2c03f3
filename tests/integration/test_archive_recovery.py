"""The archive is the source of truth: lost index rows come back, deleted data does not.

Ingest commits skip the WAL fsync (the blobs are fsynced and carry an authenticated label), so
a power loss can take the newest index rows. These tests take those rows away by hand from a
stopped server's SQLite index and check that the next start re-indexes every acknowledged
instance into its own pool, byte-identical; that a study deleted just before a crash stays
deleted; that an older copy of a replaced instance is not resurrected; and that
``lucent-server rebuild-index`` rebuilds a lost database from the archive alone.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
import time
from pathlib import Path

from pydicom import dcmread

from tests.data import samples
from tests.integration.dicom_io import dataset_bytes, storescu
from tests.support.lucent import LucentServer
from tests.support.peers import free_port


def _server(workdir: Path) -> LucentServer:
    pools = [
        {"name": "DEFAULT", "ae_title": "LUCENT", "port": free_port()},
        {"name": "RESEARCH", "ae_title": "LUCENTRES", "port": free_port()},
    ]
    return LucentServer(workdir, pools=pools)


def _index(srv: LucentServer) -> sqlite3.Connection:
    return sqlite3.connect(srv.data_dir / "index.sqlite3")


def _blobs(srv: LucentServer) -> set[Path]:
    """Archive objects (the empty files a running server prepares are not objects yet)."""
    return {p for p in (srv.data_dir / "archive").rglob("*") if p.is_file() and p.stat().st_size}


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _forget(srv: LucentServer, sop_uids: list[str], *, whole_study: str = "") -> None:
    """Remove index rows as a lost (unsynced) commit would: instance rows, and with
    ``whole_study`` its series, study and patient rows too."""
    with _index(srv) as db:
        db.executemany("DELETE FROM instances WHERE sop_instance_uid = ?", [(u,) for u in sop_uids])
        if whole_study:
            (study_pk, patient_pk) = db.execute(
                "SELECT id, patient_pk FROM studies WHERE study_uid = ?", (whole_study,)
            ).fetchone()
            db.execute("DELETE FROM series WHERE study_pk = ?", (study_pk,))
            db.execute("DELETE FROM studies WHERE id = ?", (study_pk,))
            db.execute("DELETE FROM patients WHERE id = ?", (patient_pk,))


def test_lost_index_rows_are_rebuilt_from_the_archive(tmp_path: Path) -> None:
    ct = samples.write_ct_series(tmp_path / "ct", n=12, rows=64, cols=64)
    other = samples.write_ct_series(
        tmp_path / "other", n=4, rows=32, cols=32, patient_id="RES-9", patient_name="Res^Only"
    )
    other_study = str(dcmread(other[0], stop_before_pixels=True).StudyInstanceUID)
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        assert storescu("127.0.0.1", srv.port, "LUCENT", ct).returncode == 0
        assert storescu("127.0.0.1", int(srv.pools[1]["port"]), "LUCENTRES", other).returncode == 0
    finally:
        srv.stop()
    lost = [_uid(p) for p in ct[-5:]] + [_uid(p) for p in other]
    _forget(srv, [_uid(p) for p in ct[-5:]])
    _forget(srv, [_uid(p) for p in other], whole_study=other_study)
    with _index(srv) as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == 7

    srv.start()
    try:
        api = srv.client()
        for path in [*ct, *other]:
            stored = api.instance_file(_uid(path))
            assert dataset_bytes(stored) == dataset_bytes(path.read_bytes())
            assert api.instance(_uid(path)).sha256 == hashlib.sha256(stored).hexdigest()
        studies = {s.study_uid: s for s in api.studies()}
        assert studies[other_study].pool == "RESEARCH"
        assert studies[other_study].instance_count == 4
        assert sum(s.instance_count for s in studies.values()) == 16
        assert f"{len(lost)} instance(s) re-indexed" in srv.log_tail(200)
    finally:
        srv.stop()


def test_study_deleted_before_a_crash_stays_deleted(tmp_path: Path) -> None:
    keep = samples.write_ct_series(tmp_path / "keep", n=3, rows=32, cols=32)
    gone = samples.write_ct_series(
        tmp_path / "gone", n=3, rows=32, cols=32, patient_id="DEL-1", patient_name="Del^Me"
    )
    gone_study = str(dcmread(gone[0], stop_before_pixels=True).StudyInstanceUID)
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        assert storescu("127.0.0.1", srv.port, "LUCENT", [*keep, *gone]).returncode == 0
        before = _blobs(srv)
        saved = tmp_path / "saved"
        saved.mkdir()
        for blob in before:
            shutil.copy2(blob, saved / blob.name)
        srv.client().delete_study(gone_study)
        removed = before - _blobs(srv)
        assert len(removed) == 6  # metadata + pixel object of each of the 3 instances
    finally:
        srv.stop()
    # The crash: rows and tombstones committed, blobs not yet unlinked.
    for blob in removed:
        shutil.copy2(saved / blob.name, blob)
    with _index(srv) as db:
        db.executemany(
            "INSERT INTO archive_tombstones (base, created_at) VALUES (?, '2026-01-01')",
            [(b,) for b in {p.name.split(".")[0] for p in removed}],
        )
    srv.start()
    try:
        api = srv.client()
        assert gone_study not in {s.study_uid for s in api.studies()}
        assert len(api.studies()) == 1
        assert not removed & _blobs(srv)
        with _index(srv) as db:
            assert db.execute("SELECT count(*) FROM archive_tombstones").fetchone()[0] == 0
    finally:
        srv.stop()


def test_replaced_copy_is_not_resurrected(tmp_path: Path) -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.7", patient_id="DUP-R")
    path = samples.write(ds, tmp_path / "dup.dcm")
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        assert storescu("127.0.0.1", srv.port, "LUCENT", [path]).returncode == 0
        first = {p: p.read_bytes() for p in _blobs(srv)}
        ds.SeriesDescription = "second copy"
        samples.write(ds, path)
        assert storescu("127.0.0.1", srv.port, "LUCENT", [path]).returncode == 0
    finally:
        srv.stop()
    for blob, data in first.items():  # the crash came before the old copy was unlinked
        blob.write_bytes(data)
    srv.start()
    try:
        stored = dcmread(io.BytesIO(srv.client().instance_file(str(ds.SOPInstanceUID))))
        assert stored.SeriesDescription == "second copy"
        assert not set(first) & _blobs(srv)
    finally:
        srv.stop()


def test_rebuild_index_from_archive_alone(tmp_path: Path) -> None:
    srv, ct = _stored_server(tmp_path, n=6)
    done = srv.cli("rebuild-index")
    assert done.returncode == 0, done.stderr
    assert "6 instance(s) re-indexed, 0 object(s) removed" in done.stdout
    srv._admin_created = False  # the accounts went with the database
    srv.start()
    try:
        api = srv.client()
        assert [s.instance_count for s in api.studies()] == [6]
        for path in ct:
            assert dataset_bytes(api.instance_file(_uid(path))) == dataset_bytes(path.read_bytes())
    finally:
        srv.stop()


def test_rebuild_index_refuses_while_the_server_runs(tmp_path: Path) -> None:
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        done = srv.cli("rebuild-index")
        assert done.returncode == 1
        assert "stop the server first" in done.stderr
    finally:
        srv.stop()
    # SIGTERM (systemd stop, installers) ends the server by itself, not by the SIGKILL
    # that LucentServer.stop falls back to.
    assert srv.proc is not None and srv.proc.returncode == 0


def test_a_second_server_on_the_same_data_directory_touches_nothing(tmp_path: Path) -> None:
    """A second `run` on a live server's data directory ran start-up recovery on its files
    (removing the running server's prepared archive files) before failing on the busy port
    (outside probe): the data directory is locked first."""
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        archive = srv.data_dir / "archive"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(archive.glob("*/*")):
            time.sleep(0.1)  # the workers prepare their stock of empty files at start
        before = sorted(p.name for p in archive.glob("*/*"))
        assert before
        second = srv.cli("run")
        assert second.returncode == 1
        assert "another Lucent server" in second.stderr and "is using the data directory" in (
            second.stderr
        )
        assert set(before) <= {p.name for p in archive.glob("*/*")}  # nothing removed
        assert srv.cli("rebuild-index").returncode == 1
        assert srv.client().status()["instances"] == 0  # the first one still answers
    finally:
        srv.stop()


def _stored_server(tmp_path: Path, n: int = 4) -> tuple[LucentServer, list[Path]]:
    """A stopped server holding an ``n``-slice CT series, its index database deleted."""
    ct = samples.write_ct_series(tmp_path / "ct", n=n, rows=32, cols=32)
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        assert storescu("127.0.0.1", srv.port, "LUCENT", ct).returncode == 0
    finally:
        srv.stop()
    for suffix in ("", "-wal", "-shm"):
        (srv.data_dir / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    return srv, ct


def _key_file(srv: LucentServer) -> Path:
    [path] = list((srv.data_dir / "keys").glob("*.keys"))
    return path


def test_a_lost_key_file_removes_nothing(tmp_path: Path) -> None:
    """rebuild-index with the key file missing made a new key, found every object
    "unreadable" and deleted the whole archive: 1004 objects (outside probe). Now the
    server and rebuild-index refuse to start without the key file the archive needs."""
    srv, ct = _stored_server(tmp_path)
    before = _blobs(srv)
    key = _key_file(srv)
    key.rename(tmp_path / "saved.keys")
    for command in ("rebuild-index", "run"):
        done = srv.cli(command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "restore the key file" in done.stderr
    assert _blobs(srv) == before and not key.exists()
    (tmp_path / "saved.keys").rename(key)
    done = srv.cli("rebuild-index")
    assert done.returncode == 0 and f"{len(ct)} instance(s) re-indexed" in done.stdout


def test_another_key_file_removes_nothing_and_damaged_objects_are_kept_aside(
    tmp_path: Path,
) -> None:
    """A valid key file of another server (a restored wrong backup) opened nothing, and
    every object was deleted; an object that fails authentication is moved to quarantine."""
    srv, ct = _stored_server(tmp_path)
    before = _blobs(srv)
    key = _key_file(srv)
    own = key.read_bytes()
    other = _server(tmp_path / "other")
    other.start()
    other.stop()
    key.write_bytes(_key_file(other).read_bytes())
    done = srv.cli("rebuild-index")
    assert done.returncode == 1, done.stdout
    assert "sealed with master keys" in done.stderr and "0 instance(s) re-indexed" in done.stdout
    assert _blobs(srv) == before
    key.write_bytes(own)
    damaged = sorted(p for p in before if p.name.endswith(".m"))[0]
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    done = srv.cli("rebuild-index")
    assert done.returncode == 0, done.stderr
    assert f"{len(ct) - 1} instance(s) re-indexed" in done.stdout
    assert "2 moved to quarantine" in done.stdout  # the metadata and the pixel object
    kept = srv.data_dir / "archive" / "quarantine" / damaged.name
    assert kept.read_bytes() == bytes(data)
    assert (kept.parent / damaged.name.replace(".m", ".p")).is_file()


def test_a_key_file_of_another_archive_stops_the_start(tmp_path: Path) -> None:
    """With a valid key file of another install in place the server started silently:
    every archived instance answered 500, and new ones were acknowledged 0000 under keys
    the right file lacks, unreadable once it was restored (outside probe 20)."""
    ct = samples.write_ct_series(tmp_path / "ct", n=3, rows=32, cols=32)
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        assert storescu("127.0.0.1", srv.port, "LUCENT", ct).returncode == 0
    finally:
        srv.stop()
    key = _key_file(srv)
    own = key.read_bytes()
    other = _server(tmp_path / "other")
    other.start()
    other.stop()
    key.write_bytes(_key_file(other).read_bytes())
    before = _blobs(srv)
    done = srv.cli("run")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "lacks the master key" in done.stderr and "Nothing was changed" in done.stderr
    assert "running" not in done.stdout
    assert _blobs(srv) == before
    key.write_bytes(own)
    srv.start()
    try:
        assert srv.client().status()["instances"] == len(ct)
    finally:
        srv.stop()


def test_rotate_key_refuses_while_the_server_runs(tmp_path: Path) -> None:
    """A key rotated under a running server: a worker restarted later sealed with the new
    key, and the API answered 500 for those instances until a restart (outside probe)."""
    srv = _server(tmp_path / "srv")
    srv.start()
    try:
        done = srv.cli("rotate-key")
        assert done.returncode == 1 and "stop the server first" in done.stderr
    finally:
        srv.stop()
    done = srv.cli("rotate-key")
    assert done.returncode == 0 and "is active" in done.stdout


def test_a_damaged_index_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    """With pages of the index overwritten the server announced "running" and answered
    every C-STORE with C0FF (outside probe): it now refuses to start and says what to do."""
    srv, _ = _stored_server(tmp_path, n=40)
    assert srv.cli("rebuild-index").returncode == 0
    index = srv.data_dir / "index.sqlite3"
    pristine = index.read_bytes()
    # pages the start-up store probe uses, then pages it does not touch (a re-check found
    # the server "running" on those and failing every store)
    for offset, size in ((3 * 4096, 5 * 4096), (12288, 8192), (len(pristine) - 8192, 4096)):
        index.write_bytes(pristine)
        with index.open("r+b") as f:
            f.seek(offset)
            f.write(b"\xa5" * size)
        done = srv.cli("run")
        assert done.returncode == 2, (offset, done.stdout, done.stderr[-2000:])
        assert "index database" in done.stderr and "rebuild-index" in done.stderr
        assert "Lucent server running" not in done.stdout
