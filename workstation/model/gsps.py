"""Grayscale Softcopy Presentation State: write our annotations, read anyone's (Conformance 8.1.4).

Written as 8.1.4 says: Modality PR, Presentation Creation Date/Time, Displayed Area
Selection, Text Objects (PIXEL units, CENTER justification), POLYLINE graphic objects in PIXEL
units, and ARROW compound graphics (Compound Graphic Sequence, PS3.3 C.10.5.1.3). Reading
accepts POLYLINE/INTERPOLATED/CIRCLE/ELLIPSE/POINT graphics, text objects and the softcopy VOI
LUT (W/L) so a GSPS from another system (e.g. highdicom) is shown — a common viewer complaint
is "GSPS not shown".

GSPS PIXEL units put (0, 0) at the top-left *corner* of the top-left pixel (PS3.3 C.10.5.1.2);
our annotations use pixel centres, hence the ±0.5.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from workstation.model.annotations import Annotation

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
LAYER = "LUCENT"
# What our saver writes (``build``): only a GSPS that carries all of these is read back
# into measurements. PS3.3 C.10.5: a graphic object has no measurement meaning, so another
# system's polylines are drawn as they are (a 2-point line is not a distance to us).
MANUFACTURER = "Lucent"
MODEL_NAME = "Lucent Workstation"


def _to_gsps(p: tuple[float, float]) -> tuple[float, float]:
    return (p[0] + 0.5, p[1] + 0.5)


def _from_gsps(x: float, y: float) -> tuple[float, float]:
    return (float(x) - 0.5, float(y) - 0.5)


def _polyline(a: Annotation) -> list[tuple[float, float]] | None:
    """The POLYLINE points an annotation is stored as (rectangles closed)."""
    p = a.points
    if a.kind in ("distance", "angle", "polyline"):
        return list(p)
    if a.kind == "rect" and len(p) >= 2:
        (x0, y0), (x1, y1) = p[0], p[1]
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return None


@dataclass
class PresentationState:
    """What a GSPS tells the viewer: annotations per image and an optional window."""

    sop_instance_uid: str
    referenced: list[str]
    annotations: list[Annotation] = field(default_factory=list)
    window: tuple[float, float] | None = None
    label: str = ""


def build(
    images: Sequence[Dataset],
    annotations: Sequence[Annotation],
    *,
    series_uid: str,
    sop_uid: str,
    window: tuple[float, float] | None = None,
    label: str = "LUCENT",
    description: str = "Lucent measurements",
    creator: str = "",
) -> Dataset:
    """A GSPS over ``images`` (headers of the source images) holding ``annotations``."""
    from highdicom import pr

    by_sop = {str(ds.SOPInstanceUID): ds for ds in images}
    layer = pr.GraphicLayer(layer_name=LAYER, order=1, description="measurements")
    groups: dict[tuple[str, int], list[Annotation]] = {}
    for a in annotations:
        groups.setdefault((a.sop_instance_uid, a.frame), []).append(a)
    graphic_annotations = []
    compound: list[tuple[Dataset, Annotation]] = []
    for (sop, frame), items in groups.items():
        ref = by_sop[sop]
        graphics, texts = [], []
        for a in items:
            line = _polyline(a)
            if line is not None:
                graphics.append(
                    pr.GraphicObject(
                        graphic_type=pr.GraphicTypeValues.POLYLINE,
                        graphic_data=np.array([_to_gsps(p) for p in line], dtype=float),
                        units=pr.AnnotationUnitsValues.PIXEL,
                    )
                )
            elif a.kind == "ellipse" and len(a.points) >= 2:
                if len(a.points) >= 4:  # a read GSPS ELLIPSE: its axes as they were
                    ends = list(a.points[:4])
                else:
                    (x0, y0), (x1, y1) = a.points[0], a.points[1]
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    ends = [(x0, cy), (x1, cy), (cx, y0), (cx, y1)]
                graphics.append(
                    pr.GraphicObject(
                        graphic_type=pr.GraphicTypeValues.ELLIPSE,
                        graphic_data=np.array([_to_gsps(p) for p in ends], dtype=float),
                        units=pr.AnnotationUnitsValues.PIXEL,
                    )
                )
            elif a.kind == "text" and a.points:
                x, y = _to_gsps(a.points[0])
                cols, rows = float(ref.Columns), float(ref.Rows)
                x, y = min(max(x, 0.0), cols - 1), min(max(y, 0.0), rows - 1)
                w = max(1.0, min(7.0 * len(a.text), cols - x))
                texts.append(
                    pr.TextObject(
                        text_value=a.text or " ",
                        units=pr.AnnotationUnitsValues.PIXEL,
                        bounding_box=(x, y, x + w, min(y + 14.0, rows)),
                        text_justification=pr.TextJustificationValues.CENTER,
                    )
                )
            elif a.kind == "arrow":
                compound.append((ref, a))
        if graphics or texts:
            multi = int(ref.get("NumberOfFrames", 1) or 1) > 1
            kwargs = {"referenced_frame_number": frame} if multi else {}
            graphic_annotations.append(
                pr.GraphicAnnotation(
                    referenced_images=[ref],
                    graphic_layer=layer,
                    graphic_objects=graphics or None,
                    text_objects=texts or None,
                    **kwargs,
                )
            )
    voi = None
    if window is not None:
        voi = [pr.SoftcopyVOILUTTransformation(window_center=window[0], window_width=window[1])]
    gsps = pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(images),
        series_instance_uid=series_uid,
        series_number=9001,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions="0.1",
        device_serial_number="0",
        content_label=label,
        content_description=description,
        graphic_annotations=graphic_annotations or None,
        graphic_layers=[layer],
        voi_lut_transformations=voi,
        content_creator_name=creator or None,
    )
    now = dt.datetime.now()
    gsps.PresentationCreationDate = now.strftime("%Y%m%d")
    gsps.PresentationCreationTime = now.strftime("%H%M%S")
    if compound:
        _add_arrows(gsps, compound)
    return gsps


def _add_arrows(gsps: Dataset, compound: list[tuple[Dataset, Annotation]]) -> None:
    """ARROW compound graphics (8.1.4), appended to the image's Graphic Annotation item."""
    items = list(gsps.get("GraphicAnnotationSequence", []))
    for ref, a in compound:
        sop = str(ref.SOPInstanceUID)
        target = next(
            (
                it
                for it in items
                if str(it.ReferencedImageSequence[0].ReferencedSOPInstanceUID) == sop
            ),
            None,
        )
        if target is None:
            target = Dataset()
            r = Dataset()
            r.ReferencedSOPClassUID = ref.SOPClassUID
            r.ReferencedSOPInstanceUID = sop
            target.ReferencedImageSequence = DicomSequence([r])
            target.GraphicLayer = LAYER
            items.append(target)
        cg = Dataset()
        cg.CompoundGraphicUnits = "PIXEL"
        cg.GraphicDimensions = 2
        cg.NumberOfGraphicPoints = 2
        cg.GraphicData = [v for p in a.points[:2] for v in _to_gsps(p)]
        cg.CompoundGraphicType = "ARROW"
        cg.GraphicFilled = "N"
        cg.CompoundGraphicInstanceID = len(target.get("CompoundGraphicSequence", [])) + 1
        cg.RotationAngle = 0.0
        cg.RotationPoint = [0.0, 0.0]
        cg.GraphicLayer = LAYER
        seq = list(target.get("CompoundGraphicSequence", []))
        seq.append(cg)
        target.CompoundGraphicSequence = DicomSequence(seq)
    gsps.GraphicAnnotationSequence = DicomSequence(items)


