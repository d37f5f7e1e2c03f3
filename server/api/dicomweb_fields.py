"""QIDO-RS includefield (PS3.18 8.3.4.3) and the return attributes the index does not hold.

``includefield=SliceThickness`` used to answer ``{"vr": "DS"}`` with no Value although the
instance has one: a key without an index column was returned empty, which reads as "this
instance has no Slice Thickness". At instance level the value now comes from the index's
display attributes or, for the rest, from the archived data set (read only when such a key
is asked for, so a plain search stays an index query); at study and series level, where no
one data set holds the value, an included attribute we do not know is left out. A name that
is no DICOM attribute is 400 (it was dropped silently); ``includefield=all`` adds what we
have: the indexed attributes of the level, and at instance level the whole data set but
its bulk data.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import HTTPException
from pydicom.datadict import dictionary_VM, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from server.dimse import identifiers
from server.index.queries import Match

#: Indexed attributes ``includefield=all`` adds at each level (values the index keeps).
ALL: dict[str, tuple[str, ...]] = {
    "STUDY": ("PatientSex", "IssuerOfPatientID", "RequestingService"),
    "SERIES": ("PatientSex", "IssuerOfPatientID", "BodyPartExamined"),
    "IMAGE": ("PatientSex", "IssuerOfPatientID", "BodyPartExamined", "Modality"),
}

#: Values never copied into a search answer: bulk data (PS3.18 8.3.4.3 leaves it out).
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def keyword(param: str) -> str | None:
    """The keyword of an attribute named by keyword or by tag (00100010, PS3.18
    8.3.4.1); None when it names no DICOM attribute."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", param):
        return keyword_for_tag(int(param, 16)) or None
    return param if tag_for_keyword(param) is not None else None


def parse(values: Iterable[str]) -> tuple[list[str], bool]:
    """The keywords the includefield values name (comma-separated, repeatable) and whether
    ``all`` was among them; 400 for a name that is no DICOM attribute. Sequence paths
    (``0040A730.0040A160``) name their top-level sequence."""
    names: list[str] = []
    everything = False
    for value in values:
        for field in value.split(","):
            field = field.strip()
            if not field:
                continue
            if field.lower() == "all":
                everything = True
                continue
            parts = [keyword(p) for p in field.split(".")]
            if not all(parts):
                raise HTTPException(400, f"includefield: {field[:64]} is not a DICOM attribute")
            names.append(str(parts[0]))
    return names, everything


def _from_attrs(kw: str, value: Any) -> Any:
    """An index display attribute as a data element value (single-valued ones unwrapped)."""
    if isinstance(value, list) and dictionary_VM(kw) == "1":
        return value[0] if value else None
    return value


def complete(
    ds: Dataset,
    match: Match,
    included: Iterable[str],
    everything: bool,
    read: Callable[[], Dataset | None],
) -> None:
    """Fill in the values of ``ds`` (one answer) the index getters could not give.

    Default return keys we do not know stay zero-length (PS3.18 Tables 10.6.3-3..5: type 2
    semantics); included ones are filled from the instance or left out."""
    wanted = set(included)
    source: Dataset | None = None
    loaded = False

    def data_set() -> Dataset | None:
        nonlocal source, loaded
        if not loaded:
            source, loaded = read(), True
        return source

    for elem in list(ds):
        kw = elem.keyword
        if not kw or elem.value not in (None, "", []) or kw in identifiers.GETTERS:
            continue
        value = None
        if match.instance is not None:
            attrs = match.instance.attrs or {}
            if kw in attrs:
                value = _from_attrs(kw, attrs[kw])
            elif kw in wanted and (full := data_set()) is not None and kw in full:
                ds[elem.tag] = full[elem.tag]
                continue
        if value not in (None, "", []):
            with contextlib.suppress(ValueError, TypeError, OverflowError):
                setattr(ds, kw, value)
                continue
        if kw in wanted:
            del ds[elem.tag]
    if everything and match.instance is not None and (full := data_set()) is not None:
        for elem in full:
            if elem.tag.group == 0x0002 or elem.tag.is_private or elem.VR in _BULK_VRS:
                continue
            if elem.tag not in ds:
                ds[elem.tag] = elem
