"""Structural checks of encapsulated pixel data (lucent.dicom.codestream) and bounded
inflation (instance.inflate_bounded), on bytes, without a network.

Outside probe 42: a JPEG Baseline instance whose only fragment is ``FFD8FFE0`` and 100 zero
bytes, and an RLE 16-bit instance whose header claims 15 segments and holds none, were
stored with 0000 and listed as images no viewer could show (their frames answered 422);
12 deflate bombs sent at once took 4.2 GB before each was refused.
"""

from __future__ import annotations

import struct
import threading
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_fragments

from lucent.dicom import codestream, instance, transfer_syntaxes
from lucent.net import status
from tests.data import bad_inputs
from tests.data import transfer_syntaxes as tsx

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
H264 = "1.2.840.10008.1.2.4.102"
MAX_INFLATED = 1 << 30


# --------------------------------------------------------------------------------------------
# The probe's instances (the integration test sends them too)


def _encapsulated_ct(
    name: str, expected: str, reason: str, ds: Dataset, fragments: list[bytes], ts: str
) -> bad_inputs.BadInput:
    """``ds`` (a bad_inputs CT) with its Pixel Data as an empty Basic Offset Table and these
    fragments, as the bytes travel under ``ts``."""
    head = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    items = b"".join(bad_inputs._fragment(f) for f in [b"", *fragments])
    data = bad_inputs.encode(ds)
    at = data.rfind(b"\xe0\x7f\x10\x00")
    return bad_inputs.BadInput(
        name, expected, reason, data[:at] + head + items + bad_inputs.SEQUENCE_DELIMITER,
        bad_inputs.CT, str(ds.SOPInstanceUID), ts, patient_id=str(ds.PatientID),
    )  # fmt: skip


def jpeg_soi_app0_then_zeros() -> bad_inputs.BadInput:
    """JPEG Baseline, 8-bit CT: the only fragment is SOI, an APP0 marker whose length is
    0 and zeros (probe 42)."""
    ds = bad_inputs._ct("LUCENT-CODESTREAM-JPEG")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    return _encapsulated_ct(
        "jpeg_soi_app0_then_zeros", bad_inputs.C000, "frame 1: JPEG marker FFE0 length 0", ds,
        [b"\xff\xd8\xff\xe0" + bytes(100)], JPEG_BASELINE,
    )  # fmt: skip


def rle_header_of_15_segments_without_data() -> bad_inputs.BadInput:
    """RLE Lossless, 16-bit CT (two segments per frame): the header says 15 segments and
    the fragment ends with it (probe 42)."""
    ds = bad_inputs._ct("LUCENT-CODESTREAM-RLE")
    header = struct.pack("<16L", 15, *range(64, 64 + 15 * 2, 2))
    return _encapsulated_ct(
        "rle_header_of_15_segments_without_data", bad_inputs.A900,
        "frame 1: RLE 15 segments, 1 sample x 16 bits need 2", ds, [header], RLE,
    )  # fmt: skip


PROBE_CASES = [jpeg_soi_app0_then_zeros, rle_header_of_15_segments_without_data]


@pytest.mark.parametrize("make", PROBE_CASES, ids=lambda f: f.__name__)
def test_probe_instances_are_refused_with_the_reason(make: object) -> None:
    case: bad_inputs.BadInput = make()  # type: ignore[operator]
    result = instance.parse(
        case.part10(),
        max_inflated=MAX_INFLATED,
        expected_sop_class=case.sop_class_uid,
        expected_sop_instance=case.sop_instance_uid,
    )
    assert isinstance(result, instance.Refusal), result
    assert bad_inputs.status_matches(result.status, case.status), hex(result.status)
    assert result.reason.startswith(case.reason), result.reason
    assert status.error_comment(result.reason) == result.reason[:64]
    assert result.ids["PatientID"] == case.patient_id


# --------------------------------------------------------------------------------------------
# Valid data must never be refused


