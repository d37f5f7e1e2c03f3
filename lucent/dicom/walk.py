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
    """The bytes leave the walk unsure; the caller falls back to a full parse. The message
    (built only on this slow path) says where and why, for :func:`salvage`."""


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
        return _walk_top(data, pos, explicit, {})
    except (_Unsure, struct.error):
        return None


def repeated_tag(data: bytes, pos: int, transfer_syntax: str) -> int | None:
    """The first top-level tag that occurs twice (PS3.5 7.1: at most once), else None.

    pydicom keeps one of the copies without a word: a data set with two Pixel Data
    elements holding two images was stored and served the second (outside probe 33).
    Only the slow path asks (the walk's clean path needs strictly ascending tags)."""
    if transfer_syntax == transfer_syntaxes.EXPLICIT_BE:
        return None
    explicit = transfer_syntax != transfer_syntaxes.IMPLICIT_LE
    seen: set[int] = set()
    try:
        while pos < len(data):
            tag, vr, length, value_at = _header(data, pos, explicit)
            if tag in seen:
                return tag
            seen.add(tag)
            if length == UNDEFINED:
                pos = _skip_items(data, value_at, explicit and vr != b"UN", 1, tag)
            else:
                pos = value_at + length
    except (_Unsure, struct.error):
        return None
    return None


class Ahead:
    """Where :func:`pixel_value_ahead` got to in a data set that is still arriving."""

    FOUND, MORE, NO = "found", "more", "no"


def pixel_value_ahead(
    data: bytes | memoryview, pos: int, transfer_syntax: str, *, give_up_after: int = 1 << 20
) -> tuple[str, int, int]:
    """Find a defined-length Pixel Data value from the first bytes of a data set.

    The Store SCP starts sealing the pixel object while the rest of it is still on the wire.
    Returns ``(FOUND, value_at, length)``; ``(MORE, pos, 0)`` when the bytes so far end
    before it (call again from ``pos`` with more); ``(NO, 0, 0)`` when this data set cannot
    be streamed (encapsulated or unreadable here: the normal path handles it). Like
    :func:`walk` it is a hint that the full parse checks.
    """
    if transfer_syntax not in (transfer_syntaxes.IMPLICIT_LE, transfer_syntaxes.EXPLICIT_LE):
        return Ahead.NO, 0, 0
    explicit = transfer_syntax == transfer_syntaxes.EXPLICIT_LE
    end = len(data)
    try:
        while pos + 12 <= end:
            tag, vr, length, value_at = _header(data, pos, explicit)
            if tag >> 16 == 0xFFFE:
                return Ahead.NO, 0, 0
            if tag in PIXEL_TAGS:
                if length == UNDEFINED:
                    return Ahead.NO, 0, 0
                return Ahead.FOUND, value_at, length
            if length != UNDEFINED:
                pos = value_at + length
                continue
            try:  # a sequence: only once all of it is here
                pos = _skip_items(data, value_at, explicit and vr != b"UN", 1, tag)
            except (_Unsure, struct.error):
                if end - pos > give_up_after:
                    return Ahead.NO, 0, 0
                return Ahead.MORE, pos, 0
    except (_Unsure, struct.error):
        return Ahead.NO, 0, 0
    return Ahead.MORE, pos, 0


def salvage(data: bytes, pos: int, transfer_syntax: str) -> tuple[TopLevel | None, str | None]:
    """What a data set that pydicom could not read still tells: its top-level elements up to
    the first one the walk could not get past, and why it stopped there (None: it did not).

    Issue 2 (Conformance 4.1.3.2) files the placeholder under the instance's patient and
    study: a stream cut inside its last fragment, encapsulated Pixel Data without its
    sequence delimiter or sequences nested deeper than pydicom's recursion allows still
    carry a readable Patient ID and Study UID ahead of the damage. Slow path only.
    """
    if transfer_syntax == transfer_syntaxes.EXPLICIT_BE:
        return None, None
    explicit = transfer_syntax != transfer_syntaxes.IMPLICIT_LE
    elements: dict[int, tuple[str, int, int]] = {}
    stopped: str | None = None
    try:
        _walk_top(data, pos, explicit, elements)
    except _Unsure as exc:
        stopped = str(exc) or None
    except struct.error:
        stopped = "data set ends inside an element header"
    except RecursionError:
        stopped = "sequences nested too deep to read"
    return (TopLevel(data, elements, explicit) if elements else None), stopped


def tag_name(tag: int) -> str:
    """How a reason names an element (failure paths only)."""
    return "Pixel Data" if tag == 0x7FE00010 else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _item_name(owner: int, number: int) -> str:
    """Item ``number`` (1-based) of ``owner``; Pixel Data's are its Basic Offset Table and
    fragments (PS3.5 A.4)."""
    if owner != 0x7FE00010:
        return f"item {number}"
    return "Basic Offset Table" if number == 1 else f"fragment {number - 1}"


