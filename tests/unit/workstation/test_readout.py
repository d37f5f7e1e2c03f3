"""Pixel readout under the cursor (probe 22: there was none)."""

from __future__ import annotations

import numpy as np

from workstation.model.pipeline import Frame
from workstation.model.readout import format_value, pixel_at, pixel_readout


def ct_frame() -> Frame:
    """HU ramp along columns (-1000 … 1000), stored = HU + 1024, as the GUI scene."""
    hu = np.tile(np.linspace(-1000, 1000, 64).round(), (64, 1))
    return Frame((hu + 1024).astype(np.int16), slope=1.0, intercept=-1024.0)


def test_ct_shows_position_stored_value_and_hu() -> None:
    f = ct_frame()
    assert pixel_readout(f, 40, 20, "HU") == "(40, 20)  stored 1294  270 HU"
    assert pixel_readout(f, 0.4, 63.3, "HU") == "(0, 63)  stored 24  -1000 HU"
    assert pixel_readout(f, 63.49, 0, "HU") == "(63, 0)  stored 2024  1000 HU"


def test_outside_the_image_no_readout() -> None:
    f = ct_frame()
    for x, y in ((-0.6, 5), (63.6, 5), (5, -0.7), (5, 64), (1e9, -1e9)):
        assert pixel_at(f, x, y) is None
        assert pixel_readout(f, x, y, "HU") is None


def test_rescale_without_unit_and_no_rescale() -> None:
    pet = Frame(np.full((4, 4), 300, np.uint16), slope=0.25, intercept=0.0)
    assert pixel_readout(pet, 1, 2) == "(1, 2)  stored 300  75"
    assert pixel_readout(Frame(np.full((4, 4), 7, np.uint16)), 3, 3) == "(3, 3)  value 7"
    odd = Frame(np.full((2, 2), 3, np.int16), slope=0.5, intercept=-0.25)
    assert pixel_readout(odd, 0, 0, "US") == "(0, 0)  stored 3  1.25 US"
    signed = Frame(np.full((2, 2), -2000, np.int16), slope=1.0, intercept=0.0)
    assert pixel_readout(signed, 1, 1, "HU") == "(1, 1)  stored -2000  -2000 HU"


def test_colour_shows_rgb() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2, 5] = (255, 128, 7)
    f = Frame(rgb, photometric="RGB")
    assert pixel_readout(f, 5, 2) == "(5, 2)  RGB 255 128 7"
    # pydicom's planar-backed view (RLE colour) reads the same.
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1)).transpose(1, 2, 0)
    assert pixel_readout(Frame(planar, photometric="RGB"), 5, 2) == "(5, 2)  RGB 255 128 7"


def test_format_value() -> None:
    assert [format_value(v) for v in (270.0, -1000, 1.5, 0.125, 2.0000001)] == [
        "270", "-1000", "1.5", "0.12", "2",
    ]  # fmt: skip
