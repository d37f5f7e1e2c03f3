"""3D volume rendering of a CT/MR volume with VTK (issue 5: "VTK for MPR/MIP/3D").

vtkFixedPointVolumeRayCastMapper casts rays on the CPU: it needs no GPU ray-casting
extensions, so it renders the same under Mesa llvmpipe (Xvfb, the tests) as on a
workstation GPU. The volume stays in numpy (shared, not copied) in its index-mm frame; the
VolumeGrid's patient placement (IOP directions, origin) is the prop's matrix, so world
coordinates here are patient coordinates (LPS, mm) and tests can project a known point.

Orientation letters (L/R, A/P, H/F, PS3.3 C.7.6.1.1.1) stand at the middle of each edge, as
in the stack and MPR views: the patient directions of the camera's screen right and screen
down (``workstation.model.orientation_labels``), updated at the start of every render, so a
rotated volume always says which way the patient lies.

No Qt here: the Qt layer hands in its vtkRenderWindow (QVTKRenderWindowInteractor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text rendering: the edge letters)
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401  (volume mapper factories)
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkRenderingCore import (
    vtkColorTransferFunction,
    vtkCoordinate,
    vtkRenderer,
    vtkRenderWindow,
    vtkTextActor,
    vtkVolume,
    vtkVolumeProperty,
)
from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper

from workstation.model.orientation_labels import EdgeLabels, edge_labels
from workstation.model.volume import VolumeGrid
from workstation.render.mpr import grid_image


@dataclass(frozen=True)
class Preset:
    """A transfer function over modality values (HU for CT): colour and opacity points."""

    name: str
    blend: str  # "composite" or "mip"
    colours: tuple[tuple[float, float, float, float], ...]  # (value, r, g, b)
    opacity: tuple[tuple[float, float], ...]  # (value, opacity)
    shade: bool = True


# Values as radiologists know them from Horos/Slicer presets (CT-Bone, CT-Soft-Tissue, MIP).
PRESETS: dict[str, Preset] = {
    "Bone": Preset(
        "Bone",
        "composite",
        ((-1000, 0, 0, 0), (150, 0.55, 0.25, 0.15), (400, 0.95, 0.85, 0.7), (1500, 1, 1, 0.95)),
        ((-1000, 0.0), (150, 0.0), (300, 0.15), (700, 0.8), (3000, 0.9)),
    ),  # fmt: skip
    "Soft tissue": Preset(
        "Soft tissue",
        "composite",
        ((-1000, 0, 0, 0), (-500, 0.55, 0.25, 0.15), (0, 0.88, 0.6, 0.5), (500, 1, 0.94, 0.9)),
        ((-1000, 0.0), (-600, 0.0), (-400, 0.12), (100, 0.3), (3000, 0.6)),
    ),  # fmt: skip
    "MIP": Preset(
        "MIP",
        "mip",
        ((-1000, 0, 0, 0), (3000, 1, 1, 1)),
        ((-1000, 1.0), (3000, 1.0)),
        shade=False,
    ),  # fmt: skip
}


#: The edge letters' colour: that of the stack viewer's (pale yellow), bold, with a shadow.
LABEL_COLOUR = (1.0, 1.0, 160 / 255)
LABEL_FONT_SIZE = 20
# Edge → (normalized viewport position, horizontal and vertical justification).
_LABEL_PLACES = {
    "left": ((0.01, 0.5), "Left", "Centered"),
    "right": ((0.99, 0.5), "Right", "Centered"),
    "top": ((0.5, 0.985), "Centered", "Top"),
    "bottom": ((0.5, 0.015), "Centered", "Bottom"),
}


def camera_edge_labels(direction: np.ndarray, view_up: np.ndarray) -> EdgeLabels:
    """The letters of a camera looking along ``direction`` with ``view_up`` up the screen:
    screen right is direction × up (VTK's right-handed camera), screen down is −up."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    up = np.asarray(view_up, float)
    up = up - float(np.dot(up, d)) * d
    up /= np.linalg.norm(up)
    return edge_labels(np.cross(d, up), -up)


def patient_matrix(grid: VolumeGrid) -> vtkMatrix4x4:
    """Index-mm (i·sx, j·sy, k·sz) → patient LPS: columns row_dir, col_dir, slice_dir."""
    m = vtkMatrix4x4()
    axes = (grid.row_dir, grid.col_dir, grid.slice_dir)
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, float(axes[c][r]))
        m.SetElement(r, 3, float(grid.origin[r]))
    return m


