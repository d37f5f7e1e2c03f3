"""Read and check one received SOP Instance before import (Conformance 4.1.3.2).

Pure functions over bytes: no I/O, no database. ``parse`` never raises on bad input; it
returns a ``Refusal`` with the DICOM status and a reason a person can act on. Known traps it
guards against: pydicom inflates deflated data without a size limit, and ``dcmread`` can
raise raw ``struct.error``/``EOFError`` on a few bytes of junk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import UID

from lucent.dicom import charsets, codestream, sop_classes, temporal, transfer_syntaxes, walk
from lucent.net import status

log = logging.getLogger("lucent.dicom")

PIXEL_TAGS = walk.PIXEL_TAGS  # plain ints: cheap lookups
# What ingest reads values from: pydicom's data set, or the walked top level (same values).
DataSet = Dataset | walk.TopLevel
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    # Whatever identifying values could be read, so the placeholder lands under the right
    # patient/study (or under "unknown").
    ids: dict[str, str] = field(default_factory=dict)


@dataclass
class Parsed:
    """A readable instance: its data set (pixel values not decoded), bytes and pixel span."""

    dataset: DataSet
    file_bytes: bytes
    transfer_syntax: str
    pixel_start: int  # offset of the pixel data value within file_bytes (0 if none)
    pixel_end: int
    transcoded: bool = False
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def lossy(self) -> bool:
        """Lossy-compressed now or at any time before (``transfer_syntaxes.is_lossy``, which
        the workstation's badge uses too): Lossy Image Compression "01", an always-lossy
        syntax, or a JPEG 2000 codestream with the irreversible wavelet. A JPEG 2000 one
        whose codestream cannot be read counts as lossy unless the attribute says "00"."""
        ts = self.transfer_syntax
        irreversible = None
        if ts in transfer_syntaxes.CODESTREAM_DECIDES and self.pixel_end > self.pixel_start:
            irreversible = codestream.pixel_data_irreversible(
                self.file_bytes, self.pixel_start, self.pixel_end
            )
        flag = self.dataset.get("LossyImageCompression", "")
        return transfer_syntaxes.is_lossy(ts, flag, irreversible) is not False


# Above this size an inflated data set must not be more than MAX_RATIO times what was sent:
# real deflated DICOM shrinks 2-20x, a deflate bomb ~1000x.
RATIO_FLOOR = 16 * 1024 * 1024
MAX_RATIO = 200
#: Inflations allowed more than RATIO_FLOOR that may run at once in this process: each may
#: hold up to its cap (hundreds of MB) before a bomb shows, and 12 parallel bombs took 4.2 GB
#: (outside probe 42). Smaller ones never wait.
LARGE_INFLATIONS_AT_ONCE = 2
_LARGE_INFLATIONS = threading.BoundedSemaphore(LARGE_INFLATIONS_AT_ONCE)
_INFLATE_IN = 64 * 1024  # input fed per call: the unconsumed tail zlib copies stays small
_INFLATE_OUT = 1024 * 1024  # output taken per call: an over-cap stream stops within a chunk


def inflate_bounded(data: bytes | memoryview, limit: int) -> bytes:
    """Inflate a raw-deflate stream, refusing bombs: output over ``limit`` bytes, or over
    RATIO_FLOOR and MAX_RATIO times the input."""
    return b"".join(_inflate_chunks(data, limit))


def _inflate_chunks(data: bytes | memoryview, limit: int) -> list[bytes]:
    """``inflate_bounded`` as the chunks it inflated (joined once, by the caller, with the
    file meta in front): never more than the cap and one chunk held, and at most
    LARGE_INFLATIONS_AT_ONCE inflations with a cap over RATIO_FLOOR at a time."""
    cap = min(limit, max(RATIO_FLOOR, MAX_RATIO * len(data)))
    if cap <= RATIO_FLOOR:
        return _inflate(data, cap, limit)
    with _LARGE_INFLATIONS:
        return _inflate(data, cap, limit)


def _inflate(data: bytes | memoryview, cap: int, limit: int) -> list[bytes]:
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)
    chunks: list[bytes] = []
    total = 0
    for at in range(0, len(view), _INFLATE_IN):
        pending: bytes | memoryview = view[at : at + _INFLATE_IN]
        while pending and not d.eof:
            chunk = d.decompress(pending, _INFLATE_OUT)
            total += len(chunk)
            if total > cap:
                raise ValueError(
                    f"inflates beyond {cap // (1024 * 1024)} MB from {len(view)} bytes "
                    f"(limit {limit // (1024 * 1024)} MB, ratio {MAX_RATIO}:1): deflate bomb "
                    "refused"
                )
            chunks.append(chunk)
            pending = d.unconsumed_tail
        if d.eof:
            break
    # All input taken: what zlib still holds is what a few buffered bits make (a few KB).
    chunk = d.flush()
    total += len(chunk)
    if total > cap:
        raise ValueError(f"inflated data exceeds {cap // (1024 * 1024)} MB")
    chunks.append(chunk)
    return chunks


def read_ids(ds: DataSet) -> dict[str, str]:
    """The identifying values a placeholder is filed under (whatever could be read)."""
    ids: dict[str, str] = {}
    for key in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
    ):
        try:
            value = ds.get(key)
            if value not in (None, ""):
                ids[key] = str(value)[:256]
        except Exception:  # a malformed value must not hide the others
            continue
    return ids


_TS_TAG = 0x00020010


def _split_meta(data: bytes) -> tuple[str, int]:
    """Walk the file meta group (always explicit VR little endian, PS3.10 7.1) by hand.

    Returns the Transfer Syntax UID and where the data set starts: the first element that is
    not group 0002, as pydicom decides it too. A plain walk costs microseconds where a second
    ``dcmread`` cost a sixth of a millisecond per received instance.
    """
    pos, end = 132, len(data)
    ts = None
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in walk.LONG_VRS:
            if pos + 12 > end:
                raise ValueError("file meta element header truncated")
            length = struct.unpack_from("<L", data, pos + 8)[0]
            value_at = pos + 12
        else:
            if not vr.isalpha() or not vr.isupper():
                raise ValueError(f"file meta element (0002,{element:04X}) has no explicit VR")
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value_at = pos + 8
        if length == 0xFFFFFFFF or value_at + length > end:
            raise ValueError(f"file meta element (0002,{element:04X}) runs past the data")
        if (group << 16) | element == _TS_TAG:
            ts = data[value_at : value_at + length].rstrip(b"\x00 ").decode("ascii")
        pos = value_at + length
    if not ts:
        raise ValueError("Transfer Syntax UID (0002,0010) is missing")
    return ts, pos


def _meta_dataset(data: bytes) -> FileMetaDataset:
    """The file meta as a pydicom data set, for the rare path that rewrites it (deflate)."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=[Tag(0x00020010)])
    return ds.file_meta


#: Every VR of PS3.5 Table 6.2-1: two bytes after a tag that are one of these are an
#: explicit VR (pydicom tells the encodings apart the same way).
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)


