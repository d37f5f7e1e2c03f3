"""Rendered output through the LUTs of the grey and palette pipelines (outside probe 47).

PS3.4 N.2.1.1: Modality LUT (Rescale or the Modality LUT Sequence, PS3.3 C.11.1), then VOI
(window with its VOI LUT Function, or the VOI LUT Sequence, C.11.2), then MONOCHROME1
inverts; PALETTE COLOR goes through its palette (C.7.6.3.1.5/6, segmented C.7.9.2).

Every data set is built here, encoded to Part-10 bytes and read back, then rendered by the
functions the /rendered routes call (``pixels.render``; ``dicomweb_render.render_as`` for
the ``window=`` query). Expectations are computed with numpy from the standard's formulas,
not from the code under test. The last test sends instances with DCMTK storescu to the
real server and reads /rendered back over HTTP.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.datastructures import QueryParams

from lucent.api.client import LucentClient
from lucent.dicom import pixels
from server.api import dicomweb_render
from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

CR = "1.2.840.10008.5.1.4.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"

RAMP = np.arange(4096, dtype=np.int64)  # every 12-bit stored value, one per pixel


# --------------------------------------------------------------------------- helpers


def encoded(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=syntax != ExplicitVRBigEndian)  # fmt: skip
    return buf.getvalue()


def rendered(ds: Dataset, index: int = 0, syntax: str = ExplicitVRLittleEndian) -> np.ndarray:
    """What /rendered shows by default: encode, read back, render."""
    return pixels.render(pixels.read(encoded(ds, syntax)), index)


def cr(
    stored: np.ndarray, *, photometric: str = "MONOCHROME2", signed: bool = False, order: str = "<"
) -> Dataset:
    """A 12-bit CR of the stored values (64 x 64), no window, no rescale; ``order`` is the
    byte order of the transfer syntax it will be written in (pydicom writes OW as is)."""
    ds = samples.make_instance(CR, rows=64, cols=64)
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(f"{order}{'i' if signed else 'u'}2").reshape(64, 64).tobytes()
    return ds


def lut_item(
    descriptor: list[int],
    entries: np.ndarray,
    *,
    vr: str = "US",
    desc_vr: str = "US",
    order: str = "<",
) -> Dataset:
    """A Modality/VOI LUT Sequence item. ``vr`` OW8 writes one byte per entry (8 bits
    allocated, PS3.3 C.11.1.1.1), OW 16-bit words; ``desc_vr`` is how the descriptor is
    written (US: a negative first mapped value as its two's complement)."""
    item = Dataset()
    item.add_new(0x00283002, desc_vr, descriptor)
    if vr == "US":
        item.add_new(0x00283006, "US", [int(v) for v in entries])
    elif vr == "OW8":
        item.add_new(0x00283006, "OW", entries.astype(np.uint8).tobytes())
    else:
        item.add_new(0x00283006, "OW", entries.astype(f"{order}u2").tobytes())
    return item


def linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 onto 0..255 (float64, before truncation)."""
    return np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0, 255)


def exact(got: np.ndarray, expected_float: np.ndarray) -> None:
    """``got`` is the truncated expectation at every pixel where the float is saturated (0
    or 255) or lies clear of an integer: float32 and float64 may truncate a value within
    1e-3 of an integer to either side, and only those are left out."""
    clear = (np.abs(expected_float - np.rint(expected_float)) > 1e-3) | np.isin(
        expected_float, (0.0, 255.0)
    )
    assert clear.mean() > 0.9
    want = np.floor(expected_float).astype(np.int64)
    assert np.array_equal(got.astype(np.int64)[clear], want[clear])


def to_8bit(entries: np.ndarray, bits: int) -> np.ndarray:
    """LUT output 0 .. 2**bits - 1 onto 0..255, rounded to the nearest."""
    return np.rint(entries.astype(np.float64) * 255.0 / (2**bits - 1)).astype(np.int64)


# --------------------------------------------------------------------------- Modality LUT


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_modality_lut_sequence_comes_before_the_window(vr: str) -> None:
    """Probe 47 case 1: LUT 4096\\0\\16 mapping x -> 4095 - x, window 2048/4096: stored 0
    is white (it was black: the sequence was ignored)."""
    ds = cr(RAMP)
    ds.ModalityLUTSequence = [lut_item([4096, 0, 16], 4095 - RAMP, vr=vr)]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    out = rendered(ds).ravel()
    assert out[0] == 255 and out[4095] == 0
    exact(out, linear_window((4095 - RAMP).astype(np.float64), 2048, 4096))


def test_modality_lut_then_monochrome1_inverts() -> None:
    ds = cr(RAMP, photometric="MONOCHROME1")
    ds.ModalityLUTSequence = [lut_item([4096, 0, 16], 4095 - RAMP)]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    out = rendered(ds).ravel()
    assert out[0] == 0 and out[4095] == 255
    want = linear_window((4095 - RAMP).astype(np.float64), 2048, 4096)
    exact(255 - out, want)


def test_modality_lut_signed_first_value_written_as_us() -> None:
    """Pixel Representation 1: the first mapped value -2048 arrives as US 63488."""
    stored = RAMP - 2048
    ds = cr(stored, signed=True)
    entries = (stored + 2048) * 16  # 0 .. 65520
    ds.ModalityLUTSequence = [lut_item([4096, 63488, 16], entries, vr="OW")]
    ds.WindowCenter, ds.WindowWidth = 32768, 65536
    out = rendered(ds).ravel()
    exact(out, linear_window(entries.astype(np.float64), 32768, 65536))
    assert out[0] == 0 and out[4095] == 254  # 65520 of 65535


def test_modality_lut_of_65536_entries_on_signed_16_bit() -> None:
    """LUT Descriptor 0 = 65536 entries, first mapped -32768 (SS): every signed value."""
    ds = samples.make_instance(CR, rows=2, cols=2)
    del ds.WindowCenter, ds.WindowWidth
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    stored = np.array([-32768, -1, 0, 32767])
    ds.PixelData = stored.astype("<i2").tobytes()
    table = np.arange(65536)  # x -> x + 32768
    ds.ModalityLUTSequence = [lut_item([0, -32768, 16], table, vr="OW", desc_vr="SS")]
    source = pixels.read(encoded(ds))
    values = pixels.modality_lut(source, pixels.decode_frame(source, 0))
    assert values.ravel().tolist() == (stored + 32768).tolist()


# --------------------------------------------------------------------------- VOI LUT


def gamma_lut(bits: int) -> np.ndarray:
    """Probe 47 case 2: a non-linear VOI curve (2**bits - 1) * (x / 4095) ** 0.3."""
    return np.rint((2**bits - 1) * (RAMP / 4095.0) ** 0.3).astype(np.int64)


@pytest.mark.parametrize(
    ("bits", "vr", "syntax"),
    [
        (8, "US", ExplicitVRLittleEndian),
        (8, "OW8", ExplicitVRLittleEndian),
        (8, "OW", ImplicitVRLittleEndian),
        (16, "OW", ExplicitVRBigEndian),
        (16, "US", ExplicitVRLittleEndian),
    ],
)
def test_voi_lut_sequence_is_the_default_voi(bits: int, vr: str, syntax: str) -> None:
    """No window: the VOI LUT Sequence, its output scaled from 2**bits - 1 to 255 (it was
    ignored and the image stretched min to max)."""
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    ds = cr(RAMP, order=order)
    entries = gamma_lut(bits)
    ds.VOILUTSequence = [lut_item([4096, 0, bits], entries, vr=vr, order=order)]
    out = rendered(ds, syntax=syntax).ravel()
    assert np.array_equal(out, to_8bit(entries, bits))
    assert out[1] >= 20  # stretched min to max, stored 1 was 0


def test_voi_lut_on_monochrome1_is_inverted() -> None:
    ds = cr(RAMP, photometric="MONOCHROME1")
    ds.VOILUTSequence = [lut_item([4096, 0, 8], gamma_lut(8))]
    assert np.array_equal(rendered(ds).ravel(), 255 - gamma_lut(8))


def test_voi_lut_after_rescale_with_a_negative_first_value() -> None:
    """VOI LUT input is the Modality LUT output (-1024 .. 3071 HU here): the first mapped
    value -1024 written as US 64512 is signed (PS3.3 C.11.2.1.1)."""
    ds = cr(RAMP)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    entries = RAMP * 16
    ds.VOILUTSequence = [lut_item([4096, 64512, 16], entries, vr="OW")]
    assert np.array_equal(rendered(ds).ravel(), to_8bit(entries, 16))


def test_window_is_preferred_to_a_voi_lut_when_both_are_present() -> None:
    """C.11.2 names no default between the two; we (and the workstation) take the window."""
    ds = cr(RAMP)
    ds.VOILUTSequence = [lut_item([4096, 0, 8], gamma_lut(8))]
    ds.WindowCenter, ds.WindowWidth = 1000, 500
    exact(rendered(ds).ravel(), linear_window(RAMP.astype(np.float64), 1000, 500))


def two_frame_ramp() -> tuple[Dataset, Dataset]:
    """An Enhanced CT of two RAMP frames without rescale or window: (data set, its shared
    functional groups item) for a test to give its VOI."""
    ds = samples.make_instance(ENHANCED_CT, rows=64, cols=64)
    for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter",
                    "WindowWidth"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    ds.NumberOfFrames = 2
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:2]
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = np.stack([RAMP, RAMP]).astype("<u2").tobytes()
    shared = ds.SharedFunctionalGroupsSequence[0]
    if "PixelValueTransformationSequence" in shared:
        del shared.PixelValueTransformationSequence
    return ds, shared


def test_enhanced_frame_voi_lut_group_holds_a_voi_lut() -> None:
    """Frame VOI LUT With LUT macro (C.7.6.16.2.10b): frame 2 has a LUT of its own."""
    ds, shared = two_frame_ramp()
    window = Dataset()
    window.WindowCenter, window.WindowWidth = 2048, 4096
    shared.FrameVOILUTSequence = [window]
    own = Dataset()
    own.VOILUTSequence = [lut_item([4096, 0, 8], gamma_lut(8))]
    ds.PerFrameFunctionalGroupsSequence[1].FrameVOILUTSequence = [own]
    exact(rendered(ds, 0).ravel(), linear_window(RAMP.astype(np.float64), 2048, 4096))
    assert np.array_equal(rendered(ds, 1).ravel(), gamma_lut(8))


# --------------------------------------------------------------------------- VOI LUT Function


def sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1 onto 0..255."""
    return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2 onto 0..255."""
    return np.where(x <= c - w / 2, 0.0,
                    np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255.0))  # fmt: skip


@pytest.mark.parametrize(
    ("function", "formula"), [("SIGMOID", sigmoid), ("LINEAR_EXACT", linear_exact)]
)
def test_voi_lut_function_is_used_by_default(function: str, formula: object) -> None:
    """Probe 47 case 3: SIGMOID (and LINEAR_EXACT) were rendered with the linear window."""
    ds = cr(RAMP)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2000, 1000, function
    want = formula(RAMP.astype(np.float64), 2000, 1000)  # type: ignore[operator]
    out = rendered(ds).ravel()
    exact(out, want)
    # the same bytes as the explicit window=...,<function> of /rendered
    source = pixels.read(encoded(ds))
    query = QueryParams({"window": f"2000,1000,{function.lower().replace('_', '-')}"})
    png = dicomweb_render.render_as(source, 0, query, "image/png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))).ravel(), out)
    if function == "SIGMOID":
        assert out[1500] == int(sigmoid(np.array(1500.0), 2000, 1000))  # linear: 0


def test_per_frame_voi_lut_function_of_an_enhanced_image() -> None:
    """Frame VOI LUT functional group: shared linear window, frame 2 a sigmoid of its own."""
    ds, shared = two_frame_ramp()
    window = Dataset()
    window.WindowCenter, window.WindowWidth = 2000, 1000
    shared.FrameVOILUTSequence = [window]
    own = Dataset()
    own.WindowCenter, own.WindowWidth, own.VOILUTFunction = 2000, 1000, "SIGMOID"
    ds.PerFrameFunctionalGroupsSequence[1].FrameVOILUTSequence = [own]
    x = RAMP.astype(np.float64)
    exact(rendered(ds, 0).ravel(), linear_window(x, 2000, 1000))
    exact(rendered(ds, 1).ravel(), sigmoid(x, 2000, 1000))


# --------------------------------------------------------------------------- palettes


def palette_image(stored: np.ndarray, bits_stored: int = 8) -> Dataset:
    ds = samples.make_instance(SC, rows=1, cols=len(stored))
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype(f"<u{allocated // 8}").tobytes()
    return ds


def set_palette(ds: Dataset, descriptor: list[int], tables: list[np.ndarray], dtype: str) -> None:
    for colour, table in zip(("Red", "Green", "Blue"), tables, strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype(dtype).tobytes())


def test_palette_of_16_bit_entries_is_scaled_by_65535() -> None:
    """Probe 47 case 4: entries up to 30000 rendered 250 (scaled by the brightest value)."""
    idx = np.arange(256)
    red, green, blue = idx * 117, 30000 - idx * 117, np.full(256, 30000)
    ds = palette_image(idx)
    set_palette(ds, [256, 0, 16], [red, green, blue], "<u2")
    out = rendered(ds)[0]
    for channel, table in enumerate((red, green, blue)):
        assert np.array_equal(out[:, channel], to_8bit(table, 16))
    assert out[0, 2] == 117  # 30000 of 65535


def test_palette_of_8_bit_entries_stays_as_is() -> None:
    idx = np.arange(256)
    ds = palette_image(idx)
    set_palette(ds, [256, 0, 8], [idx, 255 - idx, idx // 2], "u1")
    out = rendered(ds)[0]
    assert np.array_equal(out[:, 0], idx) and np.array_equal(out[:, 1], 255 - idx)
    assert np.array_equal(out[:, 2], idx // 2)


def test_palette_of_4096_8_bit_entries() -> None:
    """12-bit indices into 8-bit entries: pydicom alone indexes with 8 bits (300 -> 44)."""
    ds = palette_image(RAMP, bits_stored=12)
    table = RAMP // 16
    set_palette(ds, [4096, 0, 8], [table, table, 255 - table], "u1")
    out = rendered(ds)[0]
    assert np.array_equal(out[:, 0], table) and np.array_equal(out[:, 2], 255 - table)


def segmented(discrete: list[int], y1: int, length: int) -> bytes:
    """C.7.9.2: a discrete segment (opcode 0) then a linear one (opcode 1) to ``y1``."""
    words = [0, len(discrete), *discrete, 1, length, y1]
    return struct.pack(f"<{len(words)}H", *words)


def test_segmented_palette_of_16_bit_entries() -> None:
    """C.7.9.2.2: a linear segment runs from the previous entry to y1 over its length."""
    discrete = [0, 500, 1000]
    length, y1 = 253, 1000 + 253 * 200  # integer steps of 200: no rounding
    table = np.array(discrete + [1000 + 200 * (i + 1) for i in range(length)])
    idx = np.arange(256)
    ds = palette_image(idx)
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(
            ds, f"Segmented{colour}PaletteColorLookupTableData", segmented(discrete, y1, length)
        )
    out = rendered(ds)[0]
    assert np.array_equal(out[:, 0], to_8bit(table, 16))
    assert out[-1, 1] == round(51600 * 255 / 65535)


def test_segmented_palette_of_8_bit_entries_past_256() -> None:
    """8-bit segments (one byte per word) for 12-bit indices: pydicom alone indexes with 8
    bits, so entry 300 came from entry 44."""
    words = [0, 2, 0, 10, 1, 245, 255, 0, 209, *([255] * 209)]
    table = np.array([0, 10, *range(11, 256), *([255] * 209)])  # 456 entries
    ds = palette_image(np.array([0, 1, 100, 255, 300, 455, 4095]), bits_stored=12)
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [456, 0, 8])
        setattr(ds, f"Segmented{colour}PaletteColorLookupTableData", bytes(words))
    out = rendered(ds)[0]
    assert out[:, 0].tolist() == [table[0], table[1], table[100], table[255], 255, 255, 255]


def test_16_bit_rgb_is_scaled_by_bits_stored() -> None:
    ds = samples.make_instance(SC, rows=1, cols=4)
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    rgb = np.array([[0, 100, 30000], [65535, 1000, 5], [257, 514, 771], [3000, 3000, 3000]])
    ds.PixelData = rgb.astype("<u2").tobytes()
    assert np.array_equal(rendered(ds)[0], to_8bit(rgb, 16))


# --------------------------------------------------------------------------- over HTTP


def test_rendered_route_applies_the_luts(
    server: LucentServer, api: LucentClient, tmp_path: Path
) -> None:
    """The probe's cases stored with storescu and read back from /rendered as PNG."""
    modality = cr(RAMP)
    modality.ModalityLUTSequence = [lut_item([4096, 0, 16], 4095 - RAMP)]
    modality.WindowCenter, modality.WindowWidth = 2048, 4096
    voi = cr(RAMP)
    voi.VOILUTSequence = [lut_item([4096, 0, 8], gamma_lut(8))]
    sig = cr(RAMP)
    sig.WindowCenter, sig.WindowWidth, sig.VOILUTFunction = 2000, 1000, "SIGMOID"
    idx = np.arange(256)
    palette = palette_image(idx)
    set_palette(palette, [256, 0, 16], [idx * 117, idx * 117, np.full(256, 30000)], "<u2")
    cases = [modality, voi, sig, palette]
    files = []
    for i, ds in enumerate(cases):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        files.append(samples.write(ds, tmp_path / f"{i}.dcm"))
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr[-2000:]

    def get(ds: Dataset) -> np.ndarray:
        r = httpx.get(
            f"{server.api_url}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered",
            headers={"Authorization": f"Bearer {api.token}", "Accept": "image/png"},
        )
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(r.content)))

    out = get(modality).ravel()
    assert out[0] == 255 and out[4095] == 0
    exact(out, linear_window((4095 - RAMP).astype(np.float64), 2048, 4096))
    assert np.array_equal(get(voi).ravel(), gamma_lut(8))
    exact(get(sig).ravel(), sigmoid(RAMP.astype(np.float64), 2000, 1000))
    assert np.array_equal(get(palette)[0, :, 2], np.full(256, 117))