def is_ours(ds: Dataset) -> bool:
    """Saved by this workstation: our Manufacturer and Manufacturer's Model Name, and every
    graphic layer our "LUCENT" layer (a layer name alone could be anyone's)."""
    if str(ds.get("Manufacturer", "")) != MANUFACTURER:
        return False
    if str(ds.get("ManufacturerModelName", "")) != MODEL_NAME:
        return False
    layers = [str(x.get("GraphicLayer", "")) for x in ds.get("GraphicLayerSequence", [])]
    return bool(layers) and all(name == LAYER for name in layers)


def read(ds: Dataset) -> PresentationState:
    """Annotations and window of any GSPS (ours or another system's).

    Only our own GSPS (``is_ours``) turns polylines back into distance/angle/rectangle
    measurements; anyone else's graphics stay polylines and text, drawn as they are
    (PS3.3 C.10.5: graphic objects carry no measurement meaning)."""
    ours = is_ours(ds)
    referenced = [
        str(img.ReferencedSOPInstanceUID)
        for series in ds.get("ReferencedSeriesSequence", [])
        for img in series.get("ReferencedImageSequence", [])
    ]
    state = PresentationState(
        str(ds.SOPInstanceUID), referenced, label=str(ds.get("ContentLabel", ""))
    )
    for item in ds.get("GraphicAnnotationSequence", []):
        refs = item.get("ReferencedImageSequence") or []
        targets = [(str(r.ReferencedSOPInstanceUID), _frames(r)) for r in refs] or [
            (sop, [1]) for sop in referenced
        ]
        found: list[Annotation] = []
        for go in item.get("GraphicObjectSequence", []):
            if str(go.get("GraphicAnnotationUnits", "PIXEL")) != "PIXEL":
                continue  # DISPLAY units depend on the displayed area: not supported yet
            data = [float(v) for v in go.GraphicData]
            pts = [_from_gsps(data[i], data[i + 1]) for i in range(0, len(data) - 1, 2)]
            kind = str(go.GraphicType)
            if kind == "ELLIPSE" and len(pts) == 4:
                found.append(Annotation("ellipse", _ellipse_points(pts)))
            elif kind == "CIRCLE" and len(pts) == 2:
                (cx, cy), (px, py) = pts
                r = float(np.hypot(px - cx, py - cy))
                found.append(Annotation("ellipse", [(cx - r, cy - r), (cx + r, cy + r)]))
            elif kind == "POINT":
                found.append(Annotation("polyline", pts[:1]))
            elif ours and str(item.get("GraphicLayer", "")) == LAYER:
                found.append(normalise(Annotation(_guess_kind(pts), pts)))
            else:
                found.append(Annotation("polyline", pts))
        for to in item.get("TextObjectSequence", []):
            text = str(to.get("UnformattedTextValue", ""))
            if "BoundingBoxTopLeftHandCorner" in to:
                x0, y0 = (float(v) for v in to.BoundingBoxTopLeftHandCorner)
                found.append(Annotation("text", [_from_gsps(x0, y0)], text))
            elif "AnchorPoint" in to:
                x0, y0 = (float(v) for v in to.AnchorPoint)
                found.append(Annotation("text", [_from_gsps(x0, y0)], text))
        for cg in item.get("CompoundGraphicSequence", []):
            data = [float(v) for v in cg.GraphicData]
            pts = [_from_gsps(data[i], data[i + 1]) for i in range(0, len(data) - 1, 2)]
            kind = "arrow" if str(cg.CompoundGraphicType) == "ARROW" else "polyline"
            found.append(Annotation(kind, pts))
        for sop, frames in targets:
            for frame in frames:
                for a in found:
                    state.annotations.append(
                        Annotation(a.kind, list(a.points), a.text, sop, frame, source="gsps")
                    )
    for voi in ds.get("SoftcopyVOILUTSequence", []):
        if "WindowCenter" in voi and "WindowWidth" in voi:
            c, w = voi.WindowCenter, voi.WindowWidth
            c = c[0] if isinstance(c, list | tuple) or hasattr(c, "__getitem__") else c
            w = w[0] if isinstance(w, list | tuple) or hasattr(w, "__getitem__") else w
            state.window = (float(c), float(w))
            break
    return state


