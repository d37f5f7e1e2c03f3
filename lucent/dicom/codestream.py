"""Structural checks of encapsulated pixel data: frames and codestream headers (PS3.5 A.4).

Issue 2 (Conformance 4.1.3.2): an image whose pixel data cannot be understood is not
imported. For native syntaxes the length tells; an encapsulated frame is only known to be
readable when its codestream's header says what the Image Pixel module says. This reads
item headers and the first bytes of each frame's first fragment (JPEG markers up to the
SOF, the JPEG 2000 SIZ segment, the RLE header): no frame is decoded and no pixel byte
copied, so it costs microseconds per frame on the ingest hot path.

It refuses only what is certain: precision is never compared (real encoders write 12-bit
data as 16-bit JPEG and the reverse), a header that runs past a fragment while the frame
may continue in the next one is left alone, and video syntaxes are not looked at.

Statuses (PS3.4 B.2.3): a frame whose codestream has no readable header "cannot be
understood" (C000); a readable header or offset table that disagrees with Rows, Columns,
Samples per Pixel, Bits Allocated or Number of Frames is the Image Pixel module not matching
its pixel data (A903), as for a native pixel data length. Reasons put the numbers first: the
Error Comment keeps 64 characters.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from lucent.net import status

JPEG: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # Baseline (Process 1)
        "1.2.840.10008.1.2.4.51",  # Extended (Process 2 & 4)
        "1.2.840.10008.1.2.4.57",  # Lossless (Process 14)
        "1.2.840.10008.1.2.4.70",  # Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    }
)
JPEG_2000: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)
RLE = "1.2.840.10008.1.2.5"

Problem = tuple[int, str]
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Geometry:
    """What the Image Pixel module says every frame holds (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    frames: int = 1


class _Frame(NamedTuple):
    """A frame's first fragment (value offset and length in the buffer), whether the frame
    is known to be that one fragment only, and the length of all its fragments (if known)."""

    number: int
    at: int
    length: int
    whole: bool
    total: int | None


class _Unknown(Exception):
    """The header runs past a fragment the frame may continue after: cannot tell."""


def frame_problem(ds: Any) -> str | None:
    """Why a data set's encapsulated frames cannot be handed to a decoder (``check`` on its
    Pixel Data), or None. Decoders run in-process and GDCM aborts the whole process on some
    malformed streams (an uncaught C++ exception): instances archived before these checks
    existed are screened here before any decode."""
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if _reader(ts) is None or "PixelData" not in ds:
        return None
    try:
        geometry = Geometry(
            int(ds.Rows),
            int(ds.Columns),
            int(ds.get("SamplesPerPixel", 1) or 1),
            int(ds.BitsAllocated),
            int(ds.get("NumberOfFrames", 1) or 1),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        return f"Image Pixel module unreadable: {exc}"
    value = ds.PixelData

    def raw(keyword: str) -> bytes | None:
        v = ds.get(keyword)
        return bytes(v) if isinstance(v, bytes | bytearray) else None

    problem = check(
        value,
        0,
        len(value),
        ts,
        geometry,
        raw("ExtendedOffsetTable"),
        raw("ExtendedOffsetTableLengths"),
    )
    return None if problem is None else problem[1]


def check(
    buf: Buffer,
    start: int,
    end: int,
    transfer_syntax: str,
    geometry: Geometry,
    extended_offsets: bytes | None = None,
    extended_lengths: bytes | None = None,
) -> Problem | None:
    """Why the encapsulated Pixel Data ``buf[start:end]`` (the items from the Basic Offset
    Table up to the sequence delimiter, already walked by ``walk.pixel_encoding_problem``)
    cannot be the frames the Image Pixel module describes, or None.

    Only the JPEG family, JPEG 2000 (and HTJ2K) and RLE are looked at: video streams
    (MPEG-2, H.264, HEVC) carry every frame in one stream and are left as they are.
    """
    reader = _reader(transfer_syntax)
    if reader is None:
        return None
    items = _items(buf, start, end)
    if items is None or len(items) < 2:
        return None  # not well formed: the encapsulation walk reports it
    frames = _frames(buf, items, geometry.frames, extended_offsets, extended_lengths)
    if not isinstance(frames, list):
        return frames
    seen: list[bytes] = []  # a header already found good (frames of one encoder repeat it)
    for frame in frames:
        try:
            problem = reader(buf, frame, geometry, seen)
        except _Unknown:
            problem = None
        if problem is not None:
            return problem
    return None


Reader = Callable[[Buffer, _Frame, Geometry, list[bytes]], Problem | None]


def _reader(ts: str) -> Reader | None:
    if ts in JPEG:
        return _jpeg
    if ts in JPEG_2000:
        return _jpeg_2000
    if ts == RLE:
        return _rle
    return None


_ITEM = struct.Struct("<HHL")


def _items(buf: Buffer, start: int, end: int) -> list[tuple[int, int]] | None:
    """(value offset, length) of each item: the Basic Offset Table, then the fragments."""
    items: list[tuple[int, int]] = []
    pos = start
    while pos + 8 <= end:
        group, element, length = _ITEM.unpack_from(buf, pos)
        if (group, element) != (0xFFFE, 0xE000) or pos + 8 + length > end:
            return None
        items.append((pos + 8, length))
        pos += 8 + length
    return items if pos == end else None


def _frames(
    buf: Buffer,
    items: list[tuple[int, int]],
    number_of_frames: int,
    extended: bytes | None,
    extended_lengths: bytes | None = None,
) -> list[_Frame] | Problem:
    """Each frame's first fragment, from the offset tables (PS3.5 A.4, PS3.3 C.7.6.3.1.8)
    or, without them, where the fragment count alone tells.

    An Extended Offset Table describes frames of one fragment each (PS3.3 C.7.6.3.1.8), and
    its lengths are those fragments' lengths: decoders slice the frames by it, and a table
    whose lengths took in item headers handed GDCM bytes that aborted the whole server
    process (outside probe 45)."""
    (bot_at, bot_length), fragments = items[0], items[1:]
    count = len(fragments)
    if extended and len(extended) % 8 == 0:
        offsets = list(struct.unpack(f"<{len(extended) // 8}Q", extended))
        table = "Extended Offset Table"
    elif bot_length:
        if bot_length % 4:
            return (
                status.CANNOT_UNDERSTAND,
                f"Basic Offset Table of {bot_length} bytes, not 4 per frame (PS3.5 A.4)",
            )
        offsets = list(struct.unpack_from(f"<{bot_length // 4}L", buf, bot_at))
        table = "Basic Offset Table"
    else:
        offsets = []
        table = ""
    if table:
        if len(offsets) < number_of_frames:
            return (
                status.DATASET_PIXEL_INCONSISTENT,
                f"{len(offsets)} frames in the {table}, NumberOfFrames {number_of_frames}",
            )
        # offsets count from the first fragment's item tag
        first_item = fragments[0][0] - 8
        index = {at - 8 - first_item: i for i, (at, _) in enumerate(fragments)}
        starts: list[int] = []
        for n, offset in enumerate(offsets, start=1):
            i = index.get(offset)
            if i is None or (starts and i <= starts[-1]):
                return (
                    status.CANNOT_UNDERSTAND,
                    f"{table} frame {n}: offset {offset} is not a fragment (PS3.5 A.4)",
                )
            starts.append(i)
        if starts[0] != 0:
            return (
                status.CANNOT_UNDERSTAND,
                f"{table} frame 1: offset {offsets[0]}, must be 0 (PS3.5 A.4)",
            )
        bounds = [*starts, count]
        if table == "Extended Offset Table":
            problem = _extended_lengths(fragments, starts, bounds, extended_lengths)
            if problem is not None:
                return problem
        return [
            _frame(fragments, n, bounds[n - 1], bounds[n], known=True)
            for n in range(1, len(starts) + 1)
        ]
    if count < number_of_frames:
        # PS3.5 A.4: a fragment holds data of one frame only, so each frame has at least one
        return (
            status.DATASET_PIXEL_INCONSISTENT,
            f"{count} fragments for NumberOfFrames {number_of_frames} (PS3.5 A.4)",
        )
    if count == number_of_frames:  # one fragment each
        return [_frame(fragments, n, n - 1, n, known=True) for n in range(1, number_of_frames + 1)]
    if number_of_frames == 1:
        return [_frame(fragments, 1, 0, count, known=True)]
    # several frames over more fragments and no table: only the first one's start is sure
    return [_frame(fragments, 1, 0, count, known=False)]


def _extended_lengths(
    fragments: list[tuple[int, int]],
    starts: list[int],
    bounds: list[int],
    lengths: bytes | None,
) -> Problem | None:
    """Extended Offset Table frames: one fragment each, of the length the table gives (an
    odd frame's fragment carries one byte of padding)."""
    if lengths is None or len(lengths) % 8 or len(lengths) // 8 < len(starts):
        return (
            status.CANNOT_UNDERSTAND,
            "Extended Offset Table without a length per frame (PS3.3 C.7.6.3.1.8)",
        )
    table = struct.unpack(f"<{len(lengths) // 8}Q", lengths)
    for n, first in enumerate(starts, start=1):
        if bounds[n] - first != 1:
            return (
                status.CANNOT_UNDERSTAND,
                f"Extended Offset Table frame {n} spans {bounds[n] - first} fragments, "
                "must be one (PS3.3 C.7.6.3.1.8)",
            )
        size = fragments[first][1]
        if table[n - 1] not in (size, size - 1):
            return (
                status.CANNOT_UNDERSTAND,
                f"Extended Offset Table frame {n}: length {table[n - 1]}, "
                f"its fragment has {size} bytes",
            )
    return None


def _frame(
    fragments: list[tuple[int, int]], n: int, first: int, after: int, *, known: bool
) -> _Frame:
    at, length = fragments[first]
    if not known:
        return _Frame(n, at, length, False, None)
    if after - first == 1:
        return _Frame(n, at, length, True, length)
    return _Frame(n, at, length, False, sum(size for _, size in fragments[first:after]))


def _short(frame: _Frame, what: str) -> Problem:
    """The header ends with the frame's data: refused when the frame is that one fragment,
    left alone when it may go on in the next."""
    if not frame.whole:
        raise _Unknown
    return status.CANNOT_UNDERSTAND, f"frame {frame.number}: {what}"


def _mismatch(
    frame: _Frame, codec: str, size: tuple[int, int, int], g: Geometry, *, dnl: bool = False
) -> Problem | None:
    """The codestream's rows, columns and components against the Image Pixel module's;
    ``dnl``: a height of 0 is defined later by a DNL marker (T.81 B.2.2, B.2.5)."""
    rows, columns, samples = size
    if (columns, samples) == (g.columns, g.samples) and (rows == g.rows or (dnl and rows == 0)):
        return None
    return (
        status.DATASET_PIXEL_INCONSISTENT,
        f"frame {frame.number}: {codec} {rows}x{columns}x{samples}, Image Pixel module "
        f"{g.rows}x{g.columns}x{g.samples} (RxCxS)",
    )


# ---------------------------------------------------------------------------------------
# JPEG (ITU-T T.81 B.1, B.2) and JPEG-LS (ITU-T T.87 C.2)

#: Frame headers: SOF0-3, 5-7, 9-11, 13-15 (T.81 B.1.1.3), DHP (hierarchical, same layout)
#: and JPEG-LS SOF55 (T.87 C.2.2).
_SOF = frozenset((*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)))
_SOF |= frozenset((*range(0xCD, 0xD0), 0xDE, 0xF7))
#: Markers with no length (T.81 B.1.1.3): TEM and RSTm.
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
_FRAME_HEADER = struct.Struct(">HBHHB")  # Lf, P, Y, X, Nf


def _jpeg(buf: Buffer, frame: _Frame, g: Geometry, seen: list[bytes]) -> Problem | None:
    """SOI, then marker segments by their lengths up to the scan header (SOS): the frame
    header's size and component count must be the Image Pixel module's, and every byte
    up to the scan must be a marker segment (8 stray bytes before the SOS, archived, aborted
    the server in GDCM at the first frame request: outside probe 45). A frame that starts
    with the very bytes of a header found good before (``seen``) is good: a multi-frame's
    frames share their tables, and one comparison costs less than the walk."""
    at, end = frame.at, frame.at + frame.length
    if seen and buf[at : at + len(seen[0])] == seen[0]:
        return None
    if frame.length < 2 or buf[at] != 0xFF or buf[at + 1] != 0xD8:
        if frame.length < 2:
            return _short(frame, "empty, no JPEG SOI marker (FFD8)")
        return status.CANNOT_UNDERSTAND, f"frame {frame.number}: no JPEG SOI marker (FFD8)"
    pos = at + 2
    sof: int | None = None
    while True:
        if pos >= end:
            return _short(frame, "JPEG header ends before its scan (SOS)")
        if buf[pos] != 0xFF:
            return (
                status.CANNOT_UNDERSTAND,
                f"frame {frame.number}: byte {pos - at} is {buf[pos]:02X}, not a JPEG marker",
            )
        while pos < end and buf[pos] == 0xFF:  # fill bytes (T.81 B.1.1.2)
            pos += 1
        if pos >= end:
            return _short(frame, "JPEG header ends before its scan (SOS)")
        code = buf[pos]
        pos += 1
        if code in _STANDALONE:
            continue
        if code in (0x00, 0xD8, 0xD9) or (code == 0xDA and sof is None):
            return (
                status.CANNOT_UNDERSTAND,
                f"frame {frame.number}: JPEG marker FF{code:02X} before any SOF (T.81 B.2)",
            )
        if pos + 2 > end:
            return _short(frame, f"JPEG marker FF{code:02X} cut short")
        length = (buf[pos] << 8) | buf[pos + 1]
        if length < 2:
            return (
                status.CANNOT_UNDERSTAND,
                f"frame {frame.number}: JPEG marker FF{code:02X} length {length} (T.81 B.1.1.4)",
            )
        if code in _SOF and sof is None:
            if length < 8:
                return (
                    status.CANNOT_UNDERSTAND,
                    f"frame {frame.number}: JPEG SOF FF{code:02X} length {length} (T.81 B.2.2)",
                )
            if pos + 8 > end:
                return _short(frame, f"JPEG SOF FF{code:02X} cut short")
            _, _, rows, columns, components = _FRAME_HEADER.unpack_from(buf, pos)
            codec = "JPEG-LS" if code == 0xF7 else "JPEG"
            problem = _mismatch(frame, codec, (rows, columns, components), g, dnl=code != 0xF7)
            if problem is not None:
                return problem
            sof = code
        if pos + length > end:
            return _short(frame, f"JPEG marker FF{code:02X}: {length} bytes, {end - pos} left")
        pos += length
        if code == 0xDA:  # the scan header: entropy-coded data follows
            if not seen:
                seen.append(bytes(buf[at:pos]))
            return None


# ---------------------------------------------------------------------------------------
# JPEG 2000 (ISO/IEC 15444-1 A.5.1 SIZ, I.5 JP2 boxes)

_SIZ = struct.Struct(">HHHLLLL")  # SIZ marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _jpeg_2000(buf: Buffer, frame: _Frame, g: Geometry, seen: list[bytes]) -> Problem | None:
    """A codestream (SOC, then SIZ) or a JP2 file whose contiguous codestream box holds one:
    the SIZ image size and component count must be the Image Pixel module's."""
    at, end = frame.at, frame.at + frame.length
    head = bytes(buf[at : min(at + 12, end)])
    if head == _JP2_SIGNATURE:
        found = _jp2_codestream(buf, frame, at + 12, end)
        if isinstance(found, tuple):
            return found
        at = found
    elif len(head) < 12 and _JP2_SIGNATURE.startswith(head):
        return _short(frame, "JP2 signature cut short")
    if end - at < 2 or buf[at] != 0xFF or buf[at + 1] != 0x4F:
        if end - at < 2:
            return _short(frame, "no JPEG 2000 SOC marker (FF4F)")
        return (
            status.CANNOT_UNDERSTAND,
            f"frame {frame.number}: no JPEG 2000 SOC marker (FF4F) or JP2 signature",
        )
    if end - at < 42:
        return _short(frame, "JPEG 2000 SIZ segment cut short")
    marker, length, _, x, y, x0, y0 = _SIZ.unpack_from(buf, at + 2)
    if marker != 0xFF51 or length < 41:
        return (
            status.CANNOT_UNDERSTAND,
            f"frame {frame.number}: JPEG 2000 SOC not followed by SIZ (15444-1 A.5.1)",
        )
    components = struct.unpack_from(">H", buf, at + 40)[0]
    return _mismatch(frame, "J2K", (y - y0, x - x0, components), g)


def _jp2_codestream(buf: Buffer, frame: _Frame, pos: int, end: int) -> int | Problem:
    """Where the codestream of the first contiguous codestream box (jp2c) starts."""
    while True:
        if end - pos < 8:
            return _short(frame, "JP2 file without a codestream box (jp2c)")
        size, kind = struct.unpack_from(">L4s", buf, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                return _short(frame, "JP2 box header cut short")
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            header = 16
        if kind == b"jp2c":
            return pos + header
        if size == 0:  # to the end of the file: the last box, and not a codestream
            return _short(frame, "JP2 file without a codestream box (jp2c)")
        if size < header:
            return (
                status.CANNOT_UNDERSTAND,
                f"frame {frame.number}: JP2 box length {size} (15444-1 I.4)",
            )
        pos += size


# ---------------------------------------------------------------------------------------
# RLE (PS3.5 Annex G)

_RLE_HEADER = struct.Struct("<16L")


def _rle(buf: Buffer, frame: _Frame, g: Geometry, seen: list[bytes]) -> Problem | None:
    """The 64-byte header (PS3.5 G.5): one segment per sample byte (G.2), the first at 64,
    each after the one before and inside the frame."""
    if frame.length < 64:
        return _short(frame, f"RLE header cut short ({frame.length} of 64 bytes)")
    count, *offsets = _RLE_HEADER.unpack_from(buf, frame.at)
    if not 1 <= count <= 15:
        return (
            status.CANNOT_UNDERSTAND,
            f"frame {frame.number}: RLE header: {count} segments, 1 to 15 (PS3.5 G.5)",
        )
    need = g.samples * ((g.bits_allocated + 7) // 8)
    if count != need:
        samples = f"{g.samples} sample{'s' if g.samples > 1 else ''}"
        return (
            status.DATASET_PIXEL_INCONSISTENT,
            f"frame {frame.number}: RLE {count} segments, {samples} x "
            f"{g.bits_allocated} bits need {need} (PS3.5 G.2)",
        )
    size = frame.total
    previous = 63
    for n, offset in enumerate(offsets[:count], start=1):
        if offset <= previous or (n == 1 and offset != 64) or (size is not None and offset >= size):
            return (
                status.CANNOT_UNDERSTAND,
                f"frame {frame.number}: RLE segment {n} at byte {offset} of "
                f"{size if size is not None else '?'} (PS3.5 G.5)",
            )
        previous = offset
    return None


# ---------------------------------------------------------------------------------------
# JPEG 2000 wavelet: reversible or not (ISO/IEC 15444-1 A.6.1, A.6.2, Table A.20)

_COD, _COC, _SOT, _SOD, _EOC = 0xFF52, 0xFF53, 0xFF90, 0xFF93, 0xFFD9


def j2k_irreversible(buf: Buffer, start: int = 0, end: int | None = None) -> bool | None:
    """Whether the JPEG 2000 codestream (or JP2 file) at ``buf[start:end]`` codes any
    component with the irreversible 9/7 wavelet: the transformation byte of the COD (FF52)
    and COC (FF53) segments of its main header and of the tile-part headers that lie in
    the buffer (Table A.20: 0 = 9-7 irreversible, 1 = 5-3 reversible; a Part 2 kernel (2..)
    is not known to be reversible, so counts as irreversible). None when the main header
    cannot be read (no SOC/SIZ/COD).

    Transfer syntax 1.2.840.10008.1.2.4.91 carries either: only the codestream tells
    whether the image lost information (probe 59: a reversible .91 showed the "JPG"
    badge). A reversible codestream whose code-blocks were truncated (rate control) is
    lossy too and no header says so: Lossy Image Compression "01" covers that."""
    end = len(buf) if end is None else min(end, len(buf))
    at = start
    if bytes(buf[at : at + 12]) == _JP2_SIGNATURE:
        found = _jp2_codestream(buf, _Frame(1, at, end - at, True, None), at + 12, end)
        if isinstance(found, tuple):
            return None
        at = found
    if end - at < 42 or buf[at] != 0xFF or buf[at + 1] != 0x4F:
        return None
    marker, length = struct.unpack_from(">HH", buf, at + 2)
    if marker != 0xFF51 or length < 41:
        return None
    components = struct.unpack_from(">H", buf, at + 40)[0]
    component_bytes = 1 if components < 257 else 2  # Ccoc (A.6.2)
    transforms: list[int] = []
    main = _header_transforms(buf, at + 2, end, component_bytes, transforms)
    if main is None or not transforms:
        return None  # COD is required in the main header (A.6.1)
    pos = main
    while pos + 12 <= end and struct.unpack_from(">H", buf, pos)[0] == _SOT:
        # SOT: Lsot (10), Isot, Psot (tile-part length from this marker), TPsot, TNsot
        psot = struct.unpack_from(">L", buf, pos + 6)[0]
        _header_transforms(buf, pos + 12, min(end, pos + psot) if psot else end,
                           component_bytes, transforms)  # fmt: skip
        if psot < 14:
            break  # 0: the last tile-part, to the EOC
        pos += psot
    return any(t != 1 for t in transforms)


def _header_transforms(
    buf: Buffer, pos: int, end: int, component_bytes: int, transforms: list[int]
) -> int | None:
    """Walk marker segments from ``pos`` collecting COD/COC transformation bytes; the
    offset of the SOT (main header) or SOD (tile-part header) that ends them, else None."""
    while pos + 4 <= end:
        marker, length = struct.unpack_from(">HH", buf, pos)
        if marker in (_SOT, _SOD, _EOC):
            return pos
        if marker < 0xFF00 or length < 2:
            return None
        if marker == _COD and length >= 12 and pos + 14 <= end:
            transforms.append(buf[pos + 13])
        elif marker == _COC and length >= 8 + component_bytes and pos + 10 + component_bytes <= end:
            transforms.append(buf[pos + 9 + component_bytes])
        pos += 2 + length
    return None


def pixel_data_irreversible(buf: Buffer, start: int = 0, end: int | None = None) -> bool | None:
    """``j2k_irreversible`` over encapsulated JPEG 2000 Pixel Data ``buf[start:end]`` (its
    items, PS3.5 A.4): True when any frame's codestream is irreversible, False when every
    readable one is reversible, None when none could be read. Every fragment that opens a
    codestream (SOC or JP2 signature) is looked at: the offset tables are not needed."""
    end = len(buf) if end is None else min(end, len(buf))
    pos = start
    verdict: bool | None = None
    first = True
    while pos + 8 <= end:
        group, element, length = _ITEM.unpack_from(buf, pos)
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            break
        value = pos + 8
        if not first:  # the first item is the Basic Offset Table
            head = bytes(buf[value : value + 2])
            if head == b"\xff\x4f" or bytes(buf[value : value + 12]) == _JP2_SIGNATURE:
                found = j2k_irreversible(buf, value, min(end, value + length))
                if found:
                    return True
                if found is not None:
                    verdict = False
        first = False
        pos = value + length
    return verdict


def dataset_irreversible(ds: Any) -> bool | None:
    """``pixel_data_irreversible`` of a data set's Pixel Data when its transfer syntax is
    a JPEG 2000 one; None otherwise or when it has no pixel data (read without it)."""
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if ts not in JPEG_2000 or "PixelData" not in ds:
        return None
    value = ds.PixelData
    if not isinstance(value, bytes | bytearray | memoryview):
        return None
    return pixel_data_irreversible(value)