_UNSNIFFED = (transfer_syntaxes.EXPLICIT_BE, transfer_syntaxes.DEFLATED_LE)


def _plain_encoding(data: bytes, start: int, ts: str) -> str | None:
    """The little-endian syntax the first data element is plainly encoded in, when it
    contradicts ``ts`` (a peer that negotiated Implicit VR and sent Explicit, or the
    reverse: probe); None when it agrees or cannot be told."""
    if len(data) < start + 8 or ts in _UNSNIFFED:
        return None
    explicit = data[start + 4 : start + 6] in _VRS
    if ts == transfer_syntaxes.IMPLICIT_LE:
        return transfer_syntaxes.EXPLICIT_LE if explicit else None
    return None if explicit else transfer_syntaxes.IMPLICIT_LE


def _with_syntax(
    data: bytes,
    start: int,
    ts: str,
    meta: FileMetaDataset | None = None,
    body: list[bytes] | None = None,
) -> tuple[bytes, int]:
    """The stream with its file meta saying ``ts`` (and where the data set now starts);
    ``body`` (the inflated chunks) replaces the data set after ``start``, joined in one copy."""
    meta = meta if meta is not None else _meta_dataset(data[:start])
    meta.TransferSyntaxUID = ts
    head = io.BytesIO()
    head.write(data[:128] + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=False)
    rest: list[bytes] | list[memoryview] = body if body is not None else [memoryview(data)[start:]]
    return b"".join((head.getvalue(), *rest)), head.tell()


