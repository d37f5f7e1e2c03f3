"""Edge orientation labels from IOP and the view transform (probe 22: none were shown)."""

from __future__ import annotations

import math

import pytest

from workstation.model.orientation_labels import (
    EdgeLabels,
    direction_cosines,
    direction_letters,
    labels_for,
)
from workstation.model.viewer import ViewTransform

AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]
SAGITTAL = [0, 1, 0, 0, 0, -1]


def view(**kw: object) -> object:
    return ViewTransform(64, 64, 800, 600, **kw).matrix()  # type: ignore[arg-type]


def test_axial_shows_r_left_l_right_a_top_p_bottom() -> None:
    assert labels_for(AXIAL) == EdgeLabels(left="R", right="L", top="A", bottom="P")
    assert labels_for(AXIAL, view()) == EdgeLabels(left="R", right="L", top="A", bottom="P")


def test_coronal_and_sagittal() -> None:
    assert labels_for(CORONAL, view()) == EdgeLabels(left="R", right="L", top="H", bottom="F")
    assert labels_for(SAGITTAL, view()) == EdgeLabels(left="A", right="P", top="H", bottom="F")


def test_oblique_names_the_dominant_axis_then_the_second() -> None:
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    labels = labels_for([c, s, 0, -s, c, 0], view())
    assert labels == EdgeLabels(left="RA", right="LP", top="AL", bottom="PR")
    # Double oblique: three components, the two largest are named, largest first.
    row = [0.8, 0.36, 0.48]
    col = [-0.6, 0.48, 0.64]
    assert direction_letters(row) == "LH"
    assert labels_for([*row, *col]).bottom == "HR"  # type: ignore[union-attr]


def test_a_small_tilt_keeps_a_single_letter() -> None:
    t = math.radians(5)
    labels = labels_for([1, 0, 0, 0, math.cos(t), -math.sin(t)])
    assert labels == EdgeLabels(left="R", right="L", top="A", bottom="P")
    t = math.radians(20)
    assert labels_for([1, 0, 0, 0, math.cos(t), -math.sin(t)]).bottom == "PF"  # type: ignore[union-attr]


def test_flips_swap_opposite_edges() -> None:
    assert labels_for(AXIAL, view(flip_h=True)) == EdgeLabels("L", "R", "A", "P")
    assert labels_for(AXIAL, view(flip_v=True)) == EdgeLabels("R", "L", "P", "A")
    assert labels_for(CORONAL, view(flip_h=True, flip_v=True)) == EdgeLabels("L", "R", "F", "H")


@pytest.mark.parametrize("aspect", [1.0, 2.0])
def test_quarter_turns_move_the_labels_with_the_image(aspect: float) -> None:
    # One turn clockwise on screen: the image's top (A) comes to the right edge.
    assert labels_for(AXIAL, view(rotation=1, aspect=aspect)) == EdgeLabels(
        left="P", right="A", top="R", bottom="L"
    )
    assert labels_for(AXIAL, view(rotation=2, aspect=aspect)) == EdgeLabels("L", "R", "P", "A")
    assert labels_for(AXIAL, view(rotation=3, aspect=aspect)) == EdgeLabels("A", "P", "L", "R")
    # Flip then rotate, zoom and pan change nothing but what the matrix says.
    assert labels_for(AXIAL, view(rotation=1, flip_h=True, zoom=3.0, pan=(40.0, -9.0))) == (
        EdgeLabels(left="P", right="A", top="L", bottom="R")
    )


@pytest.mark.parametrize(
    "iop",
    [None, [], [1, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0], [2, 0, 0, 0, 1, 0], ["a"] * 6,
     [float("nan"), 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]],
)  # fmt: skip
def test_no_labels_without_a_valid_orientation(iop: object) -> None:
    assert direction_cosines(iop) is None  # type: ignore[arg-type]
    assert labels_for(iop) is None  # type: ignore[arg-type]
