"""RLE-compressed colour images in the stack viewer (probe 22: they crashed the workstation).

pydicom decodes RLE colour as a planar-backed view (strides like (64, 1, 4096)); the viewport
must hand Qt C-contiguous rows, or Qt reads the wrong bytes (or past the buffer and segfaults).
An RGB image compressed by DCMTK ``dcmcrle`` and by pydicom, and a US multi-frame cine (RLE),
must show exactly their RGB values.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from lucent.api.client import LucentClient
from tests.data.samples import file_meta_for, make_instance, set_pixels, write
from tests.gui.helpers import grab, sample, save
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dcmtk_tool

SC = "1.2.840.10008.5.1.4.1.1.7"
USMF = "1.2.840.10008.5.1.4.1.1.3.1"
QUAD = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
CINE_FRAMES, YELLOW = 5, (255, 255, 0)


def quad_rgb(n: int = 64) -> np.ndarray:
    """Red, green / blue, white quadrants."""
    a = np.zeros((n, n, 3), np.uint8)
    h = n // 2
    a[:h, :h], a[:h, h:], a[h:, :h], a[h:, h:] = QUAD
    return a


def cine_rgb() -> np.ndarray:
    """48×64 black frames with a yellow 10×10 block moving right by 10 columns per frame."""
    frames = np.zeros((CINE_FRAMES, 48, 64, 3), np.uint8)
    for k in range(CINE_FRAMES):
        frames[k, 10:20, k * 10 : k * 10 + 10] = YELLOW
    return frames


STUDY = generate_uid()


def _colour(sop_class: str, name: str, desc: str, arr: np.ndarray) -> Any:
    ds = make_instance(sop_class, patient_id=name.replace("^", "-"), patient_name=name,
                       study_uid=STUDY, series_uid=generate_uid(),
                       rows=arr.shape[-3], cols=arr.shape[-2])  # fmt: skip
    set_pixels(ds, arr, bits_allocated=8, bits_stored=8, photometric="RGB", samples=3)
    ds.PlanarConfiguration = 0
    ds.SeriesDescription = desc
    ds.file_meta = file_meta_for(ds, ExplicitVRLittleEndian)
    return ds


@pytest.fixture(scope="module")
def rle_cases(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Stores the three RLE cases under one patient name; returns that name."""
    d = tmp_path_factory.mktemp("rle")
    name = f"Rle{uuid.uuid4().hex[:6].upper()}^Colour"
    files = []
    # DCMTK-compressed RGB (the probe's RGBRLEdcmtk).
    native = write(_colour(SC, name, "RGB dcmcrle", quad_rgb()), d / "native.dcm")
    done = subprocess.run([dcmtk_tool("dcmcrle"), str(native), str(d / "dcmcrle.dcm")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    files.append(d / "dcmcrle.dcm")
    # pydicom-compressed RGB and US multi-frame cine.
    ds = _colour(SC, name, "RGB pydicom RLE", quad_rgb())
    ds.compress(RLELossless, quad_rgb())
    files.append(write(ds, d / "pydicom.dcm"))
    ds = _colour(USMF, name, "US cine RLE", cine_rgb())
    ds.Modality, ds.FrameTime, ds.FrameIncrementPointer = "US", 40, (0x0018, 0x1063)
    ds.compress(RLELossless, cine_rgb())
    files.append(write(ds, d / "cine.dcm"))
    done = storescu("127.0.0.1", server.port, server.ae_title, files, "-xr")
    assert done.returncode == 0, done.stderr
    return name


def _open(qtbot: Any, win: Any, api: LucentClient, name: str, desc: str) -> Any:
    (study,) = [s for s in api.studies(patient_name=name) if not s.placeholder]
    (se,) = [s for s in api.series(study.study_uid) if s.description == desc]
    assert se is not None
    win.open_series(se, study, 0)
    vp = win.layout_model.viewports[0]
    qtbot.waitUntil(lambda: vp.series is not None and vp.series.uid == se.series_uid, timeout=30000)
    qtbot.waitUntil(lambda: vp.series.complete and not win.jobs, timeout=60000)
    return vp


def _check(shot: np.ndarray, tr: Any, expected: np.ndarray, label: str) -> None:
    """Every 3rd pixel centre (and the edges) shows exactly the stored RGB."""
    rows, cols = expected.shape[:2]
    for y in [*range(0, rows, 3), rows - 1]:
        for x in [*range(0, cols, 3), cols - 1]:
            got = tuple(int(v) for v in sample(shot, tr, x, y))
            assert got == tuple(int(v) for v in expected[y, x]), (label, x, y, got)


@pytest.mark.parametrize("desc", ["RGB dcmcrle", "RGB pydicom RLE"])
def test_rle_rgb_shows_its_rgb_values(
    qtbot, window, api, rle_cases: str, artifacts: Path, desc: str
) -> None:  # noqa: ANN001
    vp = _open(qtbot, window, api, rle_cases, desc)
    stored = vp.frame().stored
    assert stored.shape == (64, 64, 3)
    widget = window.viewer.widgets[0]
    qtbot.wait(50)
    shot = grab(widget)
    _check(shot, vp.transform(widget.width(), widget.height()), quad_rgb(), desc)
    save(widget, artifacts, f"workstation_rle_{desc.split()[1]}.png")


def test_us_rle_cine_shows_every_frame(qtbot, window, api, rle_cases: str, artifacts: Path) -> None:  # noqa: ANN001
    vp = _open(qtbot, window, api, rle_cases, "US cine RLE")
    assert vp.count == CINE_FRAMES
    widget = window.viewer.widgets[0]
    frames = cine_rgb()
    for k in (0, 2, 4):
        vp.set_index(k)
        qtbot.wait(50)
        shot = grab(widget)
        _check(shot, vp.transform(widget.width(), widget.height()), frames[k], f"frame {k}")
    save(widget, artifacts, "workstation_rle_us_cine.png")


def test_qimage_of_reads_a_planar_backed_view_row_by_row(qapp) -> None:  # noqa: ANN001
    """The shape pydicom's RLE decoder returns: a (rows, cols, 3) view of R, G, B planes."""
    from workstation.qt.viewport import qimage_of

    rgb = quad_rgb()
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1)).transpose(1, 2, 0)
    assert planar.strides == (64, 1, 4096) and not planar.flags.c_contiguous
    img, buf = qimage_of(planar)
    assert buf.flags.c_contiguous and img.bytesPerLine() == 64 * 3
    for y, x in ((0, 0), (0, 63), (63, 0), (63, 63), (31, 32), (40, 10)):
        c = img.pixelColor(x, y)
        assert (c.red(), c.green(), c.blue()) == tuple(rgb[y, x]), (x, y)
    grey = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)[:, ::2].astype(np.uint8).T
    img, buf = qimage_of(grey)
    assert (img.width(), img.height()) == (64, 40)
    assert img.pixelColor(5, 7).red() == grey[7, 5]
