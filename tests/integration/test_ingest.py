"""DCMTK storescu → our Store SCP → API: every Table-1 class, every transfer syntax, charsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from lucent.api.client import LucentClient
from lucent.dicom import sop_classes, transfer_syntaxes
from tests.data import samples
from tests.data import transfer_syntaxes as ts_samples
from tests.integration.dicom_io import dataset_bytes, storescu, storescu_as_stored
from tests.support.lucent import LucentServer


def _send_all(server: LucentServer, tmp_path: Path, files: list[Path]) -> None:
    storescu_as_stored("127.0.0.1", server.port, server.ae_title, files, tmp_path)


def _assert_stored_identically(api: LucentClient, files: list[Path]) -> None:
    for f in files:
        original = f.read_bytes()
        sop_uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        stored = api.instance_file(sop_uid)
        assert dataset_bytes(stored) == dataset_bytes(original), f"{f.name} differs"


def test_every_table1_class_is_stored_byte_identical(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    files = samples.write_table1_set(tmp_path / "t1")
    assert len(files) == len(sop_classes.TABLE_1)
    _send_all(server, tmp_path, files)
    _assert_stored_identically(api, files)
    classes = {api.instance(str(dcmread(f).SOPInstanceUID)).sop_class_uid for f in files}
    assert classes == {c.uid for c in sop_classes.TABLE_1}


def test_classes_beyond_table1_that_we_create_are_accepted(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """A peer gives our perfusion maps back: Parametric Map Storage (not in Table 1, and
    beyond the 128 contexts pynetdicom's default list holds) is negotiated and stored."""
    pm = samples.parametric_map(tmp_path / "ct")
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert not any(c.uid == pm.SOPClassUID for c in sop_classes.TABLE_1)
    path = tmp_path / "pm.dcm"
    pm.save_as(path)
    _send_all(server, tmp_path, [path])
    _assert_stored_identically(api, [path])


def test_every_transfer_syntax_arrives_intact(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    built = ts_samples.build_transfer_syntax_set(tmp_path / "ts")
    assert set(built) == set(transfer_syntaxes.ACCEPTED)
    files = [s.path for s in built.values()]
    _send_all(server, tmp_path, files)
    for ts, sample in built.items():
        sop_uid = str(dcmread(sample.path, stop_before_pixels=True).SOPInstanceUID)
        info = api.instance(sop_uid)
        stored = api.instance_file(sop_uid)
        if ts == transfer_syntaxes.DEFLATED_LE:
            # Stored inflated (metadata apart from pixels): pixel-identical, not byte-identical.
            assert info.transfer_syntax_uid == transfer_syntaxes.EXPLICIT_LE
            got = dcmread(__import__("io").BytesIO(stored)).pixel_array
            assert np.array_equal(got, dcmread(sample.path).pixel_array)
        else:
            assert info.transfer_syntax_uid == ts
            assert dataset_bytes(stored) == dataset_bytes(sample.path.read_bytes()), ts
        assert info.lossy == (ts in transfer_syntaxes.LOSSY), ts
        if sample.lossless and ts not in transfer_syntaxes.VIDEO:
            frame = api.frame(sop_uid, 1)
            expected = sample.expected
            assert expected is not None
            first = expected[0] if expected.ndim > frame.ndim else expected
            assert np.array_equal(frame, first), ts


def test_pydicom_files_and_charsets(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    charset = samples.charset_files()
    files = sorted(set(samples.pydicom_test_files()) | set(charset))
    # badVR.dcm carries NumberOfFrames with a wrong VR: refused as an invalid value.
    bad = [f for f in files if f.name == "badVR.dcm"]
    files = [f for f in files if f.name != "badVR.dcm"]
    _send_all(server, tmp_path, files)
    for f in bad:
        done = storescu("127.0.0.1", server.port, server.ae_title, [f])
        assert "Error: DataSetDoesNotMatchSOPClass" in done.stderr
        uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        reasons = [p.reason for p in api.placeholders() if p.sop_instance_uid == uid]
        assert reasons and "NumberOfFrames" in reasons[0]
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        info = api.instance(str(ds.SOPInstanceUID))
        assert info.sop_class_uid == str(ds.SOPClassUID)
    for path, expected_name in charset.items():
        ds = dcmread(path, stop_before_pixels=True)
        found = [p for p in api.patients(patient_id=str(ds.PatientID), limit=1000)]
        assert any(p.name == expected_name for p in found), (path.name, expected_name, found)
        studies = api.studies(study_uid=str(ds.StudyInstanceUID))
        assert studies[0].patient_name == expected_name


def test_name_search_is_case_insensitive_on_request(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    ds = samples.make_instance(
        "1.2.840.10008.5.1.4.1.1.2", patient_id="CASE-1", patient_name="Schmidt^Anna"
    )
    path = samples.write(ds, tmp_path / "schmidt.dcm")
    assert storescu("127.0.0.1", server.port, server.ae_title, [path]).returncode == 0
    assert [p.patient_id for p in api.patients(patient_name="schmidt")] == ["CASE-1"]
    assert api.patients(patient_name="schmidt*", case_insensitive=False) == []
    assert [
        p.patient_id for p in api.patients(patient_name="Schm?dt*", case_insensitive=False)
    ] == ["CASE-1"]
    assert api.studies(patient_name="SCHMIDT", study_date="20000101-")[0].patient_id == "CASE-1"


def test_character_set_repairs_and_refusals(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """GB2312 names read without their escape sequences, Turkish dotted/dotless I found
    either way, and a name whose bytes are invalid in its character set refused (A902) with
    a placeholder instead of being indexed with replacement characters."""
    ct = "1.2.840.10008.5.1.4.1.1.2"
    gb = samples.make_instance(ct, patient_id="CS-GB")
    gb.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    gb_path = samples.write_with_raw_text(
        gb,
        tmp_path / "gb.dcm",
        {"PatientName": b"Zhang^SanFeng=\x1b$)A\xd5\xc5^\x1b$)A\xc8\xfd\xb7\xe1"},
    )
    turkish = []
    for n, name in enumerate(["ÇİÇEK^ALİ", "Şahin^İsmail"]):
        ds = samples.make_instance(ct, patient_id=f"CS-TR{n}")
        ds.SpecificCharacterSet = "ISO_IR 148"
        turkish.append(
            samples.write_with_raw_text(
                ds, tmp_path / f"tr{n}.dcm", {"PatientName": name.encode("iso8859_9")}
            )
        )
    bad = samples.make_instance(ct, patient_id="CS-BAD")
    bad.SpecificCharacterSet = "ISO_IR 192"
    bad_path = samples.write_with_raw_text(
        bad, tmp_path / "bad.dcm", {"PatientName": b"M\xfcller^Hans"}
    )

    assert storescu("127.0.0.1", server.port, server.ae_title, [gb_path, *turkish]).returncode == 0
    [gb_patient] = api.patients(patient_id="CS-GB")
    assert gb_patient.name == "Zhang^SanFeng=张^三丰"
    assert [p.patient_id for p in api.patients(patient_name="张*")] == ["CS-GB"]
    for query, expected in [("çiçek*", "CS-TR0"), ("ÇİÇEK^ALİ", "CS-TR0"), ("ŞAHİN*", "CS-TR1")]:
        assert [p.patient_id for p in api.patients(patient_name=query)] == [expected], query

    done = storescu("127.0.0.1", server.port, server.ae_title, [bad_path])
    assert "Error: DataSetDoesNotMatchSOPClass" in done.stderr, done.stderr[-1000:]
    uid = str(bad.SOPInstanceUID)
    reasons = [p.reason for p in api.placeholders() if p.sop_instance_uid == uid]
    assert reasons and "PatientName cannot be decoded" in reasons[0], reasons
    assert "fc" in reasons[0] and "ISO_IR 192" in reasons[0]
    # the placeholder list answers for one instance
    assert [p.sop_instance_uid for p in api.placeholders(sop_instance_uid=uid)] == [uid]
    assert api.placeholders(sop_instance_uid="1.2.3.999") == []


@pytest.mark.parametrize("n_assoc,per_assoc", [(20, 50)])
def test_simultaneous_associations_lose_nothing(
    server: LucentServer, api: LucentClient, tmp_path: Path, n_assoc: int, per_assoc: int
) -> None:
    import subprocess

    from tests.support.peers import dcmtk_tool, dicom_env

    study = samples.generate_uid() if hasattr(samples, "generate_uid") else None
    procs = []
    uids: set[str] = set()
    for a in range(n_assoc):
        folder = tmp_path / f"a{a}"
        folder.mkdir()
        for i in range(per_assoc):
            ds = samples.make_instance(
                "1.2.840.10008.5.1.4.1.1.7",
                patient_id=f"PAR-{a}",
                study_uid=study,
                instance_number=i + 1,
                rows=32,
                cols=32,
            )
            uids.add(str(ds.SOPInstanceUID))
            samples.write(ds, folder / f"{i}.dcm")
        procs.append(
            subprocess.Popen(
                [
                    dcmtk_tool("storescu"),
                    "-aec",
                    server.ae_title,
                    "+sd",
                    "127.0.0.1",
                    str(server.port),
                    str(folder),
                ],
                env=dicom_env(True),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-1000:]
    for uid in uids:
        assert api.instance(uid).sop_instance_uid == uid
