"""lucent.dicom.pixels on enhanced multi-frame images: Rescale and Window come from the
functional groups (PS3.3 C.7.6.16), per frame first, then shared, then the top level."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from lucent.dicom import pixels
from tests.data import samples

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def enhanced_ct() -> Dataset:
    """An Enhanced CT of 3 frames, every pixel stored 1064 (40 HU with the shared Rescale
    Intercept -1024), window C40/W400 shared and C140/W400 for frame 3 alone; nothing of
    either at the top level, as in real Enhanced CTs."""
    ds = samples.make_instance(ENHANCED_CT, rows=8, cols=8)
    for keyword in (
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
    ):
        delattr(ds, keyword)
    ds.PixelData = np.full((3, 8, 8), 1064, "<i2").tobytes()
    shared = ds.SharedFunctionalGroupsSequence[0]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, 1, "HU"
    shared.PixelValueTransformationSequence = [transform]
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    shared.FrameVOILUTSequence = [voi]
    own = Dataset()
    own.WindowCenter, own.WindowWidth = [140, 1000], [400, 2000]  # the first pair counts
    ds.PerFrameFunctionalGroupsSequence[2].FrameVOILUTSequence = [own]
    return ds


def test_modality_lut_reads_the_pixel_value_transformation_group() -> None:
    ds = enhanced_ct()
    frame = pixels.decode_frame(ds, 1)
    assert np.all(pixels.modality_lut(ds, frame, 1) == 40)


def test_default_window_per_frame_then_shared() -> None:
    ds = enhanced_ct()
    values = pixels.modality_lut(ds, pixels.decode_frame(ds, 0), 0)
    assert pixels.default_window(ds, values, 0) == (40, 400)
    assert pixels.default_window(ds, values, 2) == (140, 400)


def test_render_uses_each_frames_functional_groups() -> None:
    ds = enhanced_ct()
    assert np.all(pixels.render(ds, 0) == 127)  # 40 HU mid-grey in C40/W400 (was white)
    assert np.all(pixels.render(ds, 2) == 63)  # 40 HU in C140/W400


def test_top_level_attributes_still_apply() -> None:
    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", rows=8, cols=8)
    ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = -1024, 40, 400
    ds.PixelData = np.full((8, 8), 1064, "<i2").tobytes()
    assert np.all(pixels.render(ds) == 127)
