"""Archive objects that fail authentication or are gone, and the key file's owner (outside
probe 48).

A read of an instance whose archive object was altered (one byte flipped) or deleted
behind the server's back was audited as a successful access only, the server log had no
line for it, the API's 500 detail carried the object's path, and WADO-RS Retrieve Instance
and Retrieve Metadata answered a bare "Internal Server Error" with a traceback. A key file
of mode 0600 owned by another account was accepted. An association's refusals read "see
placeholders" when none had been written (A700 low disk, duplicate rejected).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from server.archive import crypto
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_env

CT = "1.2.840.10008.5.1.4.1.1.2"
NOBODY = 65534


def _objects(srv: LucentServer, sop_uid: str) -> tuple[Path, Path]:
    """The (metadata, pixel) archive objects of an instance, from the index."""
    conn = sqlite3.connect(f"{(srv.data_dir / 'index.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        meta, pixel = conn.execute(
            "SELECT meta_key, pixel_key FROM instances WHERE sop_instance_uid = ?", (sop_uid,)
        ).fetchone()
    finally:
        conn.close()
    archive = srv.data_dir / "archive"
    return archive / meta[:2] / meta, archive / pixel[:2] / pixel


def _flip(path: Path) -> None:
    """One bit of the middle byte, in place (as the tester did)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _token(srv: LucentServer) -> dict[str, str]:
    client = srv.client()
    try:
        return {"Authorization": f"Bearer {client.token}"}
    finally:
        client.close()


