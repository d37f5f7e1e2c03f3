"""QIDO-RS includefield (PS3.18 8.3.4.3) and the return attributes the index does not hold.

``includefield=SliceThickness`` used to answer ``{"vr": "DS"}`` with no Value although the
instance has one: a key without an index column was returned empty, which reads as "this
instance has no Slice Thickness". At instance level the value now comes from the index's
display attributes or, for the rest, from the archived data set (read only when such a key
is asked for, so a plain search stays an index query). At series level a patient, study or
series attribute (SERIES_LEVEL: Series Date, Manufacturer, Protocol Name...) comes from one
instance of the series, which holds the series' values (PS3.3 C.7.3.1, C.7.5.1); they were
left out silently, and ``includefield=all`` gave 14 attributes (outside probe 57). What a
level cannot answer (an instance attribute at series level; at study level, where no one
data set holds the value, what the index does not keep) is left out and named in a
Warning (see :func:`unsupported`). A name that is no DICOM attribute is 400 (it was dropped
silently); ``includefield=all`` adds what we have: the indexed attributes of the level, at
series level the SERIES_LEVEL attributes of an instance of the series, and at instance
level the whole data set but its bulk data.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import HTTPException
from pydicom.datadict import dictionary_VM, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from server.dimse import identifiers
from server.index.queries import Match

#: Indexed attributes ``includefield=all`` adds at each level (values the index keeps).
ALL: dict[str, tuple[str, ...]] = {
    "STUDY": ("PatientSex", "IssuerOfPatientID", "RequestingService"),
    "SERIES": ("PatientSex", "IssuerOfPatientID", "BodyPartExamined"),
    "IMAGE": ("PatientSex", "IssuerOfPatientID", "BodyPartExamined", "Modality"),
}

#: Patient-level attributes (PS3.3 C.7.1.1 Patient, C.7.1.3 Clinical Trial Subject).
_PATIENT_LEVEL = """
PatientName PatientID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence TypeOfPatientID
PatientBirthDate PatientBirthTime PatientSex OtherPatientIDsSequence OtherPatientNames
EthnicGroup PatientComments PatientSpeciesDescription PatientSpeciesCodeSequence
PatientBreedDescription PatientBreedCodeSequence BreedRegistrationSequence ResponsiblePerson
ResponsiblePersonRole ResponsibleOrganization PatientIdentityRemoved DeidentificationMethod
DeidentificationMethodCodeSequence QualityControlSubject StrainDescription StrainNomenclature
ClinicalTrialSponsorName ClinicalTrialProtocolID ClinicalTrialProtocolName ClinicalTrialSiteID
ClinicalTrialSiteName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
"""
#: Study-level attributes (C.7.2.1 General Study, C.7.2.2 Patient Study, C.7.2.3 Clinical
#: Trial Study).
_STUDY_LEVEL = """
StudyInstanceUID StudyDate StudyTime ReferringPhysicianName
ReferringPhysicianIdentificationSequence ConsultingPhysicianName StudyID AccessionNumber
IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence NameOfPhysiciansReadingStudy
PhysiciansReadingStudyIdentificationSequence RequestingService RequestingServiceCodeSequence
ReferencedStudySequence ProcedureCodeSequence ReasonForPerformedProcedureCodeSequence
AdmittingDiagnosesDescription AdmittingDiagnosesCodeSequence PatientAge PatientSize
PatientWeight PatientSizeCodeSequence PatientBodyMassIndex MeasuredAPDimension
MeasuredLateralDimension MedicalAlerts Allergies SmokingStatus PregnancyStatus
LastMenstrualDate PatientState Occupation AdditionalPatientHistory AdmissionID
IssuerOfAdmissionIDSequence ServiceEpisodeID IssuerOfServiceEpisodeIDSequence
ServiceEpisodeDescription PatientSexNeutered ReasonForVisit ReasonForVisitCodeSequence
ClinicalTrialTimePointID ClinicalTrialTimePointDescription
"""
#: Series-level attributes (C.7.3.1 General Series, C.7.5.1 General Equipment, C.7.4.1
#: Frame of Reference, C.7.3.2 Clinical Trial Series).
_SERIES_LEVEL = """
Modality SeriesInstanceUID SeriesNumber Laterality SeriesDate SeriesTime
PerformingPhysicianName PerformingPhysicianIdentificationSequence ProtocolName
SeriesDescription SeriesDescriptionCodeSequence OperatorsName OperatorIdentificationSequence
ReferencedPerformedProcedureStepSequence RelatedSeriesSequence BodyPartExamined
PatientPosition SmallestPixelValueInSeries LargestPixelValueInSeries RequestAttributesSequence
PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime
PerformedProcedureStepEndDate PerformedProcedureStepEndTime PerformedProcedureStepDescription
PerformedProtocolCodeSequence CommentsOnThePerformedProcedureStep AnatomicalOrientationType
TreatmentSessionUID Manufacturer InstitutionName InstitutionAddress StationName
InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence ManufacturerModelName
ManufacturerDeviceClassUID DeviceSerialNumber DeviceUID SoftwareVersions GantryID UDISequence
SpatialResolution DateOfLastCalibration TimeOfLastCalibration FrameOfReferenceUID
PositionReferenceIndicator ClinicalTrialCoordinatingCenterName ClinicalTrialSeriesID
ClinicalTrialSeriesDescription
"""
#: What a series answer may take from one instance of the series: the attributes all
#: instances of a series share, the series' own and its study's and patient's.
SERIES_LEVEL = frozenset((_PATIENT_LEVEL + _STUDY_LEVEL + _SERIES_LEVEL).split())
#: The attributes of a study and its patient (a study answer gives the indexed ones).
STUDY_LEVEL = frozenset((_PATIENT_LEVEL + _STUDY_LEVEL).split())

#: Values never copied into a search answer: bulk data (PS3.18 8.3.4.3 leaves it out).
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def keyword(param: str) -> str | None:
    """The keyword of an attribute named by keyword or by tag (00100010, PS3.18
    8.3.4.1); None when it names no DICOM attribute."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", param):
        return keyword_for_tag(int(param, 16)) or None
    return param if tag_for_keyword(param) is not None else None


