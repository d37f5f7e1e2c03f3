"""A valid copy of an instance that supersedes an earlier refusal filed under the UNKNOWN
placeholder patient removes that patient row when it is left empty, in the same
transaction (outside probe: it stayed listed with no study and no entry); on SQLite and
on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.index import db
from server.index.models import Patient, Placeholder
from server.index.records import (
    UNKNOWN_PATIENT_ID,
    InstanceRecord,
    record_instance,
    record_placeholder,
)
from tests.data import samples
from tests.support.postgres import TemporaryPostgres, postgres_available

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: run scripts/setup.sh")
    with TemporaryPostgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = db.make_engine(f"sqlite:///{tmp_path / 'i.sqlite3'}")
    else:
        eng = db.make_engine(request.getfixturevalue("pg_url"))
    db.migrate(eng)
    yield eng
    eng.dispose()


def _record(ds: Dataset, tag: str) -> InstanceRecord:
    return InstanceRecord(
        dataset=ds,
        transfer_syntax="1.2.840.10008.1.2.1",
        lossy=False,
        meta_key=f"m-{tag}",
        pixel_key=f"p-{tag}",
        pixel_offset=0,
        size=100,
        sha256=tag * 64,
        pool="DEFAULT",
        source_ae="S13",
    )


def _refuse_nameless(session: Session, sop_uid: str) -> None:
    """A copy cut off before its Patient ID and Study UID: filed under UNKNOWN."""
    record_placeholder(
        session, ds=None, ids={"SOPInstanceUID": sop_uid, "SOPClassUID": CT}, status=0xC000,
        reason="cut off before its Patient ID", pool="DEFAULT", source_ae="S13",
    )  # fmt: skip


def _unknown(session: Session) -> list[Patient]:
    return list(session.scalars(select(Patient).where(Patient.patient_id == UNKNOWN_PATIENT_ID)))


def test_valid_copy_removes_the_emptied_unknown_placeholder_patient(engine: Engine) -> None:
    ds = samples.make_instance(CT, patient_id="S13-PH", study_uid=generate_uid())
    sop = str(ds.SOPInstanceUID)
    with Session(engine) as s, s.begin():
        _refuse_nameless(s, sop)
    with Session(engine) as s:
        [entry] = s.scalars(select(Placeholder).where(Placeholder.sop_instance_uid == sop))
        assert entry.patient.patient_id == UNKNOWN_PATIENT_ID
    with Session(engine) as s, s.begin():
        assert record_instance(s, _record(ds, "a"), "replace").action == "stored"
    with Session(engine) as s:
        assert s.scalars(select(Placeholder).where(Placeholder.sop_instance_uid == sop)).all() == []
        assert _unknown(s) == []
        [patient] = s.scalars(select(Patient).where(Patient.patient_id == "S13-PH"))
        assert len(patient.studies) == 1


def test_placeholder_patient_with_other_entries_stays(engine: Engine) -> None:
    """Only an emptied row goes: UNKNOWN still listing another refusal stays."""
    ds = samples.make_instance(CT, patient_id="S13-PH2", study_uid=generate_uid())
    other = generate_uid()
    with Session(engine) as s, s.begin():
        _refuse_nameless(s, str(ds.SOPInstanceUID))
        _refuse_nameless(s, other)
    with Session(engine) as s, s.begin():
        record_instance(s, _record(ds, "b"), "replace")
    with Session(engine) as s:
        [entry] = s.scalars(select(Placeholder))
        assert entry.sop_instance_uid == other
        assert [p.id for p in _unknown(s)] == [entry.patient_pk]
