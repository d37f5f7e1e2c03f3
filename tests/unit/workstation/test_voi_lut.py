"""VOI LUT Sequence (0028,3010) as the default VOI (PS3.3 C.11.2, PS3.4 N.2.1.1).

Probe 22 "VoiLutSeq2": a CR with a non-linear VOI LUT (entry = min(v // 8, 255), 8 bits)
and no window showed a full-range linear ramp because ``Viewport.use_voi_lut`` was never
set. With no window the table is the default; with both the window is, and the user
switches to the table.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lucent.api import schemas
from tests.data.samples import make_instance, set_pixels
from workstation.model.measure import Spacing
from workstation.model.pipeline import Lossy, frames_from_dataset
from workstation.model.series import SeriesData, Slice
from workstation.model.viewer import Viewport

CR = "1.2.840.10008.5.1.4.1.1.1"
STORED = np.array([[0, 8, 1032, 2039, 2040, 4095]], np.uint16)


def voi_lut_cr(window: bool = False, stored: np.ndarray = STORED) -> Dataset:
    ds = make_instance(CR, rows=stored.shape[0], cols=stored.shape[1])
    set_pixels(ds, stored, bits_allocated=16, bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", [int(v) for v in np.minimum(np.arange(4096) // 8, 255)])
    item.LUTExplanation = "v/8 clipped"
    ds.VOILUTSequence = Sequence([item])
    del ds.WindowCenter, ds.WindowWidth  # set_pixels gives a full-range window
    if window:
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def viewport_of(ds: Dataset) -> Viewport:
    se = schemas.SeriesOut(series_uid="1.2.3", study_uid="1.2", modality="CR", series_number=1,
                           description="CR", body_part="", frame_of_reference_uid="",
                           instance_count=1)  # fmt: skip
    rows, cols = STORED.shape
    sl = Slice("1.2.3.1", CR, 0, 1, {}, None, Spacing(1.0, 1.0, "none"), Lossy(False), rows, cols)
    data = SeriesData(se, None, [sl])
    (frame,) = frames_from_dataset(ds)
    data.put(0, frame)
    vp = Viewport()
    vp.set_series(data)
    return vp


def test_voi_lut_without_window_is_the_default() -> None:
    vp = viewport_of(voi_lut_cr())
    assert vp.use_voi_lut and vp.has_voi_lut()
    shown = vp.rendered()
    assert shown is not None
    assert shown[0].tolist() == [0, 1, 129, 254, 255, 255]  # stored 1032 → 129 (probe 22)
    assert vp.voi_description() == "VOI LUT: v/8 clipped"
    vp.set_window(2048, 4096)  # a window the user picks replaces the table …
    assert not vp.use_voi_lut and vp.rendered()[0, 2] == 64
    vp.reset_view()  # … and reset brings the image's default back
    assert vp.use_voi_lut and vp.rendered()[0, 2] == 129


def test_window_and_voi_lut_window_is_default_and_lut_on_request() -> None:
    vp = viewport_of(voi_lut_cr(window=True))
    assert not vp.use_voi_lut and vp.has_voi_lut()
    assert (vp.center, vp.width) == (2048.0, 4096.0)
    assert vp.rendered()[0, 2] == 64  # linear: (1032 - 0.5) / 4095 * 255, rounded down
    vp.toggle_voi_lut()
    assert vp.use_voi_lut and vp.rendered()[0].tolist() == [0, 1, 129, 254, 255, 255]
    vp.toggle_voi_lut()
    assert not vp.use_voi_lut and (vp.center, vp.width) == (2048.0, 4096.0)
    assert vp.rendered()[0, 2] == 64


def test_no_voi_lut_cannot_be_switched_on() -> None:
    ds = voi_lut_cr(window=True)
    del ds.VOILUTSequence
    vp = viewport_of(ds)
    vp.set_voi_lut(True)
    assert not vp.use_voi_lut and not vp.has_voi_lut()
