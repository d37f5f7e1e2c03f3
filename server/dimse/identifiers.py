"""C-FIND / C-MOVE / C-GET identifiers ↔ index filters and match responses (PS3.4 C.4, C.6)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from server.index.queries import Filter, Match

# Identifier keyword -> Filter field (matching keys we support).
_MATCH_KEYS: dict[str, str] = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "PatientBirthDate": "birth_date",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "AccessionNumber": "accession_number",
    "StudyDescription": "description",
    "ReferringPhysicianName": "referring_physician",
    "StudyInstanceUID": "study_uid",
    "StudyID": "study_id",
    "ModalitiesInStudy": "modality",
    "Modality": "modality",
    "SeriesInstanceUID": "series_uid",
    "SeriesNumber": "series_number",
    "SeriesDescription": "series_description",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "InstanceNumber": "instance_number",
}

#: The level each matching key belongs to (PS3.4 C.6.1.1, C.6.2.1); patient keys sit at
#: STUDY level in the Study Root model, which ``_LEVELS`` order covers.
_KEY_LEVEL: dict[str, str] = {
    **dict.fromkeys(("PatientName", "PatientID", "PatientBirthDate"), "PATIENT"),
    **dict.fromkeys(
        (
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyDescription",
            "ReferringPhysicianName",
            "StudyInstanceUID",
            "StudyID",
            "ModalitiesInStudy",
        ),
        "STUDY",
    ),  # fmt: skip
    **dict.fromkeys(
        ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription"), "SERIES"
    ),
    **dict.fromkeys(("SOPInstanceUID", "SOPClassUID", "InstanceNumber"), "IMAGE"),
}

UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def _value(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        # A value too long for its VR's 16-bit length travels as UN (PS3.5 6.2.2: a list
        # of 2000 Study UIDs is 71 KB), which pydicom leaves as bytes: str() of them gave
        # "b'1.2...\\...'", and the first and last UID of the list matched nothing.
        return value.decode("ascii", "replace").strip("\0 ")
    if type(value).__name__ == "MultiValue" or isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def to_filter(
    identifier: Dataset,
    *,
    case_insensitive_names: bool = False,
    case_insensitive_text: bool = True,
    level: str = "",
) -> Filter:
    """Matching keys of an identifier as a Filter (empty values match everything).

    DICOM PN matching is case-sensitive unless the SCU asks otherwise; we default to that
    for DIMSE peers and offer case-insensitive matching through the API. Other text (LO
    descriptions) is case-sensitive for DIMSE peers (PS3.4 C.2.2.2.1), who pass
    ``case_insensitive_text=False``; QIDO-RS keeps its case-insensitive descriptions.
    """
    f = Filter(
        name_case_insensitive=case_insensitive_names, text_case_insensitive=case_insensitive_text
    )
    for keyword, attr in _MATCH_KEYS.items():
        if level and _below(keyword, level):
            continue
        if keyword in identifier:
            value = _value(identifier, keyword)
            if value and value != "*":
                setattr(f, attr, value)
    return f


def _below(keyword: str, level: str) -> bool:
    """A key of a level below the query's: a hierarchical C-FIND does not match on it
    (PS3.4 C.4.1.2.1; relational queries are not negotiated). A PATIENT query with a
    StudyDate filtered patients and answered the key empty, so the caller could not tell
    why patients were missing (outside probe; dcmqrscp ignores it). Modality at STUDY level
    stays a match on the study's series, as many SCUs send it for ModalitiesInStudy."""
    own = _KEY_LEVEL.get(keyword, "")
    if not own or level not in _LEVELS or (keyword == "Modality" and level == "STUDY"):
        return False
    return _LEVELS.index(own) > _LEVELS.index(level)


def level_of(identifier: Dataset) -> str:
    return _value(identifier, "QueryRetrieveLevel").upper()


_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


def _keys_above(level: str, model_is_patient_root: bool) -> list[str]:
    """Unique keys of the levels above ``level`` in the information model (PS3.4 C.6.1/C.6.2)."""
    top = 0 if model_is_patient_root else 1
    return [UNIQUE_KEY[lv] for lv in _LEVELS[top : _LEVELS.index(level)]]


def _single_value(value: str) -> bool:
    return bool(value) and not any(c in value for c in "*?\\")


