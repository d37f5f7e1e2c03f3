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
