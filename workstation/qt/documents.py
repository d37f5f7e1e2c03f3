"""Document views: Basic/Enhanced text SR as readable HTML, encapsulated PDF via QtPdf."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtWidgets import QWidget


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


def pdf_widget(data: bytes) -> QWidget | None:
    """A QPdfView over the document bytes, or None when QtPdf is not installed."""
    try:
        from PySide6.QtCore import QBuffer, QByteArray, QIODevice
        from PySide6.QtPdf import QPdfDocument
        from PySide6.QtPdfWidgets import QPdfView
    except ImportError:
        return None
    view = QPdfView()
    doc = QPdfDocument(view)
    buf = QBuffer(view)
    buf.setData(QByteArray(data))
    buf.open(QIODevice.OpenModeFlag.ReadOnly)
    doc.load(buf)
    view.setDocument(doc)
    view._keep = (doc, buf)  # type: ignore[attr-defined]
    return view
