"""A series as a regular volume in patient space, and the MPR planes through it (issue 5).

MPR must never show anatomy at a wrong place (the FAQ's rule for reference lines applies
just as much): a volume is built only when every slice has a valid plane (PS3.3 C.7.6.2),
all planes are parallel, the slices step evenly along the normal (no gantry tilt, no gaps)
and every frame is greyscale of one size, all in one Frame of Reference (PS3.3 C.7.4.1.1.1:
images in different Frames are not spatially related, whatever their positions say).
Otherwise ``volume_of`` says why not.

Views follow the radiological convention in LPS patient space: the screen's right is the
patient's left, the screen's down is posterior (axial) or inferior (coronal, sagittal).
No Qt and no VTK here: ``workstation.render.mpr`` reslices, ``workstation.qt.mpr`` shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workstation.model.events import Event
from workstation.model.geometry import ImagePlane
from workstation.model.orientation_labels import EdgeLabels, direction_letters, edge_labels
from workstation.model.series import SeriesData

Vec = np.ndarray

# In-plane axes (screen x, screen y) in patient space (LPS).
VIEW_AXES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}
VIEWS = ("axial", "coronal", "sagittal", "oblique")


@dataclass
class VolumeGrid:
    """Stored values (slices, rows, cols) on a regular grid placed in patient space.

    Voxel (i, j, k) — column, row, slice — lies at ``origin + i·sx·row_dir + j·sy·col_dir
    + k·sz·slice_dir`` (mm); ``row_dir``/``col_dir`` are the IOP vectors, ``slice_dir`` the
    unit step between consecutive slices (± the plane normal).
    """

    array: np.ndarray
    origin: Vec
    row_dir: Vec
    col_dir: Vec
    slice_dir: Vec
    spacing: tuple[float, float, float]  # (sx: between columns, sy: between rows, sz)
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def rotation(self) -> np.ndarray:
        """Rows are the volume axes: patient vector → volume (index-mm) vector."""
        return np.vstack([self.row_dir, self.col_dir, self.slice_dir])

    def to_world(self, i: float, j: float, k: float) -> Vec:
        sx, sy, sz = self.spacing
        return self.origin + i * sx * self.row_dir + j * sy * self.col_dir + k * sz * self.slice_dir

    def to_index(self, p: Vec) -> Vec:
        """Patient point → fractional (i, j, k)."""
        q = self.rotation @ (np.asarray(p, float) - self.origin)
        return q / np.asarray(self.spacing)

    def corners(self) -> list[Vec]:
        k, j, i = self.array.shape
        return [self.to_world(a, b, c) for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)]

    @property
    def centre(self) -> Vec:
        k, j, i = self.array.shape
        return self.to_world((i - 1) / 2, (j - 1) / 2, (k - 1) / 2)


def _frame_order(data: SeriesData) -> list[int]:
    """Slice indices in the order of ``data.volume``'s first axis (or of the slices)."""
    if data.volume is not None and data.volume_order:
        by_sop = {s.sop_instance_uid: k for k, s in enumerate(data.slices) if s.frame == 0}
        return [by_sop[sop] for sop in data.volume_order if sop in by_sop]
    return list(range(len(data.slices)))


def frame_of_reference_mix(data: SeriesData) -> str:
    """Why the slices are not in one Frame of Reference, or "" when nothing says so.

    A slice's own FoR UID is in its attributes where the server indexes it; the series' UID
    (that of its first instance) is the one the others must match. Probe 24's series K (15
    slices in one FoR, 15 in another) was fused into one volume and shown in MPR and 3D.
    """
    series_for = (data.frame_of_reference or "").strip()
    counts: dict[str, int] = {}
    for s in data.slices:
        uid = s.attrs.get("FrameOfReferenceUID")
        if uid is None:
            continue
        counts[str(uid).strip() or "(none)"] = counts.get(str(uid).strip() or "(none)", 0) + 1
    if series_for and counts:
        counts.setdefault(series_for, 0)
    if len(counts) <= 1:
        return ""
    parts = ", ".join(f"{n} in {uid}" for uid, n in counts.items() if n)
    return (
        f"the slices belong to {len(counts)} Frames of Reference ({parts}): images in "
        "different Frames of Reference are not spatially related (DICOM PS3.3 C.7.4.1.1.1), "
        "so they are not fused into one volume"
    )