def _geometry(ds: Dataset) -> codestream.Geometry:
    return codestream.Geometry(
        int(ds.Rows),
        int(ds.Columns),
        int(ds.SamplesPerPixel),
        int(ds.BitsAllocated),
        int(ds.get("NumberOfFrames") or 1),
    )


def _check_dataset(ds: Dataset) -> tuple[int, str] | None:
    pixels = ds.PixelData
    extended = ds.get("ExtendedOffsetTable")
    return codestream.check(
        pixels, 0, len(pixels), str(ds.file_meta.TransferSyntaxUID), _geometry(ds), extended
    )


def _compressed_test_files() -> Iterator[tuple[str, Dataset]]:
    for path in get_testdata_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                ts = str(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
        if transfer_syntaxes.is_encapsulated(ts) and "PixelData" in ds:
            yield Path(path).name, ds


def _decodes(ds: Dataset) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds.pixel_array  # noqa: B018 - decoding is the point
        except Exception:
            return False
    return True


def test_every_compressed_file_pydicom_ships_that_decodes_passes() -> None:
    """pydicom's JPEG, JPEG-LS, JPEG 2000 and RLE test files (DCMTK, GDCM, dcm4che and
    others; multi-frame, YBR_FULL_422, 12-bit JPEG, RLE 32-bit): every one that decodes
    passes. The ones refused are the broken ones: JPEG2000-embedded-sequence-delimiter.dcm
    (pydicom's README: four codestream bytes overwritten, "not a valid JPEG anymore")."""
    checked: dict[str, int] = {}
    refused: dict[str, str] = {}
    for name, ds in _compressed_test_files():
        ts = str(ds.file_meta.TransferSyntaxUID)
        checked[ts] = checked.get(ts, 0) + 1
        problem = _check_dataset(ds)
        if problem is not None:
            assert not _decodes(ds), f"{name} decodes but was refused: {problem}"
            refused[name] = problem[1]
    assert sum(checked.values()) >= 35, checked
    assert {JPEG_BASELINE, JPEG_LS, J2K_LOSSLESS, RLE} <= set(checked), checked
    assert set(refused) <= {"JPEG2000-embedded-sequence-delimiter.dcm"}, refused


@pytest.fixture(scope="module")
def ts_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tsx.TsSample]:
    return tsx.build_transfer_syntax_set(tmp_path_factory.mktemp("ts"), strict=False)


def test_every_transfer_syntax_sample_is_accepted(ts_set: dict[str, tsx.TsSample]) -> None:
    """The samples of every accepted syntax (DCMTK dcmcjpeg/dcmcjpls/dcmcrle, OpenJPEG,
    ffmpeg) parse: the check refuses none of the encoders' output."""
    compressed = [
        s for s in ts_set.values() if transfer_syntaxes.is_encapsulated(s.transfer_syntax)
    ]
    assert compressed, "no compressed sample could be built"
    for sample in ts_set.values():
        result = instance.parse(sample.path.read_bytes(), max_inflated=MAX_INFLATED)
        assert isinstance(result, instance.Parsed), (sample.transfer_syntax, result)
    for sample in compressed:
        if sample.transfer_syntax in transfer_syntaxes.VIDEO:
            continue
        ds = pydicom.dcmread(sample.path)
        assert _check_dataset(ds) is None, sample.transfer_syntax


# --------------------------------------------------------------------------------------------
# Direct checks on real codestreams, then broken on purpose


def _frames_of(name: str) -> tuple[Dataset, list[bytes]]:
    path = get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    return ds, list(generate_fragments(ds.PixelData))[1:]


def _check(
    fragments: list[bytes],
    ts: str,
    geometry: codestream.Geometry,
    *,
    bot: bool = False,
    per_frame: int = 1,
) -> tuple[int, str] | None:
    pixels = encapsulate(fragments, fragments_per_frame=per_frame, has_bot=bot)
    return codestream.check(pixels, 0, len(pixels), ts, geometry)


