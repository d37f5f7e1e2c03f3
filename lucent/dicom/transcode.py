"""Change an instance's transfer syntax to one a peer accepted (PS3.5 8.2, 10; PS3.4 B.4.1).

One piece of code for every sender: our C-STORE SCU (``lucent.net.scu``) and the C-GET /
C-MOVE sub-operations of the Query/Retrieve SCP. Mature archives (Orthanc, dcm4chee)
decompress on demand when a peer accepted no context in the stored syntax; without that, a
default ``getscu`` or a ``storescp +xi`` gets nothing of data stored compressed.

Pure pydicom (decoders: the pylibjpeg/gdcm plugins installed). Decoding is CPU-heavy:
servers call :func:`prepare_part10` (bytes in, bytes out) in a helper process, never on a
DICOM association thread.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from lucent.dicom import codestream, jpeg_lossless
from lucent.dicom.transfer_syntaxes import (
    DEFLATED_LE,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    LOSSY_METHOD,
)

#: The uncompressed syntaxes, in the order we prefer to send them (Conformance 4.2.1.2).
UNCOMPRESSED: tuple[str, ...] = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
#: Lossless syntaxes we can encode ourselves, in the order we pick them for a peer that
#: accepts no uncompressed one (Conformance 4.2.4.2 and JPEG 2000 Lossless; issue 3:
#: "transcode when the peer only accepts another syntax"). Deflated needs no pixel codec
#: (the data set is deflated as a whole), RLE is pydicom's own; JPEG-LS through the
#: ``pyjpegls`` plugin, JPEG 2000 through ``pylibjpeg-openjpeg``, JPEG Lossless (SV1 and
#: Process 14) through GDCM (``lucent.dicom.jpeg_lossless``). Lossy syntaxes are never a
#: target: an image stored lossless must not lose information on the way to a peer.
LOSSLESS_TARGETS: tuple[str, ...] = (
    DEFLATED_LE,
    RLE_LOSSLESS,
    JPEG_LS_LOSSLESS,
    J2K_LOSSLESS,
    *jpeg_lossless.SYNTAXES,
)
_PIXEL_TARGETS = frozenset(LOSSLESS_TARGETS) - {DEFLATED_LE}
#: pydicom encoding plugin per pixel target. Never GDCM: its RLE encoder aborts the whole
#: process (an uncaught C++ exception, "image_len % MaxNumSegments == 0") on an odd-sized
#: RGB image, where pydicom tries it first.
_ENCODER = {RLE_LOSSLESS: "pylibjpeg", JPEG_LS_LOSSLESS: "pyjpegls", J2K_LOSSLESS: "pylibjpeg"}


@dataclass(frozen=True)
class Prepared:
    """The data set to send and in which syntax, or why it cannot be sent (``dataset`` None)."""

    dataset: Dataset | None
    syntax: str
    transcoded: bool
    error: str


def codes_pixels(own: str, accepted: Collection[str]) -> bool:
    """True when sending in an accepted syntax means decoding or encoding pixel data
    (compressed → uncompressed or another lossless syntax, uncompressed → RLE / JPEG-LS /
    JPEG 2000 lossless): the CPU-heavy cases a server hands to a helper process.
    Uncompressed ↔ uncompressed (Deflated included) is only a re-encoding of the elements."""
    if own in accepted:
        return False
    try:
        compressed = UID(own).is_compressed  # Deflated is not: its pixels are native
    except ValueError:  # not a transfer syntax we know: nothing to decode it with
        return False
    native = any(ts in accepted for ts in (*UNCOMPRESSED, DEFLATED_LE))
    if compressed:
        return native or any(ts in accepted for ts in _PIXEL_TARGETS)
    return not native and any(ts in accepted for ts in _PIXEL_TARGETS)


def prepare(ds: Dataset, own: str, accepted: Collection[str], sop_class_uid: str) -> Prepared:
    """Pick the syntax to send ``ds`` (stored in ``own``) in, and transcode it to that.

    Uncompressed ↔ uncompressed happens when the data set is encoded in the chosen syntax
    (here only the file meta changes); compressed → uncompressed uses pydicom's decoders;
    a peer that takes no uncompressed syntax gets one of :data:`LOSSLESS_TARGETS` (encoded
    with pydicom's encoders, checked to decode to the same pixels) — never a lossy one.
    The SOP Instance UID stays: the change of transfer syntax is lossless (PS3.5 8.2, 10),
    and a new UID would make the peer hold an instance we never recorded (and storage
    commitment ask for the old one).
    """
    if own in accepted:
        return Prepared(ds, own, False, "")
    native = [ts for ts in UNCOMPRESSED if ts in accepted]
    own_uid = UID(own)
    if own_uid.is_compressed and native:
        method = _lossy_method(ds, own)
        try:
            decompress(ds)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-instance error
            return Prepared(
                None, "", False, f"cannot decompress {own} for a peer that wants native: {exc}"
            )
        if not UID(native[0]).is_little_endian:
            # decoded pixels are little endian: a peer that took only Explicit VR Big Endian
            # got them unswapped under a big endian label (outside probe)
            try:
                swap_byte_order(ds, native[0])
            except ValueError as exc:
                return Prepared(None, "", False, f"cannot change the byte order: {exc}")
        set_syntax(ds, native[0])
        if method:
            mark_lossy(ds, method)
        return Prepared(ds, native[0], True, "")
    if not own_uid.is_compressed and native:
        if UID(native[0]).is_little_endian != own_uid.is_little_endian:
            try:
                swap_byte_order(ds, native[0])
            except ValueError as exc:
                return Prepared(None, "", False, f"cannot change the byte order: {exc}")
        set_syntax(ds, native[0])
        return Prepared(ds, native[0], native[0] != own, "")
    targets = [ts for ts in LOSSLESS_TARGETS if ts in accepted]
    if targets:
        return _to_lossless(ds, own, targets)
    lossy = sorted(ts for ts in accepted if ts in LOSSY_METHOD)
    return Prepared(
        None,
        "",
        False,
        (
            f"the peer accepted no transfer syntax we can send {sop_class_uid} in "
            f"(stored as {own}; accepted: {', '.join(sorted(accepted)) or 'none'})"
            + (
                "; lossy syntaxes are never used for a transcoding: they would lose information"
                if lossy
                else ""
            )
        ),
    )


def _to_lossless(ds: Dataset, own: str, targets: list[str]) -> Prepared:
    """``ds`` in the first of ``targets`` (lossless syntaxes the peer accepted) it can be
    encoded in: decoded first when stored compressed, brought to little endian when stored
    big endian (the encoders and Deflated read little endian pixels). A pixel encoding
    counts only when it decodes to the very pixels it was given; a codec that cannot take
    the image (JPEG-LS and 32-bit pixels, say) hands it on to the next target."""
    own_uid = UID(own)
    method = ""
    if own_uid.is_compressed:
        method = _lossy_method(ds, own)
        try:
            decompress(ds)
        except Exception as exc:  # noqa: BLE001
            return Prepared(None, "", False, f"cannot decompress {own}: {exc}")
    elif not own_uid.is_little_endian:
        try:
            swap_byte_order(ds, EXPLICIT_LE)
        except ValueError as exc:
            return Prepared(None, "", False, f"cannot change the byte order: {exc}")
    set_syntax(ds, EXPLICIT_LE)
    problems: list[str] = []
    for target in targets:
        if target == DEFLATED_LE or "PixelData" not in ds:
            set_syntax(ds, target)  # no pixel codec: the elements are only re-encoded
            break
        problem = codestream.frame_problem(ds)
        if problem is not None:  # never hand a malformed stream to a decoder (GDCM aborts)
            return Prepared(None, "", False, f"cannot read the pixel data: {problem}")
        try:
            before = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - pixels we cannot read cannot be encoded
            return Prepared(None, "", False, f"cannot read the pixel data: {exc}")
        try:
            if target in jpeg_lossless.SYNTAXES:
                jpeg_lossless.compress(ds, target)
                set_syntax(ds, target)
            else:
                ds.compress(target, encoding_plugin=_ENCODER[target], generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001 - the codec refused (ds unchanged): next one
            problems.append(f"{UID(target).name}: {exc}")
            continue
        try:
            same = np.array_equal(ds.pixel_array, before)
        except Exception as exc:  # noqa: BLE001 - it must decode, or it is no use to the peer
            return Prepared(None, "", False, f"{UID(target).name} did not decode: {exc}")
        if not same:  # a codec bug; never send pixels other than those we hold
            return Prepared(
                None, "", False, f"{UID(target).name} did not decode to the stored pixels"
            )
        break
    else:
        return Prepared(
            None, "", False, "cannot encode in an accepted lossless syntax: " + "; ".join(problems)
        )
    if method:
        mark_lossy(ds, method)
    return Prepared(ds, target, True, "")


def decompress(ds: Dataset) -> None:
    """Decode ``ds``'s compressed Pixel Data to native, in place, keeping its SOP Instance
    UID: pydicom's ``Dataset.decompress``, else :func:`decompress_from_pixel_array` where
    that fails but ``pixel_array`` works (J2K_pixelrep_mismatch.dcm: "output array is
    read-only" made WADO-RS 406 and C-GET/C-MOVE to native-only peers fail, QA probe).
    The first error is the one raised when neither works; a malformed stream is refused
    before any decoder sees it (``codestream.frame_problem``: GDCM can abort the process)."""
    problem = codestream.frame_problem(ds)
    if problem is not None:
        raise ValueError(f"the encapsulated pixel data is malformed: {problem}")
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 - a decoder's failure: try the other path
        try:
            decompress_from_pixel_array(ds)
        except Exception:  # noqa: BLE001
            raise exc from None


def decompress_from_pixel_array(ds: Dataset) -> None:
    """Native Pixel Data built from ``ds.pixel_array``, with the attributes pydicom's
    ``decompress`` sets (pydicom.pixels.utils.decompress): Explicit VR Little Endian, OB/OW
    by Bits Allocated, an even length, Number of Frames, and for colour the RGB that
    ``pixel_array`` decodes YBR_* to, interleaved (Planar Configuration 0)."""
    arr = ds.pixel_array
    bits = int(ds.BitsAllocated)
    if arr.dtype.itemsize * 8 != bits:
        raise ValueError(f"decoded {arr.dtype} pixels do not fit Bits Allocated {bits}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames") or 1)
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    elem = ds["PixelData"]
    elem.value = data + b"\0" if len(data) % 2 else data
    elem.is_undefined_length = False
    elem.VR = "OB" if bits <= 8 else "OW"
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    if samples > 1:
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    if "NumberOfFrames" in ds or frames > 1:
        ds.NumberOfFrames = frames


J2K_ANY = "1.2.840.10008.1.2.4.91"  # JPEG 2000: reversible (lossless) or irreversible


def _lossy_method(ds: Dataset, own: str) -> str:
    """The Lossy Image Compression Method to record when decoding ``ds`` from ``own``, or
    "" when the stream is lossless. JPEG 2000 (.91) carries either kind: its COD marker says
    which wavelet was used (ISO 15444-1 A.6.1: 9-7 irreversible, 5-3 reversible)."""
    method = LOSSY_METHOD.get(own, "")
    if own != J2K_ANY or str(ds.get("LossyImageCompression", "")) == "01":
        return method
    data = ds.get("PixelData") or b""
    soc = data.find(b"\xff\x4f\xff\x51")
    cod = data.find(b"\xff\x52", soc, soc + 4096) if soc >= 0 else -1
    if cod < 0 or cod + 14 > len(data):
        return method  # no readable COD: the syntax's own meaning
    return method if data[cod + 13] == 0 else ""


def mark_lossy(ds: Dataset, method: str) -> None:
    """Decoded from a lossy syntax, the pixels no longer say they were compressed: record it
    in the data set (PS3.3 C.7.6.1.1.5: Lossy Image Compression "01", never reset, and the
    method appended), so the receiver and its viewer still know the image is lossy."""
    ds.LossyImageCompression = "01"
    methods = ds.get("LossyImageCompressionMethod")
    many = isinstance(methods, list | tuple | MultiValue)
    known = [str(m) for m in methods] if many else [str(methods)] if methods else []
    if method not in known:
        ds.LossyImageCompressionMethod = [*known, method] if known else method


def prepare_part10(
    raw: bytes, own: str, accepted: Collection[str], sop_class_uid: str
) -> tuple[bytes | None, str, bool, str]:
    """:func:`prepare` on Part-10 bytes, answering Part-10 bytes: plain values only, so it
    runs in another process (bytes in, bytes out) and a decoder crash stays there.

    Returns (Part-10 bytes in the chosen syntax or None, syntax, transcoded, error).
    """
    try:
        ds = dcmread(io.BytesIO(raw))
        done = prepare(ds, own, accepted, sop_class_uid)
        if done.dataset is None:
            return None, "", False, done.error
        out = io.BytesIO()
        done.dataset.save_as(out, enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unwritable: a per-instance error
        return None, "", False, f"cannot transcode {own}: {exc}"
    return out.getvalue(), done.syntax, done.transcoded, ""


def changes_byte_order(own: str, accepted: Collection[str]) -> bool:
    """True when the syntax :func:`prepare` picks for an uncompressed ``own`` has the other
    byte order (Explicit VR Big Endian stored, only little endian accepted, or the reverse).
    pydicom and pynetdicom re-encode the parsed values then, but pass OW/OF/OD/OL/OV bytes
    (Pixel Data first of all) through unchanged: the peer would get byte-swapped pixels."""
    if own in accepted:
        return False
    try:
        own_uid = UID(own)
        if own_uid.is_compressed:
            return False
    except ValueError:
        return False
    native = [ts for ts in (*UNCOMPRESSED, DEFLATED_LE) if ts in accepted]
    return bool(native) and UID(native[0]).is_little_endian != own_uid.is_little_endian


#: Word size of the binary VRs whose bytes follow the transfer syntax's byte order (PS3.5
#: 7.3): OB and UN are byte streams and keep their order.
_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def swap_byte_order(ds: Dataset, syntax: str) -> None:
    """Bring a data set read in one byte order to that of ``syntax``, in place (PS3.5 7.3):
    every value is parsed first (so nothing is left to decode in the old order), the words
    of OW/OL/OF/OD/OV values are swapped (OW Pixel Data by Bits Allocated: 32-bit pixels are
    32-bit words, as PS3.5 8.1.1 has them; a length that is no whole number of words is a
    ValueError), and the data set then counts as read in
    ``syntax`` (pydicom and pynetdicom refuse to write a data set whose file meta and
    original encoding disagree), so the values are written as they now are."""
    for _ in ds.iterall():  # converts every raw element with the order it was read in
        pass
    uid = UID(syntax)
    _swap(ds, uid.is_implicit_VR, uid.is_little_endian)


def _swap(ds: Dataset, implicit: bool, little: bool) -> None:
    bits = ds.get("BitsAllocated")
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap(item, implicit, little)
            continue
        size = _WORD_SIZE.get(str(elem.VR))
        if size == 2 and elem.tag == 0x7FE00010 and bits in (32, 64):
            size = bits // 8
        if size and isinstance(elem.value, bytes | bytearray):
            if len(elem.value) % size:  # no word order to restore: refuse, never guess
                raise ValueError(f"{elem.tag} ({elem.VR}) of {len(elem.value)} bytes")
            elem.value = np.frombuffer(elem.value, dtype=f"u{size}").byteswap().tobytes()
    ds.set_original_encoding(implicit, little)


def to_little_endian(ds: Dataset) -> bool:
    """Bring a data set stored Explicit VR Big Endian to Explicit VR Little Endian in place
    (values and OW/OL/OF/OD/OV words, as :func:`swap_byte_order`); True when it changed.

    DICOMweb has no place for big endian bytes: frames and bulk data go out labelled little
    endian, and DICOM JSON InlineBinary carries no transfer syntax (PS3.18 F.2.7), so a
    reader takes its words as little endian (PS3.5 7.3)."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None)
    if ts is None or ts.is_little_endian:
        return False
    swap_byte_order(ds, EXPLICIT_LE)
    set_syntax(ds, EXPLICIT_LE)
    return True


def set_syntax(ds: Dataset, ts: str) -> None:
    """Make ``ts`` the syntax ``ds`` is written in: its file meta Transfer Syntax UID.

    That is all pydicom 3 needs: ``dcmwrite``/``save_as`` encode by the file meta, and our
    senders pass the encoding explicitly (``scu._encode``; Part-10 bytes from
    :func:`prepare_part10`). Setting ``Dataset.is_implicit_VR``/``is_little_endian`` as
    well was deprecated ("will be removed in v4.0"): two warnings in the server log for
    every transcoded instance."""
    ds.file_meta.TransferSyntaxUID = UID(ts)
