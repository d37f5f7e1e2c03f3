"""The Store SCP writes an instance's archive objects while its PDUs arrive
(server.archive.incoming): adopted only when the parse agrees, removed otherwise, and never
a different byte stored. Real SQLite index, real archive folder, no network."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless

from lucent.dicom import instance, walk
from server.archive.incoming import IncomingObjects
from server.context import ServerContext
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _part10(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    if syntax == JPEGLSLossless:
        ds.file_meta = samples.file_meta_for(ds, ExplicitVRLittleEndian)
        ds.compress(JPEGLSLossless, generate_instance_uid=False)
    else:
        ds.file_meta = samples.file_meta_for(ds, syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


def _ct(**kwargs: object) -> Dataset:
    return samples.make_instance(CT, rows=256, cols=256, **kwargs)  # type: ignore[arg-type]


def _arrive(
    ctx: ServerContext, data: bytes, piece: int, syntax: str = ExplicitVRLittleEndian
) -> tuple[IncomingObjects, io.BytesIO]:
    """Feed ``data`` as the Store SCP does: file meta first, then fragments of ``piece``."""
    _, start = instance._split_meta(data)
    incoming = ctx.incoming_objects(start, syntax)
    assert incoming is not None
    buf = io.BytesIO()
    buf.write(data[:start])
    for at in range(start, len(data), piece):
        fragment = data[at : at + piece]
        buf.write(fragment)
        incoming.feed(buf, fragment)
    return incoming, buf


def _written(ctx: ServerContext) -> set[str]:
    ctx.storage.close()  # stops the spare maker and removes its unused files: no race
    return {p.name for p in ctx.storage.root.glob("*/*") if p.is_file() and p.stat().st_size}


def _store(ctx: ServerContext, data: bytes, incoming: IncomingObjects, sop_class: str = CT):
    uid = str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    return ctx.store(
        data,
        pool="DEFAULT",
        source="SENDER",
        expected_sop_class=sop_class,
        expected_sop_instance=uid,
        incoming=incoming,
    )


@pytest.mark.parametrize("piece", [7, 1000, 16384, 131072, 1 << 22])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_objects_written_while_arriving_are_adopted_and_read_back_whole(
    ctx: ServerContext, piece: int, syntax: str
) -> None:
    data = _part10(_ct(), syntax)
    incoming, buf = _arrive(ctx, data, piece, syntax)
    assert incoming.complete and incoming.base is not None
    base = incoming.base
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok, result
    assert incoming.claimed
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None
    assert inst.meta_key == f"{base}.m" and inst.pixel_key == f"{base}.p"
    assert ctx.instance_bytes(inst) == data
    assert _written(ctx) == {inst.meta_key, inst.pixel_key}


def test_a_sequence_before_pixel_data_split_over_fragments_still_streams(
    ctx: ServerContext,
) -> None:
    ds = _ct()
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ds.ReferencedImageSequence = [item, item]
    ds["ReferencedImageSequence"].is_undefined_length = True
    data = _part10(ds)
    incoming, buf = _arrive(ctx, data, 50)
    assert incoming.complete
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok and incoming.claimed
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None and ctx.instance_bytes(inst) == data


def test_an_element_after_pixel_data_is_stored_by_the_normal_path(ctx: ServerContext) -> None:
    ds = _ct()
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)  # Data Set Trailing Padding
    data = _part10(ds)
    incoming, buf = _arrive(ctx, data, 16384)
    assert not incoming.complete and incoming.base is None  # dropped at the first extra byte
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok, result
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None and ctx.instance_bytes(inst) == data
    assert _written(ctx) == {inst.meta_key, inst.pixel_key}


def test_a_refused_instance_leaves_nothing_of_what_was_written(ctx: ServerContext) -> None:
    data = _part10(_ct())
    incoming, buf = _arrive(ctx, data, 16384)
    assert incoming.complete
    refused = _store(ctx, buf.getvalue(), incoming, sop_class=MR)  # the request said MR
    assert not refused.ok and refused.status >> 8 == 0xA9
    assert _written(ctx) == set()


def test_an_instance_cut_off_mid_way_leaves_nothing(ctx: ServerContext) -> None:
    data = _part10(_ct())
    incoming, _ = _arrive(ctx, data[: len(data) // 2], 16384)
    assert incoming.base is not None  # writing had started
    incoming.abandon()
    incoming.abandon()  # the association's clean-up may call it again
    assert _written(ctx) == set()


def test_a_walk_that_disagrees_with_the_parse_is_written_again(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = walk.pixel_value_ahead

    def off_by_two(data: bytes, pos: int, ts: str) -> tuple[str, int, int]:
        found, at, length = real(data, pos, ts)
        return (found, at + 2, length - 2) if found == walk.Ahead.FOUND else (found, at, length)

    monkeypatch.setattr(walk, "pixel_value_ahead", off_by_two)
    data = _part10(_ct())
    incoming, buf = _arrive(ctx, data, 16384)
    assert incoming.complete
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok and not incoming.claimed
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None and ctx.instance_bytes(inst) == data
    assert _written(ctx) == {inst.meta_key, inst.pixel_key}


def test_encapsulated_pixel_data_is_not_streamed(ctx: ServerContext) -> None:
    pytest.importorskip("pylibjpeg")
    data = _part10(_ct(), JPEGLSLossless)
    incoming, buf = _arrive(ctx, data, 16384, JPEGLSLossless)
    assert incoming.base is None and not incoming.complete
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok, result
    inst = ctx.find_instance(result.sop_instance_uid)
    assert inst is not None and ctx.instance_bytes(inst) == data


def test_the_walk_waits_for_more_bytes_and_resumes() -> None:
    data = _part10(_ct())
    _, start = instance._split_meta(data)
    found, pos, _ = walk.pixel_value_ahead(data[: start + 40], start, ExplicitVRLittleEndian)
    assert found == walk.Ahead.MORE and pos > start
    found, at, length = walk.pixel_value_ahead(data, pos, ExplicitVRLittleEndian)
    assert found == walk.Ahead.FOUND and at + length == len(data) and length == 256 * 256 * 2
    assert walk.pixel_value_ahead(data, start, JPEGLSLossless)[0] == walk.Ahead.NO


def _restart(ctx: ServerContext) -> ServerContext:
    """The state a kill -9 leaves: a fresh context on the same data folder."""
    from server import config

    ctx.storage.close()
    return ServerContext(
        config.parse({"server": {"data_dir": str(ctx.settings.data_dir)}}), migrate=True
    )


@pytest.mark.parametrize("part", ["all", "half"])
def test_a_crash_before_the_answer_leaves_nothing_recovery_would_file(
    ctx: ServerContext, part: str
) -> None:
    """Outside probe 33: the metadata object was written as soon as the Pixel Data header
    arrived, so after a kill -9 recovery filed data sets that were never completed, never
    answered or would have been refused, and quarantined the halves as damaged."""
    from server.archive import recovery

    data = _part10(_ct())
    cut = data if part == "all" else data[: len(data) // 2]
    incoming, _ = _arrive(ctx, cut, 16384)
    assert incoming.base is not None
    incoming.durable()
    after = _restart(ctx)
    try:
        report = recovery.recover(after)
        assert report.recovered == 0 and report.quarantined == 0
        assert report.reasons == {"pixel data without metadata": 1}
        uid = str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        assert after.find_instance(uid) is None
        assert _written(after) == set()
    finally:
        after.close()


def test_the_free_space_check_does_not_count_the_arrived_pixels_twice(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside probe 33: with the pixel object already on disk, the check before storing
    subtracted its size again and answered A700 with the configured margin still free."""
    data = _part10(_ct())
    incoming, buf = _arrive(ctx, data, 16384)
    floor = ctx.settings.archive.min_free_mb * 1024 * 1024
    # the disk as it is now: before this instance there was just room for it
    monkeypatch.setattr(
        ctx.storage, "free_bytes", lambda: floor + 2 * len(data) - incoming.written + 4096
    )
    result = _store(ctx, buf.getvalue(), incoming)
    assert result.ok, result