def _refused(problem: tuple[int, str] | None, code: int, words: str) -> None:
    assert problem is not None, f"not refused, expected {words!r}"
    assert problem[0] == code, (hex(problem[0]), problem[1])
    assert words in problem[1], problem[1]
    assert len(problem[1]) <= 72, problem[1]  # numbers first: the Error Comment keeps 64


JPEG_SAMPLE = "SC_rgb_jpeg_dcmtk.dcm"  # 100x100, 3 components, JPEG Baseline


def test_jpeg_size_and_components_are_compared_not_precision() -> None:
    ds, [frame] = _frames_of(JPEG_SAMPLE)
    g = _geometry(ds)
    assert _check([frame], JPEG_BASELINE, g) is None
    assert _check([frame], JPEG_BASELINE, codestream.Geometry(100, 100, 3, 16)) is None
    _refused(
        _check([frame], JPEG_BASELINE, codestream.Geometry(64, 100, 3, 8)),
        status.DATASET_PIXEL_INCONSISTENT,
        "frame 1: JPEG 100x100x3, Image Pixel module 64x100x3",
    )
    _refused(
        _check([frame], JPEG_BASELINE, codestream.Geometry(100, 100, 1, 8)),
        status.DATASET_PIXEL_INCONSISTENT,
        "JPEG 100x100x3",
    )


def _sof_at(frame: bytes) -> int:
    """Where the first SOF marker's Lf field starts (this sample has no such bytes before)."""
    for code in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7"):
        at = frame.find(code)
        if at > 0:
            return at + 2
    raise AssertionError("no SOF")


def test_jpeg_height_zero_is_defined_by_dnl_and_fill_bytes_are_skipped() -> None:
    ds, [frame] = _frames_of(JPEG_SAMPLE)
    at = _sof_at(frame)
    dnl = frame[: at + 3] + b"\x00\x00" + frame[at + 5 :]
    assert _check([dnl], JPEG_BASELINE, _geometry(ds)) is None
    filled = frame[:2] + b"\xff\xff" + frame[2:]  # fill bytes before the next marker
    assert _check([filled + b"\x00\x00"], JPEG_BASELINE, _geometry(ds)) is None


def test_jpeg_without_a_readable_header_cannot_be_understood() -> None:
    ds, [frame] = _frames_of(JPEG_SAMPLE)
    g = _geometry(ds)
    _refused(_check([b"\xde\xad" * 50], JPEG_BASELINE, g), status.CANNOT_UNDERSTAND, "no JPEG SOI")
    at = _sof_at(frame)
    _refused(  # cut inside the marker segments: the frame is that one fragment
        _check([frame[: at - 10]], JPEG_BASELINE, g),
        status.CANNOT_UNDERSTAND,
        "frame 1: JPEG marker",
    )
    no_sof = b"\xff\xd8\xff\xdb\x00\x04\x00\x00\xff\xda\x00\x02" + bytes(20)
    _refused(_check([no_sof], JPEG_BASELINE, g), status.CANNOT_UNDERSTAND, "FFDA before any SOF")
    _refused(
        _check([b"\xff\xd8\x12\x34" + bytes(20)], JPEG_BASELINE, g),
        status.CANNOT_UNDERSTAND,
        "byte 2 is 12, not a JPEG marker",
    )


def test_a_header_spanning_fragments_of_one_frame_is_not_refused() -> None:
    """A frame in 16-byte fragments: the first one ends inside the marker segments, but the
    frame goes on in the next (PS3.5 A.4), with or without a Basic Offset Table."""
    ds, [frame] = _frames_of(JPEG_SAMPLE)
    frame += b"\x00" * (len(frame) % 2)
    pieces = [frame[i : i + 16] for i in range(0, len(frame), 16)]
    g = _geometry(ds)
    assert _check(pieces, JPEG_BASELINE, g, bot=False) is None
    two = codestream.Geometry(g.rows, g.columns, g.samples, g.bits_allocated, frames=2)
    pixels = encapsulate([frame, frame], fragments_per_frame=len(pieces), has_bot=True)
    assert codestream.check(pixels, 0, len(pixels), JPEG_BASELINE, two) is None


