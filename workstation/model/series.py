"""A series as the viewer sees it: ordered slices (image or frame) with geometry and pixels.

Slices are known before pixels arrive (from the instance list and its indexed attributes), so
the viewer can show "12 / 300" and scroll while the loader fills pixels in the background.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lucent.api import schemas
from workstation.model.events import Event
from workstation.model.geometry import ImagePlane
from workstation.model.measure import Spacing
from workstation.model.pipeline import Frame, Lossy, lossy_of

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
}
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
# Conformance Table 2: viewable image classes (NM, 3D XA, RT Image and CAD SR are not).
IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.3.1": "US multi-frame",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
    "1.2.840.10008.5.1.4.1.1.128": "PET",
}


def viewable(sop_class_uid: str) -> str:
    """ "image", "sr", "pdf", "gsps" or "" (not viewable per Conformance Table 2)."""
    if sop_class_uid in IMAGE_CLASSES:
        return "image"
    if sop_class_uid in SR_CLASSES:
        return "sr"
    if sop_class_uid == PDF_CLASS:
        return "pdf"
    if sop_class_uid == GSPS_CLASS:
        return "gsps"
    return ""


@dataclass
class Slice:
    """One displayable image: an instance, or one frame of a multi-frame instance."""

    sop_instance_uid: str
    sop_class_uid: str
    frame: int  # 0-based frame index within the instance
    instance_number: int | None
    attrs: dict[str, Any]
    plane: ImagePlane | None
    spacing: Spacing
    lossy: Lossy
    rows: int
    cols: int

    @property
    def frame_time_ms(self) -> float | None:
        try:
            return float(self.attrs["FrameTime"])
        except (KeyError, TypeError, ValueError):
            return None


def _plane(attrs: dict[str, Any], rows: int | None, cols: int | None) -> ImagePlane | None:
    return ImagePlane.from_attrs(
        attrs.get("ImagePositionPatient"),  # type: ignore[arg-type]
        attrs.get("ImageOrientationPatient"),  # type: ignore[arg-type]
        attrs.get("PixelSpacing"),  # type: ignore[arg-type]
        rows,
        cols,
    )


def slices_from_instances(instances: list[schemas.InstanceOut]) -> list[Slice]:
    """Image instances → slices, sorted along the normal when geometry is complete."""
    out: list[Slice] = []
    for inst in instances:
        if viewable(inst.sop_class_uid) != "image":
            continue
        a = dict(inst.attrs)
        lossy = lossy_of(
            a.get("LossyImageCompression"),
            inst.transfer_syntax_uid,
            a.get("LossyImageCompressionRatio"),
            a.get("LossyImageCompressionMethod"),
            inst.lossy,
        )
        plane = _plane(a, inst.rows, inst.columns)
        for f in range(max(inst.frames, 1)):
            out.append(
                Slice(
                    inst.sop_instance_uid,
                    inst.sop_class_uid,
                    f,
                    inst.instance_number,
                    a,
                    plane if inst.frames <= 1 else None,
                    Spacing.from_attrs(a),
                    lossy,
                    int(inst.rows or 0),
                    int(inst.columns or 0),
                )
            )
    return sort_slices(out)


def sort_slices(out: list[Slice]) -> list[Slice]:
    """Along the common normal when every slice has a parallel plane, else by number."""
    planes = [s.plane for s in out]
    if out and all(p is not None for p in planes):
        n0 = planes[0].normal  # type: ignore[union-attr]
        if all(abs(float(np.dot(p.normal, n0))) > 0.999 for p in planes):  # type: ignore[union-attr]
            out.sort(key=lambda s: float(np.dot(s.plane.position, n0)))  # type: ignore[union-attr]
            return out
    out.sort(key=lambda s: (s.instance_number or 0, s.sop_instance_uid, s.frame))
    return out


def _item(group: Any, keyword: str) -> Any:
    seq = group.get(keyword) if group is not None else None
    return seq[0] if seq else None


def _values(item: Any, keyword: str) -> list[float] | None:
    value = item.get(keyword) if item is not None else None
    if value is None or value == "":
        return None
    try:
        seq = value if hasattr(value, "__iter__") and not isinstance(value, str) else [value]
        return [float(v) for v in seq]
    except (TypeError, ValueError):
        return None


# Functional group macro → the attributes it carries (PS3.3 C.7.6.16.2).
_FUNCTIONAL_GROUPS = {
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth"),
}


def frame_attributes(ds: Any) -> list[dict[str, Any]]:
    """Per frame of an enhanced multi-frame image: geometry, rescale and window attributes
    from the Shared, then Per-Frame Functional Groups (per-frame values win), PS3.3 C.7.6.16.

    Enhanced CT/MR carry Image Position/Orientation and Pixel Spacing only there, so without
    this every frame would lack a plane: no reference lines, no slice position, no mm.
    """
    n = int(ds.get("NumberOfFrames") or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    out: list[dict[str, Any]] = []
    for f in range(n):
        attrs: dict[str, Any] = {}
        for group in (shared, per[f] if f < len(per) else None):
            for macro, keywords in _FUNCTIONAL_GROUPS.items():
                item = _item(group, macro)
                for kw in keywords:
                    v = _values(item, kw)
                    if v is not None:
                        attrs[kw] = v
            pvt = _item(group, "PixelValueTransformationSequence")
            if pvt is not None and pvt.get("RescaleType"):
                attrs["RescaleType"] = str(pvt.RescaleType)
        out.append(attrs)
    return out


def apply_frame_attributes(slices: list[Slice], sop_instance_uid: str,
                           per_frame: list[dict[str, Any]]) -> None:  # fmt: skip
    """Give each frame-slice of one instance its own plane, spacing and attributes."""
    for s in slices:
        if s.sop_instance_uid != sop_instance_uid or s.frame >= len(per_frame):
            continue
        extra = per_frame[s.frame]
        if not extra:
            continue
        s.attrs = {**s.attrs, **extra}
        s.plane = _plane(s.attrs, s.rows, s.cols)
        s.spacing = Spacing.from_attrs(s.attrs)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class SeriesData:
    """Slices plus pixels as they arrive; ``loaded`` fires with the slice index."""

    series: schemas.SeriesOut
    study: schemas.StudyOut | None
    slices: list[Slice]
    kind: str = "image"  # image | sr | pdf
    documents: list[Any] = field(default_factory=list)  # SR/PDF data sets
    frames: dict[int, Frame] = field(default_factory=dict)
    volume: np.ndarray | None = None  # stored values (slices, rows, cols) when uniform
    volume_order: list[str] = field(default_factory=list)  # SOP UID of each volume slice
    prefetched: dict[str, Any] = field(default_factory=dict)  # SOP UID → data set, read once
    loaded: Event = field(default_factory=Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uid(self) -> str:
        return self.series.series_uid

    @property
    def frame_of_reference(self) -> str:
        return self.series.frame_of_reference_uid

    def __len__(self) -> int:
        return len(self.slices)

    def summary(self, pages: int = 0) -> str:
        """What was opened, for the status bar: "12 images", "1 PDF document, 3 pages",
        "2 reports". A PDF series said "0 images" (it has no image slices)."""
        if self.kind == "image":
            return _count(len(self.slices), "image")
        pdfs = sum(1 for ds in self.documents if "EncapsulatedDocument" in ds)
        parts = [_count(pdfs, "PDF document")] if pdfs else []
        if pages:
            parts.append(_count(pages, "page"))
        if len(self.documents) > pdfs:
            parts.append(_count(len(self.documents) - pdfs, "report"))
        return ", ".join(parts) or "nothing that can be shown"

    def put(self, index: int, frame: Frame) -> None:
        with self._lock:
            self.frames[index] = frame
        self.loaded.emit(index)

    def frame(self, index: int) -> Frame | None:
        return self.frames.get(index)

    @property
    def complete(self) -> bool:
        return len(self.frames) >= len(self.slices)

    def nearest(self, position: np.ndarray) -> int | None:
        """Slice closest to a patient-space point (synchronised scrolling, locator)."""
        best, best_d = None, float("inf")
        for k, s in enumerate(self.slices):
            if s.plane is None:
                continue
            d = abs(s.plane.distance(position))
            if d < best_d:
                best, best_d = k, d
        return best

    def modality_unit(self) -> str:
        a = self.slices[0].attrs if self.slices else {}
        if str(a.get("RescaleType", "")).upper() == "HU" or self.series.modality == "CT":
            return "HU"
        return ""
