"""The ingest test data (tests/data: samples, transfer syntaxes, bad inputs) is what it claims.

If a sample were silently broken, an ingest test would "pass" a server that accepts garbage or
"fail" one that is right. So: every Table-1 sample reads back and is internally consistent,
lossless samples decode to their source pixels, lossy ones to the right shape within bounds,
charset names decode, and every bad input is bad in exactly the way its entry says.
Generated sets are built once per session in a temporary directory.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from lucent.dicom.sop_classes import BY_UID, TABLE_1
from lucent.dicom.transfer_syntaxes import ACCEPTED, LOSSY, VIDEO
from tests.data import bad_inputs as bad
from tests.data import samples
from tests.data import transfer_syntaxes as tsx

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and bool(UID_RE.match(uid))


# --------------------------------------------------------------------------------------------
# Session caches


@pytest.fixture(scope="session")
def table1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = samples.write_table1_set(tmp_path_factory.mktemp("table1"))
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID): p for p in paths}


@pytest.fixture(scope="session")
def ts_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tsx.TsSample]:
    return tsx.build_transfer_syntax_set(tmp_path_factory.mktemp("ts"), strict=False)


@pytest.fixture(scope="session")
def bad_cases() -> dict[str, bad.BadInput]:
    return {b.name: b for b in bad.all_bad_inputs()}


# --------------------------------------------------------------------------------------------
# Table 1


def test_table1_set_has_one_file_per_class(table1: dict[str, Path]) -> None:
    assert set(table1) == {c.uid for c in TABLE_1}
    assert len(table1) == len(TABLE_1) == 99


def test_table1_instances_have_unique_uids(table1: dict[str, Path]) -> None:
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in table1.values()]
    sops = {str(ds.SOPInstanceUID) for ds in datasets}
    assert len(sops) == len(datasets)
    assert len({str(ds.StudyInstanceUID) for ds in datasets}) == 1  # one tidy study per call
    assert len({str(ds.SeriesInstanceUID) for ds in datasets}) == len(datasets)


@pytest.mark.parametrize("sop_class", [c.uid for c in TABLE_1], ids=[c.name for c in TABLE_1])
def test_table1_instance_is_consistent(table1: dict[str, Path], sop_class: str) -> None:
    ds = pydicom.dcmread(table1[sop_class])
    meta = ds.file_meta
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == sop_class
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID in ACCEPTED
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality"):
        assert ds.get(kw), kw
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert _valid_uid(str(ds[kw].value)), kw
    if BY_UID[sop_class].has_pixels or "PixelData" in ds:
        _check_image_pixel_module(ds)
    else:
        assert "PixelData" not in ds
    if "WaveformSequence" in ds:
        wave = ds.waveform_array(0)
        item = ds.WaveformSequence[0]
        assert wave.shape == (item.NumberOfWaveformSamples, item.NumberOfWaveformChannels)
    if sop_class.endswith(".104.1"):
        doc = bytes(ds.EncapsulatedDocument)
        assert doc.startswith(b"%PDF-") and b"%%EOF" in doc[-8:]
        assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.88."):
        assert ds.ValueType == "CONTAINER" and len(ds.ContentSequence) >= 1


def _check_image_pixel_module(ds: pydicom.Dataset) -> None:
    frames = int(ds.get("NumberOfFrames") or 1)
    bits = ds.BitsAllocated
    assert ds.BitsStored <= bits and ds.HighBit == ds.BitsStored - 1
    need_bits = ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * bits
    assert len(ds.PixelData) in ((need_bits + 7) // 8, (need_bits + 7) // 8 + 1)
    expected: tuple[int, ...] = (ds.Rows, ds.Columns)
    if frames > 1:
        expected = (frames, *expected)
    if ds.SamplesPerPixel > 1:
        expected = (*expected, ds.SamplesPerPixel)
        assert ds.PhotometricInterpretation == "RGB"
    assert ds.pixel_array.shape == expected


def test_make_instance_shares_study_and_series_when_asked() -> None:
    a = samples.make_instance(TABLE_1[7].uid, study_uid="1.2.3", series_uid="1.2.3.4")
    b = samples.make_instance(TABLE_1[7].uid, study_uid="1.2.3", series_uid="1.2.3.4")
    assert a.StudyInstanceUID == b.StudyInstanceUID == "1.2.3"
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_make_instance_refuses_classes_outside_table1() -> None:
    with pytest.raises(ValueError):
        samples.make_instance("1.2.840.10008.5.1.4.1.1.481.99")


def test_ct_series_is_one_series_with_geometry(tmp_path: Path) -> None:
    paths = samples.write_ct_series(tmp_path, n=4, rows=64, cols=64)
    datasets = [pydicom.dcmread(p) for p in paths]
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == 4
    assert [d.ImagePositionPatient[2] for d in datasets] == [0.0, -1.0, -2.0, -3.0]
    first = datasets[0]
    assert first.pixel_array.dtype == np.int16 and first.RescaleIntercept == -1024
    hu = first.pixel_array.astype(np.int32) + int(first.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 500  # air and bone


def test_ct_series_full_size_slice_is_half_a_megabyte(tmp_path: Path) -> None:
    (path,) = samples.write_ct_series(tmp_path, n=1)
    assert 520_000 < path.stat().st_size < 540_000


# --------------------------------------------------------------------------------------------
# Transfer syntaxes


def test_ts_set_covers_every_accepted_syntax(ts_set: dict[str, tsx.TsSample]) -> None:
    missing = tsx.missing_tools()
    if missing:
        pytest.skip(f"encoders missing: {missing}")
    assert set(ts_set) == set(ACCEPTED)
    uids = {
        str(pydicom.dcmread(s.path, stop_before_pixels=True).SOPInstanceUID)
        for s in ts_set.values()
    }
    assert len(uids) == len(ts_set)  # samples never replace each other in the archive


@pytest.mark.parametrize("ts", ACCEPTED)
def test_ts_sample_decodes_as_recorded(ts_set: dict[str, tsx.TsSample], ts: str) -> None:
    if ts not in ts_set:
        pytest.skip(f"no encoder here for {ts}: {tsx.missing_tools()}")
    sample = ts_set[ts]
    ds = pydicom.dcmread(sample.path)
    assert ds.file_meta.TransferSyntaxUID == ts
    assert sample.lossless == (ts not in LOSSY)
    if ts in VIDEO:
        assert sample.video is not None
        assert (ds.Rows, ds.Columns) == (sample.video.height, sample.video.width)
        assert int(ds.NumberOfFrames) == sample.video.frames
        stream = tsx.video_stream(sample.path)
        if sample.video.container == "mpegts":
            assert stream[0] == 0x47 and stream[188] == 0x47  # TS sync bytes
        else:
            assert stream[:4] == b"\x00\x00\x01\xba"  # MPEG-PS pack header
        if shutil.which("ffprobe"):
            got = tsx.probe_video(sample.path)
            want = sample.video
            assert (got["codec"], got["profile"]) == (want.codec, want.profile)
            assert (got["width"], got["height"], got["frames"]) == (
                want.width,
                want.height,
                want.frames,
            )
        return
    assert sample.expected is not None
    arr = ds.pixel_array
    assert arr.shape == sample.shape == sample.expected.shape
    if sample.lossless:
        np.testing.assert_array_equal(arr, sample.expected)
        return
    err = np.abs(arr.astype(np.float64) - sample.expected.astype(np.float64))
    assert not np.array_equal(arr, sample.expected) or ts == "1.2.840.10008.1.2.4.81"
    if sample.max_abs_error is not None:
        assert err.max() <= sample.max_abs_error
    assert sample.max_mean_abs_error is not None
    assert err.mean() <= sample.max_mean_abs_error


def test_storescu_profile_names_every_pair(ts_set: dict[str, tsx.TsSample], tmp_path: Path) -> None:
    args = tsx.storescu_config_for(ts_set.values(), tmp_path / "scu.cfg")
    assert args[0] == "-xf" and args[2] == "Lucent"
    text = (tmp_path / "scu.cfg").read_text()
    for sample in ts_set.values():
        assert f"TransferSyntax1 = {sample.transfer_syntax}\n" in text
    contexts = re.findall(r"^PresentationContext\d+ = ", text, flags=re.MULTILINE)
    assert len(contexts) == len({(s.sop_class_uid, s.transfer_syntax) for s in ts_set.values()})


# --------------------------------------------------------------------------------------------
# pydicom's files and character sets


def test_pydicom_test_files_are_acceptable_and_unique() -> None:
    files = samples.pydicom_test_files()
    assert len(files) >= 20
    uids = set()
    syntaxes = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPClassUID in BY_UID and ds.file_meta.TransferSyntaxUID in ACCEPTED
        assert ds.PatientID and ds.StudyInstanceUID and ds.SeriesInstanceUID
        uids.add(str(ds.SOPInstanceUID))
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    assert len(uids) == len(files)
    assert len(syntaxes) >= 4


def test_charset_files_decode_to_expected_names() -> None:
    files = samples.charset_files()
    assert len(files) == len(samples.CHARSET_NAMES)
    for path, name in files.items():
        assert str(pydicom.dcmread(path).PatientName) == name, path.name


def test_generated_charset_names(tmp_path: Path) -> None:
    files = samples.write_charset_set(tmp_path)
    assert len(files) == len(samples.GENERATED_CHARSETS)
    for path, name in files.items():
        label = path.stem.removeprefix("charset_")
        ds = pydicom.dcmread(path)
        if label in samples.PYDICOM_MISDECODES:
            raw = ds["PatientName"].value.original_string
            assert raw == samples.GENERATED_CHARSETS[label][2]
            decoded = raw.replace(b"\x1b$)A", b"").decode("gb2312")
            assert decoded == name
        else:
            assert str(ds.PatientName) == name, label


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_table_is_complete(bad_cases: dict[str, bad.BadInput]) -> None:
    assert set(bad.EXPECTED_STATUS) == set(bad.BAD_INPUTS) == set(bad_cases)
    for name, case in bad_cases.items():
        assert case.status == bad.EXPECTED_STATUS[name] in bad.STATUS_RANGES
        assert case.reason
    assert bad.status_matches(0xC001, bad.C000) and bad.status_matches(0xA900, bad.A900)
    assert not bad.status_matches(0x0000, bad.C000)


def test_bad_input_part10_meta_carries_the_claims(
    bad_cases: dict[str, bad.BadInput], tmp_path: Path
) -> None:
    for case in bad_cases.values():
        meta = read_file_meta_info(case.write(tmp_path))
        assert meta.MediaStorageSOPClassUID == case.sop_class_uid
        assert meta.MediaStorageSOPInstanceUID == case.sop_instance_uid
        assert meta.TransferSyntaxUID == case.transfer_syntax
        assert case.part10().endswith(case.dataset)


def _read(case: bad.BadInput) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(case.part10()))


@pytest.mark.parametrize(
    ("name", "keyword"),
    [
        ("missing_sop_instance_uid", "SOPInstanceUID"),
        ("missing_study_uid", "StudyInstanceUID"),
        ("missing_series_uid", "SeriesInstanceUID"),
        ("missing_patient_id", "PatientID"),
    ],
)
def test_missing_attribute_is_missing(
    bad_cases: dict[str, bad.BadInput], name: str, keyword: str
) -> None:
    ds = _read(bad_cases[name])
    assert keyword not in ds
    assert ds.SOPClassUID == bad_cases[name].sop_class_uid
    assert ds.pixel_array.shape == (16, 16)  # otherwise fine


def _find_element(data: bytes, tag: int, vr: bytes) -> int:
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = data.find(header)
    assert at >= 0, hex(tag)
    return at


def test_truncated_pixel_data_promises_more_than_it_sends(
    bad_cases: dict[str, bad.BadInput],
) -> None:
    data = bad_cases["truncated_pixel_data"].dataset
    at = _find_element(data, 0x7FE00010, b"OW")
    (length,) = struct.unpack("<I", data[at + 8 : at + 12])
    assert length == 16 * 16 * 2
    assert len(data) - (at + 12) < length


@pytest.mark.parametrize("name", ["pixel_data_too_short", "rows_columns_mismatch"])
def test_pixel_length_disagrees_with_image_pixel_module(
    bad_cases: dict[str, bad.BadInput], name: str
) -> None:
    ds = _read(bad_cases[name])
    need = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    assert len(ds.PixelData) != need


def test_bits_stored_exceeds_allocated(bad_cases: dict[str, bad.BadInput]) -> None:
    ds = _read(bad_cases["bits_stored_exceeds_allocated"])
    assert ds.BitsStored > ds.BitsAllocated


@pytest.mark.parametrize("name", ["garbage_random", "garbage_8_bytes", "dicm_then_junk"])
def test_garbage_is_not_a_data_set(bad_cases: dict[str, bad.BadInput], name: str) -> None:
    case = bad_cases[name]
    assert case.raw_file == case.dataset
    try:
        ds = pydicom.dcmread(io.BytesIO(case.dataset), force=True)
        found = "SOPClassUID" in ds and ds.SOPClassUID == case.sop_class_uid
    except Exception:  # noqa: BLE001 — any failure is what we claim
        found = False
    assert not found


def test_eight_bytes_are_eight_bytes_of_a_lie(bad_cases: dict[str, bad.BadInput]) -> None:
    data = bad_cases["garbage_8_bytes"].dataset
    assert len(data) == 8
    (claimed,) = struct.unpack("<H", data[6:8])
    assert claimed > 0  # an element header promising a value that never comes


def test_dicm_then_junk_has_no_file_meta(bad_cases: dict[str, bad.BadInput]) -> None:
    blob = bad_cases["dicm_then_junk"].upload()
    assert blob[:128] == bytes(128) and blob[128:132] == b"DICM"
    assert blob[132:134] != b"\x02\x00"  # no group 0002 follows


def test_deflate_bomb_inflates_a_thousandfold(bad_cases: dict[str, bad.BadInput]) -> None:
    case = bad_cases["deflate_bomb"]
    assert case.transfer_syntax == DeflatedExplicitVRLittleEndian
    inflater = zlib.decompressobj(-15)
    total, pending = 0, case.dataset
    while pending and not inflater.eof:  # bounded steps: never fall into the bomb itself
        total += len(inflater.decompress(pending, 1 << 20))
        pending = inflater.unconsumed_tail  # note: keeps the pad byte after eof, hence `eof`
    total += len(inflater.flush())
    assert total >= 900 * len(case.dataset)
    assert total >= bad.BOMB_INFLATED_SIZE


def test_odd_length_value_is_odd(bad_cases: dict[str, bad.BadInput]) -> None:
    data = bad_cases["odd_length_value"].dataset
    at = _find_element(data, 0x00100010, b"PN")
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    assert length % 2 == 1


def test_sop_class_mismatch_disagrees_with_command(bad_cases: dict[str, bad.BadInput]) -> None:
    case = bad_cases["sop_class_mismatch"]
    ds = _read(case)
    assert ds.SOPClassUID != case.sop_class_uid
    assert ds.SOPClassUID in BY_UID and case.sop_class_uid in BY_UID


def test_invalid_uid_is_invalid(bad_cases: dict[str, bad.BadInput]) -> None:
    ds = _read(bad_cases["invalid_uid_characters"])
    assert not _valid_uid(str(ds.StudyInstanceUID))
    assert not _valid_uid(str(ds.SeriesInstanceUID))
    assert _valid_uid(str(ds.SOPInstanceUID))


def test_raw_pdus() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    rq = bad.associate_rq("LUCENT", "RAWSCU")
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(rq)
    assert pdu.called_ae_title == "LUCENT" and pdu.calling_ae_title == "RAWSCU"
    assert pdu.user_information.maximum_length == 16384
    assert struct.unpack(">I", rq[2:6])[0] == len(rq) - 6
    huge = bad.pdu_claiming_4gb()
    assert huge[0] == 0x04 and struct.unpack(">I", huge[2:6])[0] == 0xFFFFFFFF
    lying = bad.associate_rq_claiming_4gb()
    assert lying[0] == 0x01 and struct.unpack(">I", lying[2:6])[0] == 0xFFFFFFFF
