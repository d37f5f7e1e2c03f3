"""Writing the index: one committed transaction per received instance or placeholder.

Kept apart from queries so the ingest path reads top to bottom: find-or-create patient,
study, series; insert or replace the instance; remove a placeholder the instance supersedes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.index import folding
from server.index.account_models import HiddenItem, ShareLink
from server.index.models import Event, Instance, Patient, Placeholder, Series, Study

log = logging.getLogger("lucent.index")

UNKNOWN_PATIENT_ID = "UNKNOWN"
"""Where refused data that names neither a patient nor a study is listed (issue 2: "under an
'unknown' patient"); never used for an instance, which keeps its own (empty) Patient ID."""


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def text(ds: Dataset, keyword: str, limit: int = 256) -> str:
    """A value as display text ('' when absent or undecodable), multi-values joined by '\\'."""
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)[:limit]
    return str(value)[:limit]


#: Timezone Offset From UTC as PS3.5 Table 6.2-1 (DT) writes an offset: "&ZZXX", from
#: -1200 to +1400.
_OFFSET = re.compile(r"[+-][0-9]{2}[0-5][0-9]")


def _offset(value: str) -> str:
    """``value`` when it is a valid offset ("+0100", "-0500"), else '' (unknown)."""
    value = value.strip()
    if not _OFFSET.fullmatch(value):
        return ""
    minutes = int(value[1:3]) * 60 + int(value[3:])
    return value if minutes <= (14 * 60 if value[0] == "+" else 12 * 60) else ""


def timezone_offset(ds: Dataset) -> str:
    """The data set's Timezone Offset From UTC (0008,0201), kept as it is ("+0100"); ''
    when absent or not an offset (PS3.18 Tables 10.6.3-3..5 answer it when known, so an
    invalid one is not "known")."""
    return _offset(text(ds, "TimezoneOffsetFromUTC", 64))


def fold_name(name: str) -> str:
    """Case-folded alphabetic name for case-insensitive matching."""
    return folding.fold_text(name.split("=", 1)[0])


def _integer(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def _floats(ds: Dataset, keyword: str) -> list[float] | None:
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            return None
        seq = value if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [value]
        if isinstance(value, str | bytes):
            seq = [value]
        return [float(v) for v in seq]
    except Exception:
        return None


_GEOMETRY_KEYWORDS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",  # the viewer's "Loc" line, as readers know it from the console
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
)
_TEXT_KEYWORDS = (
    "PhotometricInterpretation",
    "RescaleType",
    "AcquisitionTime",
    "ContentTime",
    "AcquisitionDate",
    "ContentDate",
    "ImageType",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "FrameTime",
    "FrameOfReferenceUID",  # per instance: a series may mix them (series_volume.plan)
    "TimezoneOffsetFromUTC",  # QIDO/C-FIND at instance level (kept only when valid)
)
_INT_KEYWORDS = (
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PlanarConfiguration",
)


def display_attributes(ds: Dataset) -> dict[str, Any]:
    """What the viewer needs without decrypting metadata: geometry, rescale, window, timing."""
    attrs: dict[str, Any] = {}
    for kw in _GEOMETRY_KEYWORDS:
        v = _floats(ds, kw)
        if v is not None:
            attrs[kw] = v
    for kw in _TEXT_KEYWORDS:
        v = text(ds, kw)
        if v:
            attrs[kw] = v
    if offset := _offset(attrs.pop("TimezoneOffsetFromUTC", "")):  # as the index columns
        attrs["TimezoneOffsetFromUTC"] = offset
    for kw in _INT_KEYWORDS:
        iv = _integer(ds, kw)
        if iv is not None:
            attrs[kw] = iv
    return attrs


@dataclass
class InstanceRecord:
    """Everything the index stores about one accepted instance."""

    dataset: Dataset
    transfer_syntax: str
    lossy: bool
    meta_key: str
    pixel_key: str | None
    pixel_offset: int
    size: int
    sha256: str
    pool: str
    source_ae: str
    attrs: dict[str, Any] | None = None  # display_attributes(dataset), when known already