def volume_of(data: SeriesData) -> VolumeGrid | str:
    """The series as a VolumeGrid, or the reason a person can act on why it is not one."""
    if data.kind != "image" or len(data.slices) < 3:
        return "MPR needs a series of at least 3 slices"
    if not data.complete:
        return "MPR: the series is still loading"
    mix = frame_of_reference_mix(data)
    if mix:
        return f"MPR refused: {mix}"
    order = _frame_order(data)
    if len(order) != len(data.slices):
        return "MPR: volume and slice list disagree"
    planes = [data.slices[k].plane for k in order]
    if any(p is None for p in planes):
        return "MPR needs Image Position/Orientation and Pixel Spacing on every slice"
    ps: list[ImagePlane] = [p for p in planes if p is not None]
    p0 = ps[0]
    for p in ps[1:]:
        if (
            float(np.dot(p.row_dir, p0.row_dir)) < 0.9999
            or float(np.dot(p.col_dir, p0.col_dir)) < 0.9999
            or (p.rows, p.cols) != (p0.rows, p0.cols)
            or abs(p.row_spacing - p0.row_spacing) > 1e-3
            or abs(p.col_spacing - p0.col_spacing) > 1e-3
        ):
            return "MPR needs parallel slices of one size and pixel spacing"
    steps = np.diff(np.asarray([p.position for p in ps]), axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    gap = float(np.median(lengths))
    if gap <= 1e-6 or np.any(np.abs(lengths - gap) > max(0.01 * gap, 1e-3)):
        return "MPR needs evenly spaced slices (gap or duplicate positions found)"
    slice_dir = steps[0] / lengths[0]
    if abs(float(np.dot(slice_dir, p0.normal))) < 0.9999:
        return "MPR: slices are sheared (gantry tilt); not resliced to avoid wrong positions"
    if np.any(steps @ slice_dir <= 0):
        return "MPR needs slices in one direction"
    frames = [data.frame(k) for k in order]
    if any(f is None or f.is_colour for f in frames):
        return "MPR needs greyscale frames"
    fs = [f for f in frames if f is not None]
    uniform = all(f.slope == fs[0].slope and f.intercept == fs[0].intercept for f in fs)
    if data.volume is not None and data.volume_order and uniform:
        array = data.volume
        slope, intercept = fs[0].slope, fs[0].intercept
    elif uniform:
        array = np.stack([f.stored for f in fs])
        slope, intercept = fs[0].slope, fs[0].intercept
    else:  # per-slice rescale: resample modality values
        array = np.stack([np.asarray(f.modality_values(), np.float32) for f in fs])
        slope, intercept = 1.0, 0.0
    return VolumeGrid(
        array, p0.position, p0.row_dir, p0.col_dir, slice_dir,
        (p0.col_spacing, p0.row_spacing, gap), slope, intercept,
    )  # fmt: skip


def oblique_axes(angle_deg: float) -> tuple[Vec, Vec]:
    """The axial plane tilted by ``angle_deg`` about the patient's left-right axis.

    x stays patient left (1, 0, 0); y turns from posterior towards superior:
    (0, cos θ, sin θ). θ = 0 is axial, θ = 90° a coronal plane seen from below. Past 45°
    the screen's down is more head than posterior, so the image stands head-down compared
    with the coronal view: the plane views' edge letters (``MprState.edge_labels``) say so.
    """
    t = math.radians(angle_deg)
    return np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), math.sin(t)])


