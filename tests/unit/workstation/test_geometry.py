"""Image planes and reference lines (FAQ: from IOP/IPP, only where valid)."""

from __future__ import annotations

import numpy as np
import pytest

from workstation.model.geometry import ImagePlane, clip_segment, reference_line

AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]
SAGITTAL = [0, 1, 0, 0, 0, -1]


def test_invalid_geometry_gives_no_plane() -> None:
    assert ImagePlane.from_attrs(None, AXIAL, [1, 1], 10, 10) is None
    assert ImagePlane.from_attrs([0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 1], 10, 10) is None
    assert ImagePlane.from_attrs([0, 0, 0], [2, 0, 0, 0, 1, 0], [1, 1], 10, 10) is None
    assert ImagePlane.from_attrs([0, 0, 0], AXIAL, [0, 1], 10, 10) is None
    assert ImagePlane.from_attrs([0, 0, "x"], AXIAL, [1, 1], 10, 10) is None


def test_pixel_world_round_trip() -> None:
    p = ImagePlane.from_attrs([-10, -20, 5], CORONAL, [0.5, 0.7], 64, 32)
    assert p is not None
    w = p.to_world(3.0, 7.0)
    assert np.allclose(w, [-10 + 3 * 0.7, -20, 5 - 7 * 0.5])
    assert p.to_pixel(w) == pytest.approx((3.0, 7.0))


def test_coronal_line_on_axial_is_a_row() -> None:
    # Axial 100×100 at z=0, 1 mm pixels from (-50,-50); coronal plane at y = 10.
    axial = ImagePlane.from_attrs([-49.5, -49.5, 0], AXIAL, [1, 1], 100, 100)
    coronal = ImagePlane.from_attrs([-49.5, 10, 49.5], CORONAL, [1, 1], 100, 100)
    assert axial and coronal
    line = reference_line(axial, coronal)
    assert line is not None
    (x0, y0), (x1, y1) = line
    assert y0 == pytest.approx(59.5) and y1 == pytest.approx(59.5)
    assert sorted((x0, x1)) == pytest.approx([-0.5, 99.5])


def test_parallel_and_disjoint_planes_have_no_line() -> None:
    a = ImagePlane.from_attrs([0, 0, 0], AXIAL, [1, 1], 10, 10)
    b = ImagePlane.from_attrs([0, 0, 5], AXIAL, [1, 1], 10, 10)
    far = ImagePlane.from_attrs([0, 500, 500], CORONAL, [1, 1], 10, 10)
    assert a and b and far
    assert reference_line(a, b) is None
    assert reference_line(a, far) is None


def test_sagittal_line_is_a_column() -> None:
    axial = ImagePlane.from_attrs([0, 0, 0], AXIAL, [0.5, 0.5], 200, 200)
    sag = ImagePlane.from_attrs([25, -10, 60], SAGITTAL, [1, 1], 150, 150)
    assert axial and sag
    line = reference_line(axial, sag)
    assert line is not None
    assert line[0][0] == pytest.approx(50) and line[1][0] == pytest.approx(50)


def test_clip_segment() -> None:
    assert clip_segment((-10, 5), (20, 5), 0, 0, 10, 10) == ((0, 5), (10, 5))
    assert clip_segment((-10, 50), (20, 50), 0, 0, 10, 10) is None
