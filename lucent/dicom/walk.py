"""One pass over a data set's top-level element headers, without building a data set.

Ingest uses it to learn where Pixel Data lies within microseconds of receiving an instance,
so the pixel object can be sealed and flushed to disk while the full parse and validation
run (server.context). It is a hint, never the authority: it answers ``None`` whenever the
bytes are not plain little-endian DICOM it fully understands, and the caller checks its
answer against the span pydicom reports before anything is indexed.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName
from pydicom.values import convert_value

from lucent.dicom import transfer_syntaxes

PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
LONG_VRS = frozenset(
    (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 32
_SEQUENCE_VRS = frozenset((b"SQ", b"UN", "SQ", "UN"))  # explicit (bytes) and dictionary (str)
_SPECIFIC_CHARACTER_SET = 0x00080005
# VRs whose value pydicom's converter reads from the bytes alone (no nesting, no VR guess)
_CONVERTIBLE = frozenset(
    ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI")
    + ("UR", "UT", "FD", "FL", "SL", "SS", "SV", "UL", "US", "UV")
)
_KEYWORD_TAGS: dict[str, int] = {}
#: Converted values shared across data sets, keyed by (VR, value bytes, character sets):
#: the instances of a series repeat most of their values (UIDs of the study and series,
#: names, geometry), and pydicom's converter costs 2-15 us a value. Only immutable results
#: are kept (str, numbers, bytes, PersonName); multi-valued ones are converted each time.
_CONVERTED: dict[tuple[str, bytes, tuple[str, ...]], Any] = {}
_CONVERTED_MAX = 4096
_CONVERTED_LONGEST = 256  # bytes: long texts (LT, UT) are rarely repeated, and would fill memory
_IMMUTABLE = (str, int, float, bytes, PersonName)
_HEAD = struct.Struct("<HHL")  # group, element, 32-bit length (implicit VR and items)
_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length

Span = tuple[int, int]


class _Unsure(Exception):
    """The bytes leave the walk unsure; the caller falls back to a full parse."""


class TopLevel:
    """A data set's top-level elements by tag, from one header walk; values decoded on demand.

    Reads like the few ``pydicom.Dataset`` calls ingest makes (``get``, ``in``, attribute
    access) at a fraction of their cost: each value goes through pydicom's own converter for
    its VR and the data set's character set, so the values are pydicom's. Anything else
    (sequences, UN, ambiguous or unknown VRs) is read from a full ``dcmread``, made on first
    need.
    """

    def __init__(
        self, data: bytes, elements: dict[int, tuple[str, int, int]], explicit: bool
    ) -> None:
        self._data = data
        self._elements = elements  # tag -> (VR, value offset, length; UNDEFINED for items)
        self._explicit = explicit
        self._values: dict[int, Any] = {}
        self._encodings: list[str] | None = None
        self._full: Dataset | None = None

    def __contains__(self, key: object) -> bool:
        tag = _tag(key)
        return tag is not None and tag in self._elements

    def __getattr__(self, keyword: str) -> Any:
        if keyword.startswith("_") or not keyword[:1].isupper():
            raise AttributeError(keyword)
        if keyword not in self:
            raise AttributeError(f"the data set has no {keyword}")
        return self.get(keyword)

    def get(self, key: str | int, default: Any = None) -> Any:
        tag = _tag(key)
        if tag is None or tag not in self._elements:
            return default
        try:
            return self._values[tag]
        except KeyError:
            pass
        vr, at, length = self._elements[tag]
        if not self._explicit:
            vr = _dictionary_vr(tag)
        if vr not in _CONVERTIBLE or length == UNDEFINED:
            value = self.dataset().get(tag)
            value = value.value if value is not None else None
        else:
            value = self._convert(tag, vr, self._data[at : at + length])
        self._values[tag] = value
        return value

    def _convert(self, tag: int, vr: str, raw_value: bytes) -> Any:
        """pydicom's value for these bytes, from the shared cache when seen before."""
        encodings = self._character_set(tag)
        key = (vr, raw_value, tuple(encodings))
        try:
            return _CONVERTED[key]
        except KeyError:
            pass
        raw = RawDataElement(
            BaseTag(tag), vr, len(raw_value), raw_value, 0, not self._explicit, True
        )
        value = convert_value(vr, raw, encodings)
        if isinstance(value, _IMMUTABLE) and len(raw_value) <= _CONVERTED_LONGEST:
            if len(_CONVERTED) >= _CONVERTED_MAX:
                _CONVERTED.clear()
            _CONVERTED[key] = value
        return value

    def raw(self, key: str | int) -> bytes | None:
        """The value bytes of a top-level element as received (None: absent or undefined
        length), for checks pydicom's lenient decoding would hide."""
        tag = _tag(key)
        if tag is None or tag not in self._elements:
            return None
        _, at, length = self._elements[tag]
        return None if length == UNDEFINED else self._data[at : at + length]

    def encodings(self) -> list[str]:
        """The data set's character sets as Python encodings (PS3.5 6.1)."""
        return self._character_set(-1)

    def _character_set(self, tag: int) -> list[str]:
        if tag == _SPECIFIC_CHARACTER_SET:
            return [default_encoding]
        if self._encodings is None:
            declared = self.get(_SPECIFIC_CHARACTER_SET)
            self._encodings = convert_encodings(declared) if declared else [default_encoding]
        return self._encodings

    def dataset(self) -> Dataset:
        """The whole data set as pydicom reads it (pixel values not decoded)."""
        if self._full is None:
            self._full = dcmread(io.BytesIO(self._data), force=True)
        return self._full


