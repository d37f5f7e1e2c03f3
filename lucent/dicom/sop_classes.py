"""Storage SOP classes the Store SCP accepts (Conformance Table 1) and viewable classes (Table 2).

``has_pixels`` says whether instances of the class must carry the Image Pixel module, which
validation before import checks (Conformance 4.1.3.2). RT Dose is listed as non-image: a dose
object may carry only DVHs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AllStoragePresentationContexts


@dataclass(frozen=True, slots=True)
class SopClass:
    uid: str
    name: str
    has_pixels: bool


TABLE_1: tuple[SopClass, ...] = (
    SopClass("1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.1.1", "Digital X-Ray Image Storage - For Presentation", True),
    SopClass("1.2.840.10008.5.1.4.1.1.1.1.1", "Digital X-Ray Image Storage - For Processing", True),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.1.2",
        "Digital Mammography X-Ray Image Storage - For Presentation",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.1.2.1",
        "Digital Mammography X-Ray Image Storage - For Processing",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.1.3",
        "Digital Intra-Oral X-Ray Image Storage - For Presentation",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.1.3.1",
        "Digital Intra-Oral X-Ray Image Storage - For Processing",
        True,
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.3.1", "Ultrasound Multi-frame Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.4.2", "MR Spectroscopy Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.4.3", "Enhanced MR Color Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.6.2", "Enhanced US Volume Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage", True),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.7.1",
        "Multi-frame Single Bit Secondary Capture Image Storage",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
        True,
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.7.4",
        "Multi-frame True Color Secondary Capture Image Storage",
        True,
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.9.1.1", "12-lead ECG Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.1.2", "General ECG Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.1.3", "Ambulatory ECG Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.2.1", "Hemodynamic Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.3.1", "Cardiac Electrophysiology Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.4.1", "Basic Voice Audio Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.4.2", "General Audio Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.5.1", "Arterial Pulse Waveform Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.9.6.1", "Respiratory Waveform Storage", False),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State Storage", False
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.11.2", "Color Softcopy Presentation State Storage", False),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.11.3", "Pseudo-Color Softcopy Presentation State Storage", False
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.11.4", "Blending Softcopy Presentation State Storage", False),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.11.5",
        "XA/XRF Grayscale Softcopy Presentation State Storage",
        False,
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.12.1", "X-Ray Angiographic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.12.1.1", "Enhanced XA Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.12.2", "X-Ray Radiofluoroscopic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.12.2.1", "Enhanced XRF Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.13.1.1", "X-Ray 3D Angiographic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.13.1.2", "X-Ray 3D Craniofacial Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.13.1.3", "Breast Tomosynthesis Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.66", "Raw Data Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.66.1", "Spatial Registration Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.66.2", "Spatial Fiducials Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.66.3", "Deformable Spatial Registration Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.66.5", "Surface Segmentation Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.67", "Real World Value Mapping Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.1", "VL Endoscopic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.1.1", "Video Endoscopic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.2", "VL Microscopic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.2.1", "Video Microscopic Image Storage", True),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.77.1.3", "VL Slide-Coordinates Microscopic Image Storage", True
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.4", "VL Photographic Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.4.1", "Video Photographic Image Storage", True),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.77.1.5.1", "Ophthalmic Photography 8 Bit Image Storage", True
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.77.1.5.2", "Ophthalmic Photography 16 Bit Image Storage", True
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.5.3", "Stereometric Relationship Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.5.4", "Ophthalmic Tomography Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.77.1.6", "VL Whole Slide Microscopy Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.78.1", "Lensometry Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.2", "Autorefraction Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.3", "Keratometry Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.4", "Subjective Refraction Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.5", "Visual Acuity Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.6", "Spectacle Prescription Report Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.7", "Ophthalmic Axial Measurements Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.78.8", "Intraocular Lens Calculations Storage", False),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.79.1", "Macular Grid Thickness and Volume Report Storage", False
    ),
    SopClass(
        "1.2.840.10008.5.1.4.1.1.80.1",
        "Ophthalmic Visual Field Static Perimetry Measurements Storage",
        False,
    ),
    SopClass("1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.40", "Procedure Log Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.50", "Mammography CAD SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.65", "Chest CAD SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.67", "X-Ray Radiation Dose SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.69", "Colon CAD SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.88.70", "Implantation Plan SR Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.104.2", "Encapsulated CDA Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.128", "Positron Emission Tomography Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.130", "Enhanced PET Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.131", "Basic Structured Display Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.1", "RT Image Storage", True),
    SopClass("1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.4", "RT Beams Treatment Record Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.5", "RT Plan Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.6", "RT Brachy Treatment Record Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.7", "RT Treatment Summary Record Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.8", "RT Ion Plan Storage", False),
    SopClass("1.2.840.10008.5.1.4.1.1.481.9", "RT Ion Beams Treatment Record Storage", False),
    SopClass("1.2.840.10008.5.1.4.43.1", "Generic Implant Template Storage", False),
    SopClass("1.2.840.10008.5.1.4.44.1", "Implant Assembly Template Storage", False),
    SopClass("1.2.840.10008.5.1.4.45.1", "Implant Template Group Storage", False),
)

BY_UID: dict[str, SopClass] = {c.uid: c for c in TABLE_1}

# Conformance Table 2: classes the workstation can display.
VIEWABLE: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.2",
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.4.1",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.12.1",
        "1.2.840.10008.5.1.4.1.1.12.2",
        "1.2.840.10008.5.1.4.1.1.88.11",
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.840.10008.5.1.4.1.1.128",
        "1.2.840.10008.5.1.4.1.1.104.1",
    }
)


#: The Modality (0008,0060) an IOD's General Series module fixes (PS3.3 enumerated values)
#: for the classes where it has exactly one: an "MR" image labelled CT Image Storage does not
#: match its SOP class (PS3.4 B.2.3: A900). Classes whose Modality varies (DX, SC, SR,
#: presentation states) are not listed.
IOD_MODALITY: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.3.1": "US",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR",
    "1.2.840.10008.5.1.4.1.1.4.3": "MR",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.6.2": "US",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "SM",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.481.1": "RTIMAGE",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
}


def _accepted_storage_uids() -> tuple[str, ...]:
    """Table 1 first, then every other storage class of the standard that pynetdicom knows.

    Table 1 is the reference product's list; a mature archive also takes what newer modalities
    and other software send, and must take what we create ourselves (Parametric Map Storage
    for perfusion maps, which Table 1 lacks) so a peer can give our own results back.
    """
    uids = [c.uid for c in TABLE_1]
    seen = set(uids)
    for cx in AllStoragePresentationContexts:
        uid = str(cx.abstract_syntax)
        if uid not in seen:
            seen.add(uid)
            uids.append(uid)
    return tuple(uids)


#: The storage SOP classes every way in accepts: the Store SCP negotiates them, C-GET offers
#: them as SCP role, STOW-RS and ingest take instances of them and refuse others.
ACCEPTED_STORAGE: tuple[str, ...] = _accepted_storage_uids()
_ACCEPTED_SET: frozenset[str] = frozenset(ACCEPTED_STORAGE)


def is_storage_class(uid: str) -> bool:
    """True for a storage class we accept (what the Store SCP negotiates)."""
    return uid in _ACCEPTED_SET


#: Storage classes beyond Table 1 (accepted through pynetdicom's list) whose IOD makes the
#: Image Pixel module (or its Float/Double Float variant) mandatory: an instance without
#: Pixel Data does not match its SOP class (PS3.4 B.2.3: A900), as for a CT. pydicom and
#: pynetdicom know the UIDs but not the IODs' modules; highdicom's copy of the standard
#: (PS3.3 A, ``iod_module_map.json``) does, as private data: this list is checked against
#: it in tests/unit/test_sop_classes.py rather than read from it at run time.
IMAGES_BEYOND_TABLE_1: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.3": "Photoacoustic Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.14.1": "Intravascular OCT Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.14.2": "Intravascular OCT Image Storage - For Processing",
    # Integer or float pixels (the IOD's three pixel modules are conditional on each other)
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.8": "Height Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.5": "Wide Field Ophthalmic Photography Stereographic "
    "Projection Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.6": "Wide Field Ophthalmic Photography 3D Coordinates "
    "Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.7": "Ophthalmic OCT En Face Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.5.8": "Ophthalmic OCT B-scan Volume Analysis Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.8": "Confocal Microscopy Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.9": "Confocal Microscopy Tiled Pyramidal Image Storage",
    "1.2.840.10008.5.1.4.1.1.81.1": "Ophthalmic Thickness Map Storage",
    "1.2.840.10008.5.1.4.1.1.82.1": "Corneal Topography Map Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.23": "Enhanced RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.24": "Enhanced Continuous RT Image Storage",
}


def requires_pixels(uid: str) -> bool:
    """True when an instance of this class must carry pixel data to be valid: Table 1's
    image classes and the image classes beyond it (:data:`IMAGES_BEYOND_TABLE_1`)."""
    sop = BY_UID.get(uid)
    if sop is not None:
        return sop.has_pixels
    return uid in IMAGES_BEYOND_TABLE_1
