"""Document views: Basic/Enhanced text SR as readable HTML, encapsulated PDF as page images.

PDF pages are rendered with pypdfium2 (PDFium, a small wheel; the gui extra installs it):
QtPdf is in PySide6-Addons, which the gui extra does not install, so PDFs were never shown
(probe 32). The panel sits under the viewer in a splitter and can be closed.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QImage, QKeyEvent, QTextDocument
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

PDF_PAGE_WIDTH = 900  # pixels a PDF page is rendered at (the panel scales it to fit)


def _item_html(item: Any, depth: int) -> str:
    name = ""
    if "ConceptNameCodeSequence" in item:
        name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
    vt = str(item.get("ValueType", ""))
    value = ""
    if vt == "TEXT":
        value = str(item.get("TextValue", ""))
    elif vt == "CODE" and "ConceptCodeSequence" in item:
        value = str(item.ConceptCodeSequence[0].CodeMeaning)
    elif vt == "NUM" and "MeasuredValueSequence" in item:
        mv = item.MeasuredValueSequence[0]
        units = mv.get("MeasurementUnitsCodeSequence")
        unit = units[0].CodeValue if units else ""
        value = f"{mv.NumericValue} {unit}"
    elif vt in ("DATE", "TIME", "DATETIME", "UIDREF", "PNAME"):
        value = str(item.get({"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime",
                              "UIDREF": "UID", "PNAME": "PersonName"}[vt], ""))  # fmt: skip
    out = []
    if vt == "CONTAINER":
        level = min(2 + depth, 6)
        out.append(f"<h{level}>{html.escape(name)}</h{level}>")
    elif name or value:
        out.append(f"<p><b>{html.escape(name)}</b>: {html.escape(value)}</p>")
    for child in item.get("ContentSequence", []):
        out.append(_item_html(child, depth + 1))
    return "".join(out)


def sr_html(ds: Any) -> str:
    """A text SR as a document: header, then the content tree as headings and paragraphs."""
    head = (
        f"<h1>{html.escape(str(ds.get('PatientName', '')))}</h1>"
        f"<p>{html.escape(str(ds.get('StudyDescription', '')))} "
        f"{html.escape(str(ds.get('ContentDate', '')))} · "
        f"{html.escape(str(ds.get('CompletionFlag', '')))} / "
        f"{html.escape(str(ds.get('VerificationFlag', '')))}</p>"
    )
    return head + _item_html(ds, 0)


def document_title(ds: Any) -> str:
    """The heading of an encapsulated document: Document Title (0042,0010), else the Concept
    Name Code Sequence (0040,A043) meaning (PS3.3 C.24.2; both may be empty), else ""."""
    title = str(ds.get("DocumentTitle", "") or "").strip()
    if not title and ds.get("ConceptNameCodeSequence"):
        title = str(ds.ConceptNameCodeSequence[0].get("CodeMeaning", "") or "").strip()
    return title


def pdf_pages(data: bytes, width: int = PDF_PAGE_WIDTH) -> list[QImage]:
    """Every page of a PDF as an RGB image ``width`` pixels wide (pypdfium2)."""
    import pypdfium2 as pdfium

    pages = []
    pdf = pdfium.PdfDocument(data)
    try:
        for i in range(len(pdf)):
            page = pdf[i]
            scale = width / max(page.get_width(), 1.0)
            rgb = np.ascontiguousarray(page.render(scale=scale, rev_byteorder=True).to_numpy())
            if rgb.ndim == 3 and rgb.shape[2] == 4:
                rgb = np.ascontiguousarray(rgb[:, :, :3])
            h, w = rgb.shape[:2]
            pages.append(QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888).copy())
            page.close()
    finally:
        pdf.close()
    return pages


class DocumentPanel(QWidget):
    """SR documents and PDF pages under the viewer, with a title and a close button (Esc)."""

    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("")
        self.title.setStyleSheet("font-weight: bold;")
        self.close_button = QToolButton()
        self.close_button.setText("✕ Close")
        self.close_button.setToolTip("Close the document panel (Esc)")
        self.close_button.clicked.connect(self.close_panel)
        self.view = QTextBrowser()
        self.view.setOpenExternalLinks(False)
        self.pages: list[QImage] = []  # rendered PDF pages now shown (tests, printing)
        head = QHBoxLayout()
        head.setContentsMargins(4, 2, 4, 0)
        head.addWidget(self.title, 1)
        head.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(head)
        lay.addWidget(self.view, 1)
        self.view.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        """Esc in the document closes the panel (the reader goes back to the images)."""
        if (
            obj is self.view
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() == Qt.Key.Key_Escape
        ):
            self.close_panel()
            return True
        return super().eventFilter(obj, event)

    def show_documents(self, datasets: list[Any], title: str = "") -> None:
        """Text SR as HTML and each PDF page as an image, one scrolling document."""
        parts: list[str] = []
        titles: list[str] = []  # of the PDFs: the panel's heading names the document
        self.pages = []
        doc = self.view.document()
        width = max(200, self.view.viewport().width() - 24)
        for ds in datasets:
            if "EncapsulatedDocument" in ds:
                titles.append(document_title(ds))
                name = html.escape(titles[-1] or "PDF document")
                try:
                    pages = pdf_pages(bytes(ds.EncapsulatedDocument))
                except Exception as exc:  # a broken PDF is reported, not fatal
                    parts.append(
                        f"<p><b>{name}</b>: cannot show this PDF ({html.escape(str(exc))})</p>"
                    )
                    continue
                body = [f"<h2>{name}</h2>"]
                for img in pages:
                    url = f"pdfpage://{len(self.pages)}"
                    doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(url), img)
                    self.pages.append(img)
                    body.append(f'<p><img src="{url}" width="{width}"></p>')
                parts.append("".join(body))
            else:
                parts.append(sr_html(ds))
        # The heading says which document this is (outside tester, s14: only the series
        # description showed, and the first layout scrolled the in-text heading away).
        heading = " · ".join(t for t in titles if t)
        if title and title not in titles:
            heading = f"{heading} · {title}" if heading else title
        self.title.setText(heading)
        self.view.setHtml("<hr>".join(parts))
        self.show()
        self.to_top()

    def to_top(self) -> None:
        """The start of the document (its title) in view: also after the splitter sizes the
        panel, whose first layout scrolled the heading out of sight."""
        self.view.verticalScrollBar().setValue(0)
        QTimer.singleShot(0, lambda: self.view.verticalScrollBar().setValue(0))

    def close_panel(self) -> None:
        self.hide()
        self.closed.emit()