def _tag(key: object) -> int | None:
    if isinstance(key, int):
        return key
    if isinstance(key, str):
        try:
            return _KEYWORD_TAGS[key]
        except KeyError:
            tag = tag_for_keyword(key)
            if tag is not None and len(_KEYWORD_TAGS) < 4096:
                _KEYWORD_TAGS[key] = tag
            return tag
    return None


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"  # private or unknown: read by pydicom, which has the same answer


def pixel_span(data: bytes, pos: int, transfer_syntax: str) -> Span | None:
    """``(start, end)`` of the top-level Pixel Data value in ``data`` (``(0, 0)`` when the data
    set has none), walking from ``pos``, the first data set byte; ``None`` when unsure.

    Encapsulated pixel data ends before its sequence delimiter, as pydicom reads it.
    """
    walked = walk(data, pos, transfer_syntax)
    return walked[0] if walked is not None else None


def walk(data: bytes, pos: int, transfer_syntax: str) -> tuple[Span, TopLevel | None] | None:
    """The pixel span and, when every element is in order and well formed, a ``TopLevel``.

    ``None`` when unsure; a span without ``TopLevel`` when the elements are readable but
    something in them (an odd length, tags out of order) is for the full parse to judge.
    """
    if transfer_syntax == transfer_syntaxes.IMPLICIT_LE:
        explicit = False
    elif transfer_syntax == transfer_syntaxes.EXPLICIT_BE:
        return None
    else:
        explicit = True  # every other syntax (compressed ones too) is explicit VR LE
    try:
        return _walk_top(data, pos, explicit)
    except (_Unsure, struct.error):
        return None


def _walk_top(data: bytes, pos: int, explicit: bool) -> tuple[Span, TopLevel | None]:
    end = len(data)
    span: Span = (0, 0)
    elements: dict[int, tuple[str, int, int]] = {}
    clean, last = True, -1
    while pos < end:
        tag, vr, length, value_at = _header(data, pos, explicit)
        if tag >> 16 == 0xFFFE:
            raise _Unsure
        if tag <= last:
            clean = False  # pydicom sorts; whichever copy it keeps, the full parse judges
        last = tag
        if length == UNDEFINED:
            after = _skip_items(data, value_at, explicit and vr != b"UN", 1)
            if tag in PIXEL_TAGS:
                span = (value_at, after - 8)
                clean = clean and explicit  # implicit VR has no encapsulated pixel data
            elif (vr if explicit else _dictionary_vr(tag)) not in _SEQUENCE_VRS:
                clean = False  # undefined length outside SQ/UN: refused by the full parse
            pos = after
        else:
            pos = value_at + length
            if pos > end:
                raise _Unsure  # truncated: the full parse says so with a status
            if length % 2:
                clean = False  # odd length: refused by the full parse (PS3.5 7.1.1)
            if tag in PIXEL_TAGS:
                span = (value_at, pos)
        elements[tag] = (vr.decode("ascii"), value_at, length)
    return span, (TopLevel(data, elements, explicit) if clean else None)


def _header(data: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """Tag, VR (b"" when implicit), value length and where the value starts."""
    if not explicit:
        group, element, length = _HEAD.unpack_from(data, pos)
        return (group << 16) | element, b"", length, pos + 8
    group, element, vr, short = _EXPLICIT.unpack_from(data, pos)
    if vr in LONG_VRS:
        return (group << 16) | element, vr, _HEAD.unpack_from(data, pos + 4)[2], pos + 12
    if not (vr.isalpha() and vr.isupper()):
        raise _Unsure  # implicit VR inside an explicit syntax: pydicom copes, we do not
    return (group << 16) | element, vr, short, pos + 8


def _skip_items(data: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length value; returns the end of its delimiter."""
    if depth > _MAX_DEPTH:
        raise _Unsure
    end = len(data)
    while pos + 8 <= end:
        group, element, length = _HEAD.unpack_from(data, pos)
        tag = (group << 16) | element
        if tag == _SEQUENCE_END:
            return pos + 8
        if tag != _ITEM:
            raise _Unsure
        if length == UNDEFINED:
            pos = _skip_item_dataset(data, pos + 8, explicit, depth)
        else:
            pos += 8 + length
    raise _Unsure


def _skip_item_dataset(data: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Skip an undefined-length item's elements; returns the end of its delimiter."""
    end = len(data)
    while pos + 8 <= end:
        if _HEAD.unpack_from(data, pos)[:2] == (0xFFFE, 0xE00D):  # item delimiter, no VR
            return pos + 8
        _, vr, length, value_at = _header(data, pos, explicit)
        if length == UNDEFINED:
            pos = _skip_items(data, value_at, explicit and vr != b"UN", depth + 1)
        else:
            pos = value_at + length
    raise _Unsure