def parse(values: Iterable[str]) -> tuple[list[str], bool]:
    """The keywords the includefield values name (comma-separated, repeatable) and whether
    ``all`` was among them; 400 for a name that is no DICOM attribute. Sequence paths
    (``0040A730.0040A160``) name their top-level sequence."""
    names: list[str] = []
    everything = False
    for value in values:
        for field in value.split(","):
            field = field.strip()
            if not field:
                continue
            if field.lower() == "all":
                everything = True
                continue
            parts = [keyword(p) for p in field.split(".")]
            if not all(parts):
                raise HTTPException(400, f"includefield: {field[:64]} is not a DICOM attribute")
            names.append(str(parts[0]))
    return names, everything


def unsupported(level: str, included: Iterable[str], defaults: Iterable[str]) -> list[str]:
    """The included attributes ``level`` cannot answer, for a Warning (PS3.18 8.3.4.3;
    they were left out silently): at study level what the index does not keep, at series
    level what is no patient, study or series attribute (an instance's own, such as Slice
    Thickness, differs from instance to instance). Instance level answers any attribute."""
    level = level.upper()
    if level == "STUDY":
        known = STUDY_LEVEL & set(identifiers.GETTERS)
    elif level == "SERIES":
        known = SERIES_LEVEL
    else:
        return []
    known = known | set(defaults) | set(ALL[level])
    return [kw for kw in dict.fromkeys(included) if kw not in known]


def _from_attrs(kw: str, value: Any) -> Any:
    """An index display attribute as a data element value (single-valued ones unwrapped)."""
    if isinstance(value, list) and dictionary_VM(kw) == "1":
        return value[0] if value else None
    return value


def complete(
    ds: Dataset,
    match: Match,
    included: Iterable[str],
    everything: bool,
    read: Callable[[], Dataset | None],
    required: Iterable[str] = (),
) -> None:
    """Fill in the values of ``ds`` (one answer) the index getters could not give.

    Default return keys (``required``) we do not know stay zero-length (PS3.18 Tables
    10.6.3-3..5: type 2 semantics); included ones are filled from the instance or left out.
    ``read`` gives the archived data set: of the instance at instance level, of one
    instance of the series at series level (only its SERIES_LEVEL attributes are used)."""
    wanted = set(included)
    keep_empty = set(required)
    series = match.instance is None and match.series is not None
    source: Dataset | None = None
    loaded = False

    def data_set() -> Dataset | None:
        nonlocal source, loaded
        if not loaded:
            source, loaded = read(), True
        return source

    for elem in list(ds):
        kw = elem.keyword
        if not kw or elem.value not in (None, "", []) or kw in identifiers.GETTERS:
            continue
        value = None
        if match.instance is not None:
            attrs = match.instance.attrs or {}
            if kw in attrs:
                value = _from_attrs(kw, attrs[kw])
            elif kw in wanted and (full := data_set()) is not None and kw in full:
                ds[elem.tag] = full[elem.tag]
                continue
        elif (
            series
            and kw in SERIES_LEVEL
            and (kw in wanted or everything)
            and (full := data_set()) is not None
            and kw in full
            and not full[kw].is_empty
        ):
            ds[elem.tag] = full[elem.tag]
            continue
        if value not in (None, "", []):
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                setattr(ds, kw, value)
                continue
        if kw in wanted and kw not in keep_empty:
            del ds[elem.tag]
    if not everything or (match.instance is None and not series):
        return
    if (full := data_set()) is None:
        return
    for elem in full:
        if elem.tag.group == 0x0002 or elem.tag.is_private or elem.VR in _BULK_VRS:
            continue
        if series and elem.keyword not in SERIES_LEVEL:
            continue  # an instance's own values are no series' values
        if elem.tag not in ds:
            ds[elem.tag] = elem
