"""MPR/MIP through VTK reslice on synthetic volumes whose answer we know (issue 5).

A bright cube, a thin bright patch and an off-centre blob are placed at known patient
positions; each test predicts the output pixel from the plane geometry alone and checks
the resliced value there (and that it is dark where nothing is).
"""

from __future__ import annotations

import numpy as np
import pytest

from lucent.api import schemas
from workstation.model.geometry import ImagePlane
from workstation.model.measure import Spacing
from workstation.model.pipeline import Frame, Lossy
from workstation.model.series import SeriesData, Slice
from workstation.model.volume import MprState, oblique_axes, volume_of
from workstation.render.mpr import Reslicer

CT = "1.2.840.10008.5.1.4.1.1.2"
AIR, BRIGHT = 0, 3000  # stored values (rescale -1024 → HU -1024 / 1976)


def _series(volume: np.ndarray, iop: list[float], first: list[float], step: list[float],
            spacing: tuple[float, float]) -> SeriesData:  # fmt: skip
    """Single-frame slices k of ``volume`` at ``first + k·step`` with the given IOP."""
    k_n, rows, cols = volume.shape
    se = schemas.SeriesOut(series_uid="1.2.3", study_uid="1.2", modality="CT", series_number=1,
                           description="synthetic", body_part="", frame_of_reference_uid="1.9",
                           instance_count=k_n)  # fmt: skip
    slices = []
    for k in range(k_n):
        ipp = [first[i] + k * step[i] for i in range(3)]
        plane = ImagePlane.from_attrs(ipp, iop, list(spacing), rows, cols)
        slices.append(
            Slice(
                f"1.2.3.{k}",
                CT,
                0,
                k + 1,
                {},
                plane,
                Spacing(spacing[0], spacing[1], "pixel"),
                Lossy(False),
                rows,
                cols,
            )
        )
    data = SeriesData(se, None, slices)
    for k in range(k_n):
        data.put(k, Frame(stored=volume[k], slope=1.0, intercept=-1024.0))
    return data


def _axial(shape: tuple[int, int, int] = (41, 61, 61)) -> tuple[np.ndarray, SeriesData]:
    """Axial CT: 0.5 mm pixels, 1 mm slices, voxel (i, j, k) at (0.5 i, 0.5 j, k) mm."""
    vol = np.full(shape, AIR, np.int16)
    return vol, _series(vol, [1, 0, 0, 0, 1, 0], [0, 0, 0], [0, 0, 1.0], (0.5, 0.5))


def _value(reslicer: Reslicer, plane: ImagePlane, point: np.ndarray, **kw: object) -> float:
    x, y = plane.to_pixel(point)
    image = reslicer.plane(plane, **kw)  # type: ignore[arg-type]
    return float(image[int(round(y)), int(round(x))])


def test_bright_cube_appears_at_the_predicted_place_on_coronal_and_sagittal() -> None:
    vol, data = _axial()
    vol[18:23, 38:43, 10:15] = BRIGHT  # k 18–22, j 38–42, i 10–14 → centre (6, 20, 20) mm
    grid = volume_of(data)
    assert not isinstance(grid, str), grid
    cube = np.array([6.0, 20.0, 20.0])
    state = MprState(grid, centre=cube)
    r = Reslicer(grid)
    for view in ("axial", "coronal", "sagittal"):
        plane = state.plane(view)
        image = r.plane(plane)
        x, y = plane.to_pixel(cube)
        assert image[int(round(y)), int(round(x))] == BRIGHT, view
        # 4 mm away in the plane there is only air.
        off = cube + 4.0 * plane.row_dir
        x2, y2 = plane.to_pixel(off)
        assert image[int(round(y2)), int(round(x2))] == AIR, view
        # The bright area is 5×5 voxels = 2.5 mm each way: (2.5 / 0.5)² output pixels
        # in-plane for axial; coronal/sagittal span 5 slices = 5 mm → 10 output rows.
        bright = int((image == BRIGHT).sum())
        assert bright == (25 if view == "axial" else 5 * 9), (view, bright)
    # Coronal: screen down is inferior, so the cube's top slice (z = 22) is its top row.
    plane = state.plane("coronal")
    image = r.plane(plane)
    rows = np.nonzero((image == BRIGHT).any(axis=1))[0]
    assert plane.to_world(0, rows[0])[2] == pytest.approx(22.0)
    assert plane.to_world(0, rows[-1])[2] == pytest.approx(18.0)


