"""VOI LUT Sequence on screen (PS3.3 C.11.2, PS3.4 N.2.1.1), probe 22 "VoiLutSeq2".

A CR with only a VOI LUT (entry = min(stored // 8, 255), 8 bits) must show the table, not a
full-range linear window: stored 1032 shows 129. A CR with both shows its window and the
main window's "VOI LUT" action (Ctrl+L) switches to the table and back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.data.samples import write
from tests.gui.helpers import grab, sample, save
from tests.integration.dicom_io import storescu
from tests.unit.workstation.test_voi_lut import voi_lut_cr

COLUMNS = (10, 32, 63, 64, 100)


def _ramp() -> np.ndarray:
    """64 × 128, stored = round(x · 4095 / 127) along the columns (as the probe made it)."""
    return np.tile(np.round(np.arange(128) * 4095 / 127), (64, 1)).astype(np.uint16)


@pytest.fixture(scope="module")
def voi_scene(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pydicom.uid import generate_uid

    suffix = uuid.uuid4().hex[:6].upper()
    directory = tmp_path_factory.mktemp("voi")
    study = generate_uid()
    files = []
    for k, (desc, window) in enumerate((("LUT only", False), ("LUT and window", True))):
        ds = voi_lut_cr(window, _ramp())
        ds.PatientName, ds.PatientID = f"Voitest{suffix}^Carla", f"VOI{suffix}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SeriesDescription, ds.SeriesNumber = desc, k + 1
        files.append(write(ds, Path(directory) / f"{k}.dcm"))
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, (done.stderr, server.log_tail())
    return suffix


@pytest.fixture
def main(qtbot: Any, api: Any) -> Iterator[Any]:
    from workstation.qt.main_window import MainWindow

    win = MainWindow(api)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.cancel_loading()
    win.pool.waitForDone(20000)


def _open(qtbot: Any, win: Any, api: Any, suffix: str, description: str) -> Any:
    (study,) = [s for s in api.studies(patient_name=f"Voitest{suffix}^Carla") if not s.placeholder]
    (se,) = [s for s in api.series(study.study_uid) if s.description == description]
    win.open_series(se, study, 0)
    vp = win.layout_model.viewports[0]
    qtbot.waitUntil(lambda: vp.series is not None and vp.series.uid == se.series_uid, timeout=30000)
    qtbot.waitUntil(lambda: vp.series.complete and not win.jobs, timeout=60000)
    return vp


def _screen_greys(qtbot: Any, win: Any, vp: Any) -> list[int]:
    widget = win.viewer.widgets[0]
    qtbot.wait(30)
    shot = grab(widget)
    tr = vp.transform(widget.width(), widget.height())
    return [int(sample(shot, tr, x, 5)[0]) for x in COLUMNS]


def test_voi_lut_only_is_applied_on_screen(qtbot, main, api, voi_scene, artifacts) -> None:  # noqa: ANN001
    vp = _open(qtbot, main, api, voi_scene, "LUT only")
    stored = _ramp()[5, list(COLUMNS)]
    expected = [min(int(v) // 8, 255) for v in stored]
    assert int(stored[1]) == 1032 and expected[1] == 129
    assert vp.use_voi_lut
    assert _screen_greys(qtbot, main, vp) == expected
    assert main.voi_lut_action.isEnabled() and main.voi_lut_action.isChecked()
    save(main, artifacts, "workstation_voi_lut.png")


def test_window_is_default_and_the_action_switches_to_the_lut(qtbot, main, api, voi_scene) -> None:  # noqa: ANN001
    vp = _open(qtbot, main, api, voi_scene, "LUT and window")
    stored = _ramp()[5, list(COLUMNS)].astype(np.float32)
    linear = [int(v) for v in np.clip((stored - 0.5) / 4095 * 255, 0, 255)]
    lut = [min(int(v) // 8, 255) for v in stored]
    assert not vp.use_voi_lut and (vp.center, vp.width) == (2048.0, 4096.0)
    assert _screen_greys(qtbot, main, vp) == linear
    assert main.voi_lut_action.isEnabled() and not main.voi_lut_action.isChecked()
    main.voi_lut_action.trigger()
    assert vp.use_voi_lut and main.voi_lut_action.isChecked()
    assert _screen_greys(qtbot, main, vp) == lut
    assert "VOI LUT" in main.status_label.text()
    # the corner names the LUT, not a window that is not applied
    assert main.viewer.widgets[0].corner_texts[3][0].startswith("VOI LUT")
    main.voi_lut_action.trigger()
    assert not vp.use_voi_lut
    assert _screen_greys(qtbot, main, vp) == linear
    assert main.viewer.widgets[0].corner_texts[3][0] == "W 4096  L 2048"
