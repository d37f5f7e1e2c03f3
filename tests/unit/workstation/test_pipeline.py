"""The numpy display pipeline against the DICOM formulas and lucent.dicom.pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from lucent.dicom import pixels
from tests.data.samples import make_instance, set_pixels
from workstation.model import pipeline
from workstation.model.pipeline import Display, Frame

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"


def test_linear_window_matches_lucent_pixels() -> None:
    values = np.arange(-1100, 1200, 7, dtype=np.float32)
    ours = pipeline.window_function(values, 40, 400).astype(np.uint8)
    assert np.array_equal(ours, pixels.window_to_8bit(values, 40, 400))


@pytest.mark.parametrize("dtype", ["<i2", "<u2", "u1"])
def test_lut_path_equals_arithmetic(dtype: str) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(np.dtype(dtype))
    stored = rng.integers(info.min, info.max, size=(64, 64), endpoint=True).astype(dtype)
    frame = Frame(stored=stored, slope=2.0, intercept=-1024.0)
    d = Display(100.0, 900.0)
    by_lut = pipeline.render(frame, d)
    by_math = pipeline.window_function(stored * 2.0 - 1024.0, 100.0, 900.0).astype(np.uint8)
    assert np.array_equal(by_lut, by_math)


def test_monochrome1_is_inverted_and_user_invert_undoes_it() -> None:
    stored = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    m2 = pipeline.render(Frame(stored=stored), Display(2048, 4096))
    m1 = pipeline.render(Frame(stored=stored, photometric="MONOCHROME1"), Display(2048, 4096))
    assert np.array_equal(m1, 255 - m2)
    back = pipeline.render(
        Frame(stored=stored, photometric="MONOCHROME1"), Display(2048, 4096, invert=True)
    )
    assert np.array_equal(back, m2)


def test_signed_ct_from_dataset_rescaled_to_hu() -> None:
    ds = make_instance(CT, rows=16, cols=16)
    arr = np.full((16, 16), 1024 + 40, dtype=np.int16)
    arr[0, 0] = 0
    set_pixels(ds, arr, bits_allocated=16, bits_stored=16, signed=True)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    frame = pipeline.frames_from_dataset(ds)[0]
    hu = frame.modality_values()
    assert hu[1, 1] == 40 and hu[0, 0] == -1024
    assert frame.default_window() == (40.0, 400.0)
    out = pipeline.render(frame, Display(*frame.default_window()))
    assert out[1, 1] == pixels.window_to_8bit(np.array([40.0]), 40, 400)[0]
    assert out[0, 0] == 0


def test_palette_colour_and_rgb_become_rgb() -> None:
    ds = make_instance(SC, rows=8, cols=8)
    idx = np.arange(64, dtype=np.uint8).reshape(8, 8)
    set_pixels(ds, idx, bits_allocated=8, bits_stored=8, photometric="PALETTE COLOR")
    ramp = np.arange(256, dtype=np.uint16) * 257
    for colour, data in (("Red", ramp), ("Green", ramp[::-1].copy()), ("Blue", ramp * 0)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", data.astype("<u2").tobytes())
    frame = pipeline.frames_from_dataset(ds)[0]
    assert frame.is_colour and frame.stored.shape == (8, 8, 3)
    assert tuple(frame.stored[0, 5]) == (5, 250, 0)


def test_ybr_full_is_converted_and_planar_configuration_handled() -> None:
    ds = make_instance(SC, rows=4, cols=4)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    planar = np.ascontiguousarray(ybr.transpose(2, 0, 1))
    set_pixels(ds, ybr, bits_allocated=8, bits_stored=8, photometric="YBR_FULL")
    ds.PlanarConfiguration = 1
    ds.PixelData = planar.tobytes()
    frame = pipeline.frames_from_dataset(ds)[0]
    assert frame.is_colour
    assert abs(int(frame.stored[0, 0, 0]) - 200) <= 2 and int(frame.stored[0, 0, 1]) <= 2


def test_multiframe_and_overlay() -> None:
    ds = make_instance(SC, rows=8, cols=8)
    arr = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    ds.NumberOfFrames = 3
    set_pixels(ds, arr, bits_allocated=8, bits_stored=8)
    ov = np.zeros((8, 8), np.uint8)
    ov[2, :] = 1
    from pydicom.pixels.utils import pack_bits

    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", pack_bits(ov.ravel()))
    frames = pipeline.frames_from_dataset(ds)
    assert [int(f.stored[0, 0]) for f in frames] == [10, 20, 30]
    out = pipeline.render(frames[1], Display(128, 256))
    assert (out[2] == 255).all() and out[3, 0] != 255


def test_lossy_marker() -> None:
    assert not pipeline.lossy_of("00", "1.2.840.10008.1.2.1").lossy
    jpg = pipeline.lossy_of("01", "1.2.840.10008.1.2.4.50", ["10.5"], ["ISO_10918_1"])
    assert jpg.lossy and jpg.badge == "JPG 10.5:1 ISO_10918_1"
    assert pipeline.lossy_of("", "1.2.840.10008.1.2.4.91").badge == "JPG JPEG 2000"
    assert pipeline.lossy_of(None, "1.2.840.10008.1.2.4.70").badge == ""  # lossless JPEG


def test_sigmoid_and_voi_lut_table() -> None:
    v = np.array([0.0, 50.0, 100.0])
    s = pipeline.window_function(v, 50, 100, "SIGMOID")
    assert s[1] == pytest.approx(127.5) and s[0] < 127 < s[2]
    table = np.linspace(0, 4095, 101).astype(np.float32)
    frame = Frame(stored=np.array([[0, 50, 100]], np.uint16), voi_lut=pipeline.VoiLut(0, table, 12))
    out = pipeline.render(frame, Display(0, 1, use_voi_lut=True))
    assert list(out[0]) == [0, 127, 255]
    assert generate_uid()  # keeps the import used for future fixtures