def _alerts(srv: LucentServer, auth: dict[str, str], sop_uid: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{srv.api_url}/api/v1/audit",
        params={"event_id": "110113", "object_id": sop_uid, "limit": 5000},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def _study(tmp_path: Path, n: int) -> tuple[str, str, list[Dataset], list[Path]]:
    study, series = generate_uid(), generate_uid()
    datasets = [
        samples.make_instance(CT, study_uid=study, series_uid=series, instance_number=i + 1)
        for i in range(n)
    ]
    files = [samples.write(ds, tmp_path / f"i{i}.dcm") for i, ds in enumerate(datasets)]
    return study, series, datasets, files


def _assert_no_path(detail: str, srv: LucentServer) -> None:
    assert str(srv.workdir) not in detail and "/archive/" not in detail, detail
    assert "Errno" not in detail, detail


def test_damaged_and_deleted_objects_are_security_alerts_with_a_reason(tmp_path: Path) -> None:
    with LucentServer(tmp_path / "srv", workers=1) as srv:
        study, series, dss, files = _study(tmp_path, 5)
        assert storescu("127.0.0.1", srv.port, srv.ae_title, files).returncode == 0
        flipped_pixels, flipped_meta, deleted_pixels, deleted_meta, good = (
            str(ds.SOPInstanceUID) for ds in dss
        )
        _flip(_objects(srv, flipped_pixels)[1])
        _flip(_objects(srv, flipped_meta)[0])
        _objects(srv, deleted_pixels)[1].unlink()
        _objects(srv, deleted_meta)[0].unlink()
        auth = _token(srv)
        log_start = srv.log_path.stat().st_size
        wado = f"{srv.api_url}/dicom-web/studies/{study}/series/{series}/instances"

        def get(url: str) -> httpx.Response:
            return httpx.get(url, headers=auth, timeout=60)

        cases = [
            (flipped_pixels, f"{srv.api_url}/api/v1/instances/{flipped_pixels}/file", "failed"),
            (flipped_pixels, f"{wado}/{flipped_pixels}", "failed authentication"),
            (flipped_pixels, f"{wado}/{flipped_pixels}/frames/1", "failed authentication"),
            (flipped_meta, f"{wado}/{flipped_meta}/metadata", "failed authentication"),
            (flipped_meta, f"{wado}/{flipped_meta}", "failed authentication"),
            (deleted_pixels, f"{srv.api_url}/api/v1/instances/{deleted_pixels}/file", "missing"),
            (deleted_pixels, f"{wado}/{deleted_pixels}", "missing"),
            (deleted_meta, f"{wado}/{deleted_meta}/metadata", "missing"),
            (deleted_meta, f"{srv.api_url}/api/v1/instances/{deleted_meta}/frames/1", "missing"),
        ]
        for uid, url, reason in cases:
            r = get(url)
            assert r.status_code == 500, (url, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json"), (url, r.text[:200])
            detail = r.json()["detail"]
            assert detail.startswith(f"archive object unreadable: instance {uid}: "), detail
            assert reason in detail, detail
            _assert_no_path(detail, srv)
        # a study's metadata: the readable ones are served, the others are left out
        r = get(f"{srv.api_url}/dicom-web/studies/{study}/metadata")
        assert r.status_code == 206, r.text[:300]
        served = {item["00080018"]["Value"][0] for item in r.json()}
        assert served == {good, flipped_pixels, deleted_pixels}  # their metadata is intact
        assert flipped_meta in r.headers["warning"] and deleted_meta in r.headers["warning"]
        _assert_no_path(r.headers["warning"], srv)
        assert get(f"{wado}/{good}").status_code == 200
        # a series' rendered frames: the damaged ones left out, said (was 200, no Warning)
        r = httpx.get(
            f"{srv.api_url}/dicom-web/studies/{study}/series/{series}/rendered",
            headers={**auth, "Accept": "multipart/related; type=image/png"},
            timeout=60,
        )
        assert r.status_code == 206, (r.status_code, r.text[:300])
        for uid in (flipped_pixels, flipped_meta, deleted_pixels, deleted_meta):
            assert uid in r.headers["warning"], r.headers["warning"]
        assert good not in r.headers["warning"]
        _assert_no_path(r.headers["warning"], srv)

        # one Security Alert per damaged object, serious failure, naming it and the reason
        expected = {
            flipped_pixels: "pixel object",
            flipped_meta: "metadata object",
            deleted_pixels: "pixel object",
            deleted_meta: "metadata object",
        }
        for uid, kind in expected.items():
            alerts = _alerts(srv, auth, uid)
            assert len(alerts) == 1, (uid, alerts)
            [alert] = alerts
            assert alert["outcome"] == 8 and alert["event_name"] == "Security Alert", alert
            assert alert["user"] == "admin" and alert["address"] == "127.0.0.1", alert
            assert {"type": "study", "id": study} in alert["objects"], alert
            assert f"instance {uid}, {kind}" in alert["detail"], alert
            word = "missing" if uid in (deleted_pixels, deleted_meta) else "authentication"
            assert word in alert["detail"], alert
        assert not _alerts(srv, auth, good)

        # and one ERROR line each (with the path: the log is the server's), no traceback
        log = srv.log_path.read_bytes()[log_start:].decode(errors="replace")
        for uid, kind in expected.items():
            lines = [
                line
                for line in log.splitlines()
                if "ERROR" in line and f"archive object unreadable: instance {uid}" in line
            ]
            assert len(lines) == 1, (uid, log[-3000:])
            assert f"{kind} " in lines[0] and str(srv.data_dir / "archive") in lines[0]
        assert "Traceback" not in log, log[-3000:]


def test_a_retrieve_of_damaged_objects_alerts_once_per_object(tmp_path: Path) -> None:
    """C-GET (DCMTK getscu) of a study with a damaged object, twice: the sub-operation
    fails each time, the Security Alert is written once (not per retry: a peer retrying
    a study of many damaged objects must not flood the trail)."""
    settings = {"dimse": {"restrict_query_retrieve": False}}
    with LucentServer(tmp_path / "srv", workers=1, settings=settings) as srv:
        study, _, dss, files = _study(tmp_path, 2)
        assert storescu("127.0.0.1", srv.port, srv.ae_title, files).returncode == 0
        bad, good = (str(ds.SOPInstanceUID) for ds in dss)
        _flip(_objects(srv, bad)[1])
        for attempt in range(2):
            out = tmp_path / f"get{attempt}"
            out.mkdir()
            done = subprocess.run(
                [dcmtk_tool("getscu"), "-S", "-aet", "GETSCU", "-aec", srv.ae_title,
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                 "-od", str(out), "127.0.0.1", str(srv.port)],
                capture_output=True, text=True, env=dicom_env(True), timeout=120,
            )  # fmt: skip
            assert [p.name for p in out.iterdir()] == [f"CT.{good}"], done.stderr[-2000:]
        auth = _token(srv)
        alerts = srv.wait_until(lambda: _alerts(srv, auth, bad), 10, "the Security Alert")
        time.sleep(1)
        alerts = _alerts(srv, auth, bad)
        assert len(alerts) == 1, alerts
        assert alerts[0]["outcome"] == 8 and "pixel object" in alerts[0]["detail"]
        # and one ERROR line: the retrieve's own line per sub-operation is gone
        errors = [
            line
            for line in srv.log_path.read_text(errors="replace").splitlines()
            if "ERROR" in line and bad in line
        ]
        assert len(errors) == 1, errors


def test_a_key_file_owned_by_another_account_is_refused(tmp_path: Path) -> None:
    """Mode 0600 is not enough: the owner can read every master key."""
    if os.geteuid() != 0:
        pytest.skip("chown to another account needs root")
    path = tmp_path / "keys" / "master.keys"
    crypto.KeyRing.load_or_create(path)
    os.chown(path, NOBODY, -1)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(crypto.KeyError_, match="chown root") as refused:
        crypto.KeyRing.load_or_create(path)
    assert "not by root" in str(refused.value) and str(path) in str(refused.value)
    os.chown(path, 0, -1)
    crypto.KeyRing.load_or_create(path)  # ours again: accepted


def test_start_and_rotate_key_refuse_a_key_file_of_another_account(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another account needs root")
    srv = LucentServer(tmp_path / "srv")
    srv.start().stop()
    key_file = srv.data_dir / "keys" / "master.keys"
    assert key_file.is_file()
    before = key_file.read_bytes()
    os.chown(key_file, NOBODY, -1)
    rotate = srv.cli("rotate-key")
    assert rotate.returncode != 0 and "chown root" in rotate.stderr, rotate.stderr[-2000:]
    assert key_file.read_bytes() == before
    # check-config makes the same check (it said OK)
    check = srv.cli("check-config")
    assert check.returncode == 2 and "chown root" in check.stderr, check.stdout + check.stderr
    os.chown(key_file, 0, -1)
    key_file.chmod(0o644)
    check = srv.cli("check-config")
    assert check.returncode == 2 and "chmod 600" in check.stderr, check.stdout + check.stderr
    key_file.chmod(0o600)
    assert srv.cli("check-config").returncode == 0
    os.chown(key_file, NOBODY, -1)
    with pytest.raises(RuntimeError, match="chown root"):
        srv.start(timeout=60)
    os.chown(key_file, 0, -1)
    srv.start()
    srv.stop()


def _refusal_records(srv: LucentServer, auth: dict[str, str]) -> list[str]:
    r = httpx.get(
        f"{srv.api_url}/api/v1/audit",
        params={"event_id": "110104", "outcome": 4, "limit": 5000},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [rec["detail"] for rec in r.json()]


def test_refusals_name_what_was_left_behind(tmp_path: Path) -> None:
    """A700 (low disk) writes nothing and a rejected duplicate keeps the archived copy:
    neither is a placeholder to look at."""
    path = samples.write(samples.make_instance(CT), tmp_path / "x.dcm")
    low = LucentServer(tmp_path / "low", settings={"archive": {"min_free_mb": 10**9}})
    with low:
        done = storescu("127.0.0.1", low.port, low.ae_title, [path])
        assert "Refused: OutOfResources" in done.stdout + done.stderr, done.stderr[-2000:]
        auth = _token(low)
        [detail] = low.wait_until(lambda: _refusal_records(low, auth), 10, "the record")
        assert detail == "1 instance(s) refused: 1 low disk space (A700), nothing written"
    dup = LucentServer(tmp_path / "dup", settings={"archive": {"duplicate_policy": "reject"}})
    with dup:
        assert storescu("127.0.0.1", dup.port, dup.ae_title, [path]).returncode == 0
        storescu("127.0.0.1", dup.port, dup.ae_title, [path])
        auth = _token(dup)
        [detail] = dup.wait_until(lambda: _refusal_records(dup, auth), 10, "the record")
        assert detail == (
            "1 instance(s) refused: 1 duplicate rejected (A910), the archived copy kept"
        )
        assert "placeholder" not in detail
