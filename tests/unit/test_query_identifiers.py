"""Matching keys read from a C-FIND/C-MOVE/C-GET identifier (server.dimse.identifiers)."""

from __future__ import annotations

import warnings

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pynetdicom.dsutils import decode, encode

from server.dimse import identifiers


def test_a_uid_list_too_long_for_its_vr_travels_as_un_and_still_matches() -> None:
    """PS3.5 6.2.2: 2000 Study UIDs (71 KB) exceed UI's 16-bit length in Explicit VR and
    travel as UN; str() of pydicom's bytes made the first and last UID match nothing while
    the C-MOVE reported Success (outside probe: 1998 of 2000 moved)."""
    uids = [f"1.2.826.0.1.3680043.8.498.17.2.{i}" for i in range(1, 2001)]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom says it writes the long value as UN
        received = decode(DicomBytesIO(encode(query, False, True)), False, True)
    assert received["StudyInstanceUID"].VR == "UN"
    assert identifiers.to_filter(received).study_uid.split("\\") == uids


def test_keys_below_the_query_level_do_not_filter() -> None:
    """A PATIENT-level C-FIND with StudyDate filtered patients and answered the key empty
    (outside probe; PS3.4 C.4.1.2.1 hierarchical search, dcmqrscp ignores it)."""
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "P*"
    query.StudyDate = "20240110"
    query.SeriesDescription = "Axial"
    f = identifiers.to_filter(query, level="PATIENT")
    assert (f.patient_id, f.study_date, f.series_description) == ("P*", "", "")
    query.QueryRetrieveLevel = "STUDY"
    query.Modality = "CT"  # a common stand-in for ModalitiesInStudy: still matched
    f = identifiers.to_filter(query, level="STUDY")
    assert (f.study_date, f.modality, f.series_description) == ("20240110", "CT", "")
    assert identifiers.to_filter(query).series_description == "Axial"  # retrieve: unchanged
