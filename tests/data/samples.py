"""Sample instances for the ingest tests: one small valid instance of every Table-1 class.

Issue 2 section 4 asks that `storescu` can send "a sample of every Table-1 SOP class" into the
Store SCP (Conformance Table 1, 4.2.3) and that validation before import (Conformance 4.1.3.2)
accepts them. Everything here is generated in code (no blobs in git): pure functions that
return datasets, plus writers that put Part-10 files into a directory the caller owns.

Every instance carries the attributes our validation requires (Patient ID, Study/Series/SOP
Instance UID, SOP Class UID and, for classes with ``has_pixels``, a consistent Image Pixel
module), plus the key attributes of its IOD so a real viewer or dciodvfy has something to
chew on. Implant templates (PS3.3 A.62-A.64) have no Patient/Study modules in their IOD; we
add them anyway (Standard Extended SOP Class) because the archive files everything by patient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from lucent.dicom.sop_classes import BY_UID, TABLE_1
from lucent.dicom.transfer_syntaxes import ACCEPTED

DEFAULT_PATIENT_ID = "LUCENT-TEST-001"
DEFAULT_PATIENT_NAME = "Test^Lucent^Sample"
STUDY_DATE = "20240102"
STUDY_TIME = "101500"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's root: test data only
IMPLEMENTATION_VERSION = "LUCENT_TESTDATA"

# Tiny but well-formed PDF 1.4 (one empty page, correct xref offsets computed below).
_PDF_OBJECTS = (
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
)

_CDA_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ClinicalDocument xmlns="urn:hl7-org:v3">'
    '<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
    '<id root="{uid}"/><code code="18748-4" codeSystem="2.16.840.1.113883.6.1"/>'
    "<title>Lucent test report</title></ClinicalDocument>\n"
)


def tiny_pdf() -> bytes:
    """A minimal valid PDF (readers check the xref table, so offsets are real)."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(_PDF_OBJECTS, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(_PDF_OBJECTS) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(_PDF_OBJECTS) + 1,
        xref,
    )
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Small building blocks


def _ds(**kwargs: Any) -> Dataset:
    """Dataset from keywords (sequences as lists of datasets) — keeps the specs readable."""
    ds = Dataset()
    for key, value in kwargs.items():
        if isinstance(value, list) and value and isinstance(value[0], Dataset):
            value = Sequence(value)
        setattr(ds, key, value)
    return ds


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A coded entry (PS3.3 8.8 Code Sequence Macro)."""
    return _ds(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    return _ds(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_instance)


def file_meta_for(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    """Part-10 file meta (PS3.10 7.1) matching the data set's SOP Class/Instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def write(ds: Dataset, path: Path) -> Path:
    """Write as a Part-10 file (preamble, DICM, meta) — what `storescu` needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_with_raw_text(ds: Dataset, path: Path, raw: dict[str, bytes]) -> Path:
    """Write ``ds`` with some text values replaced by exactly these bytes, which pydicom
    would not write itself (bytes invalid in the declared character set, escapes it does
    not produce). Each value must not contain the placeholder letter run it replaces."""
    for n, (keyword, value) in enumerate(raw.items()):
        setattr(ds, keyword, chr(ord("Q") + n) * len(value))
    write(ds, path)
    data = path.read_bytes()
    for n, value in enumerate(raw.values()):
        placeholder = chr(ord("Q") + n).encode() * len(value)
        assert data.count(placeholder) == 1, "placeholder is not unique in the file"
        data = data.replace(placeholder, value)
    path.write_bytes(data)
    return path


def keyword_of(sop_class_uid: str) -> str:
    """pydicom's keyword for a UID (e.g. ``CTImageStorage``), used for file names."""
    return UID(sop_class_uid).keyword or sop_class_uid.replace(".", "_")


# --------------------------------------------------------------------------------------------
# Pixels


def pattern(
    rows: int,
    cols: int,
    *,
    frames: int = 1,
    samples: int = 1,
    bits_stored: int = 8,
    signed: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Deterministic test pattern (gradient + disc + a little noise) in the stored range.

    Noise keeps lossless codecs honest (a flat image round-trips through anything) and the
    disc gives edges for lossy ones. Shape follows pydicom's ``pixel_array`` convention:
    (frames?, rows, cols, samples?).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = (x / max(cols - 1, 1) + y / max(rows - 1, 1)) / 2.0
    disc = ((x - cols / 2) ** 2 + (y - rows / 2) ** 2) < (min(rows, cols) / 3) ** 2
    base = 0.6 * base + 0.3 * disc
    shape = (frames, rows, cols, samples)
    stack = np.empty(shape, dtype=np.float32)
    for f in range(frames):
        for s in range(samples):
            shifted = np.roll(base, shift=(f * 2 + s * 3), axis=1)
            stack[f, :, :, s] = shifted
    stack += rng.uniform(0.0, 0.1, size=shape).astype(np.float32)
    stack = np.clip(stack, 0.0, 1.0)
    if bits_stored == 1:
        arr = (stack > 0.5).astype(np.uint8)
    else:
        top = (1 << bits_stored) - 1
        if signed:
            lo, hi = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
            arr = np.round(lo + stack * (hi - lo)).astype(np.int64)
        else:
            arr = np.round(stack * top).astype(np.int64)
    if samples == 1:
        arr = arr[..., 0]
    if frames == 1:
        arr = arr[0]
    return arr


def dtype_for(bits_allocated: int, signed: bool) -> np.dtype[Any]:
    """numpy dtype pydicom uses for this Bits Allocated / Pixel Representation."""
    if bits_allocated <= 8:
        return np.dtype(np.int8 if signed else np.uint8)
    if bits_allocated == 16:
        return np.dtype("<i2" if signed else "<u2")
    return np.dtype("<i4" if signed else "<u4")


def set_pixels(
    ds: Dataset,
    arr: np.ndarray,
    *,
    bits_allocated: int,
    bits_stored: int,
    signed: bool = False,
    photometric: str | None = None,
    samples: int | None = None,
) -> Dataset:
    """Fill the Image Pixel module (PS3.3 C.7.6.3) consistently with ``arr`` (native LE).

    Shape conventions as pydicom: (frames?, rows, cols, samples?). Frames > 1 sets
    Number of Frames; colour data is written colour-by-pixel (Planar Configuration 0).
    A 3-D array is ambiguous (frames of grey or one colour image): pass ``samples`` or set
    Number of Frames first; otherwise a last axis of 3 means colour.
    """
    if samples is None:
        colour = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] == 3 and not _mf(ds))
        samples = 3 if colour else 1
    frames = arr.shape[0] if (arr.ndim == 4 or (arr.ndim == 3 and samples == 1)) else 1
    rows, cols = (arr.shape[-3], arr.shape[-2]) if samples == 3 else (arr.shape[-2], arr.shape[-1])
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1 or "NumberOfFrames" in ds:
        ds.NumberOfFrames = frames
    if bits_allocated == 1:
        data = pack_bits(arr.astype(np.uint8).ravel())
    else:
        data = arr.astype(dtype_for(bits_allocated, signed)).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OB" if bits_allocated <= 8 else "OW", data)
    return ds


def _mf(ds: Dataset) -> bool:
    return "NumberOfFrames" in ds


# --------------------------------------------------------------------------------------------
# Class specifications


@dataclass(frozen=True)
class ImageSpec:
    """Image Pixel parameters for a class with pixel data."""

    modality: str
    rows: int = 16
    cols: int = 16
    frames: int = 1
    samples: int = 1
    bits_allocated: int = 16
    bits_stored: int = 12
    signed: bool = False
    enhanced: bool = False  # Multi-frame Functional Groups (PS3.3 C.7.6.16)
    cine: bool = False  # Cine module: Frame Time + Frame Increment Pointer


Extra = Callable[[Dataset, "Context"], None]


@dataclass
class Context:
    """UIDs shared between the modules of one instance (and things it references)."""

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    referenced_image_uid: str
    sop_class_uid: str


_CT = "1.2.840.10008.5.1.4.1.1.2"
_SC = "1.2.840.10008.5.1.4.1.1.7"