@dataclass(frozen=True)
class Framed:
    """A Part-10 stream split into file meta and data set, inflated when it came deflated."""

    data: bytes
    transfer_syntax: str
    transcoded: bool
    # Where the Pixel Data value lies by a one-pass header walk ((0, 0): none; None: the walk
    # was unsure). A hint for starting the pixel write early; ``parse_framed`` is the authority.
    pixel_hint: walk.Span | None
    # The walked elements when every one was in order and well formed: read without dcmread.
    top: walk.TopLevel | None = None


def frame(data: bytes, *, max_inflated: int) -> Framed | Refusal:
    """Check the preamble and file meta, inflate a deflated data set (bounded) and walk the
    top-level headers for the pixel span: everything before the full parse."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return Refusal(status.CANNOT_UNDERSTAND, "not a DICOM Part 10 stream (no DICM prefix)")
    try:
        ts, start = _split_meta(data)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        return Refusal(status.CANNOT_UNDERSTAND, f"file meta information unreadable: {exc}")
    transcoded = False
    actual = _plain_encoding(data, start, ts)
    if actual is not None and actual != ts:
        if transfer_syntaxes.is_encapsulated(ts):
            return Refusal(
                status.INVALID_ENCODING,
                f"data set is encoded in Implicit VR, which {ts} (encapsulated) cannot carry",
            )
        # The bytes say plainly how they are encoded (pydicom guesses the same way and
        # reads them); archived under the declared syntax, no other tool could read them.
        log.warning("data set declared %s is encoded as %s: archived as %s", ts, actual, actual)
        try:
            data, start = _with_syntax(data, start, actual)
        except Exception as exc:
            return Refusal(status.CANNOT_UNDERSTAND, f"file meta information unreadable: {exc}")
        ts, transcoded = actual, True
    if ts == transfer_syntaxes.DEFLATED_LE:
        # Store inflated as Explicit VR Little Endian: pixel-identical, and the metadata can
        # be kept apart from the pixels (which a deflated stream would mix).
        try:
            body = _inflate_chunks(memoryview(data)[start:], max_inflated)
            meta = _meta_dataset(data[:start])
        except (ValueError, zlib.error) as exc:
            return Refusal(status.CANNOT_INFLATE, f"deflated data set rejected: {exc}")
        except Exception as exc:
            return Refusal(status.CANNOT_UNDERSTAND, f"file meta information unreadable: {exc}")
        data, start = _with_syntax(data, start, transfer_syntaxes.EXPLICIT_LE, meta, body)
        ts = transfer_syntaxes.EXPLICIT_LE
        transcoded = True
    walked = walk.walk(data, start, ts)
    if walked is None:
        return Framed(data, ts, transcoded, None)
    return Framed(data, ts, transcoded, walked[0], walked[1])


def parse(
    data: bytes,
    *,
    max_inflated: int,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
) -> Parsed | Refusal:
    """Decode a Part-10 byte string (preamble, meta, data set) and validate it."""
    framed = frame(data, max_inflated=max_inflated)
    if isinstance(framed, Refusal):
        return framed
    return parse_framed(framed, expected_sop_class, expected_sop_instance)


def parse_framed(
    framed: Framed, expected_sop_class: str | None = None, expected_sop_instance: str | None = None
) -> Parsed | Refusal:
    """Read the whole data set (pixel values left undecoded) and validate it."""
    data, ts, transcoded = framed.data, framed.transfer_syntax, framed.transcoded
    if framed.top is not None and framed.pixel_hint is not None:
        # Every top-level element walked in order, whole and even: nothing for the loop
        # below to find, and the values come from pydicom's converters without a dcmread.
        ds: DataSet = framed.top
        pixel_start, pixel_end = framed.pixel_hint
    else:
        parsed = _read_whole(data, ts)
        if isinstance(parsed, Refusal):
            return parsed
        ds, pixel_start, pixel_end = parsed
        repeated = walk.repeated_tag(data, _split_meta(data)[1], ts)
        if repeated is not None:
            return Refusal(
                status.CANNOT_UNDERSTAND,
                f"element {walk.tag_name(repeated)} occurs twice in the data set "
                "(PS3.5 7.1: each element at most once)",
                read_ids(ds),
            )
    ids = read_ids(ds)
    pixel_elements = [tag for tag in PIXEL_TAGS if tag in ds]
    if len(pixel_elements) > 1:
        # which one a reader shows would be a guess: refused, not stored with both
        return Refusal(
            status.DATASET_MISMATCH,
            "the data set holds more than one of Pixel Data, Float Pixel Data and Double "
            "Float Pixel Data, which exclude each other (PS3.3 C.7.6.3)",
            ids,
        )
    if not ids and not any(t in ds for t in PIXEL_TAGS):
        # pydicom gives an empty data set for some streams it cannot read to the end
        # (encapsulated Pixel Data without its sequence delimiter, or cut inside a fragment)
        return _unreadable(data, ts, None)
    encoding = walk.pixel_encoding_problem(
        data, pixel_start, pixel_end, transfer_syntaxes.is_encapsulated(ts)
    )
    if encoding is not None:
        # PS3.4 B.2.3: the value cannot be understood under the negotiated syntax (C-range,
        # like an odd length), whatever the attributes say about the SOP class.
        return Refusal(status.INVALID_ENCODING, encoding, ids)
    problem = validate(
        ds,
        ts,
        pixel_end - pixel_start,
        expected_sop_class,
        expected_sop_instance,
        pixels=(data, pixel_start, pixel_end),
    )
    if problem is not None:
        return Refusal(problem[0], problem[1], ids)
    return Parsed(ds, data, ts, pixel_start, pixel_end, transcoded, ids)


_UNDEFINED_OK = frozenset(("SQ", "UN"))


def _read_whole(data: bytes, ts: str) -> tuple[Dataset, int, int] | Refusal:
    """dcmread the data set and check every top-level element's length (the slow path, for
    what the header walk left to pydicom)."""
    encapsulated = transfer_syntaxes.is_encapsulated(ts)
    try:
        ds = dcmread(io.BytesIO(data), force=True)
        # Touch every top-level element's raw form: reveals truncation now, not later.
        pixel_start = pixel_end = 0
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            if raw is None:
                continue
            length = getattr(raw, "length", 0)
            value = getattr(raw, "value", None)
            undefined = getattr(raw, "is_undefined_length", False) or length == 0xFFFFFFFF
            vr = getattr(raw, "VR", None)
            if (
                undefined
                and vr not in _UNDEFINED_OK
                and not (encapsulated and int(tag) in PIXEL_TAGS)
            ):
                # pydicom reads up to the next delimiter, but PS3.5 7.1.1 allows undefined
                # length only for SQ (UN as SQ) and encapsulated Pixel Data: refuse, not 0000.
                return Refusal(
                    status.INVALID_ENCODING,
                    f"element {tag} ({vr}) has undefined length (PS3.5 7.1.1 allows it only "
                    "for sequences and encapsulated pixel data)",
                    read_ids(ds),
                )
            if not undefined and value is not None and isinstance(value, bytes | bytearray):
                if len(value) != length:
                    return Refusal(
                        status.CANNOT_UNDERSTAND,
                        f"element {tag} is truncated ({len(value)} of {length} bytes)",
                        read_ids(ds),
                    )
                if length % 2:
                    return Refusal(
                        status.INVALID_ENCODING,
                        f"element {tag} has odd length {length} (PS3.5 7.1.1 requires even)",
                        read_ids(ds),
                    )
            if int(tag) in PIXEL_TAGS and value is not None:
                pixel_start = raw.value_tell
                pixel_end = pixel_start + len(value)
    except Exception as exc:
        return _unreadable(data, ts, exc)
    return ds, pixel_start, pixel_end


def _unreadable(data: bytes, ts: str, exc: Exception | None) -> Refusal:
    """The refusal of a data set pydicom could not read (``exc``) or read as empty: the
    identifying values and the reason come from a header walk up to the damage, so the
    placeholder lands under its patient and study and says what is wrong (truncated pixel
    data, a missing delimiter, nesting too deep) rather than "nothing recognised"."""
    top: walk.TopLevel | None = None
    stopped: str | None = None
    with contextlib.suppress(Exception):  # a courtesy: never let it hide the refusal
        top, stopped = walk.salvage(data, _split_meta(data)[1], ts)
    ids = read_ids(top) if top is not None else {}
    if not ids:
        # big endian, or damage before the identifying values: what pydicom gets
        with contextlib.suppress(Exception):
            ids = read_ids(dcmread(io.BytesIO(data), force=True, stop_before_pixels=True))
    if isinstance(exc, RecursionError):
        reason = "sequences nested too deep to read" + (f" ({stopped})" if stopped else "")
    elif stopped is not None:
        reason = stopped
    elif exc is not None:
        reason = f"data set unreadable: {type(exc).__name__}: {exc}"
    else:
        reason = "no DICOM attributes could be recognised"
    return Refusal(status.CANNOT_UNDERSTAND, reason, ids)


def _get(ds: DataSet, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _identity_text_problem(ds: DataSet) -> str | None:
    """A Patient's Name or ID whose bytes are invalid in the declared character set: pydicom
    reads them with replacement characters, so the index would show (and match) a name or
    ID that is not the one sent. Other text keeps pydicom's lenient reading."""
    for keyword, delimiters in (
        ("PatientName", charsets.PN_DELIMITERS),
        ("PatientID", charsets.TEXT_DELIMITERS),
    ):
        raw, encodings = _raw_text(ds, keyword)
        if raw is not None:
            problem = charsets.undecodable(raw, encodings, delimiters)
        else:  # already read by pydicom: only its replacement characters tell
            try:
                value = str(ds.get(keyword) or "")
            except Exception as exc:
                return f"{keyword} cannot be decoded: {exc}"
            problem = "replacement characters" if "\ufffd" in value else None
        if problem is not None:
            return f"{keyword} cannot be decoded in its Specific Character Set: {problem}"
    return None


