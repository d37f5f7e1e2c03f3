"""Which image instances of a series make one volume, in which order, with which spacing.

``/series/{uid}/geometry`` and ``/series/{uid}/volume`` both call :func:`plan`, so every
series one of them refuses, the other refuses too, with the same reason (they disagreed:
mixed image sizes gave a geometry 200 and a volume 409). A refusal is a 409 whose detail the
viewer can show; it then falls back to showing frames one by one.

A volume is a stack of slices of one size, one orientation, one pixel spacing and one pixel
format, each at its own position along the slice normal (IOP row × column, PS3.3
C.7.6.2.1.1). The slices are either single-frame instances, or the frames of ONE multi-frame
instance whose functional groups give each frame its position and orientation (Enhanced
CT/MR and the like, PS3.3 C.7.6.16). Anything else was stacked silently into a wrong array
with a 200: a dynamic (4D) series gave 12 "slices" of 3 positions, a multi-frame instance
filed among single-frame slices was left out.

All slices must share one Frame of Reference (PS3.3 C.7.4.1.1.1): images in different
Frames of Reference are not spatially related, so their positions cannot be put on one grid
even when the numbers line up (a series whose halves carried two FoR UIDs was fused into one
volume with a 200). The index keeps the FoR per series (its first instance); each instance's
own UID is checked where its indexed attributes hold it, else read from its metadata by the
``frame_of_reference`` reader the route passes in (:func:`metadata_frame_of_reference`).

A stack whose positions do not step along the slice normal (CT gantry tilt: PS3.3
C.7.6.2.1.1 allows it, the IPPs then shear) is served, flagged ``tilted`` with its
``stack_direction`` and ``gantry_tilt_deg``, and never called uniform: it answered
``uniform_spacing`` true with the spacing along the normal, and a viewer placing slice k at
IPP0 + k × spacing × normal was 8.55 mm off at slice 5 of a 20° tilt (outside probe 47).

A slice whose Modality LUT Sequence (PS3.3 C.11.1) maps its stored values is returned with
that LUT applied (:func:`lucent.dicom.pixels.modality_lut`, which hands pydicom's
``apply_modality_lut`` a tidied table), with slope 1 and intercept 0: it came
with slope 1, intercept 0 and nothing to say a LUT exists, so a client's modality values
were the raw stored values (probe 47). The index does not keep the sequence: the metadata of
a slice that may have one (no Rescale Slope/Intercept indexed, C.11.1 allows one or the
other) is read by the ``metadata`` reader (:func:`metadata_reader`).
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import HTTPException
from pydicom.dataset import Dataset

from lucent.dicom import pixels
from server.index.models import Instance

if TYPE_CHECKING:
    from server.context import ServerContext

#: The Frame of Reference UID of one instance ("" when it has none).
FrameOfReferenceReader = Callable[[Instance], str]
#: The data set of one instance without its pixel data (functional groups, LUTs included).
MetadataReader = Callable[[Instance], Dataset]

log = logging.getLogger("lucent.api")
#: Two slices closer than this along the normal are at the same position (mm).
SAME_POSITION_MM = 0.01
#: Gaps agree when they differ from the median gap by at most 1 % of it or 0.01 mm, whichever
#: is larger: IPPs are decimal strings that scanners round (0.625 mm slices written to 0.01 mm
#: give gaps of 0.62 and 0.63); 3D Slicer's DICOM loader uses the same 0.01 mm.
GAP_RELATIVE = 0.01
GAP_ABSOLUTE_MM = 0.01
#: Pixel spacings agree within this relative tolerance (decimal-string rounding only).
PIXEL_SPACING_RELATIVE = 1e-3
#: A stack is tilted when a slice's IPP lies farther than this from the line through the
#: first slice's IPP along the normal (mm): where a regular grid along the normal would put
#: it. IPPs rounded to 0.01 mm stay well below (≤ 0.009 mm); a 1° tilt of 6 slices 5 mm apart
#: is 0.44 mm off at the last.
TILT_TOLERANCE_MM = 0.05

#: Image IODs without the Modality LUT Module: their rescale lives in their own image module
#: (CT, MR, PET) or in functional groups (enhanced): no Modality LUT Sequence to look for.
_NO_MODALITY_LUT_MODULE = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    }
)


@dataclass(frozen=True)
class Slice:
    """One plane of the volume: a single-frame instance, or frame ``frame`` (0-based) of a
    multi-frame one, with the geometry and rescale of that frame.

    ``modality_lut`` says the volume returns this slice's values through its Modality LUT
    Sequence (``rescale_slope`` 1, ``rescale_intercept`` 0 then); ``dtype`` is that of the
    values the volume returns for it.
    """

    instance: Instance
    frame: int
    position: list[float] | None
    orientation: list[float] | None
    pixel_spacing: list[float] | None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    modality_lut: bool = False
    dtype: str = "int16"

    @property
    def sop_instance_uid(self) -> str:
        return self.instance.sop_instance_uid

    @property
    def frame_number(self) -> int:
        """1-based, as DICOM's Referenced Frame Number and DICOMweb's frame URLs."""
        return self.frame + 1

    @property
    def label(self) -> str:
        if (self.instance.frames or 1) > 1:
            return f"{self.sop_instance_uid} frame {self.frame_number}"
        return self.sop_instance_uid


@dataclass(frozen=True)
class VolumePlan:
    """The slices in volume order and what can be said about their spacing.

    ``slice_spacing`` is the one distance between neighbouring slices along
    ``stack_direction``, or None when there is none to give: fewer than two slices,
    positions unknown (no IPP/IOP: ordered by Instance Number), or gaps that are not
    uniform. ``uniform_spacing`` is True only for a regular grid along the slice normal
    (slice k at IPP0 + k × slice_spacing × normal); None when positions are unknown.
    ``slice_gaps`` are the distances between neighbours along ``stack_direction`` (mm).
    ``tilted``: the slices step along ``stack_direction`` (first to last IPP), at
    ``gantry_tilt_deg`` from the normal, not along the normal (PS3.3 C.7.6.2.1.1).
    """

    slices: list[Slice]
    slice_spacing: float | None
    uniform_spacing: bool | None
    slice_gaps: list[float]
    stack_direction: list[float] | None = None
    gantry_tilt_deg: float | None = None
    tilted: bool = False

    @property
    def dtype(self) -> str:
        """The dtype of the volume: every slice's values fit it unchanged."""
        return str(np.result_type(*{np.dtype(s.dtype) for s in self.slices}))

    @property
    def modality_lut_applied(self) -> bool:
        return any(s.modality_lut for s in self.slices)