def check_find_identifier(identifier: Dataset, model_is_patient_root: bool) -> str | None:
    """Why a C-FIND identifier is not a hierarchical query (None when it is).

    We do not negotiate relational queries, so each unique key above the query level must be
    present with a single value (PS3.4 C.2.2.1.1, C.4.1.2.1, C.4.1.3.1.1); a Patient Root
    STUDY query without Patient ID, or a SERIES query without Study Instance UID, is refused
    with A900 instead of being answered as a relational search across the whole archive.
    """
    return _hierarchy_problem(identifier, model_is_patient_root)


def _hierarchy_problem(identifier: Dataset, model_is_patient_root: bool) -> str | None:
    """A level the information model lacks, or a unique key above the level that is not
    one single value (the part C-FIND, C-MOVE and C-GET identifiers share)."""
    level = level_of(identifier)
    if level not in UNIQUE_KEY or (level == "PATIENT" and not model_is_patient_root):
        return f"QueryRetrieveLevel '{level}' is not valid for this information model"
    for keyword in _keys_above(level, model_is_patient_root):
        if not _single_value(_value(identifier, keyword)):
            return f"{keyword} (single value) is required at {level} level"
    return None


def check_retrieve_identifier(identifier: Dataset, model_is_patient_root: bool) -> str | None:
    """Why a C-MOVE/C-GET identifier is not acceptable (None when it is).

    PS3.4 C.4.2.1.4.1: the unique key of the retrieve level (one value or a list of UIDs)
    and, as single values, the unique keys of every level above it.
    """
    problem = _hierarchy_problem(identifier, model_is_patient_root)
    if problem:
        return problem
    level = level_of(identifier)
    value = _value(identifier, UNIQUE_KEY[level])
    if not value.strip("\\ ") or "*" in value or "?" in value:
        return f"{UNIQUE_KEY[level]} is required at {level} level"
    return None


def _timezone_offset(m: Match) -> str:
    """Timezone Offset From UTC (0008,0201) of a match, at its own level: an instance's own
    (its display attributes), else its series'; a series' or a study's own column; ''
    when unknown (rows archived before migration 0014, data sets without one). PS3.18
    Tables 10.6.3-3..5, PS3.4 C.6.1.1."""
    if m.instance is not None and (own := (m.instance.attrs or {}).get("TimezoneOffsetFromUTC")):
        return str(own)
    row = m.series if m.series is not None else m.study
    return row.timezone_offset if row is not None else ""


def _getters() -> dict[str, Callable[[Match], Any]]:
    def st(attr: str) -> Callable[[Match], Any]:
        return lambda m: getattr(m.study, attr) if m.study else ""

    def se(attr: str) -> Callable[[Match], Any]:
        return lambda m: getattr(m.series, attr) if m.series else ""

    def inst(attr: str) -> Callable[[Match], Any]:
        return lambda m: getattr(m.instance, attr) if m.instance else ""

    return {
        "PatientName": lambda m: m.patient.name,
        "PatientID": lambda m: m.patient.patient_id,
        "PatientBirthDate": lambda m: m.patient.birth_date,
        "PatientSex": lambda m: m.patient.sex,
        "IssuerOfPatientID": lambda m: m.patient.issuer,
        "NumberOfPatientRelatedStudies": lambda m: m.counts.get("studies", ""),
        "StudyInstanceUID": st("study_uid"),
        "StudyDate": st("study_date"),
        "StudyTime": st("study_time"),
        "StudyDescription": st("description"),
        "AccessionNumber": st("accession_number"),
        "ReferringPhysicianName": st("referring_physician"),
        "RequestingService": st("requesting_service"),
        "StudyID": st("study_id"),
        "TimezoneOffsetFromUTC": _timezone_offset,
        "ModalitiesInStudy": lambda m: m.counts.get("modalities", ""),
        "NumberOfStudyRelatedSeries": lambda m: m.counts.get("series", ""),
        "NumberOfStudyRelatedInstances": lambda m: (
            m.counts.get("instances", "") if m.series is None else ""
        ),
        "SeriesInstanceUID": se("series_uid"),
        "Modality": se("modality"),
        "SeriesNumber": lambda m: m.series.series_number if m.series else "",
        "SeriesDescription": se("description"),
        "BodyPartExamined": se("body_part"),
        "NumberOfSeriesRelatedInstances": lambda m: (
            m.counts.get("instances", "") if m.series is not None else ""
        ),
        "SOPInstanceUID": inst("sop_instance_uid"),
        "SOPClassUID": inst("sop_class_uid"),
        "InstanceNumber": lambda m: m.instance.instance_number if m.instance else "",
        "Rows": lambda m: m.instance.rows if m.instance else "",
        "Columns": lambda m: m.instance.columns if m.instance else "",
        "NumberOfFrames": lambda m: m.instance.frames if m.instance else "",
        "InstanceAvailability": lambda m: "ONLINE",
    }