@dataclass
class MprState:
    """Shared crosshair point, slab and view settings of one MPR window.

    Every view's plane passes through ``centre``; scrolling a view moves the centre along
    that view's normal, so the other views' planes stay put (the crosshair behaviour of
    Horos/Weasis). ``slab_mm`` > 0 turns every view into a thick slab (``mode``: max = MIP).
    """

    grid: VolumeGrid
    centre: Vec | None = None
    slab_mm: float = 0.0
    mode: str = "max"
    oblique_deg: float = 30.0
    center: float = 40.0  # window centre (modality units)
    width: float = 400.0
    changed: Event = field(default_factory=Event)

    def __post_init__(self) -> None:
        self.centre = (
            self.grid.centre.copy() if self.centre is None else np.asarray(self.centre, float)
        )

    @property
    def step(self) -> float:
        """Output pixel size: the finest voxel spacing (isotropic display, no aspect error)."""
        return float(min(self.grid.spacing))

    def axes(self, view: str) -> tuple[Vec, Vec]:
        if view == "oblique":
            return oblique_axes(self.oblique_deg)
        x, y = VIEW_AXES[view]
        return np.asarray(x, float), np.asarray(y, float)

    def normal(self, view: str) -> Vec:
        x, y = self.axes(view)
        n = np.cross(x, y)
        return n / np.linalg.norm(n)

    def plane(self, view: str) -> ImagePlane:
        """The output image's plane: pixel (0, 0) and size chosen to cover the volume.

        The grid is aligned so that the crosshair point falls on a pixel centre.
        """
        x, y = self.axes(view)
        s = self.step
        rel = [c - self.centre for c in self.grid.corners()]
        u = [float(np.dot(r, x)) for r in rel]
        v = [float(np.dot(r, y)) for r in rel]
        u0, v0 = math.floor(min(u) / s + 1e-6), math.floor(min(v) / s + 1e-6)
        u1, v1 = math.ceil(max(u) / s - 1e-6), math.ceil(max(v) / s - 1e-6)
        origin = self.centre + u0 * s * x + v0 * s * y
        return ImagePlane(origin, x, y, s, s, v1 - v0 + 1, u1 - u0 + 1)

    def position(self, view: str) -> float:
        """The view's plane position along its normal (mm), as the slice overlay shows it."""
        return float(np.dot(self.centre, self.normal(view)))

    def position_label(self, view: str) -> str:
        """The plane's position as a reader says it: the patient side and the distance from
        the origin along the normal, e.g. "L 20.0 mm" for a sagittal plane at x = +20 (the
        sagittal normal points right, so ``position`` alone read "-20.0 mm")."""
        value = self.position(view)
        if round(abs(value), 1) == 0:
            return "0.0 mm"
        side = direction_letters(self.normal(view) if value > 0 else -self.normal(view))
        return f"{side} {abs(value):.1f} mm"

    def edge_labels(self, view: str) -> EdgeLabels:
        """L/R, A/P, H/F at the view's edges: the patient directions of its screen right
        (the plane's x axis) and screen down (its y axis), PS3.3 C.7.6.1.1.1 letters; the
        plane views draw the image unrotated and unflipped at one scale for both axes."""
        x, y = self.axes(view)
        return edge_labels(x, y)

    def scroll(self, view: str, steps: int) -> None:
        self.centre = self.centre + steps * self.step * self.normal(view)
        self.changed.emit()

    def set_centre(self, point: Vec) -> None:
        self.centre = np.asarray(point, float)
        self.changed.emit()

    def set_slab(self, mm: float, mode: str | None = None) -> None:
        self.slab_mm = max(0.0, float(mm))
        if mode:
            self.mode = mode
        self.changed.emit()

    def set_oblique(self, angle_deg: float) -> None:
        self.oblique_deg = float(angle_deg)
        self.changed.emit()

    def set_window(self, center: float, width: float) -> None:
        self.center, self.width = float(center), max(1.0, float(width))
        self.changed.emit()
