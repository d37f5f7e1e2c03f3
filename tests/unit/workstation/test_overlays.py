"""DICOM overlay planes (PS3.3 C.9.2, C.9.3) through the numpy pixel pipeline.

Each data set is generated with an overlay of a known shape, so the mask (and the burnt-in
display pixels) can be checked at the exact place Overlay Origin / Image Frame Origin say.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits

from lucent.dicom.pixels import overlay_masks, overlay_planes
from tests.data.samples import make_instance, set_pixels
from workstation.model import pipeline
from workstation.model.pipeline import Display

SC = "1.2.840.10008.5.1.4.1.1.7"


def _letter_l(h: int = 6, w: int = 4) -> np.ndarray:
    """An "L": left column and bottom row set; asymmetric, so a flip or shift shows."""
    shape = np.zeros((h, w), np.uint8)
    shape[:, 0] = 1
    shape[-1, :] = 1
    return shape


def _add_plane(ds: Dataset, group: int, bits: np.ndarray, origin: tuple[int, int],
               frames: int | None = None, frame_origin: int | None = None) -> None:  # fmt: skip
    rows, cols = bits.shape[-2:]
    ds.add_new((group, 0x0010), "US", rows)
    ds.add_new((group, 0x0011), "US", cols)
    ds.add_new((group, 0x0040), "CS", "G")
    ds.add_new((group, 0x0050), "SS", list(origin))
    ds.add_new((group, 0x0100), "US", 1)
    ds.add_new((group, 0x0102), "US", 0)
    if frames is not None:
        ds.add_new((group, 0x0015), "IS", frames)
        ds.add_new((group, 0x0051), "US", frame_origin or 1)
    packed = pack_bits(bits.astype(np.uint8).ravel())
    ds.add_new((group, 0x3000), "OW", packed + b"\0" * (len(packed) % 2))


def _grey(rows: int = 16, cols: int = 20, frames: int = 1, value: int = 100) -> Dataset:
    ds = make_instance(SC, rows=rows, cols=cols)
    if frames > 1:
        ds.NumberOfFrames = frames
        arr = np.full((frames, rows, cols), value, np.uint16)
    else:
        arr = np.full((rows, cols), value, np.uint16)
    set_pixels(ds, arr, bits_allocated=16, bits_stored=12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return ds


def test_overlay_data_placed_at_its_origin() -> None:
    ds = _grey()
    _add_plane(ds, 0x6000, _letter_l(), (4, 7))  # 1-based: pixel (1,1) of the L on row 3, col 6
    (plane,) = overlay_planes(ds)
    assert plane.kind == "G" and not plane.embedded and plane.all_frames
    mask = overlay_masks(ds)
    assert mask is not None and mask.shape == (1, 16, 20)
    expected = np.zeros((16, 20), bool)
    expected[3:9, 6] = True  # the L's stem: rows 3…8 of column 6
    expected[8, 6:10] = True  # its foot: row 8, columns 6…9
    assert np.array_equal(mask[0], expected)
    frame = pipeline.frames_from_dataset(ds)[0]
    out = pipeline.render(frame, Display(2048, 4096))
    assert (out[expected] == 255).all()
    assert (out[~expected] == pipeline.render(frame, Display(2048, 4096, overlays=False))[
        ~expected]).all()  # fmt: skip
    assert int(out[0, 0]) < 20  # value 100 of 4096: dark grey, not overlay white


def test_overlay_toggle_hides_it_and_monochrome1_keeps_it_white() -> None:
    ds = _grey()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 50, 100  # value 100 → white before inversion → black
    _add_plane(ds, 0x6002, _letter_l(), (1, 1))
    frame = pipeline.frames_from_dataset(ds)[0]
    on = pipeline.render(frame, Display(50, 100))
    off = pipeline.render(frame, Display(50, 100, overlays=False))
    assert on[0, 0] == 255 and on[5, 3] == 255 and on[0, 1] == 0
    assert (off == 0).all()  # inverted image, no overlay left


def test_two_groups_and_negative_origin_clip_at_the_edge() -> None:
    ds = _grey()
    _add_plane(ds, 0x6000, _letter_l(), (-2, 1))  # top 3 rows fall off the image
    bar = np.ones((1, 5), np.uint8)
    _add_plane(ds, 0x6004, bar, (16, 18))  # runs off the right edge: 3 pixels remain
    mask = overlay_masks(ds)
    assert mask is not None
    assert mask[0, 0:3, 0].all() and mask[0, 2, 0:4].all() and mask[0].sum() == 6 + 3
    assert mask[0, 15, 17:20].all()


def test_embedded_overlay_in_unused_high_bits() -> None:
    """Retired form (PS3.5 8.1.2): the overlay is bit 12 of 16-bit words, Bits Stored 12."""
    ds = _grey(value=300)
    words = np.full((16, 20), 300, np.uint16)
    shape = np.zeros((16, 20), bool)
    shape[5, 2:18] = True  # a horizontal line on row 5
    shape[2:14, 10] = True  # and a vertical one on column 10
    words[shape] |= 1 << 12
    ds.PixelData = words.tobytes()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 20)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 12)
    (plane,) = overlay_planes(ds)
    assert plane.embedded
    frame = pipeline.frames_from_dataset(ds)[0]
    assert (frame.stored == 300).all()  # the overlay bit is not part of the pixel value
    assert frame.overlay is not None and np.array_equal(frame.overlay, shape)


def test_multiframe_overlay_lands_on_the_frames_image_frame_origin_names() -> None:
    ds = _grey(frames=4)
    bits = np.zeros((2, 4, 4), np.uint8)
    bits[0, 0, 0] = 1  # overlay frame 1 → image frame 2
    bits[1, 3, 3] = 1  # overlay frame 2 → image frame 3
    _add_plane(ds, 0x6000, bits, (3, 3), frames=2, frame_origin=2)
    frames = pipeline.frames_from_dataset(ds)
    assert frames[0].overlay is None and frames[3].overlay is None
    assert frames[1].overlay is not None and frames[2].overlay is not None
    assert np.argwhere(frames[1].overlay).tolist() == [[2, 2]]
    assert np.argwhere(frames[2].overlay).tolist() == [[5, 5]]


def test_single_frame_overlay_applies_to_every_frame() -> None:
    ds = _grey(frames=3)
    _add_plane(ds, 0x6000, _letter_l(), (2, 2))
    frames = pipeline.frames_from_dataset(ds)
    assert all(f.overlay is not None and f.overlay[1, 1] and f.overlay.sum() == 9
               for f in frames)  # fmt: skip


def test_broken_overlay_is_skipped_and_the_image_still_shows() -> None:
    ds = _grey()
    _add_plane(ds, 0x6000, _letter_l(), (1, 1))
    ds[0x60003000].value = b"\x01\x02"  # far too short for 6 × 4 bits
    assert overlay_planes(ds) == []
    frame = pipeline.frames_from_dataset(ds)[0]
    assert frame.overlay is None and (frame.stored == 100).all()
