"""Accept-header negotiation for WADO-RS (PS3.18 8.7 Media Types and Transfer Syntaxes).

Clients name what they can read as media ranges with parameters, e.g. OHIF asks for
frames with ``multipart/related; type=application/octet-stream; transfer-syntax=*`` and
dicomweb-client for instances with ``multipart/related; type="application/dicom"``. The
server must answer one of them or 406, never something the client did not ask for.
"""

from __future__ import annotations

import dataclasses

#: PS3.18 Table 8.7.3-2: the default Transfer Syntax when a media range names none.
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
#: The native syntax we answer in. PS3.18 8.6.2: DICOM web services use explicit VR only,
#: Implicit VR Little Endian shall not be used (we sent it when asked, and for '*').
NATIVE = (EXPLICIT_LE,)

#: PS3.18 Table 8.7.3-4: compressed pixel data media types and the syntaxes they carry.
PIXEL_MEDIA: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    ),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
}


@dataclasses.dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``media`` lower-cased, parameters unquoted."""

    media: str
    params: dict[str, str]
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """The ``type`` of a multipart/related range ('' when absent)."""
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (a quoted type may hold ';' or ',')."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse(header: str | None) -> list[MediaRange]:
    """Media ranges best first (by q, then order); no header means ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*", {})]
    ranges: list[tuple[float, int, MediaRange]] = []
    for i, item in enumerate(_split(header, ",")):
        pieces = [p.strip() for p in _split(item, ";")]
        media = pieces[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for p in pieces[1:]:
            key, _, value = p.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((-q, i, MediaRange(media, params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def is_any(media: str) -> bool:
    return media in ("*/*", "*", "multipart/*")
