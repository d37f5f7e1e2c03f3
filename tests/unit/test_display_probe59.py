"""Probe 59: three display defects of the workstation.

1. A VOI LUT with 8-bit entries (LUT Descriptor [4096, 0, 8], LUT Data one byte per entry,
   PS3.3 C.11.2.1.1 / C.8.11.3.1.5) was read as 16-bit words: stored 1000 showed 61 where
   DCMTK shows 15 (patient safety). The workstation now reads LUTs with the server's
   ``lucent.dicom.pixels.read_lut``; its palette path had the same mistake.
2. Another system's GSPS ELLIPSE (PS3.3 C.10.5.1.2: major axis end points, then minor) was
   drawn and measured as the upright ellipse of its points' bounding box.
3. A reversible JPEG 2000 (.91) image with Lossy Image Compression "00" showed the "JPG"
   badge and was indexed lossy: the workstation and the server now decide with one function
   (``lucent.dicom.transfer_syntaxes.is_lossy``) over the codestream's COD transformation.
"""

from __future__ import annotations

import io
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, generate_uid

from lucent.dicom import instance, pixels
from tests.data.samples import file_meta_for, make_instance, set_pixels, write
from tests.support.peers import dcmtk_tool
from workstation.model import gsps, pipeline
from workstation.model.annotations import Annotation, hit
from workstation.model.measure import Spacing

SC = "1.2.840.10008.5.1.4.1.1.7"
J2K = "1.2.840.10008.1.2.4.91"

# --------------------------------------------------------------------------- 1. VOI LUT


def _ramp_image(photometric: str = "MONOCHROME2") -> Dataset:
    """64 × 80 12-bit ramp 0..4095, no window."""
    ds = make_instance(SC, rows=64, cols=80)
    arr = np.rint(np.linspace(0, 4095, 64 * 80)).astype(np.uint16).reshape(64, 80)
    set_pixels(ds, arr, bits_allocated=16, bits_stored=12, photometric=photometric)
    # no window; no Presentation LUT Shape (IDENTITY would undo MONOCHROME1 for DCMTK)
    for kw in (
        "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "PresentationLUTShape"
    ):  # fmt: skip
        if kw in ds:
            del ds[kw]
    ds.file_meta = file_meta_for(ds)
    return ds


def _square8() -> np.ndarray:
    return np.rint(255 * (np.arange(4096) / 4095.0) ** 2).astype(np.uint8)


def _with_8bit_voi_lut(ds: Dataset) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "OW", _square8().tobytes())  # one byte per entry: 4096 bytes
    item.LUTExplanation = "SQUARE8"
    ds.VOILUTSequence = Sequence([item])
    return ds