def _raw_text(ds: DataSet, keyword: str) -> tuple[bytes | None, list[str]]:
    """A text element's bytes as received and the data set's encodings; no bytes when the
    element is absent or pydicom has already converted it."""
    if isinstance(ds, walk.TopLevel):
        return ds.raw(keyword), ds.encodings()
    try:
        element = ds.get_item(Tag(keyword))
        declared = ds.get("SpecificCharacterSet")
        encodings = convert_encodings(declared) if declared else [default_encoding]
    except Exception:
        return None, []
    value = getattr(element, "value", None) if isinstance(element, RawDataElement) else None
    return (value if isinstance(value, bytes) else None), encodings


def validate(
    ds: DataSet,
    ts: str,
    pixel_length: int,
    expected_sop_class: str | None,
    expected_sop_instance: str | None,
    *,
    pixels: tuple[bytes, int, int] | None = None,
) -> tuple[int, str] | None:
    """Required attributes, valid UIDs, SOP class agreement and a consistent Image Pixel module.

    ``pixels``: the received bytes and where the Pixel Data value lies in them, for the
    structural check of encapsulated frames (without them only the attributes are checked).
    """
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = _get(ds, kw)
        if value in (None, ""):
            return status.DATASET_MISSING_ATTRIBUTE, f"required attribute {kw} is missing"
        text = str(value)
        if len(text) > 64 or not _UID.match(text):
            return status.DATASET_INVALID_VALUE, f"{kw} '{text[:80]}' is not a valid UID"
    if not sop_classes.is_storage_class(str(ds.SOPClassUID)):
        # what the Store SCP would not negotiate, arriving another way (STOW-RS, a folder)
        return (
            status.SOP_CLASS_NOT_SUPPORTED,
            f"SOP Class UID {ds.SOPClassUID} is not a storage SOP class this archive accepts",
        )
    patient_id = _get(ds, "PatientID")
    if patient_id is None:
        return status.DATASET_MISSING_ATTRIBUTE, "required attribute PatientID is missing"
    problem = _identity_text_problem(ds)
    if problem is not None:
        return status.DATASET_INVALID_VALUE, problem
    problem = _check_temporal(ds)
    if problem is not None:
        return problem
    sop_class = str(ds.SOPClassUID)
    if expected_sop_class and sop_class != expected_sop_class:
        # The Error Comment keeps 64 characters: the class names first, the UIDs after.
        return (
            status.DATASET_MISMATCH,
            f"data set is {_class_name(sop_class)}, sent as {_class_name(expected_sop_class)} "
            f"(SOP Class UID {sop_class} vs {expected_sop_class})",
        )
    if expected_sop_instance and str(ds.SOPInstanceUID) != expected_sop_instance:
        return (
            status.DATASET_MISMATCH,
            f"SOP Instance UID differs from the C-STORE request's ({ds.SOPInstanceUID} vs "
            f"{expected_sop_instance})",
        )
    modality = str(_get(ds, "Modality") or "").strip()
    required = sop_classes.IOD_MODALITY.get(sop_class)
    if required and modality and modality != required:
        return (
            status.DATASET_MISMATCH,
            f"Modality {modality[:16]}, but {_class_name(sop_class)} requires {required} "
            f"(SOP Class UID {sop_class})",
        )
    has_pixels = pixel_length > 0
    if sop_classes.requires_pixels(sop_class) and not has_pixels:
        return status.DATASET_MISMATCH, "image SOP class without Pixel Data (Image Pixel module)"
    if has_pixels:
        return _check_pixel_module(ds, ts, pixel_length, pixels)
    return None


