"""Secondary-capture rendering: each overlay layer's legend entry is drawn in that layer's
colour (the core/hypoperfusion legend once named the core green and Tmax > 6 s magenta,
the reverse of the image: outside probe); maps show where they are (slice position and
R/L markers) and a long title is wrapped, not cut (outside probe 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from lucent.perfusion import PerfusionConfig, analyse
from lucent.perfusion.dicom_out import CORE_COLOUR, HYPO_COLOUR, slice_text
from lucent.perfusion.orientation import image_markers, letters
from lucent.perfusion.pipeline import PerfusionResult
from lucent.perfusion.render import render_map, render_overlay
from tests.data import phantom as P


def test_each_legend_swatch_has_its_layers_colour() -> None:
    base = np.full((64, 64), 40.0, np.float32)
    hypo = np.zeros((64, 64), bool)
    hypo[10:40, 10:40] = True
    core = np.zeros((64, 64), bool)
    core[20:30, 20:30] = True
    img = render_overlay(
        base, (0.0, 80.0), [(hypo & ~core, HYPO_COLOUR, "Tmax"), (core, CORE_COLOUR, "core")],
        "title", min_size=64,
    )  # fmt: skip
    h = 64  # the image is drawn 40 px below the top, at its own size (min_size)
    for i, colour in enumerate((HYPO_COLOUR, CORE_COLOUR)):
        swatch = img[h + 44 + 22 * i + 9, 16]
        assert tuple(int(v) for v in swatch) == colour
    # and the image's own tint under each mask leans to that colour
    core_px, hypo_px = img[40 + 25, 25].astype(int), img[40 + 12, 12].astype(int)
    assert core_px[0] > core_px[1] and core_px[2] > core_px[1]  # magenta
    assert hypo_px[1] > hypo_px[0] and hypo_px[1] > hypo_px[2]  # green


# ---------- orientation markers, slice position, long titles (outside probe 8) ----------


def _lit(img: np.ndarray) -> np.ndarray:
    return img.max(axis=2) > 100


def test_orientation_letters_follow_the_source_geometry() -> None:
    axial = image_markers(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    assert axial == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    flipped = image_markers(np.array([-1.0, 0, 0]), np.array([0, 1.0, 0]))
    assert (flipped["left"], flipped["right"]) == ("L", "R")
    coronal = image_markers(np.array([1.0, 0, 0]), np.array([0, 0, -1.0]))
    assert (coronal["top"], coronal["bottom"]) == ("H", "F")
    assert letters([0.9, 0.0, 0.436]) == "LH" and letters([0.996, 0.0, 0.087]) == "L"


def test_maps_carry_orientation_letters_on_their_edges() -> None:
    """A black map (nothing shown) with markers: letters appear at the middle of the left
    and right edges of the image area, nothing there without them."""
    values = np.zeros((64, 64), np.float32)
    mask = np.zeros((64, 64), bool)
    markers = image_markers(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    with_letters = render_map(values, 0, 80, "rainbow", "CBF", "ml", mask, markers=markers)
    without = render_map(values, 0, 80, "rainbow", "CBF", "ml", mask)
    mid = 40 + 256  # title bar + half of the 512 px image
    for img, expected in ((with_letters, True), (without, False)):
        left = _lit(img[mid - 12 : mid + 12, 0:30]).any()
        right = _lit(img[mid - 12 : mid + 12, 512 - 30 : 512]).any()
        assert left is np.bool_(expected) and right is np.bool_(expected)


def test_a_long_title_is_wrapped_not_cut_at_the_right_edge() -> None:
    title = (
        "FLAIR  slice 4/8  position -12.5 mm  shift [2.931, -1.94, 4.779] mm  "
        "rotation [0.164, 0.049, 4.92]°"
    )
    img = render_overlay(np.zeros((64, 64), np.float32), (0.0, 1.0), [], title)
    header = img[:40]
    assert not _lit(header[:, -8:]).any()  # nothing drawn into the right margin
    assert img.shape[0] > 40 + 512  # a second title line made the bar taller
    assert _lit(img[40:64, :200]).any()  # and it holds text


def test_map_titles_give_the_slice_position_of_the_source(tmp_path: Path) -> None:
    ph = P.generate(P.PhantomSpec(n_slices=3, n_times=30), tmp_path)
    result = analyse(tmp_path, config=PerfusionConfig(motion_correction=False))
    assert isinstance(result, PerfusionResult)
    locations = sorted({float(pydicom.dcmread(p).SliceLocation) for p in ph.paths})
    for z, location in enumerate(locations):
        assert slice_text(result, z) == f"slice {z + 1}/3  position {location:.1f} mm"