def test_thick_slab_mip_shows_the_maximum_and_thin_mpr_does_not() -> None:
    vol, data = _axial()
    vol[24, 30:33, 30:33] = BRIGHT  # a 1-slice thin patch at z = 24 mm
    vol[17, 10, 10] = 1500  # a dimmer voxel inside the slab too
    grid = volume_of(data)
    assert not isinstance(grid, str)
    state = MprState(grid, centre=np.array([15.5, 15.5, 20.0]))  # axial at z = 20
    plane = state.plane("axial")
    patch = np.array([15.5, 15.5, 24.0])
    r = Reslicer(grid)
    assert _value(r, plane, patch) == AIR
    assert _value(r, plane, patch, slab_mm=6.0, mode="max") == AIR  # z 17…23: misses it
    assert _value(r, plane, patch, slab_mm=10.0, mode="max") == BRIGHT
    mip = r.plane(plane, slab_mm=10.0, mode="max")
    x, y = plane.to_pixel(np.array([5.0, 5.0, 17.0]))
    assert mip[int(round(y)), int(round(x))] == 1500
    mean = _value(r, plane, patch, slab_mm=10.0, mode="mean")
    assert AIR < mean < BRIGHT / 5  # one bright sample among 21


def test_oblique_plane_at_a_known_angle_cuts_an_off_centre_blob() -> None:
    vol, data = _axial()
    centre = np.array([15.0, 15.0, 20.0])
    _, ydir = oblique_axes(30.0)
    blob = centre + 8.0 * ydir  # (15, 15 + 6.93, 20 + 4)
    i, j, k = (int(round(v)) for v in (blob[0] / 0.5, blob[1] / 0.5, blob[2]))
    vol[k - 1 : k + 2, j - 2 : j + 3, i - 2 : i + 3] = BRIGHT
    grid = volume_of(data)
    assert not isinstance(grid, str)
    state = MprState(grid, centre=centre, oblique_deg=30.0)
    r = Reslicer(grid)
    plane = state.plane("oblique")
    assert np.dot(plane.normal, [0, -0.5, np.sqrt(3) / 2]) == pytest.approx(1.0)
    assert _value(r, plane, blob) == BRIGHT
    # The blob lies 8 mm "down" the screen from the crosshair (16 output pixels).
    cx, cy = plane.to_pixel(centre)
    bx, by = plane.to_pixel(blob)
    assert (bx - cx, by - cy) == pytest.approx((0.0, 16.0))
    # Untilted (axial through the centre) the blob is 4 mm above the plane: not seen.
    state.set_oblique(0.0)
    flat = state.plane("oblique")
    assert _value(r, flat, blob - np.array([0, 0, 4.0])) == AIR


def test_sagittal_acquisition_still_gives_anatomical_axial() -> None:
    """Planes are placed in patient space, so a sagittal stack reslices to a true axial."""
    # Sagittal slices: rows along -z, columns along +y, slices step along +x.
    vol = np.full((21, 41, 41), AIR, np.int16)  # (x slices, z rows, y cols)
    point = np.array([10.0, 12.0, -8.0])  # x = slice 10, y = col 24, z → row 16
    vol[9:12, 15:18, 23:26] = BRIGHT
    data = _series(vol, [0, 1, 0, 0, 0, -1], [0, 0, 0], [1.0, 0, 0], (0.5, 0.5))
    grid = volume_of(data)
    assert not isinstance(grid, str)
    state = MprState(grid, centre=point)
    r = Reslicer(grid)
    plane = state.plane("axial")
    assert np.allclose(plane.row_dir, [1, 0, 0]) and np.allclose(plane.col_dir, [0, 1, 0])
    assert _value(r, plane, point) == BRIGHT
    assert _value(r, plane, point + np.array([3.0, 0, 0])) == AIR


def test_volume_refused_with_a_reason_when_geometry_is_not_regular() -> None:
    vol = np.zeros((5, 8, 8), np.int16)
    data = _series(vol, [1, 0, 0, 0, 1, 0], [0, 0, 0], [0, 0, 1.0], (1, 1))
    data.slices[3].plane = ImagePlane.from_attrs([0, 0, 3.5], [1, 0, 0, 0, 1, 0], [1, 1], 8, 8)
    assert "evenly" in str(volume_of(data))
    tilted = _series(vol, [1, 0, 0, 0, 1, 0], [0, 0, 0], [0, 0.3, 1.0], (1, 1))
    assert "sheared" in str(volume_of(tilted))
    data = _series(vol, [1, 0, 0, 0, 1, 0], [0, 0, 0], [0, 0, 1.0], (1, 1))
    data.slices[2].plane = None
    assert "Image Position" in str(volume_of(data))
