"""Is this archived series a perfusion acquisition? examine() with a confidence.

Modelled on 3D Slicer's ``DICOMPlugin.examine()`` (returns loadables with a confidence):
the decision uses only what the index holds per instance (SOP Class, Rows/Columns and the
geometry/timing attributes of ``Instance.attrs``), so no blob is decrypted to decide. A
perfusion acquisition images the same slice positions repeatedly over time (issue 6,
"Input"; seed Conformance Table 3 lists the processable SOP Classes).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lucent.perfusion.series import PROCESSABLE, timing_quantum

log = logging.getLogger("lucent.perfusion")

FULL_CONFIDENCE_REPEATS = 10
"""10 time points per slice position (the engine's ``min_time_points``) = confidence 1."""


@dataclass(frozen=True)
class InstanceInfo:
    """What recognition needs of one archived instance (an index row, flattened)."""

    sop_class_uid: str
    rows: int | None
    columns: int | None
    frames: int
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class Examination:
    """The verdict on one series: confidence 0 (not perfusion) .. 1, and why."""

    confidence: float
    modality: str
    slice_positions: int
    time_points: int
    reason: str

    @property
    def is_perfusion(self) -> bool:
        return self.confidence > 0.0


def _positions(values: np.ndarray, tol: float = 0.05) -> int:
    if values.size == 0:
        return 0
    v = np.sort(values)
    return int(1 + np.count_nonzero(np.diff(v) > tol))


def examine(instances: Iterable[InstanceInfo]) -> Examination:
    """Confidence that these instances form a CT/MR perfusion acquisition.

    Single-frame images: the largest group sharing orientation and matrix is projected on
    its normal; repeats = images / distinct positions; confidence rises linearly to 1 at 10
    repeats. Timing attributes (Acquisition/Content Time) raise nothing but their absence is
    reported. Enhanced CT/MR multi-frame objects carry positions per frame, not in the
    index: they are accepted with confidence 0.5 when they have enough frames.
    """
    items = list(instances)
    usable = [i for i in items if i.sop_class_uid in PROCESSABLE]
    if not usable:
        return Examination(0.0, "", 0, 0, f"no CT/MR images among {len(items)} instance(s)")
    modality = PROCESSABLE[usable[0].sop_class_uid]
    multi = [i for i in usable if i.frames > 1]
    if multi:
        frames = sum(i.frames for i in multi)
        if frames >= 2 * FULL_CONFIDENCE_REPEATS:
            return Examination(
                0.5, modality, 0, 0, f"{len(multi)} multi-frame object(s), {frames} frames"
            )
        return Examination(0.0, modality, 0, 0, f"multi-frame object(s) with {frames} frames")
    groups: dict[tuple[Any, ...], list[InstanceInfo]] = defaultdict(list)
    for i in usable:
        iop = i.attrs.get("ImageOrientationPatient")
        ipp = i.attrs.get("ImagePositionPatient")
        if not iop or not ipp or len(iop) != 6 or len(ipp) != 3:
            continue
        groups[(i.rows, i.columns, tuple(round(float(x), 3) for x in iop))].append(i)
    if not groups:
        return Examination(0.0, modality, 0, 0, "no image position/orientation in the images")
    key, members = max(groups.items(), key=lambda kv: len(kv[1]))
    iop = np.asarray(key[2], float)
    normal = np.cross(iop[:3], iop[3:])
    dist = np.array(
        [float(np.dot(np.asarray(m.attrs["ImagePositionPatient"]), normal)) for m in members]
    )
    n_pos = _positions(dist)
    repeats = len(members) / max(n_pos, 1)
    why = f"{len(members)} {modality} images at {n_pos} slice position(s)"
    if repeats <= 1.0:
        return Examination(0.0, modality, n_pos, 1, why + ": every position imaged once")
    timed = sum(1 for m in members if m.attrs.get("AcquisitionTime") or m.attrs.get("ContentTime"))
    if timed < len(members):
        why += f"; {len(members) - timed} image(s) without Acquisition/Content Time"
    confidence = min(1.0, (repeats - 1.0) / (FULL_CONFIDENCE_REPEATS - 1.0))
    return Examination(round(confidence, 3), modality, n_pos, int(round(repeats)), why)


MAX_SERIES_GAP_S = 15.0
"""Longest pause between the last image of one series and the first of the next for the two
to be one acquisition split by the scanner (perfusion samples every 0.5-5 s)."""

POSITION_TOLERANCE_MM = 0.1
"""Slice positions (along the normal) closer than this are the same position."""
INPLANE_TOLERANCE_MM = 0.5
"""In-plane origins of a slice closer than this are the same (the engine's own limit)."""

TIME_ATTRIBUTES = (
    ("acquisition_time", "AcquisitionDate", "AcquisitionTime"),
    ("content_time", "ContentDate", "ContentTime"),
)
"""Timing the index holds per instance, in the engine's order of preference."""


@dataclass(frozen=True)
class Extent:
    """What decides whether two series are parts of one acquisition: the grid (SOP Class,
    Frame of Reference, matrix, pixel spacing, slice thickness, orientation, slice
    positions with their in-plane origins) and the time span.

    ``source`` names the timing attribute that spans the series (the one that resolves its
    time points best: see ``_timing``); ``spans`` holds every usable one, so that two series
    are compared on the same clock."""

    sop_class: str
    frame_of_reference: str
    shape: tuple[int | None, int | None]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, ...] | None
    thickness: float | None
    slices: tuple[tuple[float, float, float], ...]
    """Per slice position, sorted: (distance along the normal, row and column coordinate of
    its Image Position) in mm."""
    source: str
    first: float
    last: float
    spans: Mapping[str, tuple[float, float]]

    def differences(self, other: Extent) -> list[str]:
        """What of the geometry differs from ``other``, in words (empty: the same grid)."""
        out: list[str] = []
        if self.sop_class != other.sop_class:
            out.append("SOP Class")
        if self.frame_of_reference != other.frame_of_reference:
            out.append("Frame of Reference")
        if self.shape != other.shape:
            out.append(
                f"matrix {self.shape[0]}x{self.shape[1]} vs {other.shape[0]}x{other.shape[1]}"
            )
        if not _close(self.pixel_spacing, other.pixel_spacing, 1e-3):
            out.append(f"pixel spacing {_mm(self.pixel_spacing)} vs {_mm(other.pixel_spacing)}")
        if not _close(
            None if self.thickness is None else (self.thickness,),
            None if other.thickness is None else (other.thickness,),
            0.01,
        ):
            out.append(f"slice thickness {self.thickness} vs {other.thickness} mm")
        if not _close(self.orientation, other.orientation, 1e-3):
            out.append("image orientation")
        if len(self.slices) != len(other.slices):
            out.append(f"{len(self.slices)} vs {len(other.slices)} slice positions")
        else:
            a, b = np.asarray(self.slices), np.asarray(other.slices)
            if a.size and np.abs(a[:, 0] - b[:, 0]).max() > POSITION_TOLERANCE_MM:
                out.append("slice positions")
            elif a.size and np.abs(a[:, 1:] - b[:, 1:]).max() > INPLANE_TOLERANCE_MM:
                out.append("in-plane image position")
        return out

    def span(self, other: Extent) -> tuple[float, float, float, float]:
        """(first, last) of this and of ``other`` on a clock both have: this series' own
        source when the other has it too, else the other's, else the first common one."""
        for name in (self.source, other.source, *(n for n, *_ in TIME_ATTRIBUTES)):
            if name in self.spans and name in other.spans:
                return (*self.spans[name], *other.spans[name])
        return self.first, self.last, other.first, other.last


