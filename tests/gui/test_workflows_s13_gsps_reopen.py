"""A GSPS saved in this session is shown when the series is opened again (probe 32: the
series' presentation states were read once, at its first load, and reused)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QPoint, Qt

from tests.gui import scenes
from tests.gui.helpers import grab, open_series


def test_saved_gsps_shows_when_the_series_is_opened_again(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, artifacts: Any
) -> None:
    win = window
    win.layout_model.set_grid(1, 2)
    vp = open_series(qtbot, win, api, scene, "Axial", 0)
    vp.set_index(6)
    widget = win.viewer.widgets[0]
    win.viewer.set_tool("distance")
    tr = vp.transform(widget.width(), widget.height())
    for x, y in ((8, 50), (56, 50)):
        u, v = tr.to_widget(x, y)
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))
    (drawn,) = [a for a in vp.annotations if a.source == "user"]
    assert win.save_gsps()
    # the same series in the other viewport: from this session's cache, with the new GSPS
    se, study = scenes_series(api, scene)
    assert win.open_series(se, study, 1) is None  # cached: no new load
    vp1 = win.layout_model.viewports[1]
    vp1.set_index(6)
    ours = [a for a in vp1.annotations if a.source == "gsps" and a.kind == "distance"]
    assert any(np.allclose(a.points, drawn.points, atol=1e-3) for a in ours), vp1.annotations
    qtbot.wait(50)
    widget1 = win.viewer.widgets[1]
    shot = grab(widget1)
    tr1 = vp1.transform(widget1.width(), widget1.height())
    u, v = tr1.to_widget(32, 50)
    column = shot[int(v) - 2 : int(v) + 3, int(u)]
    assert any(px[0] == 255 and 120 <= px[1] <= 160 and px[2] < 40 for px in column), column
    win.grab().save(str(artifacts / "s13_gsps_reopened.png"))
    # opened again where it was drawn: shown once (the user's drawing), not twice
    win.open_series(se, study, 0)
    same = [a for a in vp.annotations if np.allclose(a.points, drawn.points, atol=1e-3)]
    assert len(same) == 1 and same[0].source == "user"


def scenes_series(api: Any, scene: scenes.Scene) -> tuple[Any, Any]:
    from tests.gui.helpers import find_series

    return find_series(api, scene, "Axial")