_IMAGES: dict[str, ImageSpec] = {
    "1.2.840.10008.5.1.4.1.1.1": ImageSpec("CR"),
    "1.2.840.10008.5.1.4.1.1.1.1": ImageSpec("DX"),
    "1.2.840.10008.5.1.4.1.1.1.1.1": ImageSpec("DX", bits_stored=14),
    "1.2.840.10008.5.1.4.1.1.1.2": ImageSpec("MG"),
    "1.2.840.10008.5.1.4.1.1.1.2.1": ImageSpec("MG", bits_stored=14),
    "1.2.840.10008.5.1.4.1.1.1.3": ImageSpec("IO"),
    "1.2.840.10008.5.1.4.1.1.1.3.1": ImageSpec("IO", bits_stored=14),
    _CT: ImageSpec("CT", bits_stored=16, signed=True),
    "1.2.840.10008.5.1.4.1.1.2.1": ImageSpec(
        "CT", frames=3, bits_stored=16, signed=True, enhanced=True
    ),
    "1.2.840.10008.5.1.4.1.1.3.1": ImageSpec(
        "US", frames=4, samples=3, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.4": ImageSpec("MR"),
    "1.2.840.10008.5.1.4.1.1.4.1": ImageSpec("MR", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.4.3": ImageSpec(
        "MR", frames=2, samples=3, bits_allocated=8, bits_stored=8, enhanced=True
    ),
    "1.2.840.10008.5.1.4.1.1.6.1": ImageSpec("US", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.6.2": ImageSpec(
        "US", frames=3, bits_allocated=8, bits_stored=8, enhanced=True
    ),
    _SC: ImageSpec("OT", bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.7.1": ImageSpec("OT", frames=2, bits_allocated=1, bits_stored=1),
    "1.2.840.10008.5.1.4.1.1.7.2": ImageSpec("OT", frames=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.7.3": ImageSpec("OT", frames=3),
    "1.2.840.10008.5.1.4.1.1.7.4": ImageSpec(
        "OT", frames=3, samples=3, bits_allocated=8, bits_stored=8
    ),
    "1.2.840.10008.5.1.4.1.1.12.1": ImageSpec(
        "XA", frames=4, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.12.1.1": ImageSpec("XA", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.12.2": ImageSpec(
        "RF", frames=4, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.12.2.1": ImageSpec("RF", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.13.1.1": ImageSpec("XA", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.13.1.2": ImageSpec("DX", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.13.1.3": ImageSpec("MG", frames=3, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.20": ImageSpec("NM", frames=2, bits_stored=16),
    "1.2.840.10008.5.1.4.1.1.66.4": ImageSpec(
        "SEG", frames=2, bits_allocated=1, bits_stored=1, enhanced=True
    ),
    "1.2.840.10008.5.1.4.1.1.77.1.1": ImageSpec("ES", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": ImageSpec(
        "ES", frames=4, samples=3, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.77.1.2": ImageSpec("GM", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": ImageSpec(
        "GM", frames=4, samples=3, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.77.1.3": ImageSpec("SM", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.77.1.4": ImageSpec("XC", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": ImageSpec(
        "XC", frames=4, samples=3, bits_allocated=8, bits_stored=8, cine=True
    ),
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": ImageSpec("OP", samples=3, bits_allocated=8, bits_stored=8),
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": ImageSpec("OP", samples=3, bits_stored=16),
    "1.2.840.10008.5.1.4.1.1.77.1.5.4": ImageSpec(
        "OPT", frames=3, bits_allocated=8, bits_stored=8, enhanced=True
    ),
    "1.2.840.10008.5.1.4.1.1.77.1.6": ImageSpec(
        "SM", frames=4, samples=3, bits_allocated=8, bits_stored=8, enhanced=True
    ),
    "1.2.840.10008.5.1.4.1.1.128": ImageSpec("PT", bits_stored=16, signed=True),
    "1.2.840.10008.5.1.4.1.1.130": ImageSpec("PT", frames=3, bits_stored=16, enhanced=True),
    "1.2.840.10008.5.1.4.1.1.481.1": ImageSpec("RTIMAGE"),
    # Not has_pixels in Table 1 (a dose object may carry only DVHs), but a real dose grid is the
    # common case, so ours has both: 32-bit unsigned frames scaled by Dose Grid Scaling.
    "1.2.840.10008.5.1.4.1.1.481.2": ImageSpec(
        "RTDOSE", frames=2, bits_allocated=32, bits_stored=32
    ),
}

_MODALITY: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4.2": "MR",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "ECG",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "HD",
    "1.2.840.10008.5.1.4.1.1.9.3.1": "EPS",
    "1.2.840.10008.5.1.4.1.1.9.4.1": "AU",
    "1.2.840.10008.5.1.4.1.1.9.4.2": "AU",
    "1.2.840.10008.5.1.4.1.1.9.5.1": "HD",
    "1.2.840.10008.5.1.4.1.1.9.6.1": "RESP",
    "1.2.840.10008.5.1.4.1.1.66": "CT",
    "1.2.840.10008.5.1.4.1.1.66.1": "REG",
    "1.2.840.10008.5.1.4.1.1.66.2": "FID",
    "1.2.840.10008.5.1.4.1.1.66.3": "REG",
    "1.2.840.10008.5.1.4.1.1.66.5": "SEG",
    "1.2.840.10008.5.1.4.1.1.67": "RWV",
    "1.2.840.10008.5.1.4.1.1.77.1.5.3": "SMR",
    "1.2.840.10008.5.1.4.1.1.78.1": "LEN",
    "1.2.840.10008.5.1.4.1.1.78.2": "AR",
    "1.2.840.10008.5.1.4.1.1.78.3": "KER",
    "1.2.840.10008.5.1.4.1.1.78.4": "SRF",
    "1.2.840.10008.5.1.4.1.1.78.5": "VA",
    "1.2.840.10008.5.1.4.1.1.78.6": "SR",
    "1.2.840.10008.5.1.4.1.1.78.7": "OAM",
    "1.2.840.10008.5.1.4.1.1.78.8": "IOL",
    "1.2.840.10008.5.1.4.1.1.79.1": "OPM",
    "1.2.840.10008.5.1.4.1.1.80.1": "OPV",
    "1.2.840.10008.5.1.4.1.1.104.1": "DOC",
    "1.2.840.10008.5.1.4.1.1.104.2": "DOC",
    "1.2.840.10008.5.1.4.1.1.131": "OT",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.4": "RTRECORD",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.6": "RTRECORD",
    "1.2.840.10008.5.1.4.1.1.481.7": "RTRECORD",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.9": "RTRECORD",
    "1.2.840.10008.5.1.4.43.1": "OT",
    "1.2.840.10008.5.1.4.44.1": "OT",
    "1.2.840.10008.5.1.4.45.1": "OT",
}

_WAVEFORM_PREFIX = "1.2.840.10008.5.1.4.1.1.9."
_PR_PREFIX = "1.2.840.10008.5.1.4.1.1.11."
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def modality_of(sop_class_uid: str) -> str:
    """The Modality our sample of this class carries."""
    if sop_class_uid in _IMAGES:
        return _IMAGES[sop_class_uid].modality
    if sop_class_uid.startswith(_PR_PREFIX):
        return "PR"
    if sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.59":
        return "KO"
    if sop_class_uid.startswith(_SR_PREFIX):
        return "SR"
    return _MODALITY[sop_class_uid]


# --------------------------------------------------------------------------------------------
# Per-class extras (key attributes of each IOD)


def _general_image(ds: Dataset, ctx: Context, spec: ImageSpec) -> None:
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    ds.AcquisitionDate, ds.AcquisitionTime = STUDY_DATE, STUDY_TIME
    if spec.enhanced:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientOrientation = ["L", "P"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if spec.samples == 1 and spec.bits_allocated > 1:
        top = (1 << spec.bits_stored) - 1
        ds.WindowCenter = 0 if spec.signed else top // 2
        ds.WindowWidth = top
        ds.PresentationLUTShape = "IDENTITY"


def _geometry(ds: Dataset, ctx: Context) -> None:
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-8.0, -8.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0


def _enhanced(ds: Dataset, ctx: Context, spec: ImageSpec) -> None:
    """Multi-frame Functional Groups + Dimensions (PS3.3 C.7.6.16, C.7.6.17)."""
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = [_ds(DimensionOrganizationUID=dim_uid)]
    ds.DimensionIndexSequence = [
        _ds(
            DimensionOrganizationUID=dim_uid,
            DimensionIndexPointer=0x00200032,
            FunctionalGroupPointer=0x00209113,
            DimensionDescriptionLabel="Image Position",
        )
    ]
    ds.SharedFunctionalGroupsSequence = [
        _ds(
            PixelMeasuresSequence=[_ds(PixelSpacing=[1.0, 1.0], SliceThickness=1.0)],
            PlaneOrientationSequence=[_ds(ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        _ds(
            FrameContentSequence=[
                _ds(
                    DimensionIndexValues=[i + 1],
                    FrameAcquisitionDateTime=STUDY_DATE + STUDY_TIME,
                    FrameReferenceDateTime=STUDY_DATE + STUDY_TIME,
                    FrameAcquisitionDuration=100.0,
                )
            ],
            PlanePositionSequence=[_ds(ImagePositionPatient=[-8.0, -8.0, float(i)])],
        )
        for i in range(spec.frames)
    ]


def _cine(ds: Dataset, spec: ImageSpec) -> None:
    ds.FrameTime = 40.0
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.CineRate = 25
    ds.RecommendedDisplayFrameRate = 25


def _image_extras(ds: Dataset, ctx: Context, spec: ImageSpec) -> None:
    """Modality-specific key attributes beyond the Image Pixel module."""
    uid = ctx.sop_class_uid
    m = spec.modality
    if m in ("CT", "MR", "PT") and not spec.enhanced:
        _geometry(ds, ctx)
    if m == "CT":
        ds.KVP = 120
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.AcquisitionNumber = 1
    elif m == "MR" and not spec.enhanced:
        ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 500.0, 15.0, 1
        ds.MagneticFieldStrength = 1.5
    elif m == "PT" and not spec.enhanced:
        ds.Units, ds.DecayCorrection = "BQML", "START"
        ds.CorrectedImage = ["DECY", "ATTN"]
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.RescaleIntercept, ds.RescaleSlope = 0, 0.5
        ds.ImageIndex = 1
        ds.FrameReferenceTime = 0.0
    elif m in ("DX", "MG", "IO") and not spec.enhanced:
        processing = uid.endswith(".1") and uid.count(".") == 10
        ds.PresentationIntentType = "FOR PROCESSING" if processing else "FOR PRESENTATION"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.DetectorType = "DIRECT"
        ds.PresentationLUTShape = "IDENTITY"
        if m in ("MG", "IO"):
            ds.ImageLaterality = "L" if m == "MG" else "U"
        if m == "MG":
            ds.ViewCodeSequence = [code("399162004", "SCT", "cranio-caudal")]
            ds.AnatomicRegionSequence = [code("76752008", "SCT", "Breast")]
            ds.BreastImplantPresent = "NO"
        if m == "IO":
            ds.AnatomicRegionSequence = [code("123851003", "SCT", "Mouth")]
            ds.PositionerType = "NONE"
    elif m == "CR":
        ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    elif m == "US" and not spec.enhanced:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    elif m in ("XA", "RF") and not spec.enhanced:
        ds.PositionerMotion = "STATIC"
        ds.KVP = 80
        ds.RadiationSetting = "GR"
        ds.PixelIntensityRelationship = "LIN"
    elif m == "NM":
        ds.FrameIncrementPointer = [0x00540010, 0x00540020]  # Energy Window, Detector Vector
        ds.NumberOfEnergyWindows, ds.EnergyWindowVector = 1, [1] * spec.frames
        ds.NumberOfDetectors, ds.DetectorVector = spec.frames, list(range(1, spec.frames + 1))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "STATIC", "EMISSION"]
        ds.PixelSpacing = [2.0, 2.0]
    elif m == "OT":
        ds.ConversionType = "WSD"
        if spec.frames > 1 and spec.bits_allocated > 1 and spec.samples == 1:
            ds.FrameIncrementPointer = 0x00181063
            ds.FrameTime = 100.0
        if spec.bits_allocated == 1:
            ds.PresentationLUTShape = "IDENTITY"
        if spec.bits_allocated == 16:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    elif m == "SM" and not spec.enhanced:
        ds.ImageCenterPointCoordinatesSequence = [
            _ds(XOffsetInSlideCoordinateSystem=10.0, YOffsetInSlideCoordinateSystem=20.0)
        ]
        ds.SpecimenDescriptionSequence = [_ds(SpecimenIdentifier="S1", SpecimenUID=generate_uid())]
    elif m == "RTIMAGE":
        ds.RTImageLabel, ds.RTImagePlane = "PORTAL", "NORMAL"
        ds.ConversionType = "DI"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "PORTAL"]
        ds.RadiationMachineSAD = 1000.0
        ds.RTImageSID = 1500.0
        ds.ImagePlanePixelSpacing = [0.5, 0.5]
    elif m == "RTDOSE":
        _geometry(ds, ctx)
        ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
        ds.DoseGridScaling = 1e-6
        ds.GridFrameOffsetVector = [float(i) for i in range(spec.frames)]
        ds.FrameIncrementPointer = 0x3004000C
        ds.ReferencedRTPlanSequence = [_ref("1.2.840.10008.5.1.4.1.1.481.5", generate_uid())]
        ds.DVHSequence = [
            _ds(
                DVHReferencedROISequence=[
                    _ds(ReferencedROINumber=1, DVHROIContributionType="INCLUDED")
                ],
                DVHType="CUMULATIVE",
                DoseUnits="GY",
                DoseType="PHYSICAL",
                DVHDoseScaling=1.0,
                DVHVolumeUnits="CM3",
                DVHNumberOfBins=2,
                DVHData=[1.0, 10.0, 1.0, 5.0],
            )
        ]
        del ds["PresentationLUTShape"]
    elif m in ("ES", "GM", "XC", "OP"):
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        if m == "OP":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "COLOR"]
            ds.ImageLaterality = "R"
            ds.AnatomicRegionSequence = [code("81745001", "SCT", "Eye")]
            ds.AcquisitionDeviceTypeCodeSequence = [code("R-1021A", "SRT", "Fundus Camera")]
            ds.PixelSpacing = [0.01, 0.01]
    if spec.cine:
        _cine(ds, spec)
    if spec.enhanced:
        _enhanced(ds, ctx, spec)
        if m == "SM":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
            ds.DimensionOrganizationType = "TILED_FULL"
            ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = spec.rows * 2, spec.cols * 2
            ds.TotalPixelMatrixFocalPlanes = 1
            ds.ImagedVolumeWidth, ds.ImagedVolumeHeight, ds.ImagedVolumeDepth = 0.3, 0.3, 0.01
            ds.SpecimenLabelInImage = "NO"
            ds.FocusMethod = "AUTO"
            ds.ExtendedDepthOfField = "NO"
            ds.ContainerIdentifier = "SLIDE-1"
            ds.SpecimenDescriptionSequence = [
                _ds(SpecimenIdentifier="S1", SpecimenUID=generate_uid())
            ]
            ds.TotalPixelMatrixOriginSequence = [
                _ds(XOffsetInSlideCoordinateSystem=0.0, YOffsetInSlideCoordinateSystem=0.0)
            ]
            del ds.PerFrameFunctionalGroupsSequence  # TILED_FULL: positions are implicit
        if m == "OPT":
            ds.ImageLaterality = "R"


def _waveform(ds: Dataset, ctx: Context) -> None:
    """Waveform module (PS3.3 C.10.9) with real samples; audio classes use 8-bit mu-law."""
    uid = ctx.sop_class_uid
    audio = uid.startswith(_WAVEFORM_PREFIX + "4.")
    channels = {"1.1": 12, "1.2": 3, "1.3": 2, "4.1": 1, "4.2": 2}.get(
        uid[len(_WAVEFORM_PREFIX) :], 2
    )
    samples = 400 if audio else 200
    freq = 8000.0 if audio else 500.0
    t = np.arange(samples) / freq
    data = np.stack(
        [np.round(800 * np.sin(2 * math.pi * (5 + c) * t)) for c in range(channels)], axis=1
    )
    if audio:
        sample_bits, interpretation = 8, "SB"
        raw = np.clip(data // 8, -127, 127).astype(np.int8).tobytes()
        vr = "OB"
    else:
        sample_bits, interpretation = 16, "SS"
        raw = data.astype("<i2").tobytes()
        vr = "OW"
    if len(raw) % 2:
        raw += b"\x00"
    source = code("2:1", "MDC", "Lead I") if not audio else code("110031", "DCM", "Audio")
    group = _ds(
        MultiplexGroupTimeOffset=0.0,
        WaveformOriginality="ORIGINAL",
        NumberOfWaveformChannels=channels,
        NumberOfWaveformSamples=samples,
        SamplingFrequency=freq,
        MultiplexGroupLabel="AUDIO" if audio else "RHYTHM",
        ChannelDefinitionSequence=[
            _ds(
                ChannelLabel=f"CH{c + 1}",
                ChannelSourceSequence=[source],
                ChannelSensitivity=1.0,
                ChannelSensitivityUnitsSequence=[code("uV", "UCUM", "microvolt")],
                ChannelSensitivityCorrectionFactor=1.0,
                ChannelBaseline=0.0,
                ChannelSampleSkew=0.0,
                WaveformBitsStored=sample_bits,
            )
            for c in range(channels)
        ],
        WaveformBitsAllocated=sample_bits,
        WaveformSampleInterpretation=interpretation,
    )
    group.add_new(0x54001010, vr, raw)
    ds.WaveformSequence = [group]
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    ds.InstanceNumber = 1
    ds.AcquisitionContextSequence = []


_SR_ROOT = {
    "11": ("Basic Text SR", code("11528-7", "LN", "Radiology Report"), None),
    "22": ("Enhanced SR", code("11528-7", "LN", "Radiology Report"), None),
    "33": ("Comprehensive SR", code("126000", "DCM", "Imaging Measurement Report"), "1500"),
    "40": ("Procedure Log", code("121145", "DCM", "Description of Procedure"), "3001"),
    "50": ("Mammography CAD", code("111036", "DCM", "Mammography CAD Report"), "4000"),
    "59": ("Key Object Selection", code("113000", "DCM", "Of Interest"), "2010"),
    "65": ("Chest CAD", code("112000", "DCM", "Chest CAD Report"), "4100"),
    "67": ("X-Ray Radiation Dose", code("113701", "DCM", "X-Ray Radiation Dose Report"), "10001"),
    "69": ("Colon CAD", code("112220", "DCM", "Colon CAD Report"), "4120"),
    "70": ("Implantation Plan", code("112360", "DCM", "Implantation Plan"), "7000"),
}


def _sr(ds: Dataset, ctx: Context) -> None:
    """SR Document General/Content modules (PS3.3 C.17.2/C.17.3) with a small content tree."""
    key = ctx.sop_class_uid.rsplit(".", 1)[1]
    title, concept, template = _SR_ROOT[key]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContinuityOfContent = "SEPARATE"
    if template:
        ds.ContentTemplateSequence = [_ds(MappingResource="DCMR", TemplateIdentifier=template)]
    evidence = [
        _ds(
            StudyInstanceUID=ctx.study_uid,
            ReferencedSeriesSequence=[
                _ds(
                    SeriesInstanceUID=generate_uid(),
                    ReferencedSOPSequence=[_ref(_CT, ctx.referenced_image_uid)],
                )
            ],
        )
    ]
    ds.CurrentRequestedProcedureEvidenceSequence = evidence
    if key == "59":  # KOS: no Completion/Verification flags, IMAGE items only
        ds.ContentSequence = [
            _ds(
                RelationshipType="CONTAINS",
                ValueType="IMAGE",
                ReferencedSOPSequence=[_ref(_CT, ctx.referenced_image_uid)],
            )
        ]
        return
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = []
    children = [
        _ds(
            RelationshipType="HAS CONCEPT MOD",
            ValueType="CODE",
            ConceptNameCodeSequence=[
                code("121049", "DCM", "Language of Content Item and Descendants")
            ],
            ConceptCodeSequence=[code("en", "RFC5646", "English")],
        ),
        _ds(
            RelationshipType="CONTAINS",
            ValueType="TEXT",
            ConceptNameCodeSequence=[code("121071", "DCM", "Finding")],
            TextValue=f"{title}: no acute abnormality. Lucent test content.",
        ),
    ]
    if key not in ("11",):
        children.append(
            _ds(
                RelationshipType="CONTAINS",
                ValueType="NUM",
                ConceptNameCodeSequence=[code("410668003", "SCT", "Length")],
                MeasuredValueSequence=[
                    _ds(
                        NumericValue=12.5,
                        MeasurementUnitsCodeSequence=[code("mm", "UCUM", "millimeter")],
                    )
                ],
            )
        )
    children.append(
        _ds(
            RelationshipType="CONTAINS",
            ValueType="IMAGE",
            ConceptNameCodeSequence=[code("121112", "DCM", "Source of Measurement")],
            ReferencedSOPSequence=[_ref(_CT, ctx.referenced_image_uid)],
        )
    )
    ds.ContentSequence = children


def _presentation_state(ds: Dataset, ctx: Context) -> None:
    """Presentation State modules (PS3.3 C.11.10, C.11.11) referencing one image."""
    uid = ctx.sop_class_uid
    ds.InstanceNumber = 1
    ds.ContentLabel = "LUCENT_PR"
    ds.ContentDescription = "Test presentation state"
    ds.PresentationCreationDate, ds.PresentationCreationTime = STUDY_DATE, STUDY_TIME
    ds.ContentCreatorName = "Tester^Lucent"
    ref_series = [
        _ds(
            SeriesInstanceUID=generate_uid(),
            ReferencedImageSequence=[_ref(_CT, ctx.referenced_image_uid)],
        )
    ]
    ds.DisplayedAreaSelectionSequence = [
        _ds(
            DisplayedAreaTopLeftHandCorner=[1, 1],
            DisplayedAreaBottomRightHandCorner=[16, 16],
            PresentationSizeMode="SCALE TO FIT",
            PresentationPixelSpacing=[1.0, 1.0],
        )
    ]
    ds.ImageRotation = 0
    ds.ImageHorizontalFlip = "N"
    if uid.endswith(".11.4"):  # Blending: two series, Blending Sequence, ICC
        ds.BlendingSequence = [
            _ds(
                StudyInstanceUID=ctx.study_uid,
                ReferencedSeriesSequence=ref_series,
            ),
            _ds(
                StudyInstanceUID=ctx.study_uid,
                ReferencedSeriesSequence=[
                    _ds(
                        SeriesInstanceUID=generate_uid(),
                        ReferencedImageSequence=[_ref(_CT, generate_uid())],
                    )
                ],
            ),
        ]
        ds.ICCProfile = _icc_profile()
        ds.RelativeOpacity = 0.5
        return
    ds.ReferencedSeriesSequence = ref_series
    if uid.endswith(".11.2"):
        ds.ICCProfile = _icc_profile()
        return
    ds.SoftcopyVOILUTSequence = [_ds(WindowCenter=40.0, WindowWidth=400.0)]
    if uid.endswith(".11.3"):
        ds.ICCProfile = _icc_profile()
        ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
        ds.GreenPaletteColorLookupTableDescriptor = [256, 0, 16]
        ds.BluePaletteColorLookupTableDescriptor = [256, 0, 16]
        ramp = (np.arange(256, dtype="<u2") * 257).tobytes()
        ds.RedPaletteColorLookupTableData = ramp
        ds.GreenPaletteColorLookupTableData = ramp
        ds.BluePaletteColorLookupTableData = ramp[::-1]
        return
    ds.PresentationLUTShape = "IDENTITY"
    ds.GraphicAnnotationSequence = [
        _ds(
            GraphicLayer="LAYER1",
            ReferencedImageSequence=[_ref(_CT, ctx.referenced_image_uid)],
            TextObjectSequence=[
                _ds(
                    AnchorPointAnnotationUnits="PIXEL",
                    UnformattedTextValue="Lucent",
                    AnchorPoint=[8.0, 8.0],
                    AnchorPointVisibility="N",
                )
            ],
        )
    ]
    ds.GraphicLayerSequence = [_ds(GraphicLayer="LAYER1", GraphicLayerOrder=1)]
    if uid.endswith(".11.5"):
        ds.MaskSubtractionSequence = [_ds(MaskOperation="AVG_SUB", ContrastFrameAveraging=[1])]
        ds.RecommendedViewingMode = "SUB"


@functools.cache
def _icc_profile() -> bytes:
    """An sRGB ICC profile (Pillow builds a real one); a 128-byte header if Pillow is absent."""
    try:
        from PIL import ImageCms

        return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    except Exception:  # noqa: BLE001 — test data: any failure falls back to a stub header
        header = bytearray(128)
        header[0:4] = (128).to_bytes(4, "big")
        header[12:16], header[16:20], header[36:40] = b"mntr", b"RGB ", b"acsp"
        return bytes(header)


def _rt(ds: Dataset, ctx: Context) -> None:
    """Key attributes of the RT IODs (PS3.3 A.19-A.50)."""
    uid = ctx.sop_class_uid
    plan_class = "1.2.840.10008.5.1.4.1.1.481.5"
    ion = uid.endswith(".481.8") or uid.endswith(".481.9")
    ds.InstanceNumber = 1
    ds.OperatorsName = "Therapist^Test"
    if uid.endswith(".481.3"):  # Structure Set
        ds.StructureSetLabel = "LUCENT"
        ds.StructureSetDate, ds.StructureSetTime = STUDY_DATE, STUDY_TIME
        ds.ReferencedFrameOfReferenceSequence = [
            _ds(FrameOfReferenceUID=ctx.frame_of_reference_uid)
        ]
        ds.StructureSetROISequence = [
            _ds(
                ROINumber=1,
                ReferencedFrameOfReferenceUID=ctx.frame_of_reference_uid,
                ROIName="PTV",
                ROIGenerationAlgorithm="MANUAL",
            )
        ]
        ds.ROIContourSequence = [
            _ds(
                ReferencedROINumber=1,
                ROIDisplayColor=[255, 0, 0],
                ContourSequence=[
                    _ds(
                        ContourImageSequence=[_ref(_CT, ctx.referenced_image_uid)],
                        ContourGeometricType="CLOSED_PLANAR",
                        NumberOfContourPoints=4,
                        ContourData=[0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 5.0, 5.0, 0.0, 0.0, 5.0, 0.0],
                    )
                ],
            )
        ]
        ds.RTROIObservationsSequence = [
            _ds(
                ObservationNumber=1,
                ReferencedROINumber=1,
                RTROIInterpretedType="PTV",
                ROIInterpreter="",
            )
        ]
        return
    if uid.endswith(".481.5") or uid.endswith(".481.8"):  # Plans
        ds.RTPlanLabel, ds.RTPlanName = "PLAN1", "Lucent test plan"
        ds.RTPlanDate, ds.RTPlanTime = STUDY_DATE, STUDY_TIME
        ds.RTPlanGeometry = "PATIENT"
        ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ReferencedStructureSetSequence = [_ref("1.2.840.10008.5.1.4.1.1.481.3", generate_uid())]
        ds.FractionGroupSequence = [
            _ds(
                FractionGroupNumber=1,
                NumberOfFractionsPlanned=30,
                NumberOfBeams=1,
                NumberOfBrachyApplicationSetups=0,
                ReferencedBeamSequence=[_ds(ReferencedBeamNumber=1, BeamMeterset=100.0)],
            )
        ]
        beam = _ds(
            BeamNumber=1,
            BeamName="AP",
            BeamType="STATIC",
            RadiationType="PROTON" if ion else "PHOTON",
            TreatmentDeliveryType="TREATMENT",
            NumberOfWedges=0,
            NumberOfCompensators=0,
            NumberOfBoli=0,
            NumberOfBlocks=0,
            NumberOfControlPoints=2,
            FinalCumulativeMetersetWeight=1.0,
            ReferencedPatientSetupNumber=1,
            ControlPointSequence=[
                _ds(
                    ControlPointIndex=0,
                    CumulativeMetersetWeight=0.0,
                    GantryAngle=0.0,
                    NominalBeamEnergy=6.0 if not ion else 150.0,
                ),
                _ds(ControlPointIndex=1, CumulativeMetersetWeight=1.0),
            ],
        )
        if ion:
            beam.ScanMode = "MODULATED"
            beam.TreatmentMachineName = "ION1"
            beam.PrimaryDosimeterUnit = "MU"
            beam.NumberOfRangeShifters = 0
            beam.NumberOfLateralSpreadingDevices = 0
            beam.NumberOfRangeModulators = 0
            beam.PatientSupportType = "TABLE"
            ds.IonBeamSequence = [beam]
        else:
            beam.TreatmentMachineName = "LINAC1"
            beam.PrimaryDosimeterUnit = "MU"
            beam.SourceAxisDistance = 1000.0
            ds.BeamSequence = [beam]
        ds.PatientSetupSequence = [_ds(PatientSetupNumber=1, PatientPosition="HFS")]
        ds.ApprovalStatus = "UNAPPROVED"
        return
    # Treatment records (.4 beams, .6 brachy, .7 summary, .9 ion beams)
    ds.ReferencedRTPlanSequence = [_ref(plan_class, generate_uid())]
    ds.TreatmentDate, ds.TreatmentTime = STUDY_DATE, STUDY_TIME
    if uid.endswith(".481.7"):
        ds.CurrentTreatmentStatus = "ON_TREATMENT"
        ds.FirstTreatmentDate = ds.MostRecentTreatmentDate = STUDY_DATE
        ds.NumberOfFractionsDelivered = 1
        return
    ds.TreatmentMachineSequence = [
        _ds(TreatmentMachineName="LINAC1", Manufacturer="Lucent", InstitutionName="Test")
    ]
    ds.TreatmentSessionBeamSequence = [
        _ds(
            ReferencedBeamNumber=1,
            BeamName="AP",
            CurrentFractionNumber=1,
            TreatmentDeliveryType="TREATMENT",
            TreatmentTerminationStatus="NORMAL",
            TreatmentVerificationStatus="VERIFIED",
            NumberOfControlPoints=0,
        )
    ]
    if uid.endswith(".481.6"):
        del ds.TreatmentSessionBeamSequence
        ds.BrachyTreatmentTechnique, ds.BrachyTreatmentType = "INTRACAVITARY", "HDR"
        ds.TreatmentSessionApplicationSetupSequence = [
            _ds(
                ApplicationSetupType="GYNECOLOGIC",
                ApplicationSetupNumber=1,
                CurrentFractionNumber=1,
                TreatmentDeliveryType="TREATMENT",
            )
        ]


def _other(ds: Dataset, ctx: Context) -> None:
    """Key attributes of the remaining non-image IODs."""
    uid = ctx.sop_class_uid
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
    identity = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0]
    if uid.endswith(".4.2"):  # MR Spectroscopy: Spectroscopy Data instead of Pixel Data
        ds.ImageType = ["ORIGINAL", "PRIMARY", "SPECTROSCOPY", "NONE"]
        ds.ContentQualification = "PRODUCT"
        ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
        ds.NumberOfFrames, ds.Rows, ds.Columns = 1, 1, 1
        ds.DataPointRows, ds.DataPointColumns = 1, 64
        ds.DataRepresentation, ds.SignalDomainColumns = "COMPLEX", "FREQUENCY"
        ds.SpectroscopyData = np.linspace(0, 1, 128, dtype="<f4").tobytes()
        ds.SharedFunctionalGroupsSequence = [
            _ds(PixelMeasuresSequence=[_ds(PixelSpacing=[10.0, 10.0], SliceThickness=10.0)])
        ]
        ds.PerFrameFunctionalGroupsSequence = [
            _ds(FrameContentSequence=[_ds(FrameAcquisitionDateTime=STUDY_DATE + STUDY_TIME)])
        ]
    elif uid.endswith(".1.66"):  # Raw Data
        ds.CreatorVersionUID = generate_uid()
        ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
        ds.add_new(0x00091000, "LO", "LUCENT RAW")  # private creator
        ds.add_new(0x00091001, "OB", bytes(range(16)))
    elif uid.endswith(".66.1"):  # Spatial Registration
        ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ContentLabel, ds.ContentDescription = "REG", "Rigid identity"
        ds.ContentCreatorName = "Tester^Lucent"
        ds.RegistrationSequence = [
            _ds(
                FrameOfReferenceUID=ctx.frame_of_reference_uid,
                MatrixRegistrationSequence=[
                    _ds(
                        MatrixSequence=[
                            _ds(
                                FrameOfReferenceTransformationMatrix=identity,
                                FrameOfReferenceTransformationMatrixType="RIGID",
                            )
                        ]
                    )
                ],
            )
        ]
    elif uid.endswith(".66.2"):  # Spatial Fiducials
        ds.ContentLabel, ds.ContentCreatorName = "FID", "Tester^Lucent"
        ds.FiducialSetSequence = [
            _ds(
                FrameOfReferenceUID=ctx.frame_of_reference_uid,
                FiducialSequence=[
                    _ds(
                        FiducialIdentifier="F1",
                        ShapeType="POINT",
                        NumberOfContourPoints=1,
                        ContourData=[0.0, 0.0, 0.0],
                        FiducialUID=generate_uid(),
                    )
                ],
            )
        ]
    elif uid.endswith(".66.3"):  # Deformable Spatial Registration
        ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ContentLabel, ds.ContentCreatorName = "DREG", "Tester^Lucent"
        ds.DeformableRegistrationSequence = [
            _ds(
                SourceFrameOfReferenceUID=generate_uid(),
                PreDeformationMatrixRegistrationSequence=[
                    _ds(
                        FrameOfReferenceTransformationMatrix=identity,
                        FrameOfReferenceTransformationMatrixType="RIGID",
                    )
                ],
                DeformableRegistrationGridSequence=[
                    _ds(
                        ImagePositionPatient=[0.0, 0.0, 0.0],
                        ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                        GridDimensions=[2, 2, 1],
                        GridResolution=[1.0, 1.0, 1.0],
                        VectorGridData=np.zeros(12, dtype="<f4").tobytes(),
                    )
                ],
            )
        ]
    elif uid.endswith(".66.5"):  # Surface Segmentation
        ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ContentLabel, ds.ContentCreatorName = "SURF", "Tester^Lucent"
        ds.SegmentSequence = [
            _ds(
                SegmentNumber=1,
                SegmentLabel="Tetra",
                SegmentAlgorithmType="MANUAL",
                SegmentedPropertyCategoryCodeSequence=[
                    code("91723000", "SCT", "Anatomical Structure")
                ],
                SegmentedPropertyTypeCodeSequence=[code("10200004", "SCT", "Liver")],
                ReferencedSurfaceSequence=[_ds(ReferencedSurfaceNumber=1)],
            )
        ]
        ds.NumberOfSurfaces = 1
        ds.SurfaceSequence = [
            _ds(
                SurfaceNumber=1,
                SurfaceProcessing="NO",
                RecommendedDisplayGrayscaleValue=32768,
                RecommendedPresentationOpacity=1.0,
                RecommendedPresentationType="SURFACE",
                FiniteVolume="YES",
                Manifold="YES",
                SurfacePointsSequence=[
                    _ds(
                        NumberOfSurfacePoints=4,
                        PointCoordinatesData=np.array(
                            [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1], dtype="<f4"
                        ).tobytes(),
                    )
                ],
                SurfaceMeshPrimitivesSequence=[
                    _ds(
                        LongTrianglePointIndexList=np.array(
                            [1, 2, 3, 1, 2, 4, 1, 3, 4, 2, 3, 4], dtype="<u4"
                        ).tobytes()
                    )
                ],
            )
        ]
    elif uid.endswith(".1.67"):  # Real World Value Mapping
        ds.ContentLabel, ds.ContentCreatorName = "RWV", "Tester^Lucent"
        ds.ReferencedImageRealWorldValueMappingSequence = [
            _ds(
                RealWorldValueMappingSequence=[
                    _ds(
                        LUTExplanation="identity",
                        LUTLabel="ID",
                        MeasurementUnitsCodeSequence=[code("1", "UCUM", "no units")],
                        RealWorldValueFirstValueMapped=0,
                        RealWorldValueLastValueMapped=4095,
                        RealWorldValueIntercept=0.0,
                        RealWorldValueSlope=1.0,
                    )
                ],
                ReferencedImageSequence=[_ref(_CT, ctx.referenced_image_uid)],
            )
        ]
    elif uid.endswith(".77.1.5.3"):  # Stereometric Relationship
        op8 = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
        ds.StereoPairsSequence = [
            _ds(
                LeftImageSequence=[_ref(op8, generate_uid())],
                RightImageSequence=[_ref(op8, generate_uid())],
            )
        ]
    elif uid.endswith(".1.131"):  # Basic Structured Display
        ds.PresentationCreationDate, ds.PresentationCreationTime = STUDY_DATE, STUDY_TIME
        ds.ContentLabel, ds.ContentCreatorName = "BSD", "Tester^Lucent"
        ds.PresentationInputType = "SPECIFIC"
        ds.DisplayEnvironmentSpatialPosition = [0.0, 0.0, 1.0, 1.0]
        ds.ImageBoxesSequence = [
            _ds(
                ImageBoxNumber=1,
                DisplayEnvironmentSpatialPosition=[0.0, 0.0, 1.0, 1.0],
                ImageBoxLayoutType="STACK",
                ReferencedImageSequence=[_ref(_CT, ctx.referenced_image_uid)],
            )
        ]
    elif ".78." in uid or ".79." in uid or ".80." in uid:  # ophthalmic measurements
        ds.MeasurementLaterality = "B"
        ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
        if uid.endswith(".78.1"):
            ds.LeftLensSequence = [_ds(SpherePower=-1.25)]
            ds.RightLensSequence = [_ds(SpherePower=-1.0)]
        elif uid.endswith(".78.2"):
            ds.AutorefractionLeftEyeSequence = [_ds(SpherePower=-1.25)]
            ds.AutorefractionRightEyeSequence = [_ds(SpherePower=-1.0)]
        elif uid.endswith(".78.3"):
            ds.KeratometryLeftEyeSequence = [_ds(KeratometricPower=43.5)]
            ds.KeratometryRightEyeSequence = [_ds(KeratometricPower=43.0)]
        elif uid.endswith(".78.4"):
            ds.SubjectiveRefractionLeftEyeSequence = [_ds(SpherePower=-1.25)]
            ds.SubjectiveRefractionRightEyeSequence = [_ds(SpherePower=-1.0)]
        elif uid.endswith(".78.5"):
            ds.VisualAcuityTypeCodeSequence = [code("111687", "DCM", "Best Corrected")]
            ds.VisualAcuityLeftEyeSequence = [_ds(DecimalVisualAcuity=1.0)]
            ds.VisualAcuityRightEyeSequence = [_ds(DecimalVisualAcuity=0.8)]
        elif uid.endswith(".78.6"):
            ds.ValueType, ds.ConceptNameCodeSequence = (
                "CONTAINER",
                [code("70946-9", "LN", "Ophthalmic Prescription")],
            )
            ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
            ds.ContinuityOfContent = "SEPARATE"
            ds.ContentTemplateSequence = [_ds(MappingResource="DCMR", TemplateIdentifier="2020")]
            ds.ContentSequence = [
                _ds(
                    RelationshipType="CONTAINS",
                    ValueType="TEXT",
                    ConceptNameCodeSequence=[code("121071", "DCM", "Finding")],
                    TextValue="Spectacles -1.25 / -1.00",
                )
            ]
        elif uid.endswith(".78.7"):
            ds.OphthalmicAxialMeasurementsLeftEyeSequence = [
                _ds(OphthalmicAxialMeasurementsDeviceType="ULTRASOUND")
            ]
            ds.OphthalmicAxialMeasurementsRightEyeSequence = [
                _ds(OphthalmicAxialMeasurementsDeviceType="ULTRASOUND")
            ]
        elif uid.endswith(".78.8"):
            ds.IntraocularLensCalculationsLeftEyeSequence = [_ds(TargetRefraction=0.0)]
            ds.IntraocularLensCalculationsRightEyeSequence = [_ds(TargetRefraction=0.0)]
        elif uid.endswith(".79.1"):
            ds.ValueType, ds.ConceptNameCodeSequence = (
                "CONTAINER",
                [code("57119-0", "LN", "Macular Grid Thickness and Volume Report")],
            )
            ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
            ds.ContinuityOfContent = "SEPARATE"
            ds.ContentTemplateSequence = [_ds(MappingResource="DCMR", TemplateIdentifier="2100")]
            ds.ContentSequence = [
                _ds(
                    RelationshipType="CONTAINS",
                    ValueType="NUM",
                    ConceptNameCodeSequence=[code("410668003", "SCT", "Length")],
                    MeasuredValueSequence=[
                        _ds(
                            NumericValue=250,
                            MeasurementUnitsCodeSequence=[code("um", "UCUM", "micrometer")],
                        )
                    ],
                )
            ]
        elif uid.endswith(".80.1"):
            ds.ImageLaterality = "R"
            ds.VisualFieldHorizontalExtent, ds.VisualFieldVerticalExtent = 30, 30
            ds.VisualFieldShape = "CIRCLE"
            ds.VisualFieldTestPointSequence = [
                _ds(
                    VisualFieldTestPointXCoordinate=0.0,
                    VisualFieldTestPointYCoordinate=3.0,
                    StimulusResults="SEEN",
                    SensitivityValue=30.0,
                )
            ]
    elif uid.endswith(".104.1") or uid.endswith(".104.2"):  # Encapsulated documents
        pdf = uid.endswith(".104.1")
        doc = tiny_pdf() if pdf else _CDA_XML.format(uid=generate_uid()).encode()
        if len(doc) % 2:
            doc += b"\x00" if pdf else b" "
        ds.BurnedInAnnotation = "YES"
        ds.DocumentTitle = "Lucent test document"
        ds.ConceptNameCodeSequence = []
        ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf" if pdf else "text/XML"
        ds.add_new(0x00420011, "OB", doc)  # Encapsulated Document
        ds.EncapsulatedDocumentLength = len(doc)
    elif uid.startswith("1.2.840.10008.5.1.4.4"):  # Implant templates (A.62-A.64)
        ds.Manufacturer = "Lucent Implants"
        ds.EffectiveDateTime = STUDY_DATE + STUDY_TIME
        ds.ImplantTemplateVersion = "1"
        if uid.endswith(".45.1"):
            ds.ImplantTemplateGroupName = "Hip stems"
            ds.ImplantTemplateGroupIssuer = "Lucent"
            ds.ImplantTemplateGroupMembersSequence = [
                _ds(
                    ReferencedSOPClassUID="1.2.840.10008.5.1.4.43.1",
                    ReferencedSOPInstanceUID=generate_uid(),
                )
            ]
        elif uid.endswith(".44.1"):
            ds.ImplantAssemblyTemplateName = "Hip assembly"
            ds.ImplantAssemblyTemplateIssuer = "Lucent"
            ds.ImplantAssemblyTemplateType = "ORIGINAL"
        else:
            ds.ImplantName, ds.ImplantPartNumber = "Stem 12", "LU-12"
            ds.ImplantType = "DERIVED"
            ds.ImplantSize = "12"
            ds.ImplantTargetAnatomySequence = [
                _ds(AnatomicRegionSequence=[code("24136001", "SCT", "Hip joint")])
            ]


# --------------------------------------------------------------------------------------------
# Public API


def make_instance(
    sop_class_uid: str,
    *,
    patient_id: str = DEFAULT_PATIENT_ID,
    patient_name: str = DEFAULT_PATIENT_NAME,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    rows: int | None = None,
    cols: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A small instance of any Table-1 class with unique UIDs and Part-10 file meta.

    Pass ``study_uid``/``series_uid`` to put several instances in one study/series. Pixel
    data (classes with ``has_pixels``, and RT Dose) is native little endian, so the result can
    be written as-is or handed to a compressor.
    """
    if sop_class_uid not in BY_UID:
        raise ValueError(f"not a Table-1 storage class: {sop_class_uid}")
    ctx = Context(
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid or generate_uid(),
        frame_of_reference_uid=frame_of_reference_uid or generate_uid(),
        referenced_image_uid=generate_uid(),
        sop_class_uid=sop_class_uid,
    )
    if sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4":
        ds = _segmentation(ctx, patient_id, patient_name, series_number, instance_number)
    else:
        ds = Dataset()
        _common(ds, ctx, patient_id, patient_name, series_number)
        spec = _IMAGES.get(sop_class_uid)
        if spec is not None:
            if rows or cols:
                spec = ImageSpec(
                    **{**spec.__dict__, "rows": rows or spec.rows, "cols": cols or spec.cols}
                )
            _general_image(ds, ctx, spec)
            _image_extras(ds, ctx, spec)
            arr = pattern(
                spec.rows,
                spec.cols,
                frames=spec.frames,
                samples=spec.samples,
                bits_stored=spec.bits_stored,
                signed=spec.signed,
                seed=seed,
            )
            if spec.frames > 1:
                ds.NumberOfFrames = spec.frames
            set_pixels(
                ds,
                arr,
                bits_allocated=spec.bits_allocated,
                bits_stored=spec.bits_stored,
                signed=spec.signed,
                samples=spec.samples,
            )
        elif sop_class_uid.startswith(_WAVEFORM_PREFIX):
            _waveform(ds, ctx)
        elif sop_class_uid.startswith(_SR_PREFIX):
            _sr(ds, ctx)
        elif sop_class_uid.startswith(_PR_PREFIX):
            _presentation_state(ds, ctx)
        elif ".481." in sop_class_uid:
            _rt(ds, ctx)
        else:
            _other(ds, ctx)
        ds.InstanceNumber = instance_number
    if sop_instance_uid:
        ds.SOPInstanceUID = sop_instance_uid
    ds.file_meta = file_meta_for(ds)
    return ds


def _common(
    ds: Dataset, ctx: Context, patient_id: str, patient_name: str, series_number: int
) -> None:
    """Patient, General Study, General Series, General Equipment, SOP Common (PS3.3 C.7, C.12)."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ctx.sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = STUDY_DATE, STUDY_TIME
    ds.StudyDate, ds.StudyTime = STUDY_DATE, STUDY_TIME
    ds.SeriesDate, ds.SeriesTime = STUDY_DATE, STUDY_TIME
    ds.AccessionNumber = "ACC0001"
    ds.Modality = modality_of(ctx.sop_class_uid)
    ds.Manufacturer = "Lucent Test Data"
    ds.InstitutionName = "Lucent Test Clinic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Lucent sample study"
    ds.SeriesDescription = BY_UID[ctx.sop_class_uid].name
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = ctx.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number


def _segmentation(
    ctx: Context, patient_id: str, patient_name: str, series_number: int, instance_number: int
) -> Dataset:
    """A BINARY Segmentation built by highdicom (its constructor validates the IOD)."""
    import highdicom as hd

    source = Dataset()
    ctx_ct = Context(ctx.study_uid, generate_uid(), ctx.frame_of_reference_uid, generate_uid(), _CT)
    _common(source, ctx_ct, patient_id, patient_name, series_number)
    spec = _IMAGES[_CT]
    _general_image(source, ctx_ct, spec)
    _image_extras(source, ctx_ct, spec)
    arr = pattern(spec.rows, spec.cols, bits_stored=16, signed=True)
    set_pixels(source, arr, bits_allocated=16, bits_stored=16, signed=True)
    source.file_meta = file_meta_for(source)
    mask = np.zeros((1, spec.rows, spec.cols), dtype=np.uint8)
    mask[0, 4:12, 4:12] = 1
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Disc",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=ctx.series_uid,
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="Lucent Test Data",
        manufacturer_model_name="samples.py",
        software_versions="1",
        device_serial_number="0",
    )
    seg.PatientName = patient_name  # highdicom copies it from the source; keep it explicit
    return seg


def table1_uids() -> list[str]:
    """Every storage class UID of Conformance Table 1, in table order."""
    return [c.uid for c in TABLE_1]


def write_table1_set(directory: Path | str, **kwargs: Any) -> list[Path]:
    """One Part-10 file per Table-1 class, named ``NNN_<Keyword>.dcm``; kwargs → make_instance.

    All instances share one patient (and, unless given, get one study per call) so an
    ingest test sees a single tidy patient in the index.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("study_uid", generate_uid())
    paths = []
    for i, uid in enumerate(table1_uids()):
        ds = make_instance(uid, series_number=i + 1, **kwargs)
        paths.append(write(ds, directory / f"{i:03d}_{keyword_of(uid)}.dcm"))
    return paths


# --------------------------------------------------------------------------------------------
# CT series for throughput and crash tests


def write_ct_series(
    directory: Path | str,
    n: int = 500,
    rows: int = 512,
    cols: int = 512,
    *,
    patient_id: str = "LUCENT-CT-001",
    patient_name: str = "Series^Throughput",
) -> list[Path]:
    """A realistic axial CT series: n slices of int16 + rescale, one study/series, ~0.5 MB each.

    Generation is dominated by disk writes: the pixel template is computed once (vectorised)
    and each slice only patches a few bytes and a row offset, so 500 × 512² takes a few seconds.
    Files are written with plain `bytes` concatenation after the first dataset is encoded, which
    is far faster than 500 pydicom encodes; every file is still a complete Part-10 file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r2 = ((x - cols / 2) / (cols * 0.42)) ** 2 + ((y - rows / 2) / (rows * 0.36)) ** 2
    body = np.where(r2 < 1.0, 40.0, -1000.0)  # soft tissue in air
    bone = (np.abs(np.sqrt(r2) - 0.85) < 0.04) * 1000.0
    rng = np.random.default_rng(7)
    template = (body + bone + rng.normal(0, 12, size=(rows, cols))).astype(np.float32)
    stored = np.round(template + 1024).astype("<i2")  # RescaleIntercept -1024
    paths: list[Path] = []
    for i in range(n):
        slice_px = np.roll(stored, shift=i % 32, axis=0)  # small per-slice change
        ds = Dataset()
        ctx = Context(study, series, frame, generate_uid(), _CT)
        _common(ds, ctx, patient_id, patient_name, 1)
        ds.SeriesDescription = "Throughput CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.ContentDate, ds.ContentTime = STUDY_DATE, STUDY_TIME
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-cols * 0.35, -rows * 0.35, -float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.SliceLocation = -float(i)
        ds.KVP = 120
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.add_new(0x7FE00010, "OW", slice_px.tobytes())
        ds.file_meta = file_meta_for(ds)
        paths.append(write(ds, directory / f"ct_{i:04d}.dcm"))
    return paths


# --------------------------------------------------------------------------------------------
# Files pydicom ships

# Patient's Name as it must come out of the index/API (PS3.5 6.1, Conformance 6). Values
# are those of pydicom's own charset tests (tests/test_charset.py) for dclunie's charset set.
CHARSET_NAMES: dict[str, str] = {
    "chrArab.dcm": "قباني^لنزار",
    "chrFren.dcm": "Buc^Jérôme",
    "chrFrenMulti.dcm": "Buc^Jérôme",
    "chrGerm.dcm": "Äneas^Rüdiger",
    "chrGreek.dcm": "Διονυσιος",
    "chrH31.dcm": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "chrH32.dcm": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
    "chrHbrw.dcm": "שרון^דבורה",
    "chrI2.dcm": "Hong^Gildong=洪^吉洞=홍^길동",
    "chrRuss.dcm": "Люкceмбypг",
    "chrX1.dcm": "Wang^XiaoDong=王^小東",
    "chrX2.dcm": "Wang^XiaoDong=王^小东",
}

# Charset files pydicom ships that we must NOT count as valid storage instances: the
# chr*Multi CR files have no pixel data (CR requires it: placeholder, A900), the SQ encoding
# files have no SOP Class/UIDs at all.
CHARSET_NONCONFORMANT: tuple[str, ...] = (
    "chrJapMulti.dcm",
    "chrJapMultiExplicitIR6.dcm",
    "chrKoreanMulti.dcm",
    "chrSQEncoding.dcm",
    "chrSQEncoding1.dcm",
)


def charset_files() -> dict[Path, str]:
    """pydicom's charset files that are valid SC instances → the decoded Patient's Name."""
    from pydicom.data import get_charset_files

    by_name = {Path(p).name: Path(p) for p in get_charset_files("chr*.dcm")}
    return {by_name[name]: expected for name, expected in CHARSET_NAMES.items()}


# Generated samples for the Conformance-6 character sets pydicom ships no file for:
# label -> (Specific Character Set, expected decoded name, raw value bytes or None). With raw
# None pydicom's encoder writes the name; otherwise the bytes are written verbatim.
_GB2312_RAW = (  # PS3.5 Example K.2-1 style: ESC $ ) A designates GB 2312 into G1 per component
    b"Wang^XiaoDong=\x1b$)A" + "王".encode("gb2312") + b"^\x1b$)A" + "小东".encode("gb2312")
)
GENERATED_CHARSETS: dict[str, tuple[str | list[str], str, bytes | None]] = {
    "latin2": ("ISO_IR 101", "Wałęsa^Lech", None),
    "latin3": ("ISO_IR 109", "Borġ^Ġużeppi", None),
    "latin4": ("ISO_IR 110", "Šķēle^Andris", None),
    "latin5": ("ISO_IR 148", "Öztürk^Gülşen", None),
    "thai": ("ISO_IR 166", "สมชาย^ใจดี", None),
    "katakana": ("ISO_IR 13", "ﾔﾏﾀﾞ^ﾀﾛｳ", None),
    "jisx0212": (["", "ISO 2022 IR 159"], "Çàñ^Ğül", None),
    "gb2312": (["", "ISO 2022 IR 58"], "Wang^XiaoDong=王^小东", _GB2312_RAW),
    "gbk": ("GBK", "Wang^XiaoDong=王^小東", None),
    "utf8": ("ISO_IR 192", "Müller^José=ミュラー^ホセ", None),
}

# pydicom 3.0 leaves the ESC $ ) A sequences in names decoded from ISO 2022 IR 58 (it returns
# "Wang^XiaoDong=\x1b$)A王^\x1b$)A小东"): whoever decodes names for the index must strip them.
PYDICOM_MISDECODES: frozenset[str] = frozenset({"gb2312"})


def write_charset_set(directory: Path | str) -> dict[Path, str]:
    """SC instances whose names use the remaining Conformance-6 sets → expected decoded name."""
    directory = Path(directory)
    out: dict[Path, str] = {}
    for label, (charset, name, raw) in GENERATED_CHARSETS.items():
        ds = make_instance(_SC, patient_id=f"CHARSET-{label.upper()}", patient_name="x")
        ds.SpecificCharacterSet = charset
        ds.PatientName = raw if raw is not None else name
        ds.StudyDescription = name.split("^")[0]
        out[write(ds, directory / f"charset_{label}.dcm")] = name
    return out


# pydicom test files that pass our checks but are deliberately odd; not "must accept".
_PYDICOM_DELIBERATELY_ODD = ("bad", "mismatch", "truncated", "padded", "delimiter", "no_meta")


def _is_acceptable(path: Path) -> bool:
    """Mirror of the Store SCP's checks (Conformance 4.1.3.2) for a pydicom test file."""
    try:
        ds = pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 — any failure to read means "not a storage instance"
        return False
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in ACCEPTED:
        return False
    if ds.get("SOPClassUID") not in BY_UID:
        return False
    if meta.get("MediaStorageSOPClassUID") not in (None, ds.SOPClassUID):
        return False
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID"):
        if not ds.get(kw):
            return False
    if not all(
        _valid_uid(str(ds.get(k)))
        for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
    ):
        return False
    if BY_UID[ds.SOPClassUID].has_pixels:
        if "PixelData" not in ds:
            return False
        try:
            arr = ds.pixel_array
        except Exception:  # noqa: BLE001
            return False
        frames = int(ds.get("NumberOfFrames") or 1)
        expected = (ds.Rows, ds.Columns)
        if frames > 1:
            expected = (frames, *expected)
        if ds.SamplesPerPixel > 1:
            expected = (*expected, ds.SamplesPerPixel)
        if arr.shape != expected:
            return False
        if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
            need = ds.Rows * ds.Columns * frames * ds.SamplesPerPixel * ds.BitsAllocated
            if len(ds.PixelData) not in ((need + 7) // 8, (need + 7) // 8 + 1):
                return False
    return True


def _valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and all(
        p.isdigit() and (p == "0" or p[0] != "0") for p in uid.split(".")
    )


@functools.cache
def _pydicom_test_files(unique: bool) -> tuple[Path, ...]:
    from pydicom.data import get_testdata_files

    seen: set[str] = set()
    keep: list[Path] = []
    for name in sorted(get_testdata_files("**/*")):
        path = Path(name)
        if path.suffix in (".py", ".gz", ".bz2", ".json", ".txt", ".xml") or not path.is_file():
            continue
        if any(word in path.name.lower() for word in _PYDICOM_DELIBERATELY_ODD):
            continue
        if not _is_acceptable(path):
            continue
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if unique and uid in seen:  # several files share one SOP Instance UID: keep the first
            continue
        seen.add(uid)
        keep.append(path)
    return tuple(keep)


def pydicom_test_files(*, unique: bool = True) -> list[Path]:
    """pydicom's bundled files that are valid storage instances we must accept, one per UID.

    Many files share an SOP Instance UID (the same image in several transfer syntaxes); with
    the archive's default replace policy only the last one would survive, so we keep only the
    first of each UID and every path here can be compared byte-for-byte after ingest.
    """
    return list(_pydicom_test_files(unique))


def iter_instances(paths: Iterable[Path]) -> Iterable[Dataset]:
    """Read datasets back (a small convenience for tests)."""
    for p in paths:
        yield pydicom.dcmread(p)


def parametric_map(directory: Path, frames: int = 2, size: int = 16) -> Dataset:
    """A Parametric Map (Float Pixel Data, what our perfusion engine writes) of a small CT
    series written into ``directory``: values 0..80 ml/100g/min rising through the frames."""
    import highdicom as hd

    written = write_ct_series(directory, n=frames, rows=size, cols=size)
    sources = [pydicom.dcmread(f) for f in written]
    values = np.linspace(0, 80, frames * size * size, dtype=np.float32)
    return hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=values.reshape(frames, size, size),
        series_instance_uid=hd.UID(),
        series_number=90,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Lucent tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="1",
        contains_recognizable_visual_features=False,
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=40, window_width=80)],
        real_world_value_mappings=[
            hd.pm.RealWorldValueMapping(
                lut_label="CBF",
                lut_explanation="cerebral blood flow",
                unit=hd.sr.CodedConcept("ml/100g/min", "UCUM", "ml/100g/min"),
                value_range=(0.0, 80.0),
                slope=1.0,
                intercept=0.0,
            )
        ],
    )


def ct_series(n: int) -> list[Dataset]:
    """``n`` small CT instances of one patient, study and series (instance numbers 1..n)."""
    first = make_instance("1.2.840.10008.5.1.4.1.1.2")
    out = []
    for i in range(n):
        ds = make_instance("1.2.840.10008.5.1.4.1.1.2")
        ds.PatientID, ds.PatientName = first.PatientID, first.PatientName
        ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out