def upsert_patient(session: Session, ds: Dataset | None, ids: dict[str, str]) -> Patient:
    """The patient row of an instance (``ds``) or a placeholder (``ds`` None) with ``ids``.

    An empty Patient ID (legal: Type 2) matches no other patient: the study's own row is
    used (``_patient_without_id``), never one shared by everybody without an ID.

    A placeholder's issuer is the ``IssuerOfPatientID`` its refusal could read; when none
    could be read, an existing patient with that Patient ID is used where that is
    unambiguous (``_patient_of_unread_issuer``). It used to be "" always: a refused
    instance of a patient archived with an issuer made a second, "ghost" patient of the
    same ID holding only the placeholder (outside probe 28).
    """
    patient_id = (ids.get("PatientID") or "").strip()
    issuer: str | None
    if ds is not None:
        issuer = text(ds, "IssuerOfPatientID", 64)
    elif "IssuerOfPatientID" in ids:
        issuer = ids["IssuerOfPatientID"].rstrip(" \x00")[:64]
    else:
        issuer = None  # a placeholder whose issuer could not be read
    name = ids.get("PatientName", "")
    patient: Patient | None
    if not patient_id:
        patient = _patient_without_id(session, ids.get("StudyInstanceUID", ""))
    elif issuer is None:
        patient = _patient_of_unread_issuer(session, patient_id, ids.get("StudyInstanceUID", ""))
    else:
        patient = session.scalars(
            select(Patient).where(Patient.patient_id == patient_id, Patient.issuer == issuer)
        ).first()
    if patient is None:
        patient = Patient(
            patient_id=patient_id,
            issuer=issuer or "",
            name=name,
            name_folded=fold_name(name),
            birth_date=ids.get("PatientBirthDate", "")[:8],
            sex=text(ds, "PatientSex", 16) if ds is not None else ids.get("PatientSex", "")[:16],
            created_at=now(),
        )
        session.add(patient)
        session.flush()
    elif ds is not None and name and name != patient.name and patient.patient_id:
        # Newest demographics win, as in most PACS (a corrected name replaces a typo).
        patient.name = name
        patient.name_folded = fold_name(name)
    return patient


def _patient_of_unread_issuer(session: Session, patient_id: str, study_uid: str) -> Patient | None:
    """Where a placeholder with ``patient_id`` goes when its issuer could not be read:

    1. the patient its study is archived under, if that patient has this Patient ID (the
       refused instance is one more of an archived study);
    2. else the one patient with this Patient ID, whatever its issuer;
    3. else (none, or several with different issuers) the one without an issuer, or None:
       a new row without an issuer, as before; guessing between two issuers would list a
       refusal under somebody else (Conformance 4.1.3.2: "under its patient").
    """
    study_uid = study_uid.strip()
    if study_uid:
        owner = session.scalars(
            select(Patient)
            .join(Study, Study.patient_pk == Patient.id)
            .where(Study.study_uid == study_uid, Patient.patient_id == patient_id)
        ).first()
        if owner is not None:
            return owner
    candidates = session.scalars(
        select(Patient).where(Patient.patient_id == patient_id).limit(2)
    ).all()
    if len(candidates) == 1:
        return candidates[0]
    return session.scalars(
        select(Patient).where(Patient.patient_id == patient_id, Patient.issuer == "")
    ).first()


def _patient_without_id(session: Session, study_uid: str) -> Patient | None:
    """The row of a study whose instances carry no Patient ID (an archived study's, or the
    one its earlier placeholders were listed under); None: make a new one. Refused data
    without a study either is listed under UNKNOWN_PATIENT_ID."""
    study_uid = study_uid.strip()
    if not study_uid:
        return session.scalars(
            select(Patient).where(Patient.patient_id == UNKNOWN_PATIENT_ID, Patient.issuer == "")
        ).first() or _unknown_bucket(session)
    pk = session.scalars(
        select(Study.patient_pk)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Study.study_uid == study_uid, Patient.patient_id == "")
    ).first()
    if pk is None:
        pk = session.scalars(
            select(Placeholder.patient_pk)
            .join(Patient, Placeholder.patient_pk == Patient.id)
            .where(Placeholder.study_uid == study_uid, Patient.patient_id == "")
        ).first()
    return session.get(Patient, pk) if pk is not None else None


