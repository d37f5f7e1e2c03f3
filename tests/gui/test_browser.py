"""Study browser thumbnails (issue 5): the middle image of each series, drawn in the tree.

The "Volume" series' middle slice (z = 40 mm) is black air with the white box at columns
14–20, rows 28–34 of 48; its thumbnail must show exactly that, found on the grabbed tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.gui import scenes
from tests.gui.helpers import find_series, grab, save


def test_series_thumbnail_shows_the_middle_image(
    qtbot, window: Any, api: Any, scene: scenes.Scene, artifacts: Path
) -> None:  # noqa: ANN001
    panel = window.browser
    panel.search.setText(f"Guitest{scene.suffix}^Anna")
    panel.refresh()
    se, study = find_series(api, scene, "Volume")
    study_item = panel.study_item(study.study_uid)
    assert study_item is not None
    study_item.setExpanded(True)  # series rows appear at once; thumbnails arrive later
    item = panel.series_tree_item(se.series_uid)
    assert item is not None
    qtbot.waitUntil(lambda: not item.icon(0).isNull(), timeout=20000)
    panel.tree.scrollToItem(item)
    qtbot.wait(50)
    shot = grab(panel.tree.viewport())
    rect = panel.tree.visualItemRect(item)
    band = shot[rect.top() : rect.bottom() + 1]
    # The thumbnail is the only near-black block in the row: find its bounding box.
    dark = band.max(axis=2) < 30
    cols = np.nonzero(dark.sum(axis=0) > 20)[0]
    rows = np.nonzero(dark.sum(axis=1) > 20)[0]
    assert len(cols) and len(rows), "no thumbnail drawn in the series row"
    x0, x1, y0, y1 = cols[0], cols[-1], rows[0], rows[-1]
    size = scenes.VOLUME_N
    assert abs((x1 - x0 + 1) - 64) <= 1 and abs((y1 - y0 + 1) - 64) <= 1, (x0, x1, y0, y1)
    thumb = band[y0 : y1 + 1, x0 : x1 + 1].max(axis=2)
    scale = thumb.shape[1] / size
    i = (scenes.BOX_I[0] + scenes.BOX_I[1]) / 2
    j = (scenes.BOX_J[0] + scenes.BOX_J[1]) / 2
    assert thumb[int((j + 0.5) * scale), int((i + 0.5) * scale)] > 225  # the box, white
    assert thumb[int(8 * scale), int(8 * scale)] < 30  # air, black
    assert thumb[int(20 * scale), int(40 * scale)] < 30
    # Collapsing and re-expanding (or refreshing) asks the server nothing more: cached.
    # (The study's other series fetch their thumbnails meanwhile: let them finish first.)
    qtbot.waitUntil(lambda: panel.thumbnails_pending == 0, timeout=20000)
    fetched = panel.thumbnails.fetches
    panel.refresh()
    again = panel.study_item(study.study_uid)
    assert again is not None
    again.setExpanded(True)
    item2 = panel.series_tree_item(se.series_uid)
    qtbot.waitUntil(lambda: not item2.icon(0).isNull(), timeout=20000)
    assert panel.thumbnails.fetches == fetched
    save(window, artifacts, "workstation_browser_thumbnails.png")
