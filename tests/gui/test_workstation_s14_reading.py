"""Reading screens (outside tester, s14): Del removes only the annotation the reader
selected (it removed the newest one with nothing selected); a patient row's Date column is
its newest study's date, not the birth date (which is in the patient's tooltip); the PDF
panel names the document (Document Title, else Concept Name) and shows its heading. Real
server, real main window under Xvfb, pixels of grabbed frames."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from PySide6.QtCore import QPoint, Qt

from tests.data.samples import make_instance, write
from tests.gui import scenes
from tests.gui.helpers import grab, open_series, save
from tests.integration.dicom_io import storescu

SC = "1.2.840.10008.5.1.4.1.1.7"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def _click(qtbot: Any, widget: Any, vp: Any, x: float, y: float) -> None:
    tr = vp.transform(widget.width(), widget.height())
    u, v = tr.to_widget(x, y)
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(round(u), round(v)))


def _colour_count(shot: np.ndarray, colour: Any) -> int:
    want = np.array([colour.red(), colour.green(), colour.blue()])
    return int((np.abs(shot.astype(int) - want).max(axis=2) <= 30).sum())


def test_del_removes_only_the_selected_annotation(
    qtbot: Any, window: Any, api: Any, scene: scenes.Scene, artifacts: Path
) -> None:
    from workstation.qt import viewport as viewport_widget

    win = window
    vp = open_series(qtbot, win, api, scene, "Axial")
    widget = win.viewer.widgets[0]
    vp.set_index(4)
    win.viewer.set_tool("distance")
    for pts in (((10, 10), (50, 10)), ((10, 40), (50, 40))):
        for x, y in pts:
            _click(qtbot, widget, vp, x, y)
    first, second = [a for a in vp.visible_annotations() if a.source == "user"]
    win.viewer.set_tool("wl")
    widget.setFocus()
    # Del with nothing selected: nothing goes (the newest went), a hint says what to do
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    qtbot.keyClick(widget, Qt.Key.Key_Backspace)
    assert [a for a in vp.annotations if a.source == "user"] == [first, second]
    assert "click an annotation" in win.status_label.text()
    selected_colour = viewport_widget.SELECTED_COLOUR
    annotation_colour = viewport_widget.ANNOTATION_COLOUR
    qtbot.wait(50)
    assert _colour_count(grab(widget), selected_colour) == 0  # nothing selected yet
    # a click on the older line selects it: drawn in the selection colour, the other not
    window_before = (vp.center, vp.width)
    _click(qtbot, widget, vp, 30, 10)
    assert vp.selected is first and "selected" in win.status_label.text()
    assert (vp.center, vp.width) == window_before  # the click did not change W/L
    qtbot.wait(50)
    shot = grab(widget)
    tr = vp.transform(widget.width(), widget.height())
    u, v = (round(c) for c in tr.to_widget(30, 10))
    band = shot[v - 3 : v + 4, u - 20 : u + 20]
    assert _colour_count(band, selected_colour) > 20, "the selected line is not highlighted"
    u2, v2 = (round(c) for c in tr.to_widget(30, 40))
    other = shot[v2 - 3 : v2 + 4, u2 - 20 : u2 + 20]
    assert _colour_count(other, selected_colour) == 0
    assert _colour_count(other, annotation_colour) > 10
    widget.grab().save(str(artifacts / "s14_annotation_selected.png"))
    # Del removes the selected (older) one and keeps the newest
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "user"] == [second]
    assert vp.selected is None
    qtbot.keyClick(widget, Qt.Key.Key_Delete)  # nothing selected any more
    assert [a for a in vp.annotations if a.source == "user"] == [second]
    # a click on empty image clears a selection; Esc too
    _click(qtbot, widget, vp, 30, 40)
    assert vp.selected is second
    _click(qtbot, widget, vp, 40, 25)
    assert vp.selected is None
    _click(qtbot, widget, vp, 30, 40)
    qtbot.keyClick(widget, Qt.Key.Key_Escape)
    assert vp.selected is None
    qtbot.keyClick(widget, Qt.Key.Key_Delete)
    assert [a for a in vp.annotations if a.source == "user"] == [second]
    qtbot.wait(30)
    save(win, artifacts, "s14_delete_selected.png")


def test_patient_row_date_is_the_newest_study_not_the_birth_date(
    qtbot: Any, api: Any, server: Any, tmp_path: Path, artifacts: Path
) -> None:
    from workstation.qt.browser import DATE_COLUMN, BrowserPanel

    suffix = uuid.uuid4().hex[:6].upper()
    files = []
    for date in ("20190310", "20230615"):
        ds = make_instance(SC, patient_id=f"BD{suffix}", patient_name=f"Birthd{suffix}^Eva",
                           study_uid=generate_uid(), series_uid=generate_uid())  # fmt: skip
        ds.PatientBirthDate = "19480229"
        ds.StudyDate = date
        ds.StudyDescription = f"study {date}"
        files.append(write(ds, tmp_path / f"{date}.dcm"))
    done = storescu("127.0.0.1", server.port, server.ae_title, files)
    assert done.returncode == 0, done.stderr
    panel = BrowserPanel(api)
    qtbot.addWidget(panel)
    panel.resize(700, 500)
    panel.show()
    qtbot.waitExposed(panel)
    panel.search.setText(f"Birthd{suffix}*")
    panel.refresh()
    tree = panel.tree
    assert tree.headerItem().text(DATE_COLUMN) == "Date"
    (patient,) = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    assert patient.text(DATE_COLUMN) == "2023-06-15"  # the newest study, not 1948-02-29
    assert "1948-02-29" not in patient.text(DATE_COLUMN)
    assert "born 1948-02-29" in patient.toolTip(0) and "born 1948-02-29" in patient.toolTip(1)
    children = [patient.child(j).text(DATE_COLUMN) for j in range(patient.childCount())]
    assert children == ["2023-06-15", "2019-03-10"]
    qtbot.wait(50)
    save(panel, artifacts, "s14_browser_patient_date.png")


def _pdf_bytes() -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(im).rectangle((20, 20, 180, 120), fill="black")
    buf = io.BytesIO()
    im.save(buf, "PDF")
    data = buf.getvalue()
    return data + b"\0" if len(data) % 2 else data


def _store_pdf(server: Any, api: Any, tmp_path: Path, title: str, concept: str) -> tuple:
    pid = f"PDT{uuid.uuid4().hex[:6].upper()}"
    ds = make_instance(PDF_CLASS, patient_name="S14^Pdf", patient_id=pid)
    ds.EncapsulatedDocument = _pdf_bytes()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = title
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "18748-4", "LN", concept
    ds.ConceptNameCodeSequence = [code] if concept else []
    ds.SeriesDescription = "Scanned PDF"
    path = tmp_path / f"{pid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = storescu("127.0.0.1", server.port, server.ae_title, [path])
    assert done.returncode == 0, done.stderr
    (study,) = [s for s in api.studies(patient_id=pid) if not s.placeholder]
    (series,) = api.series(study.study_uid)
    return series, study


def _heading_ink(panel: Any) -> int:
    """Dark pixels in the view's first 40 rows: the heading above the page's white margin
    (the page's black box starts lower down)."""
    shot = grab(panel.view.viewport())
    return int((shot[:40].max(axis=2) < 90).sum())


def test_pdf_panel_shows_the_document_title(
    qtbot: Any, window: Any, api: Any, server: Any, tmp_path: Path, artifacts: Path
) -> None:
    win = window
    panel = win.documents
    series, study = _store_pdf(server, api, tmp_path, "Discharge letter S14", "")
    win.open_series(series, study, 0)
    qtbot.waitUntil(lambda: panel.isVisible() and not win.jobs, timeout=30000)
    qtbot.wait(200)
    assert "Discharge letter S14" in panel.title.text()
    assert panel.view.verticalScrollBar().value() == 0  # the heading is in view
    assert _heading_ink(panel) > 40, "no title heading drawn at the top of the document"
    assert "Discharge letter S14" in panel.view.toPlainText().splitlines()[0]
    win.grab().save(str(artifacts / "s14_pdf_title.png"))
    # no Document Title: the Concept Name names it
    series2, study2 = _store_pdf(server, api, tmp_path, "", "Radiology Report S14")
    win.open_series(series2, study2, 0)
    qtbot.waitUntil(
        lambda: "Radiology Report S14" in panel.title.text() and not win.jobs, timeout=30000
    )
    qtbot.wait(200)
    assert panel.view.verticalScrollBar().value() == 0
    assert _heading_ink(panel) > 40
    assert "Radiology Report S14" in panel.view.toPlainText()
    win.grab().save(str(artifacts / "s14_pdf_concept_name.png"))