def _unknown_bucket(session: Session) -> Patient:
    """The UNKNOWN entry: named by no patient's data (it holds nobody's images)."""
    patient = Patient(
        patient_id=UNKNOWN_PATIENT_ID,
        issuer="",
        name="",
        name_folded="",
        birth_date="",
        sex="",
        created_at=now(),
    )
    session.add(patient)
    session.flush()
    return patient


def study_values(ds: Dataset) -> dict[str, str]:
    """The study row's descriptive columns, as this instance states them."""
    return {
        "study_id": text(ds, "StudyID", 16),
        "study_date": text(ds, "StudyDate", 8),
        "study_time": text(ds, "StudyTime", 16),
        "description": text(ds, "StudyDescription"),
        "accession_number": text(ds, "AccessionNumber", 16),
        "referring_physician": text(ds, "ReferringPhysicianName", 324),
        "requesting_service": text(ds, "RequestingService"),
        "timezone_offset": timezone_offset(ds),
    }


def series_values(ds: Dataset) -> dict[str, Any]:
    """The series row's descriptive columns, as this instance states them."""
    return {
        "modality": text(ds, "Modality", 16),
        "series_number": _integer(ds, "SeriesNumber"),
        "description": text(ds, "SeriesDescription"),
        "body_part": text(ds, "BodyPartExamined", 16),
        "frame_of_reference_uid": text(ds, "FrameOfReferenceUID", 64),
        "timezone_offset": timezone_offset(ds),
    }


def patient_values(ds: Dataset) -> dict[str, str]:
    """The demographics a re-sent copy corrects (``refresh_patient``)."""
    name = text(ds, "PatientName", 324)
    return {
        "name": name,
        "name_folded": fold_name(name),
        "birth_date": text(ds, "PatientBirthDate", 8),
        "sex": text(ds, "PatientSex", 16),
    }