def test_jpeg_ls_frame_header_is_read() -> None:
    ds, [frame] = _frames_of("MR_small_jpeg_ls_lossless.dcm")
    assert _check([frame], JPEG_LS, _geometry(ds)) is None
    _refused(
        _check([frame], JPEG_LS, codestream.Geometry(32, 64, 1, 16)),
        status.DATASET_PIXEL_INCONSISTENT,
        "frame 1: JPEG-LS 64x64x1, Image Pixel module 32x64x1",
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">L4s", 8 + len(payload), kind) + payload


def test_jpeg_2000_codestream_and_jp2_file() -> None:
    ds, [frame] = _frames_of("MR_small_jp2klossless.dcm")
    g = _geometry(ds)
    assert frame[:4] == b"\xff\x4f\xff\x51"
    assert _check([frame], J2K_LOSSLESS, g) is None
    signature = bytes.fromhex("0000000c6a5020200d0a870a")
    jp2 = signature + _box(b"ftyp", b"jp2 " + bytes(4) + b"jp2 ") + _box(b"jp2h", bytes(22))
    with_codestream = jp2 + _box(b"jp2c", frame)
    with_codestream += b"\x00" * (len(with_codestream) % 2)
    assert _check([with_codestream], J2K_LOSSLESS, g) is None
    _refused(
        _check([with_codestream], J2K_LOSSLESS, codestream.Geometry(64, 64, 3, 16)),
        status.DATASET_PIXEL_INCONSISTENT,
        "frame 1: J2K 64x64x1, Image Pixel module 64x64x3",
    )
    _refused(_check([jp2], J2K_LOSSLESS, g), status.CANNOT_UNDERSTAND, "without a codestream box")
    _refused(
        _check([b"\xff\xd8" + frame[2:]], J2K_LOSSLESS, g),
        status.CANNOT_UNDERSTAND,
        "no JPEG 2000 SOC marker",
    )
    siz_missing = b"\xff\x4f\xff\x52" + frame[4:]
    _refused(
        _check([siz_missing], J2K_LOSSLESS, g), status.CANNOT_UNDERSTAND, "not followed by SIZ"
    )


def test_rle_header_segments_and_offsets() -> None:
    """PS3.5 G.2: one segment per byte of each sample; G.5: the first at 64, rising, each
    inside the frame."""
    ds, [frame] = _frames_of("MR_small_RLE.dcm")  # 16-bit, one sample: two segments
    g = _geometry(ds)
    assert _check([frame], RLE, g) is None
    count, first, second = struct.unpack_from("<3L", frame)
    assert (count, first) == (2, 64)

    def header(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}L", *values) + frame[4 * len(values) :]

    _refused(
        _check([header(1)], RLE, g),
        status.DATASET_PIXEL_INCONSISTENT,
        "frame 1: RLE 1 segments, 1 sample x 16 bits need 2 (PS3.5 G.2)",
    )
    assert _check([header(1)], RLE, codestream.Geometry(g.rows, g.columns, 1, 8)) is None
    _refused(_check([header(0)], RLE, g), status.CANNOT_UNDERSTAND, "0 segments, 1 to 15")
    _refused(_check([header(2, 60)], RLE, g), status.CANNOT_UNDERSTAND, "segment 1 at byte 60")
    _refused(_check([header(2, 64, 64)], RLE, g), status.CANNOT_UNDERSTAND, "segment 2 at byte 64")
    _refused(
        _check([header(2, 64, len(frame))], RLE, g),
        status.CANNOT_UNDERSTAND,
        f"segment 2 at byte {len(frame)} of {len(frame)}",
    )
    _refused(_check([frame[:40]], RLE, g), status.CANNOT_UNDERSTAND, "RLE header cut short")


