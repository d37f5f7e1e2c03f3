"""MPR and thick-slab MIP from the viewer (issue 5), checked on the pixels of the planes.

The scene's "Volume" series is air with one bone-bright box at x 7…10, y 14…17,
z 38…42 mm; window 40/400, so the box draws white (255) and air black (0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.gui import scenes
from tests.gui.helpers import grab, open_series, save_screen

BOX = np.array([8.5, 15.5, 40.0])  # centre of the box, mm
GREEN = (60, 200, 60)  # line colour of the coronal plane
BLUE = (70, 130, 255)  # … of the sagittal plane


def _pixel(view: Any, point: np.ndarray) -> tuple[int, ...]:
    shot = grab(view)
    u, v = view.to_widget(*view.plane.to_pixel(point))
    return tuple(int(c) for c in shot[int(v), int(u)])


def _open_mpr(qtbot: Any, win: Any, api: Any, scene: scenes.Scene, mip: bool = False) -> Any:
    open_series(qtbot, win, api, scene, "Volume")
    (win.mip_action if mip else win.mpr_action).trigger()
    mpr = win.mpr_window
    qtbot.addWidget(mpr)
    qtbot.waitExposed(mpr)
    return mpr


def test_mpr_planes_show_the_box_where_geometry_predicts(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    mpr = _open_mpr(qtbot, window, api, scene)
    mpr.state.set_centre(BOX)
    for name in ("axial", "coronal", "sagittal", "oblique"):
        view = mpr.views[name]
        inside = BOX + 0.7 * (view.plane.row_dir + view.plane.col_dir)  # off the lines
        assert _pixel(view, inside) == (255, 255, 255), name
        outside = BOX + 6.0 * view.plane.row_dir + 0.7 * view.plane.col_dir
        assert _pixel(view, outside) == (0, 0, 0), name
    # Coronal: screen down is inferior, so the box's top (z = 42) is above its bottom (38).
    cor = mpr.views["coronal"]
    top = np.array([9.2, 15.5, 41.5])
    bottom = np.array([9.2, 15.5, 38.5])
    v_top = cor.to_widget(*cor.plane.to_pixel(top))[1]
    assert v_top < cor.to_widget(*cor.plane.to_pixel(bottom))[1]
    assert _pixel(cor, top) == _pixel(cor, bottom) == (255, 255, 255)
    assert _pixel(cor, np.array([9.2, 15.5, 43.5])) == (0, 0, 0)
    # The other planes are drawn as lines: the sagittal plane x = 8.5 as a blue vertical
    # on the axial view, the coronal plane y = 15.5 as a green vertical on the sagittal one.
    for view, point, colour in (
        (mpr.views["axial"], np.array([8.5, 5.0, 40.0]), BLUE),
        (mpr.views["sagittal"], np.array([8.5, 15.5, 45.0]), GREEN),
    ):
        shot = grab(view)
        u, v = view.to_widget(*view.plane.to_pixel(point))
        row = [tuple(int(c) for c in px) for px in shot[int(v), int(u) - 2 : int(u) + 3]]
        assert colour in row, (view.view, row)
        u2, _ = view.to_widget(*view.plane.to_pixel(point + 3.0 * view.plane.row_dir))
        away = [tuple(int(c) for c in px) for px in shot[int(v), int(u2) - 2 : int(u2) + 3]]
        assert colour not in away
    save_screen(qtbot, mpr, artifacts, "workstation_mpr.png")


def test_thick_slab_mip_shows_the_box_a_thin_plane_misses(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    mpr = _open_mpr(qtbot, window, api, scene)
    above = BOX + np.array([0.7, 0.7, 4.0])  # axial plane z = 44: 2 mm above the box
    mpr.state.set_centre(BOX + np.array([0.0, 0.0, 4.0]))  # crosshair lines off ``above``
    ax = mpr.views["axial"]
    assert _pixel(ax, above) == (0, 0, 0)
    mpr.slab.setValue(10.0)  # z 39…49, mode max: reaches the box
    assert mpr.state.slab_mm == 10.0 and mpr.state.mode == "max"
    assert _pixel(ax, above) == (255, 255, 255)
    mpr.slab.setValue(2.0)  # z 43…45: still misses
    assert _pixel(ax, above) == (0, 0, 0)
    # Ctrl+Shift+M opens straight into a 10 mm MIP.
    mip = _open_mpr(qtbot, window, api, scene, mip=True)
    assert mip.state.slab_mm == 10.0
    mip.state.set_centre(BOX + np.array([0.0, 0.0, 4.0]))
    assert _pixel(mip.views["axial"], above) == (255, 255, 255)
    save_screen(qtbot, mip, artifacts, "workstation_mip.png")


def test_oblique_plane_at_45_degrees_reaches_the_box(
    qtbot, window, api, scene, artifacts: Path
) -> None:  # noqa: ANN001
    mpr = _open_mpr(qtbot, window, api, scene)
    mpr.tilt.setValue(45.0)
    ydir = np.array([0.0, np.sqrt(0.5), np.sqrt(0.5)])  # screen down: posterior-superior
    centre = BOX - 5.0 * ydir  # z = 36.5: the axial plane through it misses the box
    mpr.state.set_centre(centre)
    obl, ax = mpr.views["oblique"], mpr.views["axial"]
    assert np.allclose(obl.plane.col_dir, ydir)
    assert _pixel(ax, np.array([BOX[0] + 0.7, BOX[1], centre[2]])) == (0, 0, 0)
    target = BOX + np.array([0.7, 0.0, 0.0])
    assert _pixel(obl, target) == (255, 255, 255)
    # 5 mm down the screen from the crosshair = 10 output pixels of 0.5 mm.
    cx, cy = obl.plane.to_pixel(centre)
    bx, by = obl.plane.to_pixel(BOX)
    assert (round(bx - cx, 6), round(by - cy, 6)) == (0.0, 10.0)
    save_screen(qtbot, mpr, artifacts, "workstation_mpr_oblique.png")