def _walk_top(
    data: bytes, pos: int, explicit: bool, elements: dict[int, tuple[str, int, int]]
) -> tuple[Span, TopLevel | None]:
    """Walk the top level, filling ``elements`` as it goes (what was walked stays there when
    it raises ``_Unsure``)."""
    end = len(data)
    span: Span = (0, 0)
    clean, last = True, -1
    while pos < end:
        tag, vr, length, value_at = _header(data, pos, explicit)
        if tag >> 16 == 0xFFFE:
            raise _Unsure(f"item tag {tag_name(tag)} at the top level of the data set")
        if tag <= last:
            clean = False  # pydicom sorts; whichever copy it keeps, the full parse judges
        last = tag
        if length == UNDEFINED:
            after = _skip_items(data, value_at, explicit and vr != b"UN", 1, tag)
            if tag in PIXEL_TAGS:
                span = (value_at, after - 8)
                clean = clean and explicit  # implicit VR has no encapsulated pixel data
            elif (vr if explicit else _dictionary_vr(tag)) not in _SEQUENCE_VRS:
                clean = False  # undefined length outside SQ/UN: refused by the full parse
            pos = after
        else:
            pos = value_at + length
            if pos > end:  # truncated: the full parse says so with a status
                raise _Unsure(f"{tag_name(tag)} truncated: {end - value_at} of {length} bytes")
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
        # implicit VR inside an explicit syntax: pydicom copes, we do not
        raise _Unsure(f"element {tag_name((group << 16) | element)} has no explicit VR")
    return (group << 16) | element, vr, short, pos + 8


def _skip_items(data: bytes, pos: int, explicit: bool, depth: int, owner: int) -> int:
    """Skip the items of ``owner``'s undefined-length value; returns the end of its delimiter."""
    if depth > _MAX_DEPTH:
        raise _Unsure(f"{tag_name(owner)} nests sequences over {_MAX_DEPTH} levels deep")
    end = len(data)
    count = 0
    while pos + 8 <= end:
        group, element, length = _HEAD.unpack_from(data, pos)
        tag = (group << 16) | element
        if tag == _SEQUENCE_END:
            return pos + 8
        if tag != _ITEM:
            raise _Unsure(f"{tag_name(tag)} inside {tag_name(owner)} where an item belongs")
        count += 1
        if length == UNDEFINED:
            pos = _skip_item_dataset(data, pos + 8, explicit, depth, owner)
        else:
            pos += 8 + length
            if pos > end:
                have = end - (pos - length)
                where = _item_name(owner, count)
                raise _Unsure(f"{tag_name(owner)} truncated in {where}: {have} of {length} bytes")
    raise _Unsure(f"{tag_name(owner)} has no sequence delimiter (FFFE,E0DD) after {count} items")


def _skip_item_dataset(data: bytes, pos: int, explicit: bool, depth: int, owner: int) -> int:
    """Skip an undefined-length item's elements; returns the end of its delimiter."""
    end = len(data)
    while pos + 8 <= end:
        if _HEAD.unpack_from(data, pos)[:2] == (0xFFFE, 0xE00D):  # item delimiter, no VR
            return pos + 8
        tag, vr, length, value_at = _header(data, pos, explicit)
        if length == UNDEFINED:
            pos = _skip_items(data, value_at, explicit and vr != b"UN", depth + 1, tag)
        else:
            pos = value_at + length
    raise _Unsure(f"an item of {tag_name(owner)} has no item delimiter (FFFE,E00D)")


_ITEM_HEAD = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_DELIMITER_HEAD = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)


def pixel_encoding_problem(data: bytes, start: int, end: int, encapsulated: bool) -> str | None:
    """Why the top-level pixel value ``data[start:end]`` is not encoded as its transfer
    syntax requires (PS3.5 A.4), or None.

    An encapsulated syntax needs Pixel Data of undefined length: a Basic Offset Table item,
    then at least one fragment, each an item (FFFE,E000) of even length, then the sequence
    delimiter (FFFE,E0DD); a native syntax needs a defined length. ``start`` is where the
    value begins (its element header lies just before it), ``end`` where it ends (for an
    encapsulated value, where the delimiter begins). Reads item headers only: no frame is
    decoded and no pixel byte copied (the ingest hot path).
    """
    if end <= start or start < 12:
        return None
    undefined = data[start - 4 : start] == b"\xff\xff\xff\xff"
    if not encapsulated:
        if undefined:
            return "Pixel Data encapsulated (undefined length) in a native syntax (PS3.5 A.4)"
        return None
    if not undefined:
        if _HEAD.unpack_from(data, start - 12)[:2] != (0x7FE0, 0x0010):
            return None  # Float/Double Float Pixel Data: judged by the pixel module checks
        return (
            f"Pixel Data has defined length {end - start}; an encapsulated syntax needs "
            "items (PS3.5 A.4)"
        )
    pos, count = start, 0
    while pos < end:
        if end - pos < 8:
            return f"Pixel Data {_item_name(0x7FE00010, count + 1)} header cut short"
        if data[pos : pos + 4] != _ITEM_HEAD:
            group, element, _ = _HEAD.unpack_from(data, pos)
            tag = tag_name((group << 16) | element)
            return f"{tag} inside Pixel Data where an item belongs (PS3.5 A.4)"
        length = _HEAD.unpack_from(data, pos)[2]
        count += 1
        if length % 2:  # UNDEFINED (0xFFFFFFFF) is odd too
            where = _item_name(0x7FE00010, count)
            return f"Pixel Data {where} has odd length {length} (PS3.5 A.4: even)"
        pos += 8 + length
        if pos > end:
            return (
                f"Pixel Data {_item_name(0x7FE00010, count)}: {length} bytes, only "
                f"{end - pos + length} before the sequence delimiter"
            )
    if count < 2:
        return "Pixel Data has a Basic Offset Table item but no fragment (PS3.5 A.4)"
    if data[end : end + 4] != _DELIMITER_HEAD:
        return "Pixel Data has no sequence delimiter (FFFE,E0DD)"
    return None
