"""Which patient a refused instance's placeholder is filed under when Patient IDs carry an
Issuer of Patient ID (outside probe 28: a refusal whose issuer was not read made a second,
"ghost" patient of the same ID). Real SQLite, the one ingest path."""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from server.context import ServerContext
from server.index.models import Patient, Placeholder
from server.index.records import record_placeholder
from tests.data import bad_inputs, samples

CT = bad_inputs.CT
PID = "PH-ISSUERS"


def _archived(ctx: ServerContext, issuer: str) -> Dataset:
    ds = samples.make_instance(CT, patient_id=PID, rows=16, cols=16)
    ds.IssuerOfPatientID = issuer
    result = ctx.store(bad_inputs.part10_of(ds), pool="DEFAULT")
    assert result.ok, result.reason
    return ds


def _refuse(ctx: ServerContext, **ids: str) -> None:
    """A placeholder as the ingest path records one, with the identifying values read."""
    with ctx.WriteSession() as session, session.begin():
        record_placeholder(
            session,
            ds=None,
            ids={"PatientID": PID, "SOPInstanceUID": generate_uid(), **ids},
            status=0xA900,
            reason="refused",
            pool="DEFAULT",
            source_ae="TEST",
        )


def _filing(ctx: ServerContext) -> dict[str, int]:
    """Issuer -> placeholders, for each patient with the Patient ID."""
    with ctx.Session() as session:
        return {
            p.issuer: len(
                session.scalars(select(Placeholder.id).where(Placeholder.patient_pk == p.id)).all()
            )
            for p in session.scalars(select(Patient).where(Patient.patient_id == PID))
        }


def test_a_read_issuer_files_under_that_patient(ctx: ServerContext) -> None:
    _archived(ctx, "A")
    _archived(ctx, "B")
    _refuse(ctx, IssuerOfPatientID="B")
    assert _filing(ctx) == {"A": 0, "B": 1}
    _refuse(ctx, IssuerOfPatientID="C")  # another issuer: a patient of its own
    assert _filing(ctx) == {"A": 0, "B": 1, "C": 1}


def test_an_unread_issuer_files_under_the_study_or_the_only_patient(ctx: ServerContext) -> None:
    a = _archived(ctx, "A")
    # a refused copy of A's study, through the ingest path (its issuer is not read)
    bad = copy.deepcopy(a)
    bad.SOPInstanceUID = generate_uid()
    bad.PixelData = bad.PixelData[: len(bad.PixelData) // 2]
    result = ctx.store(bad_inputs.part10_of(bad), pool="DEFAULT")
    assert 0xA900 <= result.status <= 0xA9FF, result.reason
    assert _filing(ctx) == {"A": 1}
    _refuse(ctx, StudyInstanceUID=generate_uid())  # a new study: the only patient with PID
    assert _filing(ctx) == {"A": 2}
    b = _archived(ctx, "B")
    _refuse(ctx, StudyInstanceUID=str(b.StudyInstanceUID))  # B's study
    assert _filing(ctx) == {"A": 2, "B": 1}
    # two patients with PID and a study of neither: no guessing, a row without issuer
    _refuse(ctx, StudyInstanceUID=generate_uid())
    assert _filing(ctx) == {"A": 2, "B": 1, "": 1}
