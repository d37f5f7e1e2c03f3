"""Character sets on top of pydicom (Conformance 6, PS3.5 6.1): one repair and one check.

- pydicom hands "ISO 2022 IR 58" (GB2312) fragments to Python's gb2312 codec with the
  escape sequence still in front, believing Python strips it as it does for ISO 2022 JP:
  a name read "Zhang^SanFeng=\\x1b$)A张^\\x1b$)A三丰", searching "张*" found nothing and our
  C-FIND answers carried stray ESC bytes (outside probe). Python's gb2312 is EUC-CN, i.e.
  exactly the G1 bytes that follow ESC $ ) A, so pydicom must strip (and, encoding, add)
  the escape itself like for every other code extension. ``install`` does that; importing
  this module installs it.
- pydicom reads bytes that are invalid in the declared character set with replacement
  characters and a warning, never an error: "M\\xfcller" declared as ISO_IR 192 was indexed
  as "M�ller", answered 0000. ``undecodable`` says why a value cannot be read strictly, so
  validation refuses it (Conformance 4.1.3.2: invalid values are not imported).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

from pydicom import charset as _charset

ESC = 0x1B
_FRAGMENT = re.compile(rb"(^[^\x1b]+|\x1b[^\x1b]*)")
PN_DELIMITERS = frozenset(b"^=")
"""Bytes that end a code extension in a PN value (PS3.5 6.1.2.5.3), besides control codes."""
TEXT_DELIMITERS = frozenset(b"\\")
"""Bytes that end a code extension in other text values: the value separator."""
_CONTROL = frozenset(b"\r\n\t\f")


def install() -> None:
    """Let pydicom strip and add the GB2312 escape sequence itself (see module docstring)."""
    _charset.handled_encodings = tuple(
        name for name in _charset.handled_encodings if name != "iso_ir_58"
    )


def undecodable(
    value: bytes, encodings: Sequence[str], delimiters: frozenset[int] = PN_DELIMITERS
) -> str | None:
    """Why ``value`` cannot be decoded strictly with the data set's (Python) ``encodings``,
    or None when it can. An unknown character set term is not reported here: pydicom reads
    it leniently as the default repertoire, and so do we."""
    if not encodings:
        encodings = [_charset.default_encoding]
    ends = delimiters | _CONTROL
    encoding = encodings[0]
    try:
        for fragment in _FRAGMENT.findall(value):
            if fragment[0] != ESC:
                encoding = encodings[0]
                fragment.decode(encoding)
                continue
            length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
            escape = fragment[:length]
            encoding = _charset.CODES_TO_ENCODINGS.get(escape, "")
            if encoding not in encodings and encoding != _charset.default_encoding:
                return (
                    f"escape sequence {escape!r} selects a character set (0008,0005) does not list"
                )
            if encoding in _charset.handled_encodings:  # Python reads the escapes itself
                fragment.decode(encoding)
                continue
            body = fragment[length:]
            cut = next((i for i, byte in enumerate(body) if byte in ends), len(body))
            body[:cut].decode(encoding)
            encoding = encodings[0]
            body[cut:].decode(encoding)
    except LookupError:
        return None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.end]
        return f"bytes {bad.hex(' ')} are not valid in character set {_term(encoding)}"
    return None


def _term(encoding: str) -> str:
    """The DICOM term for a Python encoding name, for messages."""
    wanted = _codec(encoding)
    for term, python_name in _charset.python_encoding.items():
        if term and _codec(python_name) == wanted:
            return term
    return encoding


def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


install()
