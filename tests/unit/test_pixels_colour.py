"""lucent.dicom.pixels.render of colour images: pydicom 3 decodes every YBR_* to RGB, so
render must not convert again (red came out green; YBR_RCT/ICT raised NotImplementedError)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from lucent.dicom import pixels


@pytest.mark.parametrize(
    "name",
    [
        "examples_jpeg2k.dcm",  # JPEG 2000 lossless, YBR_RCT
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_ybr_full_422_uncompressed.dcm",
    ],
)
def test_ybr_images_render_as_the_rgb_pydicom_decodes(name: str) -> None:
    warnings.simplefilter("ignore")
    ds = dcmread(get_testdata_file(name))
    assert str(ds.PhotometricInterpretation).startswith("YBR")
    rgb = ds.pixel_array
    rgb = rgb[0] if rgb.ndim == 4 else rgb
    assert np.array_equal(pixels.render(ds, 0), rgb)


def test_ybr_full_red_stays_red() -> None:
    ds = dcmread(get_testdata_file("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    r, g, b = (int(v) for v in pixels.render(ds, 0)[0, 0])
    assert r > 200 and g < 50 and b < 50
