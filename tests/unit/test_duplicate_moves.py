"""A re-sent instance (duplicate policy "replace") that names another series moves there;
the series (and study) it leaves empty must not stay listed with 0 instances (outside
probe 20). Real SQLite, the one ingest path."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from pydicom.uid import generate_uid
from sqlalchemy import select

from server.context import ServerContext
from server.index.account_models import HiddenItem
from server.index.models import Instance, Patient, Series, Study, User
from tests.data import bad_inputs, samples


def _store(ctx: ServerContext, ds: object) -> str:
    result = ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT")
    assert result.ok, result.reason
    return result.action


def _layout(ctx: ServerContext) -> dict[str, dict[str, int]]:
    """study UID -> series UID -> instance count."""
    with ctx.Session() as session:
        out: dict[str, dict[str, int]] = {}
        for study in session.scalars(select(Study)):
            out[study.study_uid] = {}
        for series in session.scalars(select(Series)):
            count = len(
                session.scalars(select(Instance.id).where(Instance.series_pk == series.id)).all()
            )
            out[series.study.study_uid][series.series_uid] = count
        return out


def test_the_series_and_study_left_empty_are_removed(ctx: ServerContext) -> None:
    first, second = samples.ct_series(2)
    for ds in (first, second):
        _store(ctx, ds)
    study = str(first.StudyInstanceUID)
    old_series = str(first.SeriesInstanceUID)
    # the second instance moves to another series of the same study: the old one stays
    moved = copy.deepcopy(second)
    moved.SeriesInstanceUID = generate_uid()
    assert _store(ctx, moved) == "replaced"
    assert _layout(ctx) == {study: {old_series: 1, str(moved.SeriesInstanceUID): 1}}
    # the first moves too: its series is now empty and goes
    again = copy.deepcopy(first)
    again.SeriesInstanceUID = moved.SeriesInstanceUID
    assert _store(ctx, again) == "replaced"
    assert _layout(ctx) == {study: {str(moved.SeriesInstanceUID): 2}}
    # both move to another study of the patient: the old study goes as well
    other = generate_uid()
    new_series = generate_uid()
    for ds in (again, moved):
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = other, new_series
        assert _store(ctx, ds) == "replaced"
    assert _layout(ctx) == {other: {new_series: 2}}
    # and a new instance of the removed series files a fresh series, not a stale row
    late = samples.ct_series(1)[0]
    late.PatientID, late.PatientName = first.PatientID, first.PatientName
    late.StudyInstanceUID, late.SeriesInstanceUID = study, old_series
    assert _store(ctx, late) == "stored"
    assert _layout(ctx) == {other: {new_series: 2}, study: {old_series: 1}}


def test_what_the_emptied_study_leaves_behind_goes_too(ctx: ServerContext) -> None:
    """The emptied series and study lose their hidden marks, and their patient goes when it
    has nothing else: the same UIDs received later must not come back hidden, and no empty
    patient stays listed (one helper with study deletion, server.accounts.retention)."""
    [first] = samples.ct_series(1)
    _store(ctx, first)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    with ctx.WriteSession() as session, session.begin():
        user = User(username="reader", password_hash="x", created_at=datetime.now(UTC))
        session.add(user)
        session.flush()
        for level, uid in (("study", study), ("series", series)):
            session.add(
                HiddenItem(user_pk=user.id, level=level, uid=uid, hidden_at=datetime.now(UTC))
            )
    # re-sent under another patient, study and series: everything of the first is empty
    moved = copy.deepcopy(first)
    moved.PatientID, moved.PatientName = "OTHER-1", "Other^Patient"
    moved.StudyInstanceUID, moved.SeriesInstanceUID = generate_uid(), generate_uid()
    assert _store(ctx, moved) == "replaced"
    with ctx.Session() as session:
        assert list(session.scalars(select(HiddenItem.uid))) == []
        assert list(session.scalars(select(Patient.patient_id))) == ["OTHER-1"]


def test_a_reader_holding_the_replaced_row_reads_the_new_copy(ctx: ServerContext) -> None:
    """A replace removes the superseded objects right after its commit; a reader that loaded
    the row before reads the current copy instead of failing (WADO-RS answered 500, C-GET
    sub-operations failed for an instance that never left the archive: outside probe 31)."""
    [first] = samples.ct_series(1)
    _store(ctx, first)
    old_row = ctx.find_instance(str(first.SOPInstanceUID))
    assert old_row is not None
    again = copy.deepcopy(first)
    again.SeriesDescription = "re-sent"
    assert _store(ctx, again) == "replaced"
    for read in (ctx.instance_bytes, ctx.metadata_bytes):
        assert b"re-sent" in read(old_row)
    assert ctx.pixel_bytes(old_row) == ctx.pixel_bytes(ctx.find_instance(str(first.SOPInstanceUID)))