def _refuse(reason: str) -> HTTPException:
    return HTTPException(409, f"{reason}; fetch frames instead")


def _attrs(inst: Instance) -> dict[str, Any]:
    return inst.attrs or {}


def _first(value: Any, default: float | None) -> float | None:
    """The first number of an indexed list or a (multi-valued) DS, else ``default``."""
    if value is None or value == "":
        return default
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        if not len(value):
            return default
        value = list(value)[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _number(value: Any, default: float) -> float:
    found = _first(value, default)
    return default if found is None else found


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def numpy_dtype(attrs: dict[str, Any]) -> str:
    """The dtype of the volume's stored values, as the volume route produces them (native
    reader and pydicom alike): signed when Pixel Representation is 1, 8 bits included (a
    signed 8-bit series was announced as uint8 and delivered as int8)."""
    bits = int(attrs.get("BitsAllocated", 16))
    signed = int(attrs.get("PixelRepresentation", 0)) == 1
    if bits in (8, 16, 32):
        return f"{'int' if signed else 'uint'}{bits}"
    return "float32"


def stored_dtype(ds: Dataset, attrs: dict[str, Any]) -> str:
    """The dtype of an instance's decoded values from its metadata: float for Float / Double
    Float Pixel Data (Parametric Maps, our perfusion maps: Bits Allocated 32 or 64 there is
    no integer), else as :func:`numpy_dtype`."""
    if "FloatPixelData" in ds:
        return "float32"
    if "DoubleFloatPixelData" in ds:
        return "float64"
    return numpy_dtype(
        {
            "BitsAllocated": ds.get("BitsAllocated", attrs.get("BitsAllocated", 16)),
            "PixelRepresentation": ds.get(
                "PixelRepresentation", attrs.get("PixelRepresentation", 0)
            ),
        }
    )


#: What the volume returns for a slice through its Modality LUT: :func:`pixels.modality_lut`
#: hands pydicom the table as 16-bit entries, whatever its depth (8-bit entries included).
LUT_DTYPE = "uint16"


def has_modality_lut(ds: Dataset, index: int = 0) -> bool:
    """Whether frame ``index`` goes through a Modality LUT Sequence (PS3.3 C.11.1) in
    :func:`pixels.modality_lut`: one it can read, where that function looks for it (the
    frame's Pixel Value Transformation functional group, else the top level). An unreadable
    table is skipped there, and so here."""
    source = pixels.frame_group(ds, index, "PixelValueTransformationSequence")
    items = source.get("ModalityLUTSequence") or []
    if not items:
        return False
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return pixels.read_lut(items[0], signed_input=signed) is not None


def metadata_reader(ctx: ServerContext) -> MetadataReader:
    """A reader of each instance's archived metadata object (small; pixel data is neither
    read nor decrypted): functional groups and Modality LUT Sequence. Its pixel element is
    kept (empty): which of Pixel Data and Float / Double Float Pixel Data it is tells the
    values' type."""
    from pydicom import dcmread

    def read(inst: Instance) -> Dataset:
        return dcmread(io.BytesIO(ctx.metadata_bytes(inst)))

    return read


def metadata_frame_of_reference(ctx: ServerContext) -> FrameOfReferenceReader:
    """A reader of each instance's Frame of Reference UID (0020,0052) from its archived
    metadata object alone (small; the pixel data is neither read nor decrypted)."""
    from pydicom import dcmread

    def read(inst: Instance) -> str:
        ds = dcmread(
            io.BytesIO(ctx.metadata_bytes(inst)),
            stop_before_pixels=True,
            specific_tags=["FrameOfReferenceUID"],
        )
        return str(ds.get("FrameOfReferenceUID", "") or "").strip()

    return read


# ----------------------------------------------------------------------------- slices


def _may_have_modality_lut(inst: Instance) -> bool:
    """Whether the instance's metadata must be read to know: C.11.1 allows either a Modality
    LUT Sequence or Rescale Slope/Intercept, and some IODs have no Modality LUT Module."""
    a = _attrs(inst)
    if "RescaleSlope" in a or "RescaleIntercept" in a:
        return False
    return inst.sop_class_uid not in _NO_MODALITY_LUT_MODULE


def _single_frame_slice(inst: Instance, metadata: MetadataReader | None) -> Slice:
    a = _attrs(inst)
    common: dict[str, Any] = {
        "instance": inst,
        "frame": 0,
        "position": a.get("ImagePositionPatient"),
        "orientation": a.get("ImageOrientationPatient"),
        "pixel_spacing": a.get("PixelSpacing"),
        "window_center": _first(a.get("WindowCenter"), None),
        "window_width": _first(a.get("WindowWidth"), None),
    }
    dtype = numpy_dtype(a)
    if metadata is not None and _may_have_modality_lut(inst):
        try:
            ds: Dataset | None = metadata(inst)
        except Exception as exc:  # noqa: BLE001 - an unreadable object: no LUT known
            log.warning("metadata of %s unreadable: %s", inst.sop_instance_uid, exc)
            ds = None
        if ds is not None:
            dtype = stored_dtype(ds, a)
            if dtype[0] in "iu" and has_modality_lut(ds):
                return Slice(**common, modality_lut=True, dtype=LUT_DTYPE)
    return Slice(
        **common,
        rescale_slope=_number(a.get("RescaleSlope"), 1.0),
        rescale_intercept=_number(a.get("RescaleIntercept"), 0.0),
        dtype=dtype,
    )


def _group(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The frame's functional group macro item, per-frame else shared (PS3.3 C.7.6.16);
    None where neither has it (never the top level: that is not a frame's own position)."""
    found = pixels.frame_group(ds, index, sequence)
    return None if found is ds else found


def _multi_frame_slices(inst: Instance, metadata: MetadataReader | None) -> list[Slice]:
    """Each frame of one multi-frame instance as a slice, its position, orientation, pixel
    spacing, rescale and window from its Per-frame or Shared Functional Groups (Plane
    Position (Patient), Plane Orientation (Patient), Pixel Measures, Pixel Value
    Transformation, Frame VOI LUT: PS3.3 C.7.6.16.2). Frames without a position or an
    orientation cannot be placed: refused."""
    n = int(inst.frames or 1)
    if metadata is None:
        raise _refuse(f"series holds multi-frame instances only (1 instance(s), {n} frames)")
    try:
        ds = metadata(inst)
    except Exception as exc:  # noqa: BLE001 - an unreadable object: nothing to place
        raise _refuse(
            f"metadata of multi-frame instance {inst.sop_instance_uid} unreadable: {exc}"
        ) from exc
    dtype = stored_dtype(ds, _attrs(inst))
    out: list[Slice] = []
    for k in range(n):
        plane = _group(ds, k, "PlanePositionSequence")
        position = _floats(plane.get("ImagePositionPatient")) if plane is not None else None
        if position is None or len(position) != 3:
            raise _refuse(
                f"multi-frame instance {inst.sop_instance_uid} has no position for frame "
                f"{k + 1} of {n} (no Plane Position (Patient) functional group, PS3.3 "
                "C.7.6.16.2.3): its frames cannot be placed in one volume"
            )
        oriented = _group(ds, k, "PlaneOrientationSequence")
        orientation = (
            _floats(oriented.get("ImageOrientationPatient")) if oriented is not None else None
        )
        if orientation is None or len(orientation) != 6:
            raise _refuse(
                f"multi-frame instance {inst.sop_instance_uid} has no orientation for frame "
                f"{k + 1} of {n} (no Plane Orientation (Patient) functional group, PS3.3 "
                "C.7.6.16.2.4)"
            )
        measures = pixels.frame_group(ds, k, "PixelMeasuresSequence")
        voi = pixels.frame_group(ds, k, "FrameVOILUTSequence")
        common: dict[str, Any] = {
            "instance": inst,
            "frame": k,
            "position": position,
            "orientation": orientation,
            "pixel_spacing": _floats(measures.get("PixelSpacing")),
            "window_center": _first(voi.get("WindowCenter"), None),
            "window_width": _first(voi.get("WindowWidth"), None),
        }
        if dtype[0] in "iu" and has_modality_lut(ds, k):
            out.append(Slice(**common, modality_lut=True, dtype=LUT_DTYPE))
            continue
        rescale = pixels.frame_group(ds, k, "PixelValueTransformationSequence")
        out.append(
            Slice(
                **common,
                rescale_slope=_number(rescale.get("RescaleSlope"), 1.0),
                rescale_intercept=_number(rescale.get("RescaleIntercept"), 0.0),
                dtype=dtype,
            )
        )
    return out


def _slices(found: list[Instance], metadata: MetadataReader | None) -> list[Slice]:
    """The slices of the series' images: all single-frame, or the frames of the one
    multi-frame instance that is the whole series.

    A multi-frame instance among single-frame slices would be left out (it was, silently),
    and several multi-frame instances are several stacks (cine runs, a series split in
    parts, each with its own frame order): both are refused.
    """
    single = [i for i in found if (i.frames or 1) <= 1]
    multi = [i for i in found if (i.frames or 1) > 1]
    frames = sum(i.frames for i in multi)
    if multi and single:
        raise _refuse(
            f"series mixes {len(single)} single-frame slice(s) with {len(multi)} multi-frame "
            f"instance(s) ({frames} frames, e.g. {multi[0].sop_instance_uid}) that a volume "
            "would leave out"
        )
    if len(multi) > 1:
        raise _refuse(
            f"series holds {len(multi)} multi-frame instances ({frames} frames, e.g. "
            f"{multi[0].sop_instance_uid}): a volume is the frames of one multi-frame "
            "instance or a stack of single-frame slices"
        )
    if multi:
        return _multi_frame_slices(multi[0], metadata)
    return [_single_frame_slice(i, metadata) for i in single]


# ----------------------------------------------------------------------------- checks


def _check_same(slices: list[Slice]) -> None:
    """One size, one pixel format, one orientation, one pixel spacing for every slice."""
    first = slices[0].instance
    size = (first.rows, first.columns)
    for s in slices:
        i = s.instance
        if (i.rows, i.columns) != size:
            raise _refuse(
                f"series mixes image sizes ({size[0]}x{size[1]} and {i.rows}x{i.columns}, "
                f"e.g. {i.sop_instance_uid})"
            )
    fmt_keys = ("BitsAllocated", "PixelRepresentation", "SamplesPerPixel")
    fmt = [_attrs(first).get(k) for k in fmt_keys]
    for s in slices:
        if [_attrs(s.instance).get(k) for k in fmt_keys] != fmt:
            raise _refuse(
                "series mixes pixel formats (Bits Allocated, Pixel Representation or "
                f"Samples per Pixel differ, e.g. {s.sop_instance_uid})"
            )
    iop = next((s.orientation for s in slices if s.orientation), None)
    if iop and len(iop) == 6:
        for s in slices:
            other = s.orientation
            if other and (len(other) != 6 or not np.allclose(other, iop, atol=1e-4)):
                raise _refuse(
                    "series mixes image orientations (ImageOrientationPatient differs, "
                    f"e.g. {s.label})"
                )
    spacing = slices[0].pixel_spacing
    for s in slices:
        other = s.pixel_spacing
        if spacing is None and other is None:
            continue
        if (
            spacing is None
            or other is None
            or len(other) != len(spacing)
            or not np.allclose(other, spacing, rtol=PIXEL_SPACING_RELATIVE, atol=0)
        ):
            raise _refuse(
                f"series mixes pixel spacings ({_mm(spacing)} and {_mm(other)} mm, e.g. {s.label})"
            )


def _frame_of_reference(inst: Instance, read: FrameOfReferenceReader | None) -> str:
    indexed = _attrs(inst).get("FrameOfReferenceUID")
    if indexed is not None:
        return str(indexed).strip()
    if read is None:
        return ""
    try:
        return read(inst)
    except Exception as exc:  # an unreadable object: its slice has no known Frame
        log.warning("Frame of Reference of %s unreadable: %s", inst.sop_instance_uid, exc)
        return ""


def _check_frame_of_reference(found: list[Instance], read: FrameOfReferenceReader | None) -> None:
    """One Frame of Reference for every slice (PS3.3 C.7.4.1.1.1, C.7.6.2.1.1): slices of
    different Frames are not spatially related, whatever their IPP says. A slice without one
    among slices with one is refused as well: nothing ties it to the others."""
    if not any("FrameOfReferenceUID" in _attrs(i) for i in found):
        # indexed before the UID was (or no slice has one): nothing to compare without
        # reading every slice's metadata on each request (review: 1000 reads per /geometry)
        return
    by_uid: dict[str, list[Instance]] = {}
    for i in found:
        by_uid.setdefault(_frame_of_reference(i, read), []).append(i)
    named = [u for u in by_uid if u]
    if len(by_uid) <= 1:
        return
    parts = [f"{len(v)} in {u or '(none)'}" for u, v in by_uid.items()]
    what = f"{len(named)} Frames of Reference" if len(named) > 1 else "a Frame of Reference"
    example = by_uid[sorted(by_uid, key=lambda u: len(by_uid[u]))[0]][0]
    raise _refuse(
        f"series mixes {what} and slices without one ({'; '.join(parts)}, e.g. "
        f"{example.sop_instance_uid})"
        if "" in by_uid
        else f"series mixes {what} ({'; '.join(parts)}, e.g. {example.sop_instance_uid}): "
        "images in different Frames of Reference are not spatially related (PS3.3 C.7.4.1.1.1)"
    )


def _mm(value: list[float] | None) -> str:
    return "none" if value is None else "\\".join(f"{float(v):g}" for v in value)


def _refuse_repeated(keyed: list[Slice], pos: list[float]) -> None:
    """Slices at the same position: a dynamic (4D) series, or duplicates, never one volume."""
    groups: list[list[int]] = []
    for k, p in enumerate(pos):
        if groups and p - pos[groups[-1][0]] < SAME_POSITION_MM:
            groups[-1].append(k)
        else:
            groups.append([k])
    if len(groups) == len(pos):
        return
    per_position = Counter(len(g) for g in groups)
    example = next(g for g in groups if len(g) > 1)
    uids = ", ".join(keyed[k].label for k in example[:2])
    if len(per_position) == 1:
        reason = (
            f"series has {len(pos)} slices at {len(groups)} positions, {len(example)} at each "
            "(a dynamic/4D series: one volume per time point)"
        )
    else:
        reason = (
            f"series has {len(pos)} slices at {len(groups)} positions (repeated positions: "
            "duplicate slices or an incomplete dynamic series)"
        )
    raise _refuse(f"{reason}, e.g. {uids} at {pos[example[0]]:g} mm")


def _stack(normal: np.ndarray, ipp: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """The direction the slices step along, its angle to the normal (degrees), and whether
    the stack is tilted: some IPP lies more than ``TILT_TOLERANCE_MM`` off the line through
    the first IPP along the normal (PS3.3 C.7.6.2.1.1: IPP need not step along the normal,
    as on a CT with gantry tilt)."""
    offsets = ipp - ipp[0]
    off_normal = offsets - np.outer(offsets @ normal, normal)
    if float(np.max(np.linalg.norm(off_normal, axis=1))) <= TILT_TOLERANCE_MM:
        return normal, 0.0, False
    direction = offsets[-1] / float(np.linalg.norm(offsets[-1]))
    angle = math.degrees(math.acos(min(1.0, abs(float(direction @ normal)))))
    return direction, angle, True


def plan(
    found: list[Instance],
    frame_of_reference: FrameOfReferenceReader | None = None,
    metadata: MetadataReader | None = None,
) -> VolumePlan:
    """Check and order the image instances of a series as one volume, or raise a 409.

    Slices are sorted along the normal of IOP when every slice has an IPP, else by Instance
    Number (positions unknown). Gaps are uniform when each differs from their median by at
    most ``GAP_RELATIVE`` (1 %) of it or ``GAP_ABSOLUTE_MM`` (0.01 mm), whichever is larger;
    non-uniform gaps (a missing slice, a variable-pitch acquisition) are not refused, since
    every slice's IPP is returned, but ``slice_spacing`` is then None and
    ``uniform_spacing`` False, so the single value cannot be mistaken for the spacing.
    A tilted stack (see :func:`_stack`) is not refused either: ``tilted``, its
    ``stack_direction`` and ``gantry_tilt_deg``, the spacing along that direction, and
    ``uniform_spacing`` False (it is no regular grid along the normal).

    Slices in more than one Frame of Reference are refused (``frame_of_reference`` reads an
    instance's UID where the index does not hold it, see :func:`_check_frame_of_reference`).
    ``metadata`` reads an instance's data set: the functional groups of a multi-frame
    instance (without it such a series is refused) and the Modality LUT Sequence of a slice
    that may have one (without it none is looked for).
    """
    slices = _slices(found, metadata)
    _check_same(slices)
    instances = list({s.instance.id: s.instance for s in slices}.values())
    _check_frame_of_reference(instances, frame_of_reference)
    iop = next((s.orientation for s in slices if s.orientation), None)
    if not (iop and len(iop) == 6 and all(s.position and len(s.position) == 3 for s in slices)):
        ordered = sorted(slices, key=lambda s: (s.instance.instance_number or 0, s.instance.id))
        return VolumePlan(ordered, None, None, [])
    normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
    normal /= float(np.linalg.norm(normal)) or 1.0

    def along(s: Slice) -> float:
        return float(np.dot(normal, np.array(s.position, float)))

    keyed = sorted(
        slices, key=lambda s: (along(s), s.instance.instance_number or 0, s.instance.id, s.frame)
    )
    pos = [along(s) for s in keyed]
    _refuse_repeated(keyed, pos)
    if len(keyed) == 1:
        return VolumePlan(keyed, None, True, [], [float(v) for v in normal], 0.0, False)
    ipp = np.array([s.position for s in keyed], float)
    direction, angle, tilted = _stack(normal, ipp)
    steps = ipp @ direction if tilted else np.array(pos)
    gaps = np.diff(steps)
    median = float(np.median(gaps))
    tolerance = max(GAP_RELATIVE * median, GAP_ABSOLUTE_MM)
    uniform = bool(np.all(np.abs(gaps - median) <= tolerance))
    spacing = float(steps[-1] - steps[0]) / (len(steps) - 1) if uniform else None
    return VolumePlan(
        keyed,
        spacing,
        uniform and not tilted,
        [round(float(g), 6) for g in gaps],
        [round(float(v), 9) for v in direction],
        round(angle, 4),
        tilted,
    )
