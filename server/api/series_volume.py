"""Which image instances of a series make one volume, in which order, with which spacing.

``/series/{uid}/geometry`` and ``/series/{uid}/volume`` both call :func:`plan`, so every
series one of them refuses, the other refuses too, with the same reason (they disagreed:
mixed image sizes gave a geometry 200 and a volume 409). A refusal is a 409 whose detail the
viewer can show; it then falls back to showing frames one by one.

A volume is a stack of single-frame slices of one size, one orientation, one pixel spacing
and one pixel format, each at its own position along the slice normal (IOP row × column,
PS3.3 C.7.6.2.1.1). Anything else was stacked silently into a wrong array with a 200:
a dynamic (4D) series gave 12 "slices" of 3 positions, a multi-frame instance filed among
single-frame slices was left out.

All slices must share one Frame of Reference (PS3.3 C.7.4.1.1.1): images in different
Frames of Reference are not spatially related, so their positions cannot be put on one grid
even when the numbers line up (a series whose halves carried two FoR UIDs was fused into one
volume with a 200). The index keeps the FoR per series (its first instance); each instance's
own UID is checked where its indexed attributes hold it, else read from its metadata by the
``frame_of_reference`` reader the route passes in (:func:`metadata_frame_of_reference`).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import HTTPException

from server.index.models import Instance

if TYPE_CHECKING:
    from server.context import ServerContext

#: The Frame of Reference UID of one instance ("" when it has none).
FrameOfReferenceReader = Callable[[Instance], str]

#: Two slices closer than this along the normal are at the same position (mm).
log = logging.getLogger("lucent.api")
SAME_POSITION_MM = 0.01
#: Gaps agree when they differ from the median gap by at most 1 % of it or 0.01 mm, whichever
#: is larger: IPPs are decimal strings that scanners round (0.625 mm slices written to 0.01 mm
#: give gaps of 0.62 and 0.63); 3D Slicer's DICOM loader uses the same 0.01 mm.
GAP_RELATIVE = 0.01
GAP_ABSOLUTE_MM = 0.01
#: Pixel spacings agree within this relative tolerance (decimal-string rounding only).
PIXEL_SPACING_RELATIVE = 1e-3


@dataclass(frozen=True)
class VolumePlan:
    """The slices in volume order and what can be said about their spacing.

    ``slice_spacing`` is the one distance between neighbouring slices, or None when there is
    none to give: fewer than two slices, positions unknown (no IPP/IOP: ordered by Instance
    Number), or gaps that are not uniform. ``uniform_spacing`` is None when positions are
    unknown; ``slice_gaps`` the distances between neighbours along the normal (mm).
    """

    slices: list[Instance]
    slice_spacing: float | None
    uniform_spacing: bool | None
    slice_gaps: list[float]


def _refuse(reason: str) -> HTTPException:
    return HTTPException(409, f"{reason}; fetch frames instead")


def _attrs(inst: Instance) -> dict[str, Any]:
    return inst.attrs or {}


def _single_frame_slices(found: list[Instance]) -> list[Instance]:
    """The single-frame instances, when they are all the series' images.

    Per-frame geometry of multi-frame instances (enhanced CT/MR, cine) lives in functional
    groups the index does not keep: a series of them only is refused, and so is one that
    mixes them with single-frame slices (the multi-frame ones were silently dropped).
    """
    single = [i for i in found if (i.frames or 1) <= 1]
    multi = [i for i in found if (i.frames or 1) > 1]
    frames = sum(i.frames for i in multi)
    if not single:
        raise _refuse(
            f"series holds multi-frame instances only ({len(multi)} instance(s), {frames} frames)"
        )
    if multi:
        raise _refuse(
            f"series mixes {len(single)} single-frame slice(s) with {len(multi)} multi-frame "
            f"instance(s) ({frames} frames, e.g. {multi[0].sop_instance_uid}) that a volume "
            "would leave out"
        )
    return single


def _check_same(found: list[Instance]) -> None:
    """One size, one pixel format, one orientation, one pixel spacing for every slice."""
    first = found[0]
    size = (first.rows, first.columns)
    for i in found:
        if (i.rows, i.columns) != size:
            raise _refuse(
                f"series mixes image sizes ({size[0]}x{size[1]} and {i.rows}x{i.columns}, "
                f"e.g. {i.sop_instance_uid})"
            )
    fmt_keys = ("BitsAllocated", "PixelRepresentation", "SamplesPerPixel")
    fmt = [_attrs(first).get(k) for k in fmt_keys]
    for i in found:
        if [_attrs(i).get(k) for k in fmt_keys] != fmt:
            raise _refuse(
                "series mixes pixel formats (Bits Allocated, Pixel Representation or "
                f"Samples per Pixel differ, e.g. {i.sop_instance_uid})"
            )
    iop = next((_attrs(i).get("ImageOrientationPatient") for i in found if i.attrs), None)
    if iop and len(iop) == 6:
        for i in found:
            other = _attrs(i).get("ImageOrientationPatient")
            if other and (len(other) != 6 or not np.allclose(other, iop, atol=1e-4)):
                raise _refuse(
                    "series mixes image orientations (ImageOrientationPatient differs, "
                    f"e.g. {i.sop_instance_uid})"
                )
    spacing = _attrs(first).get("PixelSpacing")
    for i in found:
        other = _attrs(i).get("PixelSpacing")
        if spacing is None and other is None:
            continue
        if (
            spacing is None
            or other is None
            or len(other) != len(spacing)
            or not np.allclose(other, spacing, rtol=PIXEL_SPACING_RELATIVE, atol=0)
        ):
            raise _refuse(
                f"series mixes pixel spacings ({_mm(spacing)} and {_mm(other)} mm, "
                f"e.g. {i.sop_instance_uid})"
            )


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


def _refuse_repeated(keyed: list[Instance], pos: list[float]) -> None:
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
    uids = ", ".join(keyed[k].sop_instance_uid for k in example[:2])
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


def plan(
    found: list[Instance], frame_of_reference: FrameOfReferenceReader | None = None
) -> VolumePlan:
    """Check and order the image instances of a series as one volume, or raise a 409.

    Slices are sorted along the normal of IOP when every slice has an IPP, else by Instance
    Number (positions unknown). Gaps are uniform when each differs from their median by at
    most ``GAP_RELATIVE`` (1 %) of it or ``GAP_ABSOLUTE_MM`` (0.01 mm), whichever is larger;
    non-uniform gaps (a missing slice, a variable-pitch acquisition) are not refused, since
    every slice's IPP is returned, but ``slice_spacing`` is then None and
    ``uniform_spacing`` False, so the single value cannot be mistaken for the spacing.

    Slices in more than one Frame of Reference are refused (``frame_of_reference`` reads an
    instance's UID where the index does not hold it, see :func:`_check_frame_of_reference`).
    """
    slices = _single_frame_slices(found)
    _check_same(slices)
    _check_frame_of_reference(slices, frame_of_reference)
    iop = next((_attrs(i).get("ImageOrientationPatient") for i in slices if i.attrs), None)
    if not (iop and len(iop) == 6 and all(_attrs(i).get("ImagePositionPatient") for i in slices)):
        ordered = sorted(slices, key=lambda i: (i.instance_number or 0, i.id))
        return VolumePlan(ordered, None, None, [])
    normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))

    def along(i: Instance) -> float:
        return float(np.dot(normal, np.array(_attrs(i)["ImagePositionPatient"], float)))

    keyed = sorted(slices, key=lambda i: (along(i), i.instance_number or 0, i.id))
    pos = [along(i) for i in keyed]
    _refuse_repeated(keyed, pos)
    gaps = np.diff(pos)
    if not len(gaps):
        return VolumePlan(keyed, None, True, [])
    median = float(np.median(gaps))
    tolerance = max(GAP_RELATIVE * median, GAP_ABSOLUTE_MM)
    uniform = bool(np.all(np.abs(gaps - median) <= tolerance))
    spacing = (pos[-1] - pos[0]) / (len(pos) - 1) if uniform else None
    return VolumePlan(keyed, spacing, uniform, [round(float(g), 6) for g in gaps])


def numpy_dtype(attrs: dict[str, Any]) -> str:
    """The dtype of the volume's stored values, as the volume route produces them (native
    reader and pydicom alike): signed when Pixel Representation is 1, 8 bits included (a
    signed 8-bit series was announced as uint8 and delivered as int8)."""
    bits = int(attrs.get("BitsAllocated", 16))
    signed = int(attrs.get("PixelRepresentation", 0)) == 1
    if bits in (8, 16, 32):
        return f"{'int' if signed else 'uint'}{bits}"
    return "float32"
