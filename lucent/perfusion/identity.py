"""Patient and study attributes every result object copies from the perfusion source.

An archive files an object by (Patient ID, Issuer of Patient ID) and its Study UID: a
result object without the issuer is another patient's object in the source's study, which
an archive refuses (``[archive] uid_conflict = "refuse"``: 52 of 58 results refused, outside
probe) or files with a conflict warning. So every output (Secondary Capture, Parametric
Map, Enhanced SR) carries the same root-level attributes of the Patient, Clinical Trial
Subject, General Study, Patient Study and Clinical Trial Study modules (PS3.3 C.7.1.1,
C.7.1.3, C.7.2.1, C.7.2.2, C.7.2.3), copied element by element, values untouched. The
Parametric Map and the SR get them from highdicom too (``copy_patient_and_study_information``
copies the same modules); copying them again after construction makes the three kinds
identical also where highdicom formats a value.
"""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset

PATIENT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "TypeOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "SourcePatientGroupIdentificationSequence",
    "GroupOfPatientsIdentificationSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar",
    "PatientAlternativeCalendar",
    "PatientSex",
    "ReferencedPatientSequence",
    "QualityControlSubject",
    "StrainDescription",
    "StrainNomenclature",
    "StrainStockSequence",
    "StrainAdditionalInformation",
    "StrainCodeSequence",
    "GeneticModificationsSequence",
    "OtherPatientNames",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "ReferencedPatientPhotoSequence",
    "EthnicGroup",
    "EthnicGroupCodeSequence",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
"""Patient module (PS3.3 C.7.1.1), with the retired Other Patient IDs (0010,1000) that
older modalities still send."""

CLINICAL_TRIAL_SUBJECT = (
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "IssuerOfClinicalTrialProtocolID",
    "OtherClinicalTrialProtocolIDsSequence",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "IssuerOfClinicalTrialSiteID",
    "ClinicalTrialSubjectID",
    "IssuerOfClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "IssuerOfClinicalTrialSubjectReadingID",
    "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
)

GENERAL_STUDY = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "ReferencedStudySequence",
    "RequestingService",
    "RequestingServiceCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
)

PATIENT_STUDY = (
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientSizeCodeSequence",
    "PatientBodyMassIndex",
    "MeasuredAPDimension",
    "MeasuredLateralDimension",
    "PatientWeight",
    "MedicalAlerts",
    "Allergies",
    "Occupation",
    "SmokingStatus",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "LastMenstrualDate",
    "PatientSexNeutered",
    "ReasonForVisit",
    "ReasonForVisitCodeSequence",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "IssuerOfServiceEpisodeIDSequence",
    "PatientState",
)

CLINICAL_TRIAL_STUDY = (
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
    "LongitudinalTemporalOffsetFromEvent",
    "LongitudinalTemporalEventType",
    "ClinicalTrialTimePointTypeCodeSequence",
    "IssuerOfClinicalTrialTimePointID",
    "ConsentForClinicalTrialUseSequence",
)

COPIED = (
    *PATIENT,
    *CLINICAL_TRIAL_SUBJECT,
    *GENERAL_STUDY,
    *PATIENT_STUDY,
    *CLINICAL_TRIAL_STUDY,
)
"""Everything copied to every output (plus Specific Character Set, which says how the
copied text is encoded)."""

TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
"""Type 2 attributes of the Patient and General Study modules: present, empty when the
source has none (PS3.5 7.4.5)."""


def copy_identity(source: Dataset, target: Dataset) -> None:
    """Copy ``COPIED`` (and the character set) from ``source`` into ``target`` as they are;
    Type 2 ones the source lacks are made present and empty."""
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = copy.deepcopy(source["SpecificCharacterSet"].value)
    for key in COPIED:
        if key in source:
            target[key] = copy.deepcopy(source[key])
        elif key in TYPE2:
            setattr(target, key, "")
