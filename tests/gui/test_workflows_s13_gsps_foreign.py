"""Another system's GSPS is drawn as it is (PS3.3 C.10.5): its polylines are not guessed
into distances, angles or ROIs with statistics (probe 32, patient safety). Only a GSPS our
saver wrote comes back as measurements."""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.data.samples import make_instance
from workstation.model import gsps
from workstation.model.annotations import Annotation
from workstation.model.measure import Spacing

CT = "1.2.840.10008.5.1.4.1.1.2"


def _through_bytes(ds):  # noqa: ANN001, ANN202
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(io.BytesIO(buf.getvalue()))


def _foreign(image, manufacturer: str = "OtherVendor", layer: str = "EXT"):  # noqa: ANN001, ANN202
    from highdicom import pr

    lines = [
        [[5.5, 10.5], [58.5, 10.5]],  # 2 points: "distance"?
        [[5.5, 5.5], [10.5, 10.5], [15.5, 5.5]],  # 3 points: "angle"?
        [[3.5, 4.5], [12.5, 4.5], [12.5, 9.5], [3.5, 9.5], [3.5, 4.5]],  # closed box: "ROI"?
    ]
    lay = pr.GraphicLayer(layer_name=layer, order=1)
    ann = pr.GraphicAnnotation(
        referenced_images=[image],
        graphic_layer=lay,
        graphic_objects=[
            pr.GraphicObject(
                graphic_type=pr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array(pts, dtype=float),
                units=pr.AnnotationUnitsValues.PIXEL,
            )
            for pts in lines
        ],
    )
    return pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[image], series_instance_uid=generate_uid(), series_number=50,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name="Lucent Workstation" if manufacturer == "Lucent" else "x",
        software_versions="1", device_serial_number="1", content_label="EXTERNAL",
        graphic_annotations=[ann], graphic_layers=[lay],
    )  # fmt: skip


def _image():  # noqa: ANN202
    img = make_instance(CT, rows=32, cols=64)
    img.PixelSpacing = [0.5, 0.5]
    return img


def test_foreign_polylines_are_not_measurements() -> None:
    img = _image()
    state = gsps.read(_through_bytes(_foreign(img)))
    kinds = [a.kind for a in state.annotations]
    assert kinds == ["polyline", "polyline", "polyline"], kinds
    values = np.zeros((32, 64))
    spacing = Spacing(0.5, 0.5, "pixel")
    assert all(a.measure(spacing, values, "HU") is None for a in state.annotations)
    # the points are kept as sent (pixel centres), so they are drawn where the sender put them
    assert state.annotations[0].points == [(5.0, 10.0), (58.0, 10.0)]


def test_our_layer_name_alone_does_not_make_a_gsps_ours() -> None:
    img = _image()
    for manufacturer, layer in (("OtherVendor", gsps.LAYER), ("Lucent", "EXT")):
        state = gsps.read(_through_bytes(_foreign(img, manufacturer, layer)))
        assert {a.kind for a in state.annotations} == {"polyline"}, (manufacturer, layer)


def test_our_own_gsps_still_comes_back_as_measurements() -> None:
    img = _image()
    sop = str(img.SOPInstanceUID)
    drawn = [
        Annotation("distance", [(1.0, 2.0), (20.0, 25.0)], sop_instance_uid=sop),
        Annotation("angle", [(5.0, 5.0), (10.0, 10.0), (15.0, 5.0)], sop_instance_uid=sop),
        Annotation("rect", [(3.0, 4.0), (12.0, 9.0)], sop_instance_uid=sop),
    ]
    ds = gsps.build([img], drawn, series_uid=generate_uid(), sop_uid=generate_uid())
    state = gsps.read(_through_bytes(ds))
    assert sorted(a.kind for a in state.annotations) == ["angle", "distance", "rect"]
