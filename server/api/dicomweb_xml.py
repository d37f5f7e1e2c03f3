"""DICOM data sets as PS3.19 Native DICOM Model XML (application/dicom+xml).

PS3.18 lets a STOW-RS client ask for its response as application/dicom+xml. pydicom writes
DICOM JSON only, and we used to answer JSON whatever was asked; this small writer covers
the whole model (values, person names, sequences, inline binary) so the XML answer holds
exactly what the JSON one does.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

NATIVE_DICOM = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_BINARY = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
#: PS3.19 A.1.5: the components of a person name group, in PN order.
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 forbids even as references (2.2 Char). DICOM text may hold some: a
Form Feed in LT/ST/UT (PS3.5 6.2), ESC of a code extension. One such value made a whole
study's metadata unreadable to XML clients (outside probe); each is sent as U+FFFD."""


def _text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _values(elem: DataElement) -> list[Any]:
    if elem.value is None or elem.value == "":
        return []
    if isinstance(elem.value, MultiValue | list | tuple):
        return list(elem.value)
    return [elem.value]


def _person_name(parent: ET.Element, number: int, value: Any) -> None:
    """PS3.19 A.1.5: each '='-separated group as its element, '^' components inside."""
    node = ET.SubElement(parent, "PersonName", number=str(number))
    for group, text in zip(_PN_GROUPS, str(value).split("="), strict=False):
        if not text:
            continue
        group_node = ET.SubElement(node, group)
        for name, part in zip(_PN_COMPONENTS, text.split("^"), strict=False):
            if part:
                ET.SubElement(group_node, name).text = _text(part)


def _attribute(parent: ET.Element, elem: DataElement) -> None:
    attrs = {"tag": f"{elem.tag:08X}", "vr": elem.VR}
    if elem.keyword:
        attrs["keyword"] = elem.keyword
    if elem.tag.is_private and getattr(elem, "private_creator", None):
        attrs["privateCreator"] = _text(elem.private_creator)
    node = ET.SubElement(parent, "DicomAttribute", attrs)
    if elem.VR == "SQ":
        for n, item in enumerate(elem.value or [], 1):
            _dataset(ET.SubElement(node, "Item", number=str(n)), item)
    elif elem.VR in _BINARY:
        if elem.value:
            ET.SubElement(node, "InlineBinary").text = base64.b64encode(elem.value).decode()
    else:
        for n, value in enumerate(_values(elem), 1):
            if elem.VR == "PN":
                _person_name(node, n, value)
            elif elem.VR == "AT":
                ET.SubElement(node, "Value", number=str(n)).text = f"{int(value):08X}"
            else:
                ET.SubElement(node, "Value", number=str(n)).text = _text(value)


def _dataset(parent: ET.Element, ds: Dataset) -> None:
    for elem in ds:  # pydicom iterates in tag order, as PS3.19 A.1.1 asks
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
