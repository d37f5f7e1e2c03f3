"""Ingest writes the pixel object while it parses (server.context): a refused instance must
leave nothing behind, and a wrong pixel-span hint must be written again, not stored wrong.
Real SQLite index, real archive folder, no network."""

from __future__ import annotations

import pytest

from lucent.dicom import instance, walk
from lucent.net import status
from server.context import ServerContext
from tests.data import bad_inputs, samples

CT = "1.2.840.10008.5.1.4.1.1.2"


def _files(ctx: ServerContext) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in ctx.storage.root.glob("*/*") if p.is_file()}


def _part10(sop_class: str = CT) -> tuple[bytes, str]:
    ds = samples.make_instance(CT)
    data = bad_inputs.BadInput(
        "ok", "", "", bad_inputs.encode(ds), sop_class, ds.SOPInstanceUID
    ).part10()
    return data, ds.SOPInstanceUID


def test_a_refused_instance_leaves_no_object_and_no_prepared_file(ctx: ServerContext) -> None:
    data, uid = _part10()
    ok = ctx.store(data, pool="DEFAULT", expected_sop_class=CT, expected_sop_instance=uid)
    assert ok.ok
    stored = {name for name, size in _files(ctx).items() if size}
    assert len(stored) == 2  # metadata and pixel objects
    # The pixel object of this one is written before the SOP class check refuses it.
    data, uid = _part10()
    refused = ctx.store(data, pool="DEFAULT", expected_sop_class="1.2.840.10008.5.1.4.1.1.4")
    assert status.category(refused.status) == "failure" and refused.status >> 8 == 0xA9
    ctx.storage.close()  # stops the spare maker and removes its unused files: no race
    files = _files(ctx)
    assert {name for name, size in files.items() if size} == stored
    assert not [name for name, size in files.items() if not size]
    assert len(list(ctx.storage.keys())) == 2


def test_a_wrong_span_hint_is_written_again_from_the_parse(
    ctx: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, uid = _part10()
    real = walk.walk

    def off_by_two(data: bytes, pos: int, ts: str) -> tuple[walk.Span, None] | None:
        walked = real(data, pos, ts)
        assert walked is not None
        (start, end), _ = walked
        return (start + 2, end), None  # no TopLevel: the full parse decides the span

    monkeypatch.setattr(instance.walk, "walk", off_by_two)
    result = ctx.store(data, pool="DEFAULT", expected_sop_class=CT, expected_sop_instance=uid)
    assert result.ok
    inst = ctx.find_instance(uid)
    assert inst is not None
    assert ctx.instance_bytes(inst) == data
    ctx.storage.close()
    files = _files(ctx)
    assert {name for name, size in files.items() if size} == {inst.meta_key, inst.pixel_key}
    assert not [name for name, size in files.items() if not size]


def test_a_digest_from_the_receiver_is_not_kept_for_bytes_that_were_inflated(
    ctx: ServerContext,
) -> None:
    """The Store SCP hashes what it receives; a deflated data set is stored inflated, so the
    index must hold the digest of the stored bytes, not of the received ones."""
    import hashlib
    import io

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = samples.make_instance(CT)
    ds.file_meta = samples.file_meta_for(ds, DeflatedExplicitVRLittleEndian)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    sent = buf.getvalue()
    result = ctx.store(sent, pool="DEFAULT", sha256=hashlib.sha256(sent).hexdigest())
    assert result.ok, result
    inst = ctx.find_instance(str(ds.SOPInstanceUID))
    assert inst is not None and inst.transfer_syntax_uid != DeflatedExplicitVRLittleEndian
    assert inst.sha256 == hashlib.sha256(ctx.instance_bytes(inst)).hexdigest()
