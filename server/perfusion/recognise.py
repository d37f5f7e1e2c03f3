"""Is this archived series a perfusion acquisition? examine() with a confidence.

Modelled on 3D Slicer's ``DICOMPlugin.examine()`` (returns loadables with a confidence):
the decision uses only what the index holds per instance (SOP Class, Rows/Columns and the
geometry/timing attributes of ``Instance.attrs``), so no blob is decrypted to decide. A
perfusion acquisition images the same slice positions repeatedly over time (issue 6,
"Input"; seed Conformance Table 3 lists the processable SOP Classes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lucent.perfusion.series import PROCESSABLE

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


@dataclass(frozen=True)
class Extent:
    """What decides whether two series are parts of one acquisition: the grid (SOP Class,
    Frame of Reference, matrix, orientation, slice positions) and the time span."""

    grid: tuple[Any, ...]
    first: float
    last: float


def _seconds(date: object, tm: object) -> float | None:
    """DICOM DA + TM to seconds (date 0 when absent): enough to order series of one study."""
    text = str(tm or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        seconds = int(text[0:2]) * 3600 + int(text[2:4] or 0) * 60 + float(text[4:] or 0)
    except ValueError:
        return None
    d = str(date or "").strip()
    days = int(d[:8]) if len(d) >= 8 and d[:8].isdigit() else 0
    return days * 86400.0 + seconds


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
    if len(classes) != 1 or len(shapes) != 1 or len(iops) != 1 or len(fors) != 1:
        return None
    iop = next(iter(iops))
    for_uid = next(iter(fors))
    if len(iop) != 6 or not for_uid:
        return None
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    positions: set[float] = set()
    times: list[float] = []
    for i in items:
        ipp = i.attrs.get("ImagePositionPatient")
        if not ipp or len(ipp) != 3:
            return None
        positions.add(round(float(np.dot(np.asarray(ipp, float), normal)), 1))
        t = _seconds(i.attrs.get("AcquisitionDate"), i.attrs.get("AcquisitionTime"))
        if t is None:
            t = _seconds(i.attrs.get("ContentDate"), i.attrs.get("ContentTime"))
        if t is None:
            return None
        times.append(t)
    grid = (next(iter(classes)), for_uid, next(iter(shapes)), iop, tuple(sorted(positions)))
    return Extent(grid, min(times), max(times))


def continuing(target: Any, extents: Mapping[Any, Extent | None]) -> list[Any]:
    """The series (keys of ``extents``) that continue ``target``'s acquisition, in time order.

    A scanner that starts a new series every N time points splits one perfusion: the parts
    share the grid and follow each other in time without overlap, each starting within
    ``MAX_SERIES_GAP_S`` of the previous one's end. Analysed one by one they gave two wrong
    results, one of them marked reliable (outside probe 30). ``[target]`` when it stands alone.
    """
    own = extents.get(target)
    if own is None:
        return [target]
    same = sorted(
        ((k, e) for k, e in extents.items() if e is not None and e.grid == own.grid),
        key=lambda ke: (ke[1].first, ke[1].last),
    )
    chains: list[list[tuple[Any, Extent]]] = []
    for k, e in same:
        if chains:
            prev = chains[-1][-1][1]
            if prev.last < e.first <= prev.last + MAX_SERIES_GAP_S:
                chains[-1].append((k, e))
                continue
        chains.append([(k, e)])
    for chain in chains:
        keys = [k for k, _ in chain]
        if target in keys:
            return keys
    return [target]
