"""A valid copy that supersedes a refusal takes the full index path even when its series is
one the ingest shortcut knows (server.index.known_series): the shortcut dropped the
placeholder but left the UNKNOWN patient row the refusal was filed under, listed empty.
Real SQLite index, real archive folder."""

from __future__ import annotations

import io

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.context import ServerContext
from server.index.models import Instance, Patient, Placeholder
from server.index.records import UNKNOWN_PATIENT_ID
from tests.data import samples

CT = "1.2.840.10008.5.1.4.1.1.2"


def _part10(**kwargs: object) -> bytes:
    ds = samples.make_instance(CT, **kwargs)  # type: ignore[arg-type]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _rows(ctx: ServerContext) -> tuple[list[str], int, int]:
    with Session(ctx.engine) as s:
        unknown = list(s.scalars(select(Patient).where(Patient.patient_id == UNKNOWN_PATIENT_ID)))
        placeholders = len(s.scalars(select(Placeholder.id)).all())
        instances = len(s.scalars(select(Instance.id)).all())
    return [p.patient_id for p in unknown], placeholders, instances


def test_a_known_series_copy_superseding_a_nameless_refusal_removes_the_unknown_patient(
    ctx: ServerContext,
) -> None:
    study, series = generate_uid(), generate_uid()
    first = _part10(patient_id="KS-1", study_uid=study, series_uid=series, instance_number=1)
    assert ctx.store(first, pool="DEFAULT").ok  # the series is now a known one
    uid = generate_uid()
    second = _part10(
        patient_id="KS-1", study_uid=study, series_uid=series, sop_instance_uid=uid,
        instance_number=2,
    )  # fmt: skip
    cut = ctx.store(second[:140], pool="DEFAULT", expected_sop_class=CT, expected_sop_instance=uid)
    assert not cut.ok
    assert _rows(ctx) == ([UNKNOWN_PATIENT_ID], 1, 1)
    assert ctx.store(second, pool="DEFAULT").ok
    assert _rows(ctx) == ([], 0, 2)