#: Dates and times the index keeps and matches on (C-FIND, QIDO range matching).
INDEXED_TEMPORAL = {
    "PatientBirthDate": "DA",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "SeriesDate": "DA",
    "SeriesTime": "TM",
    "AcquisitionDate": "DA",
    "AcquisitionTime": "TM",
    "ContentDate": "DA",
    "ContentTime": "TM",
    "AcquisitionDateTime": "DT",
}


def _check_temporal(ds: DataSet) -> tuple[int, str] | None:
    """An indexed date or time that names no real day or clock time is an invalid value
    (Conformance 4.1.3.2: not imported); empty is fine (Type 2)."""
    for kw, vr in INDEXED_TEMPORAL.items():
        value = _get(ds, kw)
        if value in (None, ""):
            continue
        multi = isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
        values = value if multi else [value]
        for one in values:
            text = str(one)
            if text.strip() and not temporal.stored_value_ok(vr, text):
                return (
                    status.DATASET_INVALID_VALUE,
                    f"{kw} '{text[:40]}' is not a valid {vr} value "
                    f"({temporal.EXPECTED[vr]}, PS3.5 6.2)",
                )
    return None


def _class_name(uid: str) -> str:
    """A SOP class as a person knows it (its UID when pydicom does not know it)."""
    known = sop_classes.BY_UID.get(uid)
    if known is not None:
        return known.name
    return str(UID(uid).name)


