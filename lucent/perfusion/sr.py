"""The perfusion summary as an Enhanced SR document (issue 6: "a machine-readable summary
(JSON in the API; optionally a Basic Text SR)").

Enhanced SR rather than Basic Text SR: the volumes are NUM items with UCUM units (a PACS or
a reporting tool reads numbers, not prose) and the AIF/VOF locations are SCOORD points
SELECTED FROM the source slice, both of which Basic Text SR forbids (PS3.3 A.35.1/A.35.2).
The document is in the source study, in its own series; the source series are listed in
the Current Requested Procedure Evidence Sequence (SR Document General module). It is
COMPLETE (the analysis ran to the end) but UNVERIFIED and PRELIMINARY: no physician has
checked it, and the seed FAQ asks the reader to check the maps against the source images.

Concepts without a standard code use the private scheme ``99LUCENT`` (PS3.3 8.2: private
coding schemes start with "99"), declared in the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from .identity import TYPE2
from .parameters import method_text
from .segmentation import ratio_text

if TYPE_CHECKING:
    from .pipeline import PerfusionResult

SCHEME = "99LUCENT"
SCHEME_VERSION = "1"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"

ROOT = Code("18748-4", "LN", "Diagnostic imaging report")
ML = Code("mL", "UCUM", "milliliter")
RATIO = Code("{ratio}", "UCUM", "ratio")
MM = Code("mm", "UCUM", "millimeter")
SECOND = Code("s", "UCUM", "second")
ADC_UNIT = Code("um2/s", "UCUM", "square micrometer per second")
"""10^-6 mm²/s, the unit of ADC thresholds (1 µm² = 10^-6 mm²)."""


def _c(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning, SCHEME_VERSION)


CONCEPTS = {
    "volumes": _c("LP-100", "Perfusion volumes"),
    "core": _c("LP-101", "Ischemic core volume"),
    "hypo": _c("LP-102", "Hypoperfusion volume"),
    "mismatch": _c("LP-103", "Mismatch volume"),
    "ratio": _c("LP-104", "Mismatch ratio"),
    "hir": _c("LP-105", "Hypoperfusion intensity ratio"),
    "tmax10": _c("LP-106", "Tmax > 10 s volume"),
    "core_source": _c("LP-107", "Core definition"),
    "reliable": _c("LP-108", "Volumes reliable"),
    "reliability_reason": _c("LP-109", "Reason volumes not reliable"),
    "defuse3": _c("LP-110", "DEFUSE-3 imaging criteria"),
    "verdict": _c("LP-111", "DEFUSE-3 verdict"),
    "failed": _c("LP-112", "DEFUSE-3 criterion failed"),
    "uncertain": _c("LP-113", "DEFUSE-3 criterion not decided"),
    "qc": _c("LP-120", "Quality control"),
    "qc_flag": _c("LP-121", "Quality control flag"),
    "motion": _c("LP-122", "Motion summary"),
    "aif": _c("LP-130", "Arterial input function"),
    "vof": _c("LP-131", "Venous output function"),
    "voxels": _c("LP-132", "Selected voxels (z, y, x) on the perfusion grid"),
    "centroid": _c("LP-133", "Centroid in patient coordinates (LPS, mm)"),
    "location": _c("LP-134", "Selected voxel location"),
    "source": _c("LP-135", "Source image"),
    "pve": _c("LP-136", "Partial-volume scale of the AIF"),
    "warning": _c("LP-140", "Warning"),
    "coreg": _c("LP-141", "Rigid coregistration to perfusion"),
    "parameters": _c("LP-150", "Analysis parameters"),
    "method": _c("LP-151", "Deconvolution method"),
    "threshold_core": _c("LP-152", "Core threshold, relative CBF"),
    "threshold_adc": _c("LP-153", "Core threshold, ADC"),
    "threshold_tmax": _c("LP-154", "Hypoperfusion threshold, Tmax"),
    "threshold_tmax_severe": _c("LP-155", "Severe hypoperfusion threshold, Tmax"),
    "min_island_ml": _c("LP-156", "Minimum island volume"),
}
"""Concept names of the document (private scheme; meanings are what dsrdump prints)."""

TYPE2_PATIENT_STUDY = TYPE2
"""Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1):
present in every object, empty when unknown. highdicom's constructors read each of them
from the first source as an attribute."""


def highdicom_sources(headers: Sequence[Dataset]) -> list[Dataset]:
    """The source headers as highdicom's constructors need them.

    ``hd.sr.EnhancedSR`` and ``hd.pm.ParametricMap`` read ``evidence[0].PatientBirthDate``,
    ``.AccessionNumber`` and the other Type 2 patient/study attributes as attributes, so a
    source without them (common after anonymisation) raised AttributeError. Type 2 means
    "present, empty when unknown" (PS3.5 7.4.5): an absent attribute and an empty one say the
    same thing, so each header missing any is replaced by a copy (the source header is not
    touched) with the missing ones present and empty. The output's patient identity is the
    source's: every value that is there is kept as it is.
    """
    copies: dict[int, Dataset] = {}
    out: list[Dataset] = []
    for header in headers:
        key = id(header)
        if key not in copies:
            missing = [k for k in TYPE2_PATIENT_STUDY if k not in header]
            if missing:
                filled = Dataset()
                filled.update(header)  # new element dict: the source keeps its elements
                for k in missing:
                    setattr(filled, k, "")
                copies[key] = filled
            else:
                copies[key] = header
        out.append(copies[key])
    return out


CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
SELECTED_FROM = hd.sr.RelationshipTypeValues.SELECTED_FROM


def _text(key: str, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(CONCEPTS[key], value or "-", relationship_type=CONTAINS)


def _num(key: str, value: float, unit: Code) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(CONCEPTS[key], float(value), unit, relationship_type=CONTAINS)


def _container(key: str, items: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    box = hd.sr.ContainerContentItem(CONCEPTS[key], relationship_type=CONTAINS)
    box.ContentSequence = hd.sr.ContentSequence(list(items))
    return box


def _ratio_items(v: dict[str, Any]) -> list[Dataset]:
    """Mismatch ratio as a number; infinite (no core) or undefined as text, never a fake NUM."""
    if v["mismatch_ratio"] is not None:
        return [_num("ratio", v["mismatch_ratio"], RATIO)]
    return [_text("ratio", ratio_text(v))]


def _function_items(result: PerfusionResult, voxels: Sequence[Sequence[int]]) -> list[Dataset]:
    """Voxels (z, y, x), their centroid in patient mm and SCOORD points on the source slices."""
    s = result.series
    items: list[Dataset] = [_text("voxels", "; ".join(f"({z},{y},{x})" for z, y, x in voxels))]
    if not voxels:
        return items
    zyx = np.asarray(voxels, float)
    pts = (
        np.array([s.slice_position(int(z)) for z in zyx[:, 0]])  # tilt-aware (model.py)
        + s.row_dir[None] * (zyx[:, 2:3] * s.spacing[2])
        + s.col_dir[None] * (zyx[:, 1:2] * s.spacing[1])
    )
    c = pts.mean(axis=0)
    items.append(_text("centroid", f"({c[0]:.1f}, {c[1]:.1f}, {c[2]:.1f})"))
    b = s.bin_factor
    for z in sorted({int(v[0]) for v in voxels}):
        ref = s.slice_headers[z]
        # PS3.3 C.18.6.1.2: pixel coordinates, (0,0) = top-left corner of the top-left pixel;
        # a binned voxel covers b x b source pixels, its centre is at (index + 0.5) * b
        data = np.array(
            [[(v[2] + 0.5) * b, (v[1] + 0.5) * b] for v in voxels if int(v[0]) == z], float
        )
        kind = "POINT" if len(data) == 1 else "MULTIPOINT"
        point = hd.sr.ScoordContentItem(
            CONCEPTS["location"], kind, data, relationship_type=CONTAINS
        )
        point.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.ImageContentItem(
                    CONCEPTS["source"],
                    ref.SOPClassUID,
                    ref.SOPInstanceUID,
                    relationship_type=SELECTED_FROM,
                )
            ]
        )
        items.append(point)
    return items


def parameter_items(p: dict[str, Any]) -> list[Dataset]:
    """Method (TEXT) and thresholds (NUM with units) the analysis used."""
    return [
        _text("method", method_text(p)),
        _num("threshold_core", p["threshold_core"], RATIO),
        _num("threshold_adc", p["threshold_adc"], ADC_UNIT),
        _num("threshold_tmax", p["threshold_tmax"], SECOND),
        _num("threshold_tmax_severe", p["threshold_tmax_severe"], SECOND),
        _num("min_island_ml", p["min_island_ml"], ML),
    ]


def summary_content(result: PerfusionResult) -> hd.sr.ContainerContentItem:
    """The content tree: volumes, DEFUSE-3, reliability, QC flags, AIF/VOF, warnings."""
    v, qc = result.summary, result.qc
    d3 = v["defuse3"]
    volumes = [
        _num("core", v["core_ml"], ML),
        _text("core_source", str(v["core_source"])),
        _num("hypo", v["hypoperfusion_ml"], ML),
        _num("mismatch", v["mismatch_ml"], ML),
        *_ratio_items(v),
        _num("tmax10", v["tmax_severe_ml"], ML),
    ]
    if v["hypoperfusion_intensity_ratio"] is not None:
        volumes.append(_num("hir", v["hypoperfusion_intensity_ratio"], RATIO))
    else:
        volumes.append(_text("hir", "n/a (no hypoperfusion)"))
    volumes.append(_text("reliable", "yes" if v["volumes_reliable"] else "no"))
    if not v["volumes_reliable"]:
        volumes.append(_text("reliability_reason", v["reliability_reason"]))
    defuse = [
        _text("verdict", str(d3["verdict"]).replace("_", " ")),
        *[_text("failed", c) for c in d3["failed_criteria"]],
        *[_text("uncertain", c) for c in d3.get("uncertain_criteria", [])],
    ]
    flags = [_text("qc_flag", f"{f['code']}: {f['reason']}") for f in qc["flags"]]
    if not flags:
        flags = [_text("qc_flag", "none")]
    if result.motion is not None:
        m = result.motion
        flags.append(
            _text(
                "motion",
                f"max displacement {m.max_displacement_mm:.2f} mm, max framewise displacement "
                f"{m.max_fd_mm:.2f} mm, {len(m.corrected_frames)} frame(s) resampled"
                + (f"; {m.reason}" if m.reason else ""),
            )
        )
    curves = qc["curves"]
    aif = _function_items(result, curves["aif_voxels_zyx"])
    aif.append(_num("pve", curves["pve_scale"], RATIO))
    children: list[Dataset] = [
        _container("volumes", volumes),
        _container("defuse3", defuse),
        *(
            [_container("parameters", parameter_items(result.parameters))]
            if result.parameters
            else []
        ),
        _container("qc", flags),
        _container("aif", aif),
    ]
    if curves["vof_voxels_zyx"]:
        children.append(_container("vof", _function_items(result, curves["vof_voxels_zyx"])))
    for name, reg in (result.coregistration or {}).items():
        children.append(
            _text(
                "coreg",
                f"{name.upper()}: translation {reg['translation_mm']} mm, rotation "
                f"{reg['rotation_deg']} deg, Mattes MI {reg['mattes_mi']}",
            )
        )
    children.extend(_text("warning", w) for w in result.warnings)
    root = hd.sr.ContainerContentItem(ROOT)
    root.ContentSequence = hd.sr.ContentSequence(children)
    return root


def structured_report(
    result: PerfusionResult, series_uid: str, sop_uid: str, number: int
) -> hd.sr.EnhancedSR:
    """The summary as an Enhanced SR in the source study (its own series)."""
    s = result.series
    ref = s.slice_headers[0]
    sr = hd.sr.EnhancedSR(
        evidence=highdicom_sources(s.slice_headers),
        content=summary_content(result),
        series_instance_uid=series_uid,
        series_number=number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="Lucent",
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=ref.get("InstitutionName") or None,
    )
    sr.SeriesDescription = "Perfusion summary (SR)"
    # Conformance 8.1.1: series date/time of a created object = when it was made
    sr.SeriesDate, sr.SeriesTime = sr.ContentDate, sr.ContentTime
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "Lucent perfusion concepts"
    scheme.CodingSchemeVersion = SCHEME_VERSION
    scheme.CodingSchemeResponsibleOrganization = "Lucent project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
