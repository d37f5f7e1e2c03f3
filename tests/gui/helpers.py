"""Shared steps of the GUI tests: find a scene series, open it, grab and sample pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lucent.api.client import LucentClient
from tests.gui import scenes


def find_series(api: LucentClient, scene: scenes.Scene, description: str) -> tuple[Any, Any]:
    """(SeriesOut, StudyOut) of the scene series with this description."""
    patient = "Bernd" if description.startswith("CR") else "Anna"
    name = f"Guitest{scene.suffix}^{patient}"
    (study,) = [s for s in api.studies(patient_name=name) if not s.placeholder]
    (se,) = [s for s in api.series(study.study_uid) if s.description == description]
    return se, study


def open_series(qtbot: Any, win: Any, api: LucentClient, scene: scenes.Scene, description: str,
                index: int = 0) -> Any:  # fmt: skip
    """Open a series in viewport ``index`` and wait until every slice has its pixels."""
    se, study = find_series(api, scene, description)
    win.open_series(se, study, index)
    vp = win.layout_model.viewports[index]
    qtbot.waitUntil(lambda: vp.series is not None and vp.series.uid == se.series_uid, timeout=30000)
    qtbot.waitUntil(lambda: vp.series.complete and not win.jobs, timeout=60000)
    return vp


def qimage_rgb(img: Any) -> np.ndarray:
    """A QImage as (h, w, 3) uint8."""
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def grab(widget: Any) -> np.ndarray:
    """The widget as the screen shows it: (h, w, 3) uint8 (QPainter widgets only: a native
    VTK window needs vtkWindowToImageFilter or QScreen.grabWindow)."""
    return qimage_rgb(widget.grab().toImage())


def sample(shot: np.ndarray, tr: Any, x: float, y: float) -> np.ndarray:
    u, v = tr.to_widget(x, y)
    return shot[int(round(v)), int(round(u))]


def save(widget: Any, artifacts: Path, name: str) -> None:
    widget.grab().save(str(artifacts / name))


def save_screen(qtbot: Any, widget: Any, artifacts: Path, name: str) -> np.ndarray:
    """What the X server shows for this top-level window (QScreen.grabWindow), saved.

    The window is raised and given time to paint first: grabWindow reads the screen.
    """
    widget.raise_()
    widget.activateWindow()
    qtbot.wait(300)
    pixmap = widget.screen().grabWindow(widget.winId())
    pixmap.save(str(artifacts / name))
    return qimage_rgb(pixmap.toImage())
