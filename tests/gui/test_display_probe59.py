"""Probe 59: another system's GSPS ELLIPSE at 45 degrees is drawn rotated, not as the
upright ellipse (here a circle) of its axis end points' bounding box (PS3.3 C.10.5.1.2:
major axis end points, then minor axis end points).

The image and a highdicom GSPS are stored on the real server by DCMTK storescu and opened
in the workstation; the grabbed viewport must show the GSPS colour along the rotated
ellipse and nowhere on the circle away from it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import generate_uid

from lucent.api.client import LucentClient
from tests.data.samples import file_meta_for, make_instance, set_pixels, write
from tests.gui.helpers import grab, save
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

SC = "1.2.840.10008.5.1.4.1.1.7"
DESCRIPTION = "Ellipse 45"


def _is_gsps_colour(px: np.ndarray) -> bool:
    """The viewport's GSPS_COLOUR (255, 140, 0), antialiased over a black image."""
    r, g, b = (int(v) for v in px)
    return r >= 150 and 0.35 * r <= g <= 0.75 * r and b < 40


@pytest.fixture(scope="module")
def ellipse_case(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A black 64 × 64 image and a GSPS holding one ELLIPSE: major axis (10,10)-(50,50),
    minor (25,35)-(35,25) in GSPS pixel units. Returns the patient name."""
    from highdicom import pr

    d = tmp_path_factory.mktemp("probe59")
    name = f"Ellipse{uuid.uuid4().hex[:6].upper()}^Probe"
    img = make_instance(SC, patient_id=name.replace("^", "-"), patient_name=name, rows=64,
                        cols=64)  # fmt: skip
    set_pixels(img, np.zeros((64, 64), np.uint16), bits_allocated=16, bits_stored=12)
    img.WindowCenter, img.WindowWidth = 2048, 4096
    img.SeriesDescription = DESCRIPTION
    img.file_meta = file_meta_for(img)
    layer = pr.GraphicLayer(layer_name="EXT", order=1)
    ann = pr.GraphicAnnotation(
        referenced_images=[img],
        graphic_layer=layer,
        graphic_objects=[pr.GraphicObject(
            pr.GraphicTypeValues.ELLIPSE,
            np.array([[10.0, 10.0], [50.0, 50.0], [25.0, 35.0], [35.0, 25.0]]),
            pr.AnnotationUnitsValues.PIXEL,
        )],
    )  # fmt: skip
    state = pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[img], series_instance_uid=generate_uid(), series_number=50,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Other",
        manufacturer_model_name="X", software_versions="1", device_serial_number="1",
        content_label="EXT", graphic_annotations=[ann], graphic_layers=[layer],
    )  # fmt: skip
    files = [write(img, d / "img.dcm"), write(state, d / "pr.dcm")]
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr
    return name


@pytest.fixture
def win(qtbot: Any, api: LucentClient) -> Iterator[Any]:
    from workstation.qt.main_window import MainWindow

    w = MainWindow(api)
    qtbot.addWidget(w)
    w.resize(1000, 800)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.cancel_loading()
    w.pool.waitForDone(20000)


def test_foreign_gsps_ellipse_is_drawn_rotated(
    qtbot: Any, win: Any, api: LucentClient, ellipse_case: str, artifacts: Path
) -> None:
    (study,) = [s for s in api.studies(patient_name=ellipse_case) if not s.placeholder]
    (se,) = [s for s in api.series(study.study_uid) if s.description == DESCRIPTION]
    win.open_series(se, study, 0)
    vp = win.layout_model.viewports[0]
    qtbot.waitUntil(lambda: vp.series is not None and vp.series.uid == se.series_uid, timeout=30000)
    qtbot.waitUntil(lambda: vp.series.complete and not win.jobs, timeout=60000)
    qtbot.waitUntil(lambda: any(a.source == "gsps" for a in vp.annotations), timeout=20000)
    widget = win.viewer.widgets[0]
    qtbot.wait(50)
    shot = grab(widget)
    save(widget, artifacts, "probe59_gsps_ellipse_45.png")
    tr = vp.transform(widget.width(), widget.height())

    def coloured_near(x: float, y: float, radius: int = 2) -> bool:
        u, v = tr.to_widget(x, y)
        u, v = int(round(u)), int(round(v))
        patch = shot[v - radius : v + radius + 1, u - radius : u + radius + 1]
        return any(_is_gsps_colour(px) for px in patch.reshape(-1, 3))

    # along the rotated outline (pixel centres: GSPS minus 0.5)
    a_, b_ = 20 * math.sqrt(2), 5 * math.sqrt(2)
    for k in range(16):
        t = 2 * math.pi * k / 16
        u, v = a_ * math.cos(t), b_ * math.sin(t)
        x = 29.5 + (u - v) / math.sqrt(2)
        y = 29.5 + (u + v) / math.sqrt(2)
        assert coloured_near(x, y), ("rotated outline not drawn at", round(x, 1), round(y, 1))
    # the upright circle of the bounding box (centre 29.5, radius 20) where it is far from
    # the rotated ellipse: nothing drawn there
    for deg in (0, 90, 180, 270, 20, 110, 200, 290):
        t = math.radians(deg)
        x, y = 29.5 + 20 * math.cos(t), 29.5 + 20 * math.sin(t)
        assert not coloured_near(x, y), ("bounding-box circle drawn at", round(x, 1), round(y, 1))
    # the centre of the image is inside, not on the line
    assert not coloured_near(29.5, 29.5)
    # the model keeps the ellipse as its axes: centre, semi-axes, 45-degree rotation
    (a,) = [a for a in vp.annotations if a.source == "gsps"]
    e = a.ellipse()
    assert e is not None and a.kind == "ellipse"
    assert (e.cx, e.cy, e.rx, e.ry) == pytest.approx(
        (29.5, 29.5, 20 * math.sqrt(2), 5 * math.sqrt(2))
    )
    assert math.degrees(e.angle) % 180 == pytest.approx(45.0)