def _workstation(ds: Dataset) -> np.ndarray:
    """What the viewer shows by default: the VOI LUT when the image has no window."""
    ds = dcmread(io.BytesIO(_bytes(ds)))
    f = pipeline.frames_from_dataset(ds)[0]
    c, w = f.default_window()
    display = pipeline.Display(c, w, use_voi_lut=f.voi_lut is not None and not f.windows)
    return pipeline.render(f, display)


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dcm2pnm(ds: Dataset, tmp: Path, *args: str) -> np.ndarray:
    src = write(ds, tmp / "in.dcm")
    out = tmp / "out.pgm"
    done = subprocess.run([dcmtk_tool("dcm2pnm"), "+op", *args, str(src), str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.asarray(Image.open(out))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_8_bit_voi_lut_entries_show_as_dcmtk_shows_them(photometric: str, tmp_path: Path) -> None:
    ds = _with_8bit_voi_lut(_ramp_image(photometric))
    shown = _workstation(ds)
    stored = ds.pixel_array.astype(np.int64)
    expected = _square8()[stored]
    if photometric == "MONOCHROME1":
        expected = 255 - expected
    assert np.array_equal(shown, expected), np.abs(shown.astype(int) - expected).max()
    # stored 1000 → 15 and 2048 → 64 (the probe saw 61 and 255)
    at = {int(v): shown.ravel()[np.argmin(np.abs(stored.ravel() - v))] for v in (1000, 2048)}
    mid = (lambda v: 255 - v) if photometric == "MONOCHROME1" else (lambda v: v)
    assert at == {1000: mid(15), 2048: mid(64)}, at
    oracle = _dcm2pnm(ds, tmp_path, "+Wl", "1")  # DCMTK applies the VOI LUT
    assert np.abs(shown.astype(int) - oracle.astype(int)).max() <= 1
    # and the server's /rendered reads it with the same function
    assert np.array_equal(pixels.render(dcmread(io.BytesIO(_bytes(ds))), 0), shown)


def test_8_bit_voi_lut_in_us_words_two_entries_each() -> None:
    """LUT Data as US values holding two 8-bit entries per word, low byte first."""
    ds = _ramp_image()
    table = _square8()
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    words = (table[0::2].astype(np.uint16) | (table[1::2].astype(np.uint16) << 8)).tolist()
    item.add_new(0x00283006, "US", words)
    ds.VOILUTSequence = Sequence([item])
    shown = _workstation(ds)
    assert np.array_equal(shown, table[ds.pixel_array.astype(np.int64)])


def _palette(entries: int, in_words: bool) -> tuple[Dataset, np.ndarray]:
    """PALETTE COLOR, stored 0..entries-1 in one row; 8-bit entries, as bytes or words."""
    ds = make_instance(SC, rows=1, cols=entries)
    set_pixels(ds, np.arange(entries, dtype=np.uint16)[np.newaxis], bits_allocated=16,
               bits_stored=16, photometric="PALETTE COLOR")  # fmt: skip
    for kw in ("WindowCenter", "WindowWidth"):
        if kw in ds:
            del ds[kw]
    table = (np.arange(entries) * 255 // (entries - 1)).astype(np.uint8)
    data = table.astype("<u2").tobytes() if in_words else table.tobytes()
    for n, colour in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries, 0, 8])
        ds.add_new(0x00281201 + n, "OW", data)
    ds.file_meta = file_meta_for(ds)
    return ds, table


@pytest.mark.parametrize(("entries", "in_words"), [(256, True), (300, False)])
def test_8_bit_palette_entries_are_read_as_the_server_reads_them(
    entries: int, in_words: bool
) -> None:
    """8-bit palette entries in 16-bit words showed black (the words shifted right by 8),
    and an 8-bit palette of more than 256 entries was indexed with 8 bits."""
    ds, table = _palette(entries, in_words)
    f = pipeline.frames_from_dataset(dcmread(io.BytesIO(_bytes(ds))))[0]
    shown = pipeline.render(f, pipeline.Display(127.5, 256.0))
    assert np.array_equal(shown[0, :, 0], table), np.abs(shown[0, :, 0] - table.astype(int)).max()
    assert np.array_equal(shown, pixels.render(dcmread(io.BytesIO(_bytes(ds))), 0))


# --------------------------------------------------------------------------- 2. GSPS ELLIPSE


def _foreign_ellipse(image: Dataset) -> Dataset:
    """A highdicom GSPS with one ELLIPSE: major axis (10,10)-(50,50), minor (25,35)-(35,25):
    a thin ellipse at 45 degrees (GSPS pixel units: pixel centres at +0.5)."""
    from highdicom import pr

    layer = pr.GraphicLayer(layer_name="EXT", order=1)
    ann = pr.GraphicAnnotation(
        referenced_images=[image],
        graphic_layer=layer,
        graphic_objects=[pr.GraphicObject(
            pr.GraphicTypeValues.ELLIPSE,
            np.array([[10.0, 10.0], [50.0, 50.0], [25.0, 35.0], [35.0, 25.0]]),
            pr.AnnotationUnitsValues.PIXEL,
        )],
    )  # fmt: skip
    ds = pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[image], series_instance_uid=generate_uid(), series_number=5,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Other",
        manufacturer_model_name="X", software_versions="1", device_serial_number="1",
        content_label="EXT", graphic_annotations=[ann], graphic_layers=[layer],
    )  # fmt: skip
    return dcmread(io.BytesIO(_bytes(ds)))


