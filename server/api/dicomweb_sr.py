"""Rendered structured reports (PS3.18 Table 8.7.4-1: text objects are rendered as text/html,
the default, or text/plain). ``/rendered`` of an SR answered 406: it has no pixel data.

The content tree (PS3.3 C.17.3) is written out as nested headings and items: concept name,
then the value of its kind (text, code meaning, number and units, date/time, person name,
UID, referenced image). Every value is HTML-escaped.
"""

from __future__ import annotations

import html

from fastapi import HTTPException
from pydicom.dataset import Dataset

from server.api import dicomweb_accept as media

FORMATS = ("text/html", "text/plain")


def is_report(ds: Dataset) -> bool:
    """An SR document: a CONTAINER root with content items."""
    return str(ds.get("ValueType", "")) == "CONTAINER" and "ContentSequence" in ds


def text_format(accept: str | None) -> str:
    """text/html for ``*/*`` or ``text/*``; 406 when neither text form is acceptable."""
    for r in media.parse(accept):
        if r.media in FORMATS:
            return r.media
        if media.is_any(r.media) or r.media == "text/*":
            return "text/html"
    raise HTTPException(406, "structured reports are rendered as text/html or text/plain")


def _name(item: Dataset) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].get("CodeMeaning", "")) if seq else ""


def _value(item: Dataset) -> str:
    """The item's value as text (empty for containers)."""
    kind = str(item.get("ValueType", ""))
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "CODE":
        seq = item.get("ConceptCodeSequence")
        return str(seq[0].get("CodeMeaning", "")) if seq else ""
    if kind == "NUM":
        seq = item.get("MeasuredValueSequence")
        if not seq:
            return ""
        units = seq[0].get("MeasurementUnitsCodeSequence")
        unit = str(units[0].get("CodeValue", "")) if units else ""
        return f"{seq[0].get('NumericValue', '')} {unit}".strip()
    if kind in ("DATE", "TIME", "DATETIME", "PNAME", "UIDREF"):
        keyword = {"DATE": "Date", "TIME": "Time", "DATETIME": "DateTime",
                   "PNAME": "PersonName", "UIDREF": "UID"}[kind]  # fmt: skip
        return str(item.get(keyword, ""))
    if kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        seq = item.get("ReferencedSOPSequence")
        return f"{kind.lower()} {seq[0].get('ReferencedSOPInstanceUID', '')}" if seq else ""
    return ""


def _items(ds: Dataset, depth: int = 0) -> list[tuple[int, str, str, bool]]:
    """(depth, concept name, value, is container) of every content item, in order."""
    out = []
    for item in ds.get("ContentSequence", []):
        container = str(item.get("ValueType", "")) == "CONTAINER"
        out.append((depth, _name(item), _value(item), container))
        if depth < 32:
            out.extend(_items(item, depth + 1))
    return out


def render(ds: Dataset, media_type: str) -> bytes:
    """The report as ``media_type`` (one of FORMATS)."""
    title = _name(ds) or "Structured report"
    header = [
        ("Patient", str(ds.get("PatientName", ""))),
        ("Patient ID", str(ds.get("PatientID", ""))),
        ("Date", str(ds.get("ContentDate", "") or ds.get("StudyDate", ""))),
        ("Completion", str(ds.get("CompletionFlag", ""))),
        ("Verification", str(ds.get("VerificationFlag", ""))),
    ]
    items = _items(ds)
    if media_type == "text/plain":
        lines = [title, *(f"{k}: {v}" for k, v in header if v), ""]
        for depth, name, value, _ in items:
            text = f"{name}: {value}" if name and value else name or value
            lines.append("  " * depth + text)
        return ("\n".join(lines) + "\n").encode("utf-8")
    e = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
           f"</head><body><h1>{e(title)}</h1><dl>"]  # fmt: skip
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in header if v]
    out.append("</dl>")
    for depth, name, value, container in items:
        if container:
            level = min(6, depth + 2)
            out.append(f"<h{level}>{e(name)}</h{level}>")
        else:
            style = f' style="margin-left:{depth}em"' if depth else ""
            label = f"<b>{e(name)}</b>: " if name and value else e(name)
            out.append(f"<p{style}>{label}{e(value)}</p>")
    out.append("</body></html>")
    return "".join(out).encode("utf-8")
