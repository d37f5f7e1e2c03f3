"""Encapsulated PDF and the document panel (probe 32): a PDF page is rendered (pypdfium2,
QtPdf is not installed with pyside6-essentials), the panel takes about a third of the
viewer column, and it can be closed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from tests.data.samples import make_instance
from tests.gui.helpers import grab, qimage_rgb
from tests.integration.dicom_io import storescu

PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def _pdf_bytes() -> bytes:
    """A one-page PDF: white page with a black box in its top-left quarter."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(im).rectangle((20, 20, 180, 120), fill="black")
    buf = io.BytesIO()
    im.save(buf, "PDF")
    data = buf.getvalue()
    return data + b"\0" if len(data) % 2 else data


def test_pdf_pages_render_to_pixels(qapp: Any) -> None:
    from workstation.qt.documents import pdf_pages

    (page,) = pdf_pages(_pdf_bytes(), width=800)
    rgb = qimage_rgb(page)
    assert rgb.shape[1] == 800 and rgb.shape[0] == 600
    # the black box: top-left quarter dark, the rest white
    assert rgb[100:200, 100:300].max() < 40
    assert rgb[400:, 500:].min() > 215


def test_pdf_is_shown_in_a_closable_panel(
    qtbot: Any, window: Any, api: Any, server: Any, tmp_path: Path, artifacts: Path
) -> None:
    ds = make_instance(PDF_CLASS, patient_name="S13^Pdf", patient_id="S13PDF")
    ds.EncapsulatedDocument = _pdf_bytes()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = "S13 PDF report"
    ds.SeriesDescription = "Report PDF"
    path = tmp_path / "pdf.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = storescu("127.0.0.1", server.port, server.ae_title, [path])
    assert done.returncode == 0, done.stderr
    (study,) = [s for s in api.studies(patient_id="S13PDF") if not s.placeholder]
    (series,) = api.series(study.study_uid)
    win = window
    win.open_series(series, study, 0)
    panel = win.documents
    qtbot.waitUntil(lambda: panel.isVisible() and not win.jobs, timeout=30000)
    assert len(panel.pages) == 1
    # the status bar names what opened (it said "Report PDF: 0 images")
    assert win.status_label.text() == "Report PDF: 1 PDF document, 1 page"
    qtbot.wait(100)
    # about a third of the viewer column, the images keep the larger part
    viewer_h, doc_h = win.right_split.sizes()
    assert 0.2 < doc_h / (viewer_h + doc_h) < 0.45, (viewer_h, doc_h)
    shot = grab(panel.view.viewport())
    win.grab().save(str(artifacts / "s13_pdf_panel.png"))
    dark = (shot.max(axis=2) < 40).sum()
    white = (shot.min(axis=2) > 215).sum()
    assert dark > 500 and white > 500, (dark, white)  # the page's black box on white
    # the close button hides the panel and gives the viewer its height back
    assert panel.close_button.isVisible()
    qtbot.mouseClick(panel.close_button, Qt.MouseButton.LeftButton)
    assert not panel.isVisible()
    qtbot.wait(50)
    assert win.viewer.height() > 0.9 * win.right_split.height()
    # shown again on the next document, closable with Esc
    win._show_documents(_data(win, series, study))
    assert panel.isVisible()
    panel.view.setFocus()
    qtbot.keyClick(panel.view, Qt.Key.Key_Escape)
    assert not panel.isVisible()


def _data(win: Any, series: Any, study: Any) -> Any:
    from workstation.model import loader

    data = loader.describe(win.client, series, study)
    data.documents = [loader.load_document(win.client, d.sop_instance_uid) for d in data.documents]
    return data