#: Photometric Interpretations of PS3.3 C.7.6.3.1.2 (retired ones included: old archives
#: send them) and the Samples per Pixel each one has.
PHOTOMETRIC_SAMPLES: dict[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "HSV": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "XYB": 3,
    "ARGB": 4,
    "CMYK": 4,
}


def _check_pixel_module(
    ds: DataSet, ts: str, pixel_length: int, pixels: tuple[bytes, int, int] | None = None
) -> tuple[int, str] | None:
    """The Image Pixel module agrees with itself and with the pixel data's length (PS3.3
    C.7.6.3.1), or, encapsulated, with its frames' codestream headers (lucent.dicom.codestream).
    Strict only where the standard is unambiguous and real data agrees: Bits Allocated 1
    (segmentations) and 32 (RT Dose), signed data and YBR_FULL_422 from JPEG all pass.
    Reasons put the numbers first: the Error Comment keeps 64 characters."""
    values: dict[str, int] = {}
    for kw in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        v = _get(ds, kw)
        if v is None or v == "":
            return status.DATASET_MISSING_ATTRIBUTE, f"Image Pixel module: {kw} is missing"
        try:
            values[kw] = int(v)
        except (TypeError, ValueError):
            return status.DATASET_INVALID_VALUE, f"Image Pixel module: {kw} is not a number"
    rows, cols, bits, spp = (
        values["Rows"],
        values["Columns"],
        values["BitsAllocated"],
        values["SamplesPerPixel"],
    )
    if "PixelData" in ds:
        for kw in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
            if _get(ds, kw) in (None, ""):
                return status.DATASET_MISSING_ATTRIBUTE, f"Image Pixel module: {kw} is missing"
        try:  # a changed VR or a second value makes these bytes or a list, not a number
            stored = int(_get(ds, "BitsStored"))
            high_value = _get(ds, "HighBit")
            high = None if high_value in (None, "") else int(high_value)
        except (TypeError, ValueError):
            return status.DATASET_INVALID_VALUE, "BitsStored or HighBit is not a number"
        if stored > bits or stored < 1:
            reason = f"BitsStored {stored} outside 1..BitsAllocated {bits}"
            return status.DATASET_INVALID_VALUE, reason
        if high is not None and high != stored - 1:
            # PS3.3 C.7.6.3.1: "High Bit ... shall be one less than Bits Stored"; signed
            # data too (its sign bit is the high bit)
            return (
                status.DATASET_INVALID_VALUE,
                f"HighBit {high}, BitsStored {stored} needs {stored - 1} (PS3.3 C.7.6.3.1)",
            )
        representation = _get(ds, "PixelRepresentation")
        if str(representation).strip() not in ("0", "1"):
            return (
                status.DATASET_INVALID_VALUE,
                f"PixelRepresentation {str(representation)[:16]}, must be 0 or 1 (PS3.3 C.7.6.3)",
            )
    if rows <= 0 or cols <= 0:
        return status.DATASET_INVALID_VALUE, f"Rows {rows}, Columns {cols}: must be at least 1"
    if bits not in (1, 8, 16, 32, 64):
        return status.DATASET_INVALID_VALUE, f"BitsAllocated {bits}, must be 1/8/16/32/64"
    if spp not in (1, 3, 4):
        return status.DATASET_INVALID_VALUE, f"SamplesPerPixel {spp}, must be 1, 3 or 4"
    photometric = str(_get(ds, "PhotometricInterpretation") or "").strip()
    if photometric:
        need = PHOTOMETRIC_SAMPLES.get(photometric)
        if need is None:
            return (
                status.DATASET_INVALID_VALUE,
                f"PhotometricInterpretation '{photometric[:20]}' is not defined "
                "(PS3.3 C.7.6.3.1.2)",
            )
        if spp != need:
            return (
                status.DATASET_INVALID_VALUE,
                f"SamplesPerPixel {spp}, {photometric} needs {need} (PS3.3 C.7.6.3.1.2)",
            )
    frames_value = _get(ds, "NumberOfFrames")
    try:
        frames = int(frames_value) if frames_value not in (None, "") else 1
    except (TypeError, ValueError):
        return status.DATASET_INVALID_VALUE, "NumberOfFrames is not a number"
    if frames < 1:
        return status.DATASET_INVALID_VALUE, f"NumberOfFrames {frames}, must be at least 1"
    if transfer_syntaxes.is_encapsulated(ts):
        if pixels is None or "PixelData" not in ds:
            return None
        extended = _get(ds, "ExtendedOffsetTable")
        lengths = _get(ds, "ExtendedOffsetTableLengths")
        return codestream.check(
            *pixels,
            ts,
            codestream.Geometry(rows, cols, spp, bits, frames),
            bytes(extended) if isinstance(extended, bytes | bytearray) else None,
            bytes(lengths) if isinstance(lengths, bytes | bytearray) else None,
        )
    count = rows * cols * frames * spp
    expected = (count + 7) // 8 if bits == 1 else count * (bits // 8)
    subsampled = photometric.startswith("YBR_FULL_422")
    if subsampled:
        expected = expected * 2 // 3
    if pixel_length not in (expected, expected + (expected % 2)):
        return (
            status.DATASET_PIXEL_INCONSISTENT,
            f"pixel data {pixel_length} B, expected {expected} "
            f"({rows}x{cols}x{frames}x{spp}x{bits}{' 4:2:2' if subsampled else ''}: "
            "Rows x Columns x Frames x Samples x Bits)",
        )
    return None