def _inside_rotated(shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres inside the 45-degree ellipse: centre (29.5, 29.5), semi-axes 20√2 and
    5√2 in pixel-centre coordinates."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dx, dy = xx - 29.5, yy - 29.5
    u, v = (dx + dy) / math.sqrt(2), (dy - dx) / math.sqrt(2)
    return (u / (20 * math.sqrt(2))) ** 2 + (v / (5 * math.sqrt(2))) ** 2 <= 1.0


def test_foreign_gsps_ellipse_keeps_its_rotation() -> None:
    img = make_instance(SC, rows=64, cols=64)
    (a,) = gsps.read(_foreign_ellipse(img)).annotations
    assert a.kind == "ellipse"
    e = a.ellipse()
    assert e is not None
    assert (e.cx, e.cy) == pytest.approx((29.5, 29.5))
    assert (e.rx, e.ry) == pytest.approx((20 * math.sqrt(2), 5 * math.sqrt(2)))
    assert math.degrees(e.angle) % 180 == pytest.approx(45.0)


def test_foreign_gsps_ellipse_statistics_use_the_rotated_shape() -> None:
    """Pixels inside the rotated ellipse hold 100, all others 0: its mean is 100 and its
    area π·a·b; the upright circle of the bounding box took in zeros (mean ≈ 36)."""
    img = make_instance(SC, rows=64, cols=64)
    (a,) = gsps.read(_foreign_ellipse(img)).annotations
    inside = _inside_rotated((64, 64))
    values = np.where(inside, 100.0, 0.0)
    result = a.measure(Spacing(0.5, 0.5, "pixel"), values, "")
    assert result is not None
    assert result.stats["mean"] == pytest.approx(100.0)
    assert result.stats["n"] == inside.sum()
    assert result.stats["area"] == pytest.approx(math.pi * 20 * math.sqrt(2) * 5 * math.sqrt(2)
                                                  * 0.25)  # fmt: skip


def test_foreign_gsps_ellipse_is_selected_on_its_rotated_outline() -> None:
    img = make_instance(SC, rows=64, cols=64)
    (a,) = gsps.read(_foreign_ellipse(img)).annotations

    def ident(x: float, y: float) -> tuple[float, float]:
        return (x, y)

    # a major axis end point lies on the rotated outline; the bounding box circle's
    # rightmost point (49.5, 29.5) is far from it
    assert hit([a], (49.5, 49.5), ident, tolerance=1.0) is a
    assert hit([a], (49.5, 29.5), ident, tolerance=1.0) is None


def test_our_axis_aligned_ellipse_round_trips_unchanged() -> None:
    img = make_instance(SC, rows=64, cols=64)
    sop = str(img.SOPInstanceUID)
    drawn = Annotation("ellipse", [(4.0, 6.0), (30.0, 20.0)], sop_instance_uid=sop)
    saved = gsps.build([img], [drawn], series_uid=generate_uid(), sop_uid=generate_uid())
    (back,) = gsps.read(dcmread(io.BytesIO(_bytes(saved)))).annotations
    assert back.kind == "ellipse"
    assert back.points == drawn.points
    values = np.arange(64 * 64, dtype=float).reshape(64, 64)
    sp = Spacing(1.0, 1.0, "pixel")
    assert back.measure(sp, values).stats == drawn.measure(sp, values).stats  # type: ignore[union-attr]


def test_a_read_rotated_ellipse_is_saved_with_its_axes() -> None:
    """Saving a GSPS that holds a read rotated ellipse writes its four axis end points."""
    img = make_instance(SC, rows=64, cols=64)
    (a,) = gsps.read(_foreign_ellipse(img)).annotations
    a.sop_instance_uid = str(img.SOPInstanceUID)
    saved = gsps.build([img], [a], series_uid=generate_uid(), sop_uid=generate_uid())
    (back,) = gsps.read(dcmread(io.BytesIO(_bytes(saved)))).annotations
    assert np.allclose(back.points, a.points)


# --------------------------------------------------------------------------- 3. lossy badge


def _reversible_91(flag: str | None) -> Dataset:
    """MR_small compressed reversibly (5/3) and labelled .91, as the probe made it."""
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = J2K
    if flag is None:
        if "LossyImageCompression" in ds:
            del ds.LossyImageCompression
    else:
        ds.LossyImageCompression = flag
    return dcmread(io.BytesIO(_bytes(ds)))


def _irreversible_91(flag: str | None) -> Dataset:
    """pydicom's JPEG2000.dcm: a .91 codestream with the 9/7 wavelet."""
    ds = dcmread(get_testdata_file("JPEG2000.dcm"))
    if flag is None:
        del ds.LossyImageCompression
    else:
        ds.LossyImageCompression = flag
    return dcmread(io.BytesIO(_bytes(ds)))


def _server_lossy(ds: Dataset) -> bool:
    parsed = instance.parse(_bytes(ds), max_inflated=1 << 30)
    assert isinstance(parsed, instance.Parsed), parsed
    return parsed.lossy


@pytest.mark.parametrize("flag", ["00", None])
def test_reversible_jpeg_2000_91_is_not_lossy(flag: str | None) -> None:
    ds = _reversible_91(flag)
    assert np.array_equal(ds.pixel_array, dcmread(get_testdata_file("MR_small.dcm")).pixel_array)
    assert pipeline.lossy_of_dataset(ds).badge == ""
    assert not _server_lossy(ds)  # the index flag


@pytest.mark.parametrize("flag", ["01", "00", None])
def test_irreversible_jpeg_2000_91_is_lossy(flag: str | None) -> None:
    ds = _irreversible_91(flag)
    assert pipeline.lossy_of_dataset(ds).lossy
    assert _server_lossy(ds)


def test_reversible_91_flagged_01_is_lossy() -> None:
    ds = _reversible_91("01")
    assert pipeline.lossy_of_dataset(ds).lossy
    assert _server_lossy(ds)


def test_the_badge_from_the_server_index_agrees() -> None:
    """The viewer has only the header and the index flag: "00" is not lossy; an absent
    attribute takes the server's verdict on the codestream; always-lossy syntaxes stay."""
    assert pipeline.lossy_of("00", J2K, index_flag=False).badge == ""
    assert pipeline.lossy_of(None, J2K, index_flag=False).badge == ""
    assert pipeline.lossy_of(None, J2K, index_flag=True).lossy
    assert pipeline.lossy_of(None, J2K).lossy  # nothing known: counted lossy
    for ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"):
        assert pipeline.lossy_of("00", ts, index_flag=False).lossy, ts
    assert not pipeline.lossy_of(None, "1.2.840.10008.1.2.4.90", index_flag=False).lossy


def test_one_shared_decision() -> None:
    from lucent.dicom.codestream import dataset_irreversible
    from lucent.dicom.transfer_syntaxes import is_lossy

    assert dataset_irreversible(_reversible_91("00")) is False
    assert dataset_irreversible(_irreversible_91("01")) is True
    assert is_lossy(J2K, "00", False) is False
    assert is_lossy(J2K, None, False) is False
    assert is_lossy(J2K, None, True) is True
    assert is_lossy(J2K, "00", True) is True  # the codestream lost information
    assert is_lossy(J2K, None, None) is None
    assert is_lossy("1.2.840.10008.1.2.4.50", "00", None) is True
    assert is_lossy("1.2.840.10008.1.2.1", "01", None) is True