class VolumeScene:
    """One volume prop in one renderer; presets, camera reset and rotate steps."""

    def __init__(self, grid: VolumeGrid, render_window: vtkRenderWindow) -> None:
        self.grid = grid
        vol = np.ascontiguousarray(grid.array)
        if vol.dtype.kind == "f" or vol.dtype.itemsize > 2:
            vol = vol.astype(np.float32)
        self._keep = vol  # VTK borrows this memory (deep=False)
        self.image = image = grid_image(vol, grid.spacing)
        self.mapper = vtkFixedPointVolumeRayCastMapper()
        self.mapper.SetInputData(image)
        # While the mouse turns the volume the interactor asks for its interactive update
        # rate and the mapper samples coarser; a still render (update rate 0.0001, what
        # tests and screenshots get) uses the full sample distance below, every time alike.
        self.mapper.SetAutoAdjustSampleDistances(1)
        self.mapper.SetSampleDistance(float(min(grid.spacing)) / 2)
        self.property = vtkVolumeProperty()
        self.property.SetInterpolationTypeToLinear()
        self.volume = vtkVolume()
        self.volume.SetMapper(self.mapper)
        self.volume.SetProperty(self.property)
        self.volume.SetUserMatrix(patient_matrix(grid))
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        self.renderer.AddVolume(self.volume)
        self.window = render_window
        self.window.SetMultiSamples(0)  # issue 5: 4× MSAA costs 4–5× frame rate on llvmpipe
        self.window.AddRenderer(self.renderer)
        self.preset = ""
        self.set_preset("Bone")
        self.labels: dict[str, vtkTextActor] = {}
        for edge, (pos, h, v) in _LABEL_PLACES.items():
            actor = vtkTextActor()
            actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
            actor.GetPositionCoordinate().SetValue(*pos)
            tp = actor.GetTextProperty()
            tp.SetFontSize(LABEL_FONT_SIZE)
            tp.BoldOn()
            tp.ShadowOn()
            tp.SetColor(*LABEL_COLOUR)
            getattr(tp, f"SetJustificationTo{h}")()
            getattr(tp, f"SetVerticalJustificationTo{v}")()
            self.renderer.AddViewProp(actor)
            self.labels[edge] = actor
        self.edge_labels = self.orientation()
        self.renderer.AddObserver("StartEvent", lambda *_: self._update_labels())
        self.reset_camera()

    def stored(self, value: float) -> float:
        """Modality value (HU) → the stored value the mapper sees."""
        return (value - self.grid.intercept) / (self.grid.slope or 1.0)

    def set_preset(self, name: str) -> None:
        p = PRESETS[name]
        colour, opacity = vtkColorTransferFunction(), vtkPiecewiseFunction()
        for v, r, g, b in p.colours:
            colour.AddRGBPoint(self.stored(v), r, g, b)
        for v, a in p.opacity:
            opacity.AddPoint(self.stored(v), a)
        self.property.SetColor(colour)
        self.property.SetScalarOpacity(opacity)
        if p.shade:
            self.property.ShadeOn()
            self.property.SetAmbient(0.3)
            self.property.SetDiffuse(0.7)
            self.property.SetSpecular(0.2)
        else:
            self.property.ShadeOff()
        if p.blend == "mip":
            self.mapper.SetBlendModeToMaximumIntensity()
        else:
            self.mapper.SetBlendModeToComposite()
        self.preset = name

    def reset_camera(self) -> None:
        """Anterior view as radiologists expect it: looking from the front (patient's
        anterior, −y in LPS) towards posterior, head up, patient's left on screen right."""
        cam = self.renderer.GetActiveCamera()
        c = self.grid.centre
        cam.SetFocalPoint(*c)
        cam.SetPosition(c[0], c[1] - 500.0, c[2])
        cam.SetViewUp(0.0, 0.0, 1.0)
        self.renderer.ResetCamera()
        self.renderer.ResetCameraClippingRange()

    def orientation(self) -> EdgeLabels:
        """The edge letters the camera's current view calls for."""
        cam = self.renderer.GetActiveCamera()
        return camera_edge_labels(
            np.array(cam.GetDirectionOfProjection()), np.array(cam.GetViewUp())
        )

    def _update_labels(self) -> None:
        self.edge_labels = self.orientation()
        for edge, actor in self.labels.items():
            actor.SetInput(getattr(self.edge_labels, edge))

    def label_boxes(self) -> dict[str, tuple[int, int, int, int]]:
        """Where each letter was drawn in the last frame: (x0, y0, x1, y1) pixels of the
        window image, top row 0 (numpy order, as ``screenshot``), inclusive."""
        height = self.window.GetSize()[1]
        out = {}
        for edge, actor in self.labels.items():
            b = [0.0, 0.0, 0.0, 0.0]
            actor.GetBoundingBox(self.renderer, b)  # xmin, xmax, ymin, ymax from the anchor
            ax, ay = actor.GetPositionCoordinate().GetComputedDisplayValue(self.renderer)
            x0, x1, y0, y1 = ax + b[0], ax + b[1], ay + b[2], ay + b[3]
            out[edge] = (int(x0), int(height - 1 - y1), int(x1), int(height - 1 - y0))
        return out

    def rotate(self, azimuth: float, elevation: float = 0.0) -> None:
        """One rotate step about the focal point (what a mouse drag does)."""
        cam = self.renderer.GetActiveCamera()
        cam.Azimuth(azimuth)
        cam.Elevation(elevation)
        cam.OrthogonalizeViewUp()
        self.renderer.ResetCameraClippingRange()

    def render(self) -> None:
        self.window.Render()

    def project(self, point: np.ndarray) -> tuple[float, float]:
        """Patient point → (x, y) pixel of the window image, top row 0 (numpy order)."""
        coord = vtkCoordinate()
        coord.SetCoordinateSystemToWorld()
        coord.SetValue(*(float(v) for v in point))
        x, y = coord.GetComputedDoubleDisplayValue(self.renderer)
        height = self.window.GetSize()[1]
        return float(x), float(height - 1 - y)

    def screenshot(self) -> np.ndarray:
        """The rendered frame as (h, w, 3) uint8 via vtkWindowToImageFilter (a native GL
        window is invisible to QWidget.grab)."""
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        self.window.Render()
        f = vtkWindowToImageFilter()
        f.SetInput(self.window)
        f.SetInputBufferTypeToRGB()
        f.ReadFrontBufferOff()
        f.ShouldRerenderOff()
        f.Update()
        out = f.GetOutput()
        w, h, _ = out.GetDimensions()
        flat = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars())
        return np.ascontiguousarray(flat.reshape(h, w, -1)[::-1, :, :3])