def _close(a: tuple[float, ...] | None, b: tuple[float, ...] | None, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _mm(values: tuple[float, ...] | None) -> str:
    return "none" if values is None else "\\".join(f"{v:g}" for v in values) + " mm"


def _seconds(date: object, tm: object) -> float | None:
    """DICOM DA + TM to seconds on one absolute scale (date 0 when absent): enough to order
    series of one study. The date is a calendar date: read as the integer YYYYMMDD, a run
    from 20261130 23:59:50 to 20261201 00:00:10 had a gap of 71 days (outside probe 30)."""
    text = str(tm or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        seconds = int(text[0:2]) * 3600 + int(text[2:4] or 0) * 60 + float(text[4:] or 0)
    except ValueError:
        return None
    d = str(date or "").strip().replace("-", "").replace(".", "")
    try:
        days = _dt.date(int(d[0:4]), int(d[4:6]), int(d[6:8])).toordinal() if len(d) >= 8 else 0
    except ValueError:
        days = 0
    return days * 86400.0 + seconds


def _timing(
    items: list[InstanceInfo], n_positions: int
) -> tuple[str, dict[str, list[float]]] | None:
    """The timing attribute that resolves the series' time points, and every usable one.

    A source is usable when every image has it. Acquisition Time is preferred, but not when
    it is coarser than Content Time (whole seconds, or one value for several time points):
    then its span hides where the series starts and ends to within a second or more, and
    two parts of a split acquisition 0.5 s apart looked simultaneous (outside probe 30).
    The choice is the one the engine makes (``series.finer_timing``)."""
    usable: dict[str, list[float]] = {}
    for name, date_kw, time_kw in TIME_ATTRIBUTES:
        values = [_seconds(i.attrs.get(date_kw), i.attrs.get(time_kw)) for i in items]
        if all(v is not None for v in values):
            usable[name] = [float(v) for v in values]  # type: ignore[arg-type]
    if not usable:
        return None
    n_times = max(1, len(items) // max(n_positions, 1))
    best = None
    for name, values in usable.items():
        distinct = len(set(values))
        resolves = distinct >= n_times
        key = (resolves, -timing_quantum(values) if resolves else distinct)
        if best is None or key > best[0]:
            best = (key, name)
    assert best is not None
    return best[1], usable


def extent(instances: Iterable[InstanceInfo], frame_of_reference: str = "") -> Extent | None:
    """The grid and time span of a series of single-frame CT/MR images (None: not such a
    series, or images without position or time)."""
    items = list(instances)
    if not items or any(i.sop_class_uid not in PROCESSABLE or i.frames > 1 for i in items):
        return None
    classes = {i.sop_class_uid for i in items}
    shapes = {(i.rows, i.columns) for i in items}
    iops = {tuple(round(float(x), 3) for x in (i.attrs.get("ImageOrientationPatient") or ()))
            for i in items}  # fmt: skip
    fors = {str(i.attrs.get("FrameOfReferenceUID") or frame_of_reference) for i in items}
    spacings = {_rounded(i.attrs.get("PixelSpacing"), 2) for i in items}
    thicknesses = {_rounded(i.attrs.get("SliceThickness"), 1) for i in items}
    if (
        len(classes) != 1
        or len(shapes) != 1
        or len(iops) != 1
        or len(fors) != 1
        or len(spacings) != 1
        or len(thicknesses) != 1
    ):
        return None
    iop = next(iter(iops))
    for_uid = next(iter(fors))
    spacing = next(iter(spacings))
    thickness = next(iter(thicknesses))
    if len(iop) != 6 or not for_uid or spacing == ():
        return None
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    coords: list[tuple[float, float, float]] = []
    for i in items:
        ipp = i.attrs.get("ImagePositionPatient")
        if not ipp or len(ipp) != 3:
            return None
        p = np.asarray(ipp, float)
        coords.append((float(p @ normal), float(p @ row), float(p @ col)))
    slices = _slices(coords)
    timing = _timing(items, len(slices))
    if timing is None:
        return None
    source, usable = timing
    spans = {name: (min(v), max(v)) for name, v in usable.items()}
    return Extent(
        sop_class=next(iter(classes)),
        frame_of_reference=for_uid,
        shape=next(iter(shapes)),
        orientation=iop,
        pixel_spacing=spacing,
        thickness=thickness[0] if thickness else None,
        slices=slices,
        source=source,
        first=spans[source][0],
        last=spans[source][1],
        spans=spans,
    )


def _rounded(value: object, n: int) -> tuple[float, ...] | None:
    """A numeric attribute (one value or several) rounded to 3 decimals; () when unreadable
    or of the wrong multiplicity, None when absent."""
    if value is None or value == "":
        return None
    items = value if isinstance(value, list | tuple) else [value]
    try:
        out = tuple(round(float(x), 3) for x in items)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ()
    return out if len(out) == n else ()


def _slices(coords: list[tuple[float, float, float]]) -> tuple[tuple[float, float, float], ...]:
    """Distinct slice positions (along the normal, within ``POSITION_TOLERANCE_MM``), each
    with the median in-plane coordinates of its images, sorted along the normal."""
    ordered = sorted(coords)
    groups: list[list[tuple[float, float, float]]] = []
    for c in ordered:
        if groups and c[0] - groups[-1][-1][0] <= POSITION_TOLERANCE_MM / 2:
            groups[-1].append(c)
        else:
            groups.append([c])
    return tuple(
        tuple(round(float(x), 2) for x in np.median(np.asarray(g), axis=0))  # type: ignore[misc]
        for g in groups
    )


def continuing(target: Any, extents: Mapping[Any, Extent | None]) -> list[Any]:
    """The series (keys of ``extents``) that continue ``target``'s acquisition, in time order.

    A scanner that starts a new series every N time points splits one perfusion: the parts
    share the grid and follow each other in time without overlap, each starting within
    ``MAX_SERIES_GAP_S`` of the previous one's end. Analysed one by one they gave two wrong
    results, one of them marked reliable (outside probe 30). ``[target]`` when it stands alone.

    The grid is the whole slice geometry (``Extent.differences``: Frame of Reference,
    matrix, pixel spacing, thickness, orientation, slice positions and their in-plane
    origins): a series of other pixel spacing that followed in time was merged, and the
    engine then analysed whichever part was larger, silently (outside probe 30). Such a
    series stays a run of its own; the log says why it was not merged.
    """
    own = extents.get(target)
    if own is None:
        return [target]
    timed = [(k, e) for k, e in extents.items() if e is not None]
    same = sorted(
        ((k, e) for k, e in timed if not e.differences(own)),
        key=lambda ke: (ke[1].first, ke[1].last),
    )
    chains: list[list[tuple[Any, Extent]]] = []
    for k, e in same:
        if chains and _follows(chains[-1][-1][1], e):
            chains[-1].append((k, e))
            continue
        chains.append([(k, e)])
    chain = next(([k for k, _ in c] for c in chains if target in [k for k, _ in c]), [target])
    for k, e in timed:
        if k in chain:
            continue
        why = e.differences(own)
        if why and any(_follows(extents[c], e) or _follows(e, extents[c]) for c in chain):  # type: ignore[arg-type]
            log.warning(
                "series %s follows the acquisition of series %s in time but is not merged "
                "with it: %s differ(s)",
                k,
                target,
                ", ".join(why),
            )
    return chain


def _follows(prev: Extent, e: Extent) -> bool:
    """``e`` starts after ``prev`` ends, within ``MAX_SERIES_GAP_S`` (on a common clock)."""
    _, prev_last, e_first, _ = prev.span(e)
    return prev_last < e_first <= prev_last + MAX_SERIES_GAP_S