def _refresh(row: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key == "timezone_offset" and not value:
            continue  # an instance without one says nothing about its study's or series'
        if getattr(row, key) != value:
            setattr(row, key, value)


def refresh_patient(patient: Patient, ds: Dataset) -> None:
    """A replaced copy's demographics win, empty ones included (the copy is the record now);
    never on the rows without a Patient ID that stand for a study or the UNKNOWN entry."""
    if patient.patient_id and patient.patient_id != UNKNOWN_PATIENT_ID:
        _refresh(patient, patient_values(ds))


def _learn_timezone(row: Study | Series, ds: Dataset) -> None:
    """A study or series takes the first Timezone Offset From UTC one of its instances
    states: the first instance may lack one that later ones carry. A known offset stays;
    only a replacing copy (``refresh``) changes it, and never to unknown (``_refresh``)."""
    if not row.timezone_offset and (offset := timezone_offset(ds)):
        row.timezone_offset = offset


def _upsert_study(
    session: Session, patient: Patient, ds: Dataset, pool: str, refresh: bool = False
) -> Study:
    """``refresh``: the instance replaces an archived copy (duplicate policy "replace"), so
    the study row takes its values: a corrected re-send kept listing the old description
    while the archive held the new one (outside probe 41)."""
    uid = str(ds.StudyInstanceUID)
    study = session.scalars(select(Study).where(Study.study_uid == uid)).first()
    stamp = now()
    if study is None:
        study = Study(
            patient_pk=patient.id,
            study_uid=uid,
            **study_values(ds),
            pool=pool,
            created_at=stamp,
            updated_at=stamp,
        )
        session.add(study)
        session.flush()
    else:
        if refresh:
            _refresh(study, study_values(ds))
        _learn_timezone(study, ds)
        study.updated_at = stamp
    return study


def _upsert_series(session: Session, study: Study, ds: Dataset, refresh: bool = False) -> Series:
    """``refresh``: as for ``_upsert_study`` (a re-sent copy with a corrected Modality kept
    its series listed under the old one, and ModalitiesInStudy with it)."""
    uid = str(ds.SeriesInstanceUID)
    series = session.scalars(select(Series).where(Series.series_uid == uid)).first()
    stamp = now()
    if series is None:
        series = Series(
            study_pk=study.id,
            series_uid=uid,
            **series_values(ds),
            created_at=stamp,
            updated_at=stamp,
        )
        session.add(series)
        session.flush()
    else:
        if refresh:
            _refresh(series, series_values(ds))
        _learn_timezone(series, ds)
        series.updated_at = stamp
    return series


@dataclass
class Outcome:
    """What recording did: 'stored', 'replaced', 'kept-existing', 'rejected-duplicate' or
    'conflict' (``reason`` says which UID)."""

    action: str
    obsolete_keys: list[str]
    series_pk: int | None = None
    reason: str = ""
    pool: str = ""
    """The pool the instance was filed into (its study's)."""


class ParentCache:
    """Series UID → (series row id, its study UID, patient ID, issuer), per process: most
    instances join a series already seen.

    A stale entry (series deleted meanwhile) makes the insert fail its foreign key, and the
    caller falls back to the full path, so the cache can never attach an instance wrongly;
    an instance naming another study or patient than the cached ones takes the full path
    too (``uid_conflict``). So does one that states a Timezone Offset From UTC while the
    series was remembered from an instance without one: the full path gives the series
    and study rows their first known offset (``_learn_timezone``), the fast path writes
    the instance row only.
    """

    def __init__(self, size: int = 20000) -> None:
        self.size = size
        #: series UID -> (row id, (study UID, patient ID, issuer, pool), offset known)
        self.series: dict[str, tuple[int, tuple[str, str, str, str], bool]] = {}

    @staticmethod
    def parents(ds: Dataset) -> tuple[str, str, str]:
        """What an instance says its series belongs to."""
        return (
            str(ds.StudyInstanceUID),
            text(ds, "PatientID", 64).strip(),
            text(ds, "IssuerOfPatientID", 64),
        )

    def lookup(self, ds: Dataset, pool: str) -> int | None:
        """The cached series row of this instance, if its study, patient and pool match (an
        instance received for another pool than its study's takes the full path)."""
        hit = self.series.get(str(ds.SeriesInstanceUID))
        if hit is None or hit[1] != (*self.parents(ds), pool):
            return None
        if not hit[2] and timezone_offset(ds):
            return None  # the series' first known offset: the full path records it
        return hit[0]

    def remember(self, ds: Dataset, pk: int, pool: str) -> None:
        """``pool``: the pool the series' study lives in. ``ds`` was just recorded on the
        full path: with an offset, its series (and study) row has one now."""
        if len(self.series) >= self.size:
            self.series.clear()
        known = bool(timezone_offset(ds))
        self.series[str(ds.SeriesInstanceUID)] = (pk, (*self.parents(ds), pool), known)

    def forget(self, series_uid: str) -> None:
        self.series.pop(series_uid, None)


def _instance_values(rec: InstanceRecord, series_pk: int) -> dict[str, Any]:
    ds = rec.dataset
    return dict(
        series_pk=series_pk,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=rec.transfer_syntax,
        instance_number=_integer(ds, "InstanceNumber"),
        rows=_integer(ds, "Rows"),
        columns=_integer(ds, "Columns"),
        frames=_integer(ds, "NumberOfFrames") or 1,
        lossy=rec.lossy,
        attrs=rec.attrs if rec.attrs is not None else display_attributes(ds),
        meta_key=rec.meta_key,
        pixel_key=rec.pixel_key,
        pixel_offset=rec.pixel_offset,
        size=rec.size,
        sha256=rec.sha256,
        pool=rec.pool,
        source_ae=rec.source_ae,
        received_at=now(),
    )


#: The insert of a known series' new instance (``server.index.known_series``).
INSERT_INSTANCE = insert(Instance)


def known_series_values(rec: InstanceRecord, series_pk: int) -> dict[str, Any]:
    """The instance row of a new instance of a known series (no ORM unit of work)."""
    return {"sop_instance_uid": str(rec.dataset.SOPInstanceUID), **_instance_values(rec, series_pk)}


def record_instance(
    session: Session, rec: InstanceRecord, duplicate_policy: str, refuse_conflicts: bool = False
) -> Outcome:
    """Insert the instance (and its parents) or apply the duplicate policy. Caller commits.

    An instance whose Study UID is archived under another patient, or whose Series UID
    under another study (``uid_conflict``), is recorded as a "uid-conflict" event and, with
    ``refuse_conflicts`` (config ``archive.uid_conflict = "refuse"``), not filed (action
    "conflict"); recovery never refuses, so an object already archived is never lost.
    """
    ds = rec.dataset
    sop_uid = str(ds.SOPInstanceUID)
    find = select(Instance).where(Instance.sop_instance_uid == sop_uid)
    if duplicate_policy == "replace":
        # The row is locked before the replace is decided (PostgreSQL; SQLite's BEGIN
        # IMMEDIATE serialises writers already). Under READ COMMITTED two copies of one SOP
        # Instance each loaded the same old row and each UPDATE wrote only the columns it
        # saw change: patient A's blob filed under patient B's series, an index sha256 that
        # matches neither blob, the old keys dropped twice and one new pair orphaned
        # (outside probe 31). Locked, the second copy sees the first one's committed row and
        # replaces it entirely (its keys become the obsolete ones). ``populate_existing``:
        # the row is taken as locked, never from the session's identity map.
        find = find.with_for_update().execution_options(populate_existing=True)
    existing = session.scalars(find).first()
    if existing is not None and duplicate_policy != "replace":
        action = "kept-existing" if duplicate_policy == "keep" else "rejected-duplicate"
        _event(session, f"duplicate-{action}", sop_uid, rec)
        return Outcome(action, [k for k in (rec.meta_key, rec.pixel_key) if k])
    ids = {
        "PatientID": text(ds, "PatientID", 64),
        "PatientName": text(ds, "PatientName", 324),
        "PatientBirthDate": text(ds, "PatientBirthDate", 8),
        "StudyInstanceUID": str(ds.StudyInstanceUID),
    }
    conflict = uid_conflict(session, ds, ids["PatientID"])
    if conflict is not None:
        _event(session, "uid-conflict", sop_uid, rec, conflict)
        if refuse_conflicts:
            keys = [k for k in (rec.meta_key, rec.pixel_key) if k]
            return Outcome("conflict", keys, None, conflict)
        log.warning(
            "instance %s filed into the archived study despite a UID conflict: %s",
            sop_uid,
            conflict.removesuffix(": not filed"),
        )
        series, study = _archived_parents(session, ds)
    else:
        patient = upsert_patient(session, ds, ids)
        replacing = existing is not None
        study = _upsert_study(session, patient, ds, rec.pool, refresh=replacing)
        series = _upsert_series(session, study, ds, refresh=replacing)
        if replacing and study.patient_pk == patient.id:
            refresh_patient(patient, ds)
    values = _instance_values(rec, series.id)
    if study.pool != rec.pool:
        # A study lives in one pool: an instance of it sent to another pool's AE joins it
        # there. Filed under the receiving pool, it was readable by users of that pool
        # while its study was not (outside probe).
        log.info(
            "instance %s joins study %s in pool %s (received for pool %s)",
            sop_uid, study.study_uid, study.pool, rec.pool,
        )  # fmt: skip
        values["pool"] = study.pool
    obsolete: list[str] = []
    if existing is None:
        session.add(Instance(sop_instance_uid=sop_uid, **values))
        action = "stored"
    else:
        obsolete = [k for k in (existing.meta_key, existing.pixel_key) if k]
        moved_from = existing.series_pk
        for key, value in values.items():
            setattr(existing, key, value)
        action = "replaced"
        _event(session, "duplicate-replaced", sop_uid, rec)
        if moved_from != series.id:
            _drop_if_empty(session, moved_from)
    _drop_superseded_placeholders(session, sop_uid)
    return Outcome(action, obsolete, series.id, pool=study.pool)


def _drop_superseded_placeholders(session: Session, sop_uid: str) -> None:
    """A valid copy supersedes an earlier refusal of the same instance: its placeholder
    goes, and so does the patient row it was listed under when nothing else is left there
    (the UNKNOWN entry of a copy cut off before its Patient ID, or a patient only the
    refusal named). That row stayed listed with no study and no entry (outside probe).
    Placeholders have no study or series rows of their own; the patient the valid copy
    was filed under has its study and stays."""
    patient_pks = set(
        session.scalars(
            delete(Placeholder)
            .where(Placeholder.sop_instance_uid == sop_uid)
            .returning(Placeholder.patient_pk)
        )
    )
    for patient_pk in sorted(patient_pks):
        try:
            # a savepoint: on PostgreSQL a refusal filed under the same patient by a
            # concurrent store fails the delete's foreign key once that store commits; the
            # row is then in use and stays, and this instance is recorded all the same
            with session.begin_nested():
                drop_patient_if_unused(session, patient_pk)
        except IntegrityError:
            log.info("patient row %s kept: a concurrent store filed an entry under it", patient_pk)


def _archived_parents(session: Session, ds: Dataset) -> tuple[Series, Study]:
    """Where an instance with a UID conflict is filed (``uid_conflict = "file"``): the
    archived series its Series UID names, else a series of the archived study its Study UID
    names. The patient and study its own header names were created first and left empty:
    a study listed with no series and no reason (outside probe 23)."""
    series = session.scalars(
        select(Series).where(Series.series_uid == str(ds.SeriesInstanceUID))
    ).first()
    if series is not None:
        series.updated_at = now()
        _learn_timezone(series, ds)
        _learn_timezone(series.study, ds)
        return series, series.study
    study = session.scalars(select(Study).where(Study.study_uid == str(ds.StudyInstanceUID))).one()
    _learn_timezone(study, ds)
    return _upsert_series(session, study, ds), study


def _drop_if_empty(session: Session, series_pk: int) -> None:
    """Remove a series (and then its study and patient) left without instances when a
    re-sent instance moved to another series: it stayed listed with 0 instances (outside
    probe 20). A study with other series, or one a share link names, stays."""
    session.flush()
    if session.scalars(select(Instance.id).where(Instance.series_pk == series_pk)).first():
        return
    old = session.get(Series, series_pk)
    if old is None:
        return
    study_pk, series_uid = old.study_pk, old.series_uid
    session.delete(old)
    forget_hidden(session, series_uids=[series_uid])
    session.flush()
    if session.scalars(select(Series.id).where(Series.study_pk == study_pk)).first():
        return
    study = session.get(Study, study_pk)
    if study is not None and not _shared(session, study.study_uid):
        patient_pk = study.patient_pk
        forget_hidden(session, study_uids=[study.study_uid])
        session.delete(study)
        session.flush()
        drop_patient_if_unused(session, patient_pk)


def forget_hidden(
    session: Session, *, study_uids: Sequence[str] = (), series_uids: Sequence[str] = ()
) -> None:
    """Users' hidden marks of removed studies/series go with them: the same UID received
    again later must not come back hidden."""
    if study_uids:
        session.execute(
            delete(HiddenItem).where(HiddenItem.level == "study", HiddenItem.uid.in_(study_uids))
        )
    if series_uids:
        session.execute(
            delete(HiddenItem).where(HiddenItem.level == "series", HiddenItem.uid.in_(series_uids))
        )


def drop_patient_if_unused(session: Session, patient_pk: int) -> None:
    """A patient left with no study and no placeholder goes too: nothing would list it."""
    if session.scalars(select(Study.id).where(Study.patient_pk == patient_pk)).first():
        return
    if session.scalars(select(Placeholder.id).where(Placeholder.patient_pk == patient_pk)).first():
        return
    patient = session.get(Patient, patient_pk)
    if patient is not None:
        session.delete(patient)


def _shared(session: Session, study_uid: str) -> bool:
    return (
        session.scalars(select(ShareLink.id).where(ShareLink.study_uid == study_uid)).first()
        is not None
    )


def record_placeholder(
    session: Session,
    *,
    ds: Dataset | None,
    ids: dict[str, str],
    status: int,
    reason: str,
    pool: str,
    source_ae: str,
) -> Placeholder:
    """Record a refused instance as 'non-conformant data' under its patient (without a
    Patient ID: its study's, or UNKNOWN when it names no study either).

    The same SOP Instance refused again updates its one entry, and files it where the new
    refusal says: a first copy cut off before its Patient ID was listed under UNKNOWN, a
    complete second copy refused for its pixel data stayed there, with its new study UID,
    under the wrong patient (outside probe 28). A copy that names neither patient nor
    study leaves an entry filed by an earlier, better copy where it is. A patient row left
    with nothing (an UNKNOWN entry) goes.
    """
    sop_uid = ids.get("SOPInstanceUID", "")[:64]
    existing = None
    if sop_uid:
        existing = session.scalars(
            select(Placeholder).where(Placeholder.sop_instance_uid == sop_uid)
        ).first()
    names_nothing = not (
        (ids.get("PatientID") or "").strip() or (ids.get("StudyInstanceUID") or "").strip()
    )
    if existing is not None and names_nothing:
        entry = existing  # filed as before: this copy knows less about its patient
    else:
        if ds is not None and "IssuerOfPatientID" not in ids:
            ids = {**ids, "IssuerOfPatientID": text(ds, "IssuerOfPatientID", 64)}
        # Not ``ds``: a refused data set's demographics never replace an archived patient's.
        patient = upsert_patient(session, None, ids)
        if existing is None:
            entry = Placeholder(patient_pk=patient.id)
            session.add(entry)
        else:
            entry = existing
            moved_from = entry.patient_pk
            entry.patient_pk = patient.id
            if moved_from != patient.id:
                session.flush()
                drop_patient_if_unused(session, moved_from)
        entry.study_uid = ids.get("StudyInstanceUID", "")[:64]
        entry.series_uid = ids.get("SeriesInstanceUID", "")[:64]
    entry.sop_instance_uid = sop_uid
    entry.sop_class_uid = ids.get("SOPClassUID", "")[:64] or (entry.sop_class_uid or "")
    entry.status = status
    entry.reason = reason[:2000]
    entry.pool = pool
    entry.source_ae = source_ae[:64]
    entry.received_at = now()
    return entry


def uid_conflict(session: Session, ds: Dataset, patient_id: str) -> str | None:
    """Why this instance cannot join the archived hierarchy its UIDs name, or None.

    UIDs are unique world-wide (PS3.5 9), so an archived Study UID under another Patient ID
    (or issuer), or a Series UID under another study, means one of the two senders is wrong
    (a copied header, a botched merge). Filing the instance by its UIDs would put one
    patient's images into another patient's study; filing it apart would give one UID two
    meanings in C-FIND and DICOMweb. A mature archive refuses it and says why.
    """
    study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    issuer = text(ds, "IssuerOfPatientID", 64)
    pid = patient_id.strip()
    row = session.execute(
        select(Patient.patient_id, Patient.issuer)
        .join(Study, Study.patient_pk == Patient.id)
        .where(Study.study_uid == study_uid)
    ).first()
    if row is not None and (row.patient_id, row.issuer) != (pid, issuer):
        return (
            f"Study Instance UID {study_uid} is archived under another patient (Patient ID "
            f"{row.patient_id!r}{f', issuer {row.issuer!r}' if row.issuer else ''}), not "
            f"{pid!r}: not filed"
        )
    owner = session.scalars(
        select(Study.study_uid)
        .join(Series, Series.study_pk == Study.id)
        .where(Series.series_uid == series_uid)
    ).first()
    if owner is not None and owner != study_uid:
        return (
            f"Series Instance UID {series_uid} is archived in another study ({owner}), "
            f"not in {study_uid}: not filed"
        )
    return None


def _event(
    session: Session, kind: str, sop_uid: str, rec: InstanceRecord, reason: str = ""
) -> None:
    detail = {"sop_instance_uid": sop_uid, "source_ae": rec.source_ae, "pool": rec.pool}
    if reason:
        detail["reason"] = reason
    session.add(Event(at=now(), kind=kind, detail=detail))
