"""DICOM data sets as PS3.19 Native DICOM Model XML (application/dicom+xml).

PS3.18 lets a STOW-RS client ask for its response as application/dicom+xml. pydicom writes
DICOM JSON only, and we used to answer JSON whatever was asked; this small writer covers
the whole model (values, person names, sequences, inline binary) so the XML answer holds
exactly what the JSON one does: the values are ``dicomweb_common.values``, the JSON
encoder's, so an empty value inside a list is an empty numbered Value element where JSON
has null (PS3.18 F.2.5), a NaN or infinite FL/FD is "NaN"/"Infinity"/"-Infinity" (Python
wrote nan/inf), and a DS/IS that is no finite number its stored text. PS3.19 A.1.6 types
every Value as xsd:string, so these need no other form.
"""

from __future__ import annotations

import base64
import logging
import re
import xml.etree.ElementTree as ET
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from server.api import dicomweb_common as common

log = logging.getLogger("lucent.dicomweb")

NATIVE_DICOM = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
#: PS3.19 A.1.5: the components of a person name group, in PN order.
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 forbids even as references (2.2 Char). DICOM text may hold some: a
Form Feed in LT/ST/UT (PS3.5 6.2), ESC of a code extension. One such value made a whole
study's metadata unreadable to XML clients (outside probe); each is sent as U+FFFD."""


def _text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _person_name(parent: ET.Element, number: int, groups: dict[str, str] | None) -> None:
    """PS3.19 A.1.5: each non-empty group as its element, '^' components inside; an empty
    value of a list is a PersonName element without groups."""
    node = ET.SubElement(parent, "PersonName", number=str(number))
    for group, text in (groups or {}).items():
        group_node = ET.SubElement(node, group)
        for name, part in zip(_PN_COMPONENTS, text.split("^"), strict=False):
            if part:
                ET.SubElement(group_node, name).text = _text(part)


def _value_texts(elem: DataElement) -> list[str | None]:
    """The Value elements' texts: the JSON encoder's values (non-finite FL/FD already
    named, empty values None), but a DS or IS as its stored text ("1.50" stays "1.50";
    JSON has the number)."""
    found = common.values(elem)
    if elem.VR in ("DS", "IS") and found:
        raw = elem.value
        items = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
        stored = (str(getattr(v, "original_string", None) or v).strip() for v in items)
        return [_text(text) if text else None for text in stored]
    return [None if v is None else _text(v) for v in found]


def _attribute(parent: ET.Element, elem: DataElement) -> None:
    attrs = {"tag": f"{elem.tag:08X}", "vr": str(elem.VR)}
    if elem.keyword:
        attrs["keyword"] = elem.keyword
    if elem.tag.is_private and getattr(elem, "private_creator", None):
        attrs["privateCreator"] = _text(elem.private_creator)
    node = ET.SubElement(parent, "DicomAttribute", attrs)
    try:
        _content(node, elem)
    except Exception as exc:  # one attribute must not fail the data set (probe 49)
        log.warning("DICOM XML: attribute %s sent without its value: %s", attrs["tag"], exc)
        for child in list(node):
            node.remove(child)


def _content(node: ET.Element, elem: DataElement) -> None:
    if elem.VR == "SQ":
        for n, item in enumerate(elem.value or [], 1):
            _dataset(ET.SubElement(node, "Item", number=str(n)), item)
    elif elem.VR in common.BINARY_VRS and isinstance(elem.value, bytes | bytearray):
        if elem.value:
            ET.SubElement(node, "InlineBinary").text = base64.b64encode(elem.value).decode()
    else:
        if elem.VR == "PN":
            for n, groups in enumerate(common.values(elem), 1):
                _person_name(node, n, groups)
            return
        for n, text in enumerate(_value_texts(elem), 1):
            ET.SubElement(node, "Value", number=str(n)).text = text or None


def _dataset(parent: ET.Element, ds: Dataset) -> None:
    """The attributes in ascending tag order (PS3.19 A.1.1), group lengths left out as in
    DICOM JSON; one that cannot be read at all is sent with its tag and VR only."""
    for tag in sorted(ds.keys()):
        if tag.element == 0:
            continue
        try:
            elem = ds[tag]
        except Exception as exc:
            log.warning("DICOM XML: attribute %08X sent without its value: %s", tag, exc)
            raw = ds.get_item(tag)
            vr = str(getattr(raw, "VR", None) or "UN")
            ET.SubElement(parent, "DicomAttribute", {"tag": f"{tag:08X}", "vr": vr})
            continue
        _attribute(parent, elem)


def _bulk_data(parent: ET.Element, tag: int, vr: str, uri: str) -> None:
    """PS3.19 A.1.1: a value sent apart, as a BulkData element naming its URI."""
    node = ET.SubElement(parent, "DicomAttribute", {"tag": f"{tag:08X}", "vr": vr})
    if keyword := keyword_for_tag(tag):
        node.set("keyword", keyword)
    ET.SubElement(node, "BulkData", uri=uri)


def to_xml(ds: Dataset, bulk: dict[int, tuple[str, str]] | None = None) -> bytes:
    """The data set as one NativeDicomModel document, UTF-8 (PS3.19 A.1). ``bulk`` gives
    top-level attributes sent as bulk data: tag -> (VR, BulkDataURI), as WADO-RS metadata
    sends pixel data; they follow the data set's attributes (pixel data comes last anyway).
    """
    root = ET.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM, "xml:space": "preserve"})
    _dataset(root, ds)
    for tag, (vr, uri) in sorted((bulk or {}).items()):
        _bulk_data(root, tag, vr, uri)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
