"""Reading the index with C-FIND-like matching, shared by the API, QIDO-RS and the C-FIND SCP.

Matching follows PS3.4 C.2.2.2: single value, wildcard (``*``, ``?``), range (``A-B``,
``A-``, ``-B``) for dates, list of UIDs (``\\``-separated) and universal matching (empty).
Names can be matched case-insensitively (the FAQ: some PACS find "Schmidt" but not
"schmidt"; we offer both).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.index import folding
from server.index.models import Instance, Patient, Placeholder, Series, Study


@dataclass
class Filter:
    """Search keys; empty strings mean universal matching."""

    patient_name: str = ""
    name_case_insensitive: bool = True
    # Descriptions (LO) match case-insensitively for people using the API; DIMSE peers get
    # PS3.4 C.2.2.2.1: only PN values may match regardless of case.
    text_case_insensitive: bool = True
    patient_id: str = ""
    birth_date: str = ""
    study_date: str = ""
    study_time: str = ""
    modality: str = ""
    accession_number: str = ""
    description: str = ""
    referring_physician: str = ""
    study_uid: str = ""
    study_id: str = ""
    series_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    instance_number: str = ""
    pool: str = ""
    pools: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def match_text(
    column: InstrumentedAttribute[str] | ColumnElement[str], value: str, *, fold: bool = False
) -> ColumnElement[bool] | None:
    """Single-value or wildcard matching of a string attribute. Trailing spaces are padding
    in every text VR (PS3.5 6.2): "SP ID " is the Patient ID "SP ID" (the API found nothing,
    outside probe 46); leading ones are kept, significant in ST, LT and UT."""
    value = value.rstrip(" ")
    if value in ("", "*"):
        return None
    if fold:
        value = folding.fold_text(value)
        column = folding.folded(column)
    if "*" in value or "?" in value:
        return column.like(_like(value), escape="\\")
    return column == value


def match_uid_list(column: InstrumentedAttribute[str], value: str) -> ColumnElement[bool] | None:
    if not value:
        return None
    uids = [u.strip() for u in value.split("\\") if u.strip()]
    if not uids:  # "\\" or blanks only: a list of empty values matches everything
        return None
    return column.in_(uids) if len(uids) > 1 else column == uids[0]


def match_range(column: InstrumentedAttribute[str], value: str) -> ColumnElement[bool] | None:
    """DA/TM range matching; also accepts ISO dates with dashes (2024-01-31)."""
    if not value:
        return None
    value = value.strip()
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        return column == value.replace("-", "")
    if "-" in value:
        low, _, high = value.partition("-")
        low, high = low.replace(":", "").strip(), high.replace(":", "").strip()
        clauses = []
        if low:
            clauses.append(column >= low)
        if high:
            # '20240131' must include the whole day/time prefix: below the prefix's
            # successor. An entity with no value is in no range (PS3.4 C.2.2.2.5):
            # "-20231231" listed every study without a date.
            clauses.append(_up_to(column, high))
            clauses.append(column > "")
        return and_(*clauses) if clauses else None
    plain = value.replace(":", "")
    if plain.isdigit():
        # A TM of lower precision names the whole span: "0830" is 08:30:00-08:30:59.999
        # (dcmqrscp matches 083000); a full DA is the same as an exact match.
        return and_(column >= plain, _up_to(column, plain))
    return match_text(column, value)


def _up_to(column: Any, prefix: str) -> ColumnElement[bool]:
    """Values up to and including every one that starts with ``prefix`` ("0830" covers
    08:30:15.5): below the prefix's successor ("0831"), which orders the same under any
    collation for these digit strings and keeps the column's index usable. A U+FFFF
    sentinel sorted as nothing under a PostgreSQL en_US collation (outside probe), and
    COLLATE "C" around the column made PostgreSQL scan the whole table (review)."""
    successor = _successor(prefix)
    return column >= "" if successor is None else column < successor


def _successor(prefix: str) -> str | None:
    """The shortest digit string greater than every string starting with ``prefix``
    ("0859" -> "086", "083015.5" -> "083015.6"); None when there is none ("9999")."""
    chars = list(prefix)
    for i in range(len(chars) - 1, -1, -1):
        if chars[i].isdigit() and chars[i] != "9":
            return "".join(chars[:i]) + chr(ord(chars[i]) + 1)
    return None


def _name_clause(f: Filter) -> ColumnElement[bool] | None:
    """Patient's Name matching, the one code path of the C-FIND SCP, QIDO-RS and the API
    list routes: they differ only in ``name_case_insensitive`` (the API's default and
    QIDO-RS ``fuzzymatching``). The API compared the alphabetic group alone before, so
    "Yamada^Tarou=Δημήτρης^Γ" found "Yamada^Tarou=山田^太郎=やまだ^たろう" and "*=Nomatch*"
    every patient (outside probe 46)."""
    return match_pn(
        Patient.name,
        f.patient_name,
        fold=f.name_case_insensitive,
        prefix=f.name_case_insensitive,
    )


PN_COMPONENTS = 5
"""Components of a PN component group (PS3.5 6.2): at most four trailing delimiters."""


def pn_normalised(value: str) -> str:
    """A Person Name as matching compares it (PS3.5 6.2, 6.2.1): trailing spaces are
    padding, and trailing empty components and component groups "may be omitted", so
    "SMITH^JOHN^^^", "SMITH^JOHN=" and "SMITH^JOHN" are one name, and the pattern
    "SMITH^J*^^" is "SMITH^J*". A query with trailing delimiters found nothing on every
    channel before (outside probe 46)."""
    groups = [g.rstrip("^") for g in value.rstrip(" ").split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _pn_stored(column: InstrumentedAttribute[str] | ColumnElement[str]) -> ColumnElement[str]:
    """``pn_normalised`` of a stored PN, in SQL both back-ends know (``replace``,
    ``rtrim``): a name archived as "SMITH^JOHN^^" is found by "SMITH^JOHN" as well."""
    value: Any = column
    for _ in range(PN_COMPONENTS - 1):  # "A^^=B" -> "A^=B" -> "A=B"
        value = func.replace(value, "^=", "=", type_=String())
    return func.rtrim(value, "^=", type_=String())


def match_pn(
    column: InstrumentedAttribute[str] | ColumnElement[str],
    value: str,
    *,
    fold: bool = False,
    prefix: bool = False,
) -> ColumnElement[bool] | None:
    """PN matching per component group (PS3.4 C.2.2.2.1, PS3.5 6.2.1) of pattern and stored
    value, both normalised (``pn_normalised``).

    A pattern of one group matches the alphabetic group ("Yamada^Tarou" finds the stored
    "Yamada^Tarou=山田^太郎=やまだ^たろう"), and a non-ASCII one the ideographic or phonetic
    group too ("山田*"), as most archives match; a pattern naming groups ("=") matches the
    whole value ("*=山田*" the Japanese name only). ``fold`` matches regardless of case
    (``folding``), every group alike; ``prefix`` makes a plain word a prefix ("schmidt"
    finds "SCHMIDT^ANNA", as clinic users expect of the API)."""
    pattern = pn_normalised(value)
    if pattern in ("", "*"):
        return None
    if prefix and not any(c in pattern for c in "*?^="):
        pattern += "*"
    stored = _pn_stored(column)
    if fold:
        pattern = folding.fold_text(pattern)
        stored = folding.folded(stored)
    like = _like(pattern)
    wild = "*" in pattern or "?" in pattern
    whole = stored.like(like, escape="\\") if wild else stored == pattern
    if "=" in pattern:
        return whole
    groups = [whole, stored.like(like + "=%", escape="\\")]  # the alphabetic group
    if not pattern.isascii():  # the ideographic and phonetic groups
        groups += [
            stored.like("%=" + like + "=%", escape="\\"),
            stored.like("%=" + like, escape="\\"),
        ]
    return or_(*groups)


def _modality_clause(value: str) -> ColumnElement[bool]:
    """Modality / Modalities in Study: any listed value matches, each one by single value or
    wildcard matching (PS3.4 C.2.2.2.1, C.2.2.2.4); "C*" found nothing before."""
    mods = [m.strip() for m in value.replace(",", "\\").split("\\") if m.strip()]
    if not mods or "*" in mods:
        return Series.id.is_not(None)  # universal
    exact = [m for m in mods if "*" not in m and "?" not in m]
    clauses = [Series.modality.like(_like(m), escape="\\") for m in mods if m not in exact]
    if exact:
        clauses.append(Series.modality.in_(exact))
    return or_(*clauses)


def _clauses(f: Filter) -> list[ColumnElement[bool]]:
    candidates = [
        _name_clause(f),
        match_text(Patient.patient_id, f.patient_id),
        match_range(Patient.birth_date, f.birth_date),
        match_range(Study.study_date, f.study_date),
        match_range(Study.study_time, f.study_time),
        match_text(Study.accession_number, f.accession_number),
        match_text(Study.description, f.description, fold=f.text_case_insensitive),
        match_pn(Study.referring_physician, f.referring_physician, fold=True),
        match_uid_list(Study.study_uid, f.study_uid),
        match_text(Study.study_id, f.study_id),
        match_text(Study.pool, f.pool),
    ]
    if f.pools is not None:
        candidates.append(Study.pool.in_(f.pools))
    if f.modality:
        sub = select(Series.study_pk).where(_modality_clause(f.modality))
        candidates.append(Study.id.in_(sub))
    return [c for c in candidates if c is not None]


def _series_clauses(f: Filter) -> list[ColumnElement[bool]]:
    candidates = [
        match_uid_list(Series.series_uid, f.series_uid),
        match_text(Series.description, f.series_description, fold=f.text_case_insensitive),
    ]
    if f.modality:
        candidates.append(_modality_clause(f.modality))
    if f.series_number:
        try:
            candidates.append(Series.series_number == int(f.series_number))
        except ValueError:
            candidates.append(Series.id < 0)
    return [c for c in candidates if c is not None]


def _instance_clauses(f: Filter) -> list[ColumnElement[bool]]:
    candidates = [
        match_uid_list(Instance.sop_instance_uid, f.sop_instance_uid),
        match_uid_list(Instance.sop_class_uid, f.sop_class_uid),
    ]
    if f.instance_number:
        try:
            candidates.append(Instance.instance_number == int(f.instance_number))
        except ValueError:
            candidates.append(Instance.id < 0)
    return [c for c in candidates if c is not None]


_SERIES_KEYS = ("series_uid", "series_number", "series_description")
_INSTANCE_KEYS = ("sop_instance_uid", "sop_class_uid", "instance_number")


def _below(f: Filter, level: str) -> list[ColumnElement[bool]]:
    """Keys of a lower level select the parents holding a match (QIDO-RS relational
    matching, PS3.18 8.3.4.1): ``/studies?SeriesInstanceUID=X`` is the study of series X,
    as ``/studies?Modality=CT`` is the studies with a CT series. They were dropped, and
    every study answered."""
    series_keys = level == "STUDY" and any(getattr(f, k) for k in _SERIES_KEYS)
    instance_keys = level in ("STUDY", "SERIES") and any(getattr(f, k) for k in _INSTANCE_KEYS)
    if not (series_keys or instance_keys):
        return []
    if level == "SERIES":
        return [Series.id.in_(select(Instance.series_pk).where(*_instance_clauses(f)))]
    sub = select(Series.study_pk)
    where = _series_clauses(f) if series_keys else []
    if instance_keys:
        sub = sub.join(Instance, Instance.series_pk == Series.id)
        where += _instance_clauses(f)
    return [Study.id.in_(sub.where(*where))]


@dataclass
class StudyRow:
    study: Study
    patient: Patient
    modalities: list[str]
    series_count: int
    instance_count: int
    non_conformant: int


def _excluding(uids: Collection[str]) -> list[ColumnElement[bool]]:
    """Studies a caller has hidden, left out in SQL so pages stay full and totals right."""
    return [Study.study_uid.not_in(list(uids))] if uids else []


def studies(
    session: Session,
    f: Filter,
    offset: int = 0,
    limit: int = 100,
    exclude: Collection[str] = (),
) -> list[StudyRow]:
    stmt: Select[Any] = (
        select(Study, Patient)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_clauses(f), *_below(f, "STUDY"), *_excluding(exclude))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        .offset(offset)
        .limit(limit)
    )
    rows = session.execute(stmt).all()
    ids = [s.id for s, _ in rows]
    counts = _study_counts(session, ids)
    return [
        StudyRow(study, patient, *counts.get(study.id, ([], 0, 0, 0))) for study, patient in rows
    ]


def count_studies(session: Session, f: Filter, exclude: Collection[str] = ()) -> int:
    stmt = (
        select(func.count(Study.id))
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_clauses(f), *_below(f, "STUDY"), *_excluding(exclude))
    )
    return int(session.scalar(stmt) or 0)


def _study_counts(session: Session, ids: list[int]) -> dict[int, tuple[list[str], int, int, int]]:
    if not ids:
        return {}
    out: dict[int, tuple[list[str], int, int, int]] = {}
    series_rows = session.execute(
        select(Series.study_pk, Series.modality, func.count(Instance.id))
        .join(Instance, Instance.series_pk == Series.id, isouter=True)
        .where(Series.study_pk.in_(ids))
        .group_by(Series.id)
    ).all()
    for study_pk, modality, n in series_rows:
        mods, n_series, n_inst, nc = out.get(study_pk, ([], 0, 0, 0))
        if modality and modality not in mods:
            mods = [*mods, modality]
        out[study_pk] = (mods, n_series + 1, n_inst + int(n), nc)
    uid_by_pk = dict(
        session.execute(select(Study.id, Study.study_uid).where(Study.id.in_(ids))).tuples().all()
    )
    ph = session.execute(
        select(Placeholder.study_uid, func.count(Placeholder.id))
        .where(Placeholder.study_uid.in_(list(uid_by_pk.values())))
        .group_by(Placeholder.study_uid)
    ).all()
    pk_by_uid = {v: k for k, v in uid_by_pk.items()}
    for study_uid, n in ph:
        pk = pk_by_uid[study_uid]
        mods, n_series, n_inst, _ = out.get(pk, ([], 0, 0, 0))
        out[pk] = (mods, n_series, n_inst, int(n))
    return out


@dataclass
class PatientRow:
    patient: Patient
    study_count: int
    non_conformant: int


def _patient_clauses(f: Filter) -> list[Any]:
    """Where-clauses selecting the patients ``f`` matches (its study keys: patients with a
    matching study). Restricted to pools only, a patient known from refused data alone (a
    placeholder in one of them) is listed too: users with pool rights did not see it."""
    study_clauses = [c for c in _clauses(f) if c is not None]
    patient_only = Filter(
        patient_name=f.patient_name,
        name_case_insensitive=f.name_case_insensitive,
        patient_id=f.patient_id,
        birth_date=f.birth_date,
    )
    out = list(_clauses(patient_only))
    pools_only = Filter(pool=f.pool, pools=f.pools)
    pool_clauses = _clauses(pools_only)
    if len(study_clauses) > len(out):
        with_study = Patient.id.in_(
            select(Study.patient_pk)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(*study_clauses)
        )
        if pool_clauses and len(study_clauses) == len(out) + len(pool_clauses):
            refused_here = Patient.id.in_(
                select(Placeholder.patient_pk).where(*_placeholder_pool_clauses(pools_only))
            )
            out.append(or_(with_study, refused_here))
        else:
            out.append(with_study)
    return out


def _placeholder_pool_clauses(f: Filter) -> list[ColumnElement[bool]]:
    candidates = [match_text(Placeholder.pool, f.pool)]
    if f.pools is not None:
        candidates.append(Placeholder.pool.in_(f.pools))
    return [c for c in candidates if c is not None]


def count_patients(session: Session, f: Filter) -> int:
    return int(session.scalar(select(func.count(Patient.id)).where(*_patient_clauses(f))) or 0)


def patients(session: Session, f: Filter, offset: int = 0, limit: int = 100) -> list[PatientRow]:
    # Patient.id last: patients with the same name and ID (other issuers) keep their place
    # from page to page.
    stmt = (
        select(Patient)
        .where(*_patient_clauses(f))
        .order_by(Patient.name_folded, Patient.patient_id, Patient.id)
        .offset(offset)
        .limit(limit)
    )
    found = list(session.scalars(stmt))
    ids = [p.id for p in found]
    pools_only = Filter(pool=f.pool, pools=f.pools)  # counts of what the caller may see
    n_studies = dict(
        session.execute(
            select(Study.patient_pk, func.count(Study.id))
            .where(Study.patient_pk.in_(ids), *_clauses(pools_only))
            .group_by(Study.patient_pk)
        )
        .tuples()
        .all()
    )
    n_ph = dict(
        session.execute(
            select(Placeholder.patient_pk, func.count(Placeholder.id))
            .where(Placeholder.patient_pk.in_(ids), *_placeholder_pool_clauses(pools_only))
            .group_by(Placeholder.patient_pk)
        )
        .tuples()
        .all()
    )
    return [PatientRow(p, int(n_studies.get(p.id, 0)), int(n_ph.get(p.id, 0))) for p in found]


def series(session: Session, study_uid: str, f: Filter | None = None) -> list[tuple[Series, int]]:
    f = f or Filter()
    stmt = (
        select(Series, func.count(Instance.id))
        .join(Study, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id, isouter=True)
        .where(Study.study_uid == study_uid, *_series_clauses(f))
        .group_by(Series.id)
        .order_by(Series.series_number, Series.id)
    )
    return [(s, int(n)) for s, n in session.execute(stmt).all()]


def instances(session: Session, series_uid: str, f: Filter | None = None) -> list[Instance]:
    f = f or Filter()
    stmt = (
        select(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .where(Series.series_uid == series_uid, *_instance_clauses(f))
        .order_by(Instance.instance_number, Instance.id)
    )
    return list(session.scalars(stmt))


@dataclass
class Match:
    """One C-FIND / QIDO match at any level, with its parents."""

    patient: Patient
    study: Study | None = None
    series: Series | None = None
    instance: Instance | None = None
    counts: dict[str, int] = field(default_factory=dict)


def find(session: Session, level: str, f: Filter, limit: int = 10000) -> list[Match]:
    """Hierarchical matching for C-FIND and QIDO-RS at PATIENT/STUDY/SERIES/IMAGE level."""
    level = level.upper()
    if level == "PATIENT":
        # A patient known only from refused instances ("non-conformant data") has no SOP
        # Instance to retrieve: PS3.4 C.6.1.1 models patients that hold studies.
        return [
            Match(r.patient, counts={"studies": r.study_count})
            for r in patients(session, f, 0, limit)
            if r.study_count
        ]
    if level == "STUDY":
        return [
            Match(
                r.patient,
                r.study,
                counts={
                    "series": r.series_count,
                    "instances": r.instance_count,
                    "modalities": r.modalities,  # type: ignore[dict-item]
                },
            )
            for r in studies(session, f, 0, limit)
        ]
    base = (
        select(Series, Study, Patient)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_clauses(f), *_series_clauses(f))
    )
    if level == "SERIES":
        base = base.where(*_below(f, "SERIES"))
        rows = session.execute(base.order_by(Series.id).limit(limit)).all()
        ids = [s.id for s, _, _ in rows]
        n = dict(
            session.execute(
                select(Instance.series_pk, func.count(Instance.id))
                .where(Instance.series_pk.in_(ids))
                .group_by(Instance.series_pk)
            )
            .tuples()
            .all()
        )
        return [Match(p, st, se, counts={"instances": int(n.get(se.id, 0))}) for se, st, p in rows]
    if level in ("IMAGE", "INSTANCE"):
        stmt = (
            select(Instance, Series, Study, Patient)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .join(Patient, Study.patient_pk == Patient.id)
            .where(*_clauses(f), *_series_clauses(f), *_instance_clauses(f))
            .order_by(Instance.instance_number, Instance.id)
            .limit(limit)
        )
        return [Match(p, st, se, i) for i, se, st, p in session.execute(stmt).all()]
    raise ValueError(f"unknown query level {level!r}")


def instances_for(session: Session, level: str, f: Filter) -> list[Instance]:
    """Instances a C-MOVE/C-GET/WADO request selects (level keys must be given)."""
    stmt = (
        select(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_clauses(f), *_series_clauses(f), *_instance_clauses(f))
        .order_by(Series.series_number, Instance.instance_number, Instance.id)
    )
    return list(session.scalars(stmt))


#: Keys a refused instance's entry has no value for: set, they match no placeholder (a
#: search by study date or accession number listed every "non-conformant data" entry).
_NOT_ON_PLACEHOLDERS = (
    "study_date",
    "study_time",
    "modality",
    "accession_number",
    "description",
    "referring_physician",
    "study_id",
    "series_number",
    "series_description",
    "instance_number",
)


def _placeholder_select(f: Filter, what: Any) -> Select[Any]:
    stmt = select(what).join(Patient, Placeholder.patient_pk == Patient.id)
    if any(getattr(f, k) not in ("", "*") for k in _NOT_ON_PLACEHOLDERS):
        return stmt.where(false())
    clauses = [
        _name_clause(f),
        match_text(Patient.patient_id, f.patient_id),
        match_range(Patient.birth_date, f.birth_date),
        match_uid_list(Placeholder.study_uid, f.study_uid),  # type: ignore[arg-type]
        match_uid_list(Placeholder.series_uid, f.series_uid),  # type: ignore[arg-type]
        match_uid_list(Placeholder.sop_instance_uid, f.sop_instance_uid),  # type: ignore[arg-type]
        match_uid_list(Placeholder.sop_class_uid, f.sop_class_uid),  # type: ignore[arg-type]
        *_placeholder_pool_clauses(f),
    ]
    return stmt.where(*[c for c in clauses if c is not None])


def placeholders(session: Session, f: Filter, limit: int = 1000) -> list[Placeholder]:
    """Refused instances, newest first."""
    stmt = _placeholder_select(f, Placeholder)
    return list(session.scalars(stmt.order_by(Placeholder.received_at.desc()).limit(limit)))


def orphan_placeholders(session: Session, f: Filter, limit: int = 10000) -> list[Placeholder]:
    """The newest placeholder of each study that was never archived (one entry per study,
    grouped in SQL however many instances were refused), and every placeholder without a
    Study Instance UID on its own; newest first."""
    no_study = or_(Placeholder.study_uid.is_(None), Placeholder.study_uid == "")
    key = case((no_study, cast(Placeholder.id, String)), else_=Placeholder.study_uid)
    newest = (
        _placeholder_select(f, func.max(Placeholder.id))
        .where(~exists().where(Study.study_uid == Placeholder.study_uid))
        .group_by(key)
    )
    stmt = select(Placeholder).where(Placeholder.id.in_(newest))
    return list(session.scalars(stmt.order_by(Placeholder.id.desc()).limit(limit)))


def or_all(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*clauses)


def study_uids_of(session: Session, series_pks: list[int]) -> list[str]:
    """Study Instance UIDs of the given series (audit records of retrievals)."""
    if not series_pks:
        return []
    rows = session.execute(
        select(Study.study_uid)
        .join(Series, Series.study_pk == Study.id)
        .where(Series.id.in_(set(series_pks)))
        .distinct()
    )
    return [r[0] for r in rows]
