"""Measurements in mm and the GSPS round trip (Conformance 8.1.4) without a display."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from tests.data.samples import make_instance
from workstation.model import gsps, measure
from workstation.model.annotations import Annotation

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_distance_uses_pixel_spacing_and_warns_otherwise() -> None:
    sp = measure.Spacing.from_attrs({"PixelSpacing": [0.5, 0.25]})
    r = measure.distance((0, 0), (40, 30), sp)
    assert r.value == pytest.approx(np.hypot(10, 15)) and r.unit == "mm" and not r.warning
    imager = measure.Spacing.from_attrs({"ImagerPixelSpacing": [0.2, 0.2]})
    r2 = measure.distance((0, 0), (10, 0), imager)
    assert r2.value == pytest.approx(2.0) and "Imager" in r2.warning
    none = measure.distance((0, 0), (3, 4), measure.Spacing.from_attrs({}))
    assert none.value == 5 and none.unit == "px" and "unknown" in none.warning


def test_angle_and_roi_stats() -> None:
    sp = measure.Spacing(1, 1, "pixel")
    assert measure.angle((10, 0), (0, 0), (0, 10), sp).value == pytest.approx(90)
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    r = measure.roi(values, (2, 2), (4, 3), "rect", sp, "HU")
    sel = values[2:4, 2:5]
    assert r.stats["mean"] == pytest.approx(sel.mean())
    assert r.stats["min"] == sel.min() and r.stats["max"] == sel.max()
    assert r.stats["area"] == pytest.approx(2.0)
    e = measure.roi(values, (0, 0), (9, 9), "ellipse", sp)
    assert e.stats["n"] < 100 and e.stats["area"] == pytest.approx(np.pi * 81 / 4)


def test_gsps_round_trip() -> None:
    study, series = generate_uid(), generate_uid()
    img = make_instance(CT, study_uid=study, series_uid=series, rows=32, cols=32)
    sop = str(img.SOPInstanceUID)
    drawn = [
        Annotation("distance", [(1.0, 2.0), (20.0, 25.0)], sop_instance_uid=sop),
        Annotation("angle", [(5.0, 5.0), (10.0, 10.0), (15.0, 5.0)], sop_instance_uid=sop),
        Annotation("rect", [(3.0, 4.0), (12.0, 9.0)], sop_instance_uid=sop),
        Annotation("ellipse", [(2.0, 2.0), (10.0, 6.0)], sop_instance_uid=sop),
        Annotation("text", [(4.0, 28.0)], "finding", sop_instance_uid=sop),
        Annotation("arrow", [(30.0, 30.0), (16.0, 16.0)], sop_instance_uid=sop),
    ]
    ds = gsps.build([img], drawn, series_uid=generate_uid(), sop_uid=generate_uid(),
                    window=(40, 400))  # fmt: skip
    assert ds.Modality == "PR" and ds.SOPClassUID == gsps.GSPS_CLASS
    assert "DisplayedAreaSelectionSequence" in ds and ds.PresentationCreationDate
    item = ds.GraphicAnnotationSequence[0]
    assert {g.GraphicType for g in item.GraphicObjectSequence} == {"POLYLINE", "ELLIPSE"}
    assert all(g.GraphicAnnotationUnits == "PIXEL" for g in item.GraphicObjectSequence)
    assert item.TextObjectSequence[0].BoundingBoxTextHorizontalJustification == "CENTER"
    assert item.CompoundGraphicSequence[0].CompoundGraphicType == "ARROW"
    # Through bytes, as the archive would store it.
    import io

    from pydicom import dcmread

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    state = gsps.read(dcmread(io.BytesIO(buf.getvalue())))
    assert state.window == (40.0, 400.0) and state.referenced == [sop]
    key = lambda a: (a.kind, [tuple(round(v, 6) for v in p) for p in a.points], a.text)  # noqa: E731
    assert sorted(map(key, state.annotations)) == sorted(map(key, drawn))
    assert all(a.sop_instance_uid == sop and a.source == "gsps" for a in state.annotations)
