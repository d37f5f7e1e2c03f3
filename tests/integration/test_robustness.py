"""Bad input, kill -9 durability and encryption at rest, against the real server."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from lucent.api.client import ApiError, LucentClient
from tests.data import bad_inputs, samples
from tests.integration.dicom_io import dataset_bytes, storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool, dicom_echo_ok, dicom_env


@pytest.mark.parametrize("case", bad_inputs.all_bad_inputs(), ids=lambda c: c.name)
def test_bad_input_gets_status_and_placeholder(
    case: bad_inputs.BadInput, server: LucentServer, api: LucentClient
) -> None:
    status = bad_inputs.send_raw_c_store(case, "127.0.0.1", server.port, called_ae=server.ae_title)
    assert status is not None, "no C-STORE response"
    assert bad_inputs.status_matches(status, case.status), f"0x{status:04X} for {case.name}"
    # A placeholder with the reason appears under its patient; without a Patient ID under
    # its study's own patient entry (empty ID) or, naming no study either, under UNKNOWN.
    if case.patient_id:
        entries = api.placeholders(patient_id=case.patient_id)
    else:
        entries = [p for p in api.placeholders() if p.patient_id in ("", "UNKNOWN")]
    assert entries, f"no placeholder for {case.name}"
    assert all(e.reason for e in entries)
    if case.sop_instance_uid and case.status == "A900":
        assert any(e.sop_instance_uid == case.sop_instance_uid for e in entries)
    # The server keeps serving.
    assert dicom_echo_ok("127.0.0.1", server.port, server.ae_title)


def test_placeholders_are_listed_as_non_conformant_studies(
    server: LucentServer, api: LucentClient
) -> None:
    case = bad_inputs.pixel_data_too_short()
    bad_inputs.send_raw_c_store(case, "127.0.0.1", server.port, called_ae=server.ae_title)
    assert case.patient_id
    entries = [s for s in api.studies(patient_id=case.patient_id) if s.placeholder]
    assert entries and entries[0].description == "non-conformant data"
    assert "pixel data" in entries[0].reason.lower()
    # Keys the entry cannot match leave it out (every entry was listed whatever was asked).
    for keys in ({"study_date": "20240101"}, {"birth_date": "19000101"},
                 {"accession_number": "X1"}, {"modality": "MR"}):  # fmt: skip
        listed = api.studies(patient_id=case.patient_id, **keys)
        assert not [s for s in listed if s.placeholder], keys
    with pytest.raises(ApiError) as unknown:  # a pool that is not configured: named as such
        api.studies(patient_id=case.patient_id, pool="NOPE")
    assert unknown.value.status == 422 and "NOPE" in unknown.value.detail
    assert [s for s in api.studies(patient_id=case.patient_id, pool="DEFAULT") if s.placeholder]


def test_pdu_claiming_4gb_is_refused_and_server_survives(server: LucentServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        data = b""
        try:
            sock.sendall(bad_inputs.associate_rq_claiming_4gb(server.ae_title))
            sock.sendall(b"\0" * 65536)  # the server may already have aborted and closed
            sock.settimeout(10)
            data = sock.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            pass
        # Refused at once: an A-ABORT PDU or a closed connection (a timeout fails the test).
        assert data == b"" or data[0] == 0x07, data[:16]
    assert dicom_echo_ok("127.0.0.1", server.port, server.ae_title)


def test_storage_holds_no_plaintext(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    name = "Plaintextcanary^Zelda"
    ds = samples.make_instance(
        "1.2.840.10008.5.1.4.1.1.2", patient_id="CANARY-77", patient_name=name
    )
    path = samples.write(ds, tmp_path / "canary.dcm")
    assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
    pixel_run = bytes(ds.PixelData[256:320])
    archive = server.data_dir / "archive"
    blobs = [p for p in archive.rglob("*") if p.is_file()]
    assert blobs
    for blob in blobs:
        data = blob.read_bytes()
        assert b"Plaintextcanary" not in data and b"CANARY-77" not in data
        assert pixel_run not in data
    # Still readable through the API.
    assert api.instance_file(str(ds.SOPInstanceUID))
    # The key file is 0600 and outside the archive folder.
    key = server.data_dir / "keys" / "master.keys"
    assert key.stat().st_mode & 0o777 == 0o600
    assert archive not in key.parents


def test_kill9_mid_send_keeps_every_acknowledged_instance(tmp_path: Path) -> None:
    files = samples.write_ct_series(tmp_path / "ct", n=500, rows=256, cols=256)
    srv = LucentServer(tmp_path / "srv", workers=2)
    srv.start()
    proc = subprocess.Popen(
        [dcmtk_tool("storescu"), "-v", "-aec", srv.ae_title, "127.0.0.1", str(srv.port),
         *[str(f) for f in files]],
        env=dicom_env(True), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    srv.kill()
    out, _ = proc.communicate(timeout=120)
    # storescu -v prints "Sending file: X" then "Received Store Response (Success)".
    acked: list[Path] = []
    current: Path | None = None
    for line in out.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
    assert 0 < len(acked) < len(files), f"kill landed at {len(acked)} of {len(files)}"
    srv.start()
    try:
        api = srv.client()
        for f in acked:
            uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            stored = api.instance_file(uid)
            assert (
                hashlib.sha256(dataset_bytes(stored)).digest()
                == hashlib.sha256(dataset_bytes(f.read_bytes())).digest()
            )
        # Nothing half-written is visible: every listed instance reads back completely.
        listed = api.studies()
        total = 0
        for study in listed:
            for series in api.series(study.study_uid):
                for inst in api.instances(series.series_uid):
                    data = api.instance_file(inst.sop_instance_uid)
                    assert hashlib.sha256(data).hexdigest() == inst.sha256
                    total += 1
        assert total >= len(acked)
        # No orphan or temporary objects remain after the restart sweep (the empty files
        # are the restarted workers' prepared stock, archive.prepared_objects).
        blobs = [p for p in (srv.data_dir / "archive").rglob("*") if p.is_file()]
        assert not [b for b in blobs if b.name.endswith(".tmp")]
        assert len([b for b in blobs if b.stat().st_size]) == 2 * total
    finally:
        srv.stop()


def test_disk_space_threshold_refuses_with_a700(tmp_path: Path) -> None:
    srv = LucentServer(tmp_path / "srv", settings={"archive": {"min_free_mb": 10**9}})
    srv.start()
    try:
        ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.7")
        path = samples.write(ds, tmp_path / "x.dcm")
        status = bad_inputs.send_raw_c_store(path, "127.0.0.1", srv.port, called_ae=srv.ae_title)
        assert status is not None and 0xA700 <= status <= 0xA7FF
        archive = srv.data_dir / "archive"
        assert not [p for p in archive.rglob("*") if p.is_file() and p.stat().st_size]
        # IT sees it in the log too: the log said only "released after 1 instance(s)"
        done = storescu("127.0.0.1", srv.port, srv.ae_title, [path])
        assert "0xa700" in (done.stdout + done.stderr).lower() or done.returncode != 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "1 refused" not in srv.log_tail(200):
            time.sleep(0.2)
        log = srv.log_tail(200)
        assert "refusing instances with A700" in log and "0 instance(s) stored" in log
    finally:
        srv.stop()


def test_duplicate_policy_replace_is_recorded(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.7", patient_id="DUP-1")
    path = samples.write(ds, tmp_path / "first.dcm")
    assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
    ds.SeriesDescription = "second copy"
    samples.write(ds, path)
    assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
    stored = dcmread(io.BytesIO(api.instance_file(str(ds.SOPInstanceUID))))
    assert stored.SeriesDescription == "second copy"


def _uid_conflict_cases(tmp_path: Path) -> tuple[str, str, list, list]:
    """Two instances of one series (patient UIDC-A), then one naming that series in another
    study and one naming that study under another patient (UIDC-B)."""
    from pydicom.uid import generate_uid

    ct = "1.2.840.10008.5.1.4.1.1.7"
    study, series = generate_uid(), generate_uid()
    good = [
        samples.make_instance(ct, patient_id="UIDC-A", study_uid=study, series_uid=series)
        for _ in range(2)
    ]
    bad = [
        ("series", samples.make_instance(ct, patient_id="UIDC-A", series_uid=series)),
        (
            "study",
            samples.make_instance(
                ct, patient_id="UIDC-B", study_uid=study, series_uid=generate_uid()
            ),
        ),
    ]
    for i, ds in enumerate(good):
        samples.write(ds, tmp_path / f"ok{i}.dcm")
    for name, ds in bad:
        samples.write(ds, tmp_path / f"{name}.dcm")
    return study, series, good, bad


def test_uid_conflicts_are_filed_and_logged_by_default(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """Default ``uid_conflict = "file"``: stored where the UIDs point (UID-keyed, like the
    peers a sender also talks to), and a warning names the conflict."""
    study, series, good, bad = _uid_conflict_cases(tmp_path)
    for path in [tmp_path / "ok0.dcm", tmp_path / "ok1.dcm"] + [
        tmp_path / f"{n}.dcm" for n, _ in bad
    ]:
        assert bad_inputs.send_raw_c_store(path, "127.0.0.1", server.port) == 0x0000
    for _, ds in bad:
        assert api.instance_file(str(ds.SOPInstanceUID))
    log = server.log_tail(400)
    assert f"Series Instance UID {series} is archived in another study" in log
    assert f"Study Instance UID {study} is archived under another patient" in log
    assert "filed into the archived study despite a UID conflict" in log
    # filed into the archived study: the study and patient the headers name were created
    # too and left listed empty, with no series and no reason (outside probe 23)
    (series_case,) = [ds for name, ds in bad if name == "series"]
    for uid in (str(series_case.StudyInstanceUID),):
        assert not [s for s in api.studies(study_uid=uid) if not s.placeholder], uid
    assert not [p for p in api.patients(patient_id="UIDC-B") if p.study_count == 0]
    (filed,) = [s for s in api.studies(study_uid=study) if not s.placeholder]
    assert filed.instance_count == 4


def test_uid_conflicts_are_refused_with_placeholder_when_configured(tmp_path: Path) -> None:
    """``uid_conflict = "refuse"``: 0xC010 and a placeholder naming the conflict, so no image
    lands in another patient's study (two tests sending one pydicom file found the case).
    The second instance of a series goes through the per-process series cache: the check
    must hold there too."""
    srv = LucentServer(tmp_path / "srv", settings={"archive": {"uid_conflict": "refuse"}})
    srv.start()
    try:
        api = srv.client()
        study, series, good, bad = _uid_conflict_cases(tmp_path)
        for i in range(2):  # the second one takes the cached fast path
            status = bad_inputs.send_raw_c_store(tmp_path / f"ok{i}.dcm", "127.0.0.1", srv.port)
            assert status == 0x0000
        for name, ds in bad:
            status = bad_inputs.send_raw_c_store(tmp_path / f"{name}.dcm", "127.0.0.1", srv.port)
            assert status == 0xC010, f"{name}: 0x{status or 0:04X}"
            sop = str(ds.SOPInstanceUID)
            entries = [
                e
                for e in api.placeholders(patient_id=str(ds.PatientID))
                if e.sop_instance_uid == sop
            ]
            words = (
                f"Series Instance UID {series}"
                if name == "series"
                else f"Study Instance UID {study}"
            )
            assert entries and words in entries[0].reason, (name, entries)
            with pytest.raises(Exception, match="404"):
                api.instance_file(sop)
        # the archived study keeps exactly its own two instances, under its own patient
        studies = [s for s in api.studies(patient_id="UIDC-A") if s.study_uid == study]
        assert len(studies) == 1 and not studies[0].placeholder
        assert sorted(i.sop_instance_uid for i in api.instances(series)) == sorted(
            str(ds.SOPInstanceUID) for ds in good
        )
        assert not [s for s in api.studies(patient_id="UIDC-B") if not s.placeholder]
        api.close()
    finally:
        srv.stop()