def test_every_frame_is_checked_and_frame_counts_come_from_the_tables() -> None:
    ds, frames = _frames_of("SC_rgb_rle_2frame.dcm")
    g = _geometry(ds)
    assert g.frames == 2 and len(frames) == 2
    assert _check(frames, RLE, g) is None
    assert _check(frames, RLE, g, bot=True) is None
    broken = frames[1][:4] + struct.pack("<L", 0) + frames[1][8:]
    _refused(_check([frames[0], broken], RLE, g), status.CANNOT_UNDERSTAND, "frame 2: RLE")
    three = codestream.Geometry(g.rows, g.columns, g.samples, g.bits_allocated, frames=3)
    _refused(
        _check(frames, RLE, three),
        status.DATASET_PIXEL_INCONSISTENT,
        "2 fragments for NumberOfFrames 3",
    )
    _refused(
        codestream.check(*_with_bot([*frames, frames[1]], 2), RLE, three),
        status.DATASET_PIXEL_INCONSISTENT,
        "2 frames in the Basic Offset Table, NumberOfFrames 3",
    )
    pixels, eot, lengths = encapsulate_extended(frames)
    _refused(
        codestream.check(pixels, 0, len(pixels), RLE, three, eot, lengths),
        status.DATASET_PIXEL_INCONSISTENT,
        "2 frames in the Extended Offset Table, NumberOfFrames 3",
    )
    assert codestream.check(pixels, 0, len(pixels), RLE, g, eot, lengths) is None
    # Extended Offset Table Lengths is required with the table (PS3.3 C.7.6.3.1.8)
    _refused(
        codestream.check(pixels, 0, len(pixels), RLE, g, eot),
        status.CANNOT_UNDERSTAND,
        "Extended Offset Table without a length per frame",
    )
    pixels, start, end = _with_bot(frames, 2, offsets=(0, 10))
    _refused(
        codestream.check(pixels, start, end, RLE, g),
        status.CANNOT_UNDERSTAND,
        "Basic Offset Table frame 2: offset 10 is not a fragment",
    )


def _with_bot(
    fragments: list[bytes], listed: int, offsets: tuple[int, ...] | None = None
) -> tuple[bytes, int, int]:
    """Encapsulated ``fragments`` whose Basic Offset Table lists the first ``listed`` (or
    ``offsets``)."""
    if offsets is None:
        at, found = 0, []
        for fragment in fragments[:listed]:
            found.append(at)
            at += 8 + len(fragment)
        offsets = tuple(found)
    table = struct.pack(f"<{len(offsets)}L", *offsets)
    pixels = b"".join(bad_inputs._fragment(f) for f in [table, *fragments])
    return pixels, 0, len(pixels)


def test_only_the_first_frame_is_judged_when_frames_cannot_be_told_apart() -> None:
    """Two frames in three fragments, no offset table: which fragment starts frame 2 is a
    guess, so the garbage after the first is not refused."""
    ds, [frame] = _frames_of(JPEG_SAMPLE)
    g = _geometry(ds)
    two = codestream.Geometry(g.rows, g.columns, g.samples, g.bits_allocated, frames=2)
    assert _check([frame, b"\xde\xad" * 8, b"\xbe\xef" * 8], JPEG_BASELINE, two) is None
    _refused(
        _check([b"\xde\xad" * 8, frame, frame], JPEG_BASELINE, two),
        status.CANNOT_UNDERSTAND,
        "frame 1: no JPEG SOI",
    )


