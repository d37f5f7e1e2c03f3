"""Annotations belong to their series (probe 32, data loss): loading another series into a
viewport does not carry the old series' measurements along, they come back with their
series, and a failed Save GSPS tells the user instead of dying on stderr."""

from __future__ import annotations

import io
from typing import Any

import pydicom
from PySide6.QtCore import QPoint, Qt

from tests.gui import scenes
from tests.gui.helpers import grab, open_series


def _distance(qtbot: Any, win: Any, vp: Any, pts: tuple[tuple[int, int], ...]) -> None:
    widget = win.viewer.widgets[0]
    win.viewer.set_tool("distance")
    tr = vp.transform(widget.width(), widget.height())
    for x, y in pts:
        u, v = tr.to_widget(x, y)
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))


def test_annotations_stay_with_their_series(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, artifacts: Any
) -> None:
    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    _distance(qtbot, win, vp, ((10, 10), (50, 40)))
    axial = [a for a in vp.annotations if a.source == "user"]
    assert len(axial) == 1
    vp = open_series(qtbot, win, api, scene, "Coronal")
    assert [a for a in vp.annotations if a.source == "user"] == []
    _distance(qtbot, win, vp, ((5, 5), (20, 5)))
    coronal_sops = {str(ds.SOPInstanceUID) for ds in scene.coronal}
    sop = win.save_gsps()
    assert sop, win.status_label.text()
    ds = pydicom.dcmread(io.BytesIO(api.instance_file(sop)))
    refs = {
        str(r.ReferencedSOPInstanceUID)
        for se in ds.ReferencedSeriesSequence
        for r in se.ReferencedImageSequence
    }
    assert refs and refs <= coronal_sops, refs
    # back to the axial series: its measurement is there again, the coronal one is not
    vp = open_series(qtbot, win, api, scene, "Axial")
    vp.set_index(0)
    mine = [a for a in vp.annotations if a.source == "user"]
    assert [a.points for a in mine] == [a.points for a in axial]
    qtbot.wait(30)
    win.grab().save(str(artifacts / "s13_annotations_per_series.png"))
    assert grab(win.viewer.widgets[0]).any()


def test_failed_save_tells_the_user(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, monkeypatch: Any
) -> None:
    from workstation.qt import main_window

    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    _distance(qtbot, win, vp, ((12, 12), (40, 30)))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("Referenced images must all belong to the same study")

    warned: list[str] = []
    monkeypatch.setattr(main_window.gsps, "build", broken)
    monkeypatch.setattr(
        main_window.QMessageBox, "warning", lambda parent, title, text: warned.append(text)
    )
    assert win.save_gsps() == ""
    assert "could not save" in win.status_label.text()
    assert "same study" in win.status_label.text()
    assert warned and "same study" in warned[0]
