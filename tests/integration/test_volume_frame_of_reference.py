"""A series whose slices carry two Frame of Reference UIDs is not one volume (outside probe 24).

Images in different Frames of Reference are not spatially related (PS3.3 C.7.4.1.1.1), so
their IPPs cannot be put on one grid even when they line up: series K of the probe (15 slices
in one FoR, 15 in another, otherwise a perfect axial stack) was fused into one volume with a
200. The index keeps one FoR per series; :func:`series_volume.plan` now checks each instance's
own UID, from its indexed attributes or, where the index does not hold it, from its archived
metadata, on a real archive and index.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import HTTPException
from pydicom import dcmread
from pydicom.uid import generate_uid

from server import config
from server.api import series_volume
from server.context import ServerContext
from server.index import queries
from server.index.models import Instance
from tests.data import samples


def _store(ctx: ServerContext, tmp: Path, other_for_from: int | None) -> str:
    """Six axial slices 1 mm apart; from slice ``other_for_from`` on, another FoR UID."""
    files = samples.write_ct_series(tmp, n=6, rows=16, cols=16)
    other = generate_uid()
    for k, f in enumerate(files):
        ds = dcmread(f)
        if other_for_from is not None and k >= other_for_from:
            ds.FrameOfReferenceUID = other
            ds.save_as(f)
        assert ctx.store(f.read_bytes(), pool="DEFAULT", source="T").ok
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture
def ctx(tmp_path: Path):  # noqa: ANN201
    settings = config.parse(
        {"server": {"data_dir": str(tmp_path / "data")}, "archive": {"min_free_mb": 1}}
    )
    context = ServerContext(settings, migrate=True)
    try:
        yield context
    finally:
        context.close()


def _instances(ctx: ServerContext, series_uid: str) -> list[Instance]:
    with ctx.Session() as db:
        return list(queries.instances(db, series_uid))


def test_two_frames_of_reference_are_refused_from_the_archived_metadata(
    ctx: ServerContext, tmp_path: Path
) -> None:
    uid = _store(ctx, tmp_path / "two", other_for_from=3)
    found = _instances(ctx, uid)
    assert all("FrameOfReferenceUID" in (i.attrs or {}) for i in found)  # indexed now
    for i in found[:4]:  # as instances indexed before it was: read from their metadata
        i.attrs = {k: v for k, v in (i.attrs or {}).items() if k != "FrameOfReferenceUID"}
    with pytest.raises(HTTPException) as err:
        series_volume.plan(found, series_volume.metadata_frame_of_reference(ctx))
    assert err.value.status_code == 409
    detail = str(err.value.detail)
    assert "2 Frames of Reference" in detail and "3 in" in detail
    assert "not spatially related" in detail and "fetch frames" in detail


def test_one_frame_of_reference_still_makes_one_volume(ctx: ServerContext, tmp_path: Path) -> None:
    uid = _store(ctx, tmp_path / "one", other_for_from=None)
    found = _instances(ctx, uid)
    plan = series_volume.plan(found, series_volume.metadata_frame_of_reference(ctx))
    assert len(plan.slices) == 6 and plan.uniform_spacing


def test_an_indexed_frame_of_reference_per_instance_is_checked_without_reading(
    ctx: ServerContext, tmp_path: Path
) -> None:
    """Where the index holds each instance's FoR UID in its attributes, plan() needs no
    reader: it refuses the mix from the index alone."""
    uid = _store(ctx, tmp_path / "indexed", other_for_from=None)
    found = _instances(ctx, uid)
    mixed = found  # detached ORM rows: only their attrs change here
    for k, i in enumerate(mixed):
        i.attrs = {**(i.attrs or {}), "FrameOfReferenceUID": "1.2.3" if k < 2 else "1.2.4"}
    with pytest.raises(HTTPException) as err:
        series_volume.plan(mixed)
    assert err.value.status_code == 409 and "2 Frames of Reference" in str(err.value.detail)

    def never(_: object) -> str:
        raise AssertionError("the indexed UID must be used")

    for i in mixed:
        i.attrs = {**i.attrs, "FrameOfReferenceUID": "1.2.3"}
    assert len(series_volume.plan(mixed, never).slices) == 6


def test_a_series_indexed_before_the_uid_was_reads_no_metadata(
    ctx: ServerContext, tmp_path: Path
) -> None:
    """Series indexed before the UID was per instance, or whose slices have none: every
    /geometry and /volume read and decrypted each slice's metadata (review)."""
    uid = _store(ctx, tmp_path / "old", other_for_from=None)
    found = _instances(ctx, uid)
    for i in found:
        i.attrs = {k: v for k, v in (i.attrs or {}).items() if k != "FrameOfReferenceUID"}

    def never(inst: Instance) -> str:
        raise AssertionError(f"read {inst.sop_instance_uid}")

    assert len(series_volume.plan(found, never).slices) == 6