GETTERS = _getters()


# Keys that never carry a matching value: the level, the character set, and attributes the
# SCP fills in or computes (PS3.4 C.6.1.1.2-C.6.1.1.5: return keys only).
_RETURN_ONLY = frozenset(
    {
        "QueryRetrieveLevel",
        "SpecificCharacterSet",
        "RetrieveAETitle",
        "InstanceAvailability",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    }
)


def _value_matches(pattern: str, value: Any) -> bool:
    """Single value or wildcard matching of one answer value (PS3.4 C.2.2.2.1, C.2.2.2.4)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return False
    if "*" in pattern or "?" in pattern:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, text, re.DOTALL) is not None
    return text == pattern


def extra_matching(identifier: Dataset) -> tuple[Callable[[Match], bool], list[str]]:
    """Matching keys the index query does not apply: a check on each match for those whose
    value we keep (Patient's Sex, Body Part Examined...), and the names of those we cannot
    match at all. Ignoring them answered "PatientSex=F" with every patient; the SCP must
    either match or say so with Pending FF01 (PS3.4 C.4.1.1.4, Table C.4-1)."""
    checks: dict[str, str] = {}
    unsupported: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _MATCH_KEYS or keyword in _RETURN_ONLY:
            continue
        if elem.VR == "SQ":  # sequence matching (C.2.2.2.6) is not supported
            items = elem.value or []
            if any(e.VR == "SQ" or e.value not in (None, "", b"") for i in items for e in i):
                unsupported.append(keyword)
            continue
        value = _value(identifier, keyword)
        if value in ("", "*"):
            continue
        if keyword in GETTERS:
            checks[keyword] = value
        else:
            unsupported.append(keyword)

    def keep(match: Match) -> bool:
        return all(_value_matches(v, GETTERS[k](match)) for k, v in checks.items())

    return keep, unsupported


def response(identifier: Dataset, match: Match, retrieve_ae: str) -> Dataset:
    """Answer every key the SCU asked for; keys we do not keep are returned empty."""
    out = Dataset()
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword == "SpecificCharacterSet":
            continue
        if keyword == "QueryRetrieveLevel":
            out.QueryRetrieveLevel = level_of(identifier)
            continue
        if keyword == "RetrieveAETitle":
            out.RetrieveAETitle = retrieve_ae
            continue
        getter = GETTERS.get(keyword)
        value = getter(match) if getter else None
        if value in (None, ""):
            if elem.VR == "SQ":
                setattr(out, keyword, [])
            else:
                setattr(out, keyword, None)
            continue
        if keyword == "ModalitiesInStudy" and isinstance(value, list):
            value = value or None
        setattr(out, keyword, value)
    charset = _answer_charset(identifier, out)
    if charset:
        out.SpecificCharacterSet = charset
    return out


_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def _answer_charset(identifier: Dataset, answer: Dataset) -> str | None:
    """The Specific Character Set of an answer (PS3.4 C.4.1.1.3.2): absent when every value
    is in the default repertoire, the query's own single-byte set when the values fit in it
    (a Latin-1 SCU reads Latin-1 answers), UTF-8 (ISO_IR 192) otherwise. We always sent
    ISO_IR 192, which SCUs limited to the character set they asked in cannot display."""
    texts = []
    for elem in answer:
        if elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            texts.extend(str(v) for v in values)
    if all(t.isascii() for t in texts):
        return None
    asked = identifier.get("SpecificCharacterSet", "")
    name = asked.strip() if isinstance(asked, str) else ""
    single_byte = not name.startswith("ISO 2022") and name not in ("", "ISO_IR 6", "ISO_IR 192")
    if name in python_encoding and single_byte:
        try:
            for text in texts:
                text.encode(python_encoding[name])
        except UnicodeEncodeError:
            return "ISO_IR 192"
        return name
    return "ISO_IR 192"