def test_video_and_native_syntaxes_are_not_looked_at() -> None:
    g = codestream.Geometry(16, 16, 3, 8, frames=30)
    assert _check([b"\x00\x00\x01\xb3" + bytes(60)], H264, g) is None
    assert _check([b"\x00" * 64], "1.2.840.10008.1.2.1", g) is None


def test_a_thousand_frames_cost_milliseconds() -> None:
    """Run on every received instance: 1000 JPEG frames with their offset table."""
    ds, frames = _frames_of("examples_ybr_color.dcm")
    many = frames * 34
    g = codestream.Geometry(int(ds.Rows), int(ds.Columns), 3, 8, frames=len(many))
    pixels = encapsulate(many, has_bot=True)
    started = time.perf_counter()
    for _ in range(5):
        assert codestream.check(pixels, 0, len(pixels), JPEG_BASELINE, g) is None
    assert (time.perf_counter() - started) / 5 < 0.05


# --------------------------------------------------------------------------------------------
# Deflate bombs: bounded memory and concurrency


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """~130 KB that inflate to 128 MB: its cap (200x the input) is over RATIO_FLOOR."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    packed = b"".join(c.compress(zeros) for _ in range(128)) + c.flush()
    assert instance.MAX_RATIO * len(packed) > instance.RATIO_FLOOR
    return packed


def test_parallel_bombs_are_refused_holding_at_most_two_caps(bomb: bytes) -> None:
    """Eight bombs at once: each is refused, and the memory they hold together stays within
    what two inflations up to the cap take (before: every thread held its cap, and the
    last copy of it, at once)."""
    cap = instance.MAX_RATIO * len(bomb)
    threads = 8
    start = threading.Barrier(threads)
    errors: list[str] = []

    def inflate() -> None:
        start.wait()
        try:
            instance.inflate_bounded(bomb, MAX_INFLATED)
        except ValueError as exc:
            errors.append(str(exc))

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        workers = [threading.Thread(target=inflate) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(errors) == threads and all("bomb" in e for e in errors), errors
    assert peak < 2.5 * cap, f"peak {peak / 2**20:.0f} MB for caps of {cap / 2**20:.0f} MB"


def test_large_inflations_wait_for_a_slot_small_ones_never(bomb: bytes) -> None:
    """With both slots taken, a large inflation waits and a small one does not."""
    normal = bytes(range(256)) * 4096
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    small = c.compress(normal) + c.flush()
    assert instance.MAX_RATIO * len(small) <= instance.RATIO_FLOOR
    done: dict[str, object] = {}

    def run(name: str, data: bytes) -> None:
        try:
            done[name] = instance.inflate_bounded(data, MAX_INFLATED)
        except ValueError as exc:
            done[name] = exc

    held = [instance._LARGE_INFLATIONS.acquire(timeout=5) for _ in range(2)]
    assert all(held)
    try:
        large = threading.Thread(target=run, args=("large", bomb))
        quick = threading.Thread(target=run, args=("small", small))
        large.start()
        quick.start()
        quick.join(timeout=10)
        assert done.get("small") == normal
        large.join(timeout=0.5)
        assert large.is_alive() and "large" not in done
    finally:
        for _ in held:
            instance._LARGE_INFLATIONS.release()
    large.join(timeout=60)
    assert isinstance(done.get("large"), ValueError)


def test_valid_deflated_data_still_inflates_in_chunks() -> None:
    """Over many output chunks and input pieces, and ending exactly on a chunk."""
    varied = bytes(range(256)) * (3 * 4096 + 17)
    exact = bytes(4 * 1024 * 1024)
    for normal in (varied, exact, b""):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = c.compress(normal) + c.flush()
        assert instance.inflate_bounded(packed, MAX_INFLATED) == normal
        assert instance.inflate_bounded(packed + b"trailing", MAX_INFLATED) == normal
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    with pytest.raises(ValueError, match="bomb"):  # over the configured limit
        instance.inflate_bounded(c.compress(varied) + c.flush(), 1024 * 1024)