def _ellipse_points(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A GSPS ELLIPSE (PS3.3 C.10.5.1.2: major axis end points, then minor axis end points)
    as an ellipse annotation: its bounding box corners when the axes are horizontal and
    vertical (what our tool draws and saves, so our ellipses round-trip unchanged), else
    the four axis end points, which keep its rotation. The bounding box of a rotated
    ellipse's axis end points drew a 45-degree ellipse as an upright one (probe 59)."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = pts
    tol = 1e-6
    horizontal_first = abs(y0 - y1) <= tol and abs(x2 - x3) <= tol
    vertical_first = abs(x0 - x1) <= tol and abs(y2 - y3) <= tol
    if horizontal_first or vertical_first:
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        return [(min(xs), min(ys)), (max(xs), max(ys))]
    return list(pts)


def _frames(ref: Dataset) -> list[int]:
    value = ref.get("ReferencedFrameNumber")
    if value is None:
        return [1]
    if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
        return [int(v) for v in value]
    return [int(value)]


def _guess_kind(pts: list[tuple[float, float]]) -> str:
    """Our own shapes come back as what they were: 2 points distance, 3 angle, 5 closed rect.
    Only for a GSPS we wrote (``is_ours``); never for another system's graphics."""
    if len(pts) == 2:
        return "distance"
    if len(pts) == 3:
        return "angle"
    if len(pts) == 5 and pts[0] == pts[4]:
        xs = {round(p[0], 6) for p in pts}
        ys = {round(p[1], 6) for p in pts}
        if len(xs) == 2 and len(ys) == 2:
            return "rect"
    return "polyline"


def normalise(a: Annotation) -> Annotation:
    """Our rectangle read back as polyline points → the two corners we drew (for round trips)."""
    if a.kind == "rect" and len(a.points) == 5:
        xs = [p[0] for p in a.points]
        ys = [p[1] for p in a.points]
        return Annotation(
            "rect", [(min(xs), min(ys)), (max(xs), max(ys))], a.text, a.sop_instance_uid,
            a.frame, a.source,
        )  # fmt: skip
    return a
