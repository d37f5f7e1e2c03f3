"""Pixel decoding for the API and the viewer: pydicom with pylibjpeg/gdcm handlers.

Pure functions over Part-10 bytes; the server calls them in its API process and the
workstation can call them on what it downloads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from lucent.dicom import codestream, video


def read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def frame_count(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """One frame as stored values (before modality LUT), shape (rows, cols[, samples])."""
    n = frame_count(ds)
    if not 0 <= index < n:
        raise IndexError(f"frame {index + 1} does not exist (instance has {n})")
    if video.is_video(ds):  # pydicom has no MPEG/H.264/HEVC decoder
        return video.decode_frame(ds, index)
    problem = codestream.frame_problem(ds)
    if problem is not None:  # never hand a malformed stream to a decoder that may abort
        raise ValueError(f"the encapsulated pixel data is malformed: {problem}")
    arr = ds.pixel_array
    return ignore_bits_above_high_bit(ds, arr[index] if n > 1 else arr)


def ignore_bits_above_high_bit(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Stored values with the bits above High Bit (0028,0102) dropped (PS3.5 8.1.1): masked
    off for unsigned data, sign-extended from High Bit for signed (Pixel Representation 1).

    pydicom does this for native Pixel Data only. A decoder returns whatever the codestream
    holds: DCMTK's dcmcjpls writes a 12-bit image as JPEG-LS precision 16 with the source
    words' top bits, so 0 came back as 61440 (white noise in the viewer, wrong /frames and
    /volume). Applied to every decoded frame, whatever the transfer syntax; native frames
    are unchanged. Returns a new array when it changes anything (``arr`` may be pydicom's
    cached ``pixel_array``).
    """
    if arr.dtype.kind not in "iu":
        return arr
    try:
        stored = int(ds.get("BitsStored") or 0)
        high = ds.get("HighBit")
        width = int(high) + 1 if high not in (None, "") else stored
    except (TypeError, ValueError):
        return arr
    nbits = arr.dtype.itemsize * 8
    if not 0 < width < nbits:
        return arr
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        signed = arr.view(np.dtype(f"{arr.dtype.byteorder}i{arr.dtype.itemsize}"))
        shift = nbits - width
        return (signed << shift) >> shift
    return arr & arr.dtype.type((1 << width) - 1)


#: The three elements an image's pixels may be in (PS3.3 C.7.6.3): integer Pixel Data, and
#: Float / Double Float Pixel Data (Parametric Maps, our own perfusion maps among them).
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in PIXEL_KEYWORDS)


def pixel_bytes(ds: Dataset) -> bytes:
    """The value of whichever pixel element the instance has."""
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            return bytes(ds[keyword].value)
    raise KeyError("instance has no pixel data")


def raw_frame(ds: Dataset, index: int) -> bytes:
    """A frame's bytes as stored: native pixel bytes or the encapsulated frame (DICOMweb)."""
    n = frame_count(ds)
    if not 0 <= index < n:
        raise IndexError(f"frame {index + 1} does not exist (instance has {n})")
    data = pixel_bytes(ds)
    if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_encapsulated:
        for i, frame in enumerate(generate_frames(data, number_of_frames=n)):
            if i == index:
                return frame
        raise IndexError(f"frame {index + 1} not found in encapsulated pixel data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.BitsAllocated)
    if bits == 1:
        # Single-bit frames need not start on a byte boundary: decode instead.
        return np.packbits(
            decode_frame(ds, index).astype(np.uint8).ravel(), bitorder="little"
        ).tobytes()
    size = rows * cols * spp * bits // 8
    return bytes(data[index * size : (index + 1) * size])


def frame_group(ds: Dataset, index: int, sequence: str) -> Dataset:
    """Where a frame's functional group macro lives (PS3.3 C.7.6.16): the first item of
    ``sequence`` in the frame's Per-Frame Functional Groups item, else in the Shared
    Functional Groups, else the data set itself (top-level attributes of single-frame and
    legacy multi-frame images). Enhanced CT/MR/XA keep Rescale and Window there only:
    reading the top level rendered their HU windows white and auto-windowed each frame."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    groups = ([per_frame[index]] if 0 <= index < len(per_frame) else []) + list(shared[:1])
    for group in groups:
        items = group.get(sequence) or []
        if items:
            return items[0]
    return ds


def _first_number(value: object) -> float:
    """The first of a possibly multi-valued DS (Window Center may hold several)."""
    if value is not None and not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        value = list(value)[0]  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def modality_lut(ds: Dataset, arr: np.ndarray, index: int = 0) -> np.ndarray:
    """The Modality LUT stage of frame ``index`` (PS3.3 C.11.1; PS3.4 N.2.1.1 applies it
    first): the Modality LUT Sequence (0028,3000) when the image has one, else Rescale
    Slope/Intercept, each read from the Pixel Value Transformation functional group of an
    enhanced image (C.7.6.16.2.9) or the top level. The sequence was ignored: a CR whose
    LUT maps stored x to 4095 - x rendered stored 0 black instead of white (probe 47).

    A LUT that cannot be read (no LUT Data, too few entries) is skipped, as an unreadable
    overlay is: it must not hide the image."""
    source = frame_group(ds, index, "PixelValueTransformationSequence")
    items = source.get("ModalityLUTSequence") or []
    if items and arr.dtype.kind in "iu":
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lut = read_lut(items[0], little_endian=_little_endian(ds), signed_input=signed)
        if lut is not None:
            return apply_modality_lut(lut.clip(arr), lut.dataset("ModalityLUTSequence"))
    try:
        slope = _first_number(source.get("RescaleSlope", 1) or 1)
        intercept = _first_number(source.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError, IndexError):
        slope, intercept = 1.0, 0.0
    if slope == 1 and intercept == 0:
        return arr
    return arr.astype(np.float32) * slope + intercept


# --------------------------------------------------------------------------- LUTs


@dataclass(frozen=True)
class Lut:
    """One lookup table as the standard means it, whatever its encoding: ``data`` holds
    its entries, ``first`` the first input value mapped, ``bits`` the depth of its output
    (0 .. 2**bits - 1). Used for the Modality LUT (PS3.3 C.11.1.1.1), the VOI LUT
    (C.11.2.1.1) and Palette Color LUTs (C.7.6.3.1.5/6).

    pydicom's helpers apply it, but only given a tidy data set (see :meth:`dataset` and
    :meth:`clip`): left to themselves they index an 8-bit LUT of more than 256 entries
    with an 8-bit index (stored 300 took entry 44), wrap a signed input at 16 bits (a
    signed 65536-entry Modality LUT mapped everything to entry 0), read palette words in
    the machine's byte order and take a descriptor's sign from the VR it was written in.
    """

    first: int
    bits: int
    data: np.ndarray  # uint16, one entry per mapped input value

    def clip(self, arr: np.ndarray) -> np.ndarray:
        """Input values in the mapped range (those below map to the first entry, those
        above to the last, C.11.1.1.1), rounded and widened so no helper can wrap them."""
        if arr.dtype.kind == "f":
            arr = np.rint(np.nan_to_num(arr))
        return np.clip(arr.astype(np.int64), self.first, self.first + len(self.data) - 1)

    def descriptor(self) -> list[int]:
        """LUT Descriptor for pydicom: 16 bits per entry whatever the real depth (``bits``
        scales the output), as pydicom sizes its index by it."""
        return [len(self.data) % 65536, self.first, 16]

    def words(self) -> bytes:
        """The entries as little endian OW."""
        return self.data.astype("<u2").tobytes()

    def dataset(self, sequence: str) -> Dataset:
        """A data set holding only this LUT in ``sequence`` (Modality or VOI LUT
        Sequence), LUT Data as little endian OW."""
        item = Dataset()
        item.LUTDescriptor = self.descriptor()
        item.add_new(0x00283006, "OW", self.words())
        out = Dataset()
        out.file_meta = FileMetaDataset()
        out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        setattr(out, sequence, [item])
        return out

    def to_8bit(self, values: np.ndarray) -> np.ndarray:
        """LUT output (0 .. 2**bits - 1) to 0..255, rounded to the nearest."""
        return _to_8bit(values, self.bits)


def _depth(declared: int, largest: int) -> int:
    """Bits of a LUT's output: the descriptor's third value (8..16), unless entries exceed
    it (a descriptor that understates its depth); then what the largest entry needs."""
    needed = max(8, largest.bit_length())
    return declared if 8 <= declared <= 16 and needed <= declared else needed


def _to_8bit(values: np.ndarray, bits: int) -> np.ndarray:
    """0 .. 2**bits - 1 to 0..255, rounded to the nearest (an odd maximum has no ties)."""
    top = (1 << bits) - 1
    v = values.astype(np.int64)
    return ((v * 255 + top // 2) // top).clip(0, 255).astype(np.uint8)


def _little_endian(ds: Dataset) -> bool:
    """Byte order of the data set's OW values: its transfer syntax, else how it was read."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        try:
            return bool(UID(str(syntax)).is_little_endian)
        except ValueError:
            pass
    encoding = getattr(ds, "original_encoding", (None, None))[1]
    return True if encoding is None else bool(encoding)


def _ints(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]  # type: ignore[attr-defined]


def _lut_entries(value: object, count: int, bits: int, little_endian: bool) -> np.ndarray | None:
    """LUT Data as ``count`` entries (PS3.3 C.11.1.1.1 note): OW with one byte per entry
    when the value is too short to hold ``count`` words (8-bit entries, 8 bits
    allocated), else 16-bit words in the data set's byte order; US/SS values one entry
    each, or two 8-bit entries per word (low byte first) when there are half as many."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) >= 2 * count:
            return np.frombuffer(raw, "<u2" if little_endian else ">u2", count).astype(np.uint16)
        if len(raw) >= count:
            return np.frombuffer(raw, np.uint8, count).astype(np.uint16)
        return None
    if value is None:
        return None
    words = np.asarray(_ints(value), np.int64) & 0xFFFF  # an SS-encoded entry is unsigned
    if len(words) >= count:
        return words[:count].astype(np.uint16)
    if bits <= 8 and 2 * len(words) >= count:
        pairs = np.stack([words & 0xFF, words >> 8], axis=-1).ravel()
        return pairs[:count].astype(np.uint16)
    return None


def read_lut(
    item: Dataset,
    *,
    little_endian: bool = True,
    signed_input: bool = False,
    descriptor: str = "LUTDescriptor",
    data: str = "LUTData",
) -> Lut | None:
    """The LUT in ``item`` (LUT Descriptor and LUT Data, or a palette's pair), None when it
    cannot be read.

    PS3.3 C.11.1.1.1 / C.11.2.1.1: the first descriptor value is the number of entries (0
    means 65536); the second the first input value mapped, signed when the LUT's input is
    (``signed_input``: Pixel Representation for the Modality LUT and palettes, the Modality
    LUT output for the VOI LUT), whether the descriptor was written US (64512 for -1024)
    or SS; the third the bits per entry. Entries above that depth (a descriptor that
    understates it) widen it to what they need."""
    try:
        desc = _ints(item[descriptor].value)
        value = item[data].value if data in item else None
    except (KeyError, TypeError, ValueError):
        return None
    if len(desc) != 3:
        return None
    count = (desc[0] & 0xFFFF) or 65536
    first = desc[1]
    if signed_input and first >= 32768:
        first -= 65536
    declared = desc[2] & 0xFFFF
    entries = _lut_entries(value, count, declared, little_endian)
    if entries is None or not len(entries):
        return None
    return Lut(first, _depth(declared, int(entries.max())), entries)


def _modality_output_signed(ds: Dataset, index: int) -> bool:
    """Whether the Modality LUT stage may output negative values: what decides if the VOI
    LUT's first mapped value is signed (PS3.3 C.11.2.1.1). A Modality LUT Sequence
    outputs 0 .. 2**n - 1; Rescale Slope/Intercept map the stored range
    (C.11.1.1.2)."""
    source = frame_group(ds, index, "PixelValueTransformationSequence")
    if source.get("ModalityLUTSequence"):
        return False
    try:
        stored = int(ds.get("BitsStored") or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        slope = _first_number(source.get("RescaleSlope", 1) or 1)
        intercept = _first_number(source.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError, IndexError):
        return int(ds.get("PixelRepresentation", 0) or 0) == 1
    low, high = (
        (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    )
    return min(low * slope + intercept, high * slope + intercept) < 0


# --------------------------------------------------------------------------- VOI

#: VOI LUT Function (0028,1056) Defined Terms (PS3.3 C.11.2.1.3); anything else is LINEAR.
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def voi_function(source: Dataset) -> str:
    """VOI LUT Function of a data set or Frame VOI LUT item, LINEAR when absent or unknown
    (C.11.2: absent means the linear window of C.11.2.1.2)."""
    value = str(source.get("VOILUTFunction", "") or "").strip().upper()
    return value if value in VOI_FUNCTIONS else "LINEAR"


def window_to_8bit(
    arr: np.ndarray,
    center: float,
    width: float,
    invert: bool = False,
    function: str = "LINEAR",
) -> np.ndarray:
    """A VOI window to 8-bit display values: LINEAR (PS3.3 C.11.2.1.2.1), LINEAR_EXACT
    (C.11.2.1.3.2) or SIGMOID (C.11.2.1.3.1). The default rendering and the explicit
    ``window=`` of /rendered both come here.

    LINEAR keeps its float32 formula (the workstation's pipeline renders the same bytes);
    the other two are pydicom's ``apply_windowing`` onto an 8-bit output range."""
    function = function.upper()
    if function in ("LINEAR_EXACT", "SIGMOID") and width > 0:
        out = _windowing(arr, center, width, function)
    else:
        width = max(width, 1.0)
        if width == 1:  # C.11.2.1.2.1: a threshold at center - 0.5
            out = np.where(arr > center - 0.5, 255.0, 0.0)
        else:
            low = center - 0.5 - (width - 1) / 2
            out = np.clip((arr.astype(np.float32) - low) / (width - 1) * 255.0, 0, 255)
    grey = out.astype(np.uint8)
    if invert:
        grey = 255 - grey  # after rounding down, so inversion is exact: v <-> 255 - v
    return grey


def _windowing(arr: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """pydicom's windowing with 0..255 as the output range (Bits Stored 8, unsigned)."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 8, 0
    # FD, not DS: the centre and width keep every digit (DS holds 16 characters)
    voi.add_new(0x00281050, "FD", float(center))
    voi.add_new(0x00281051, "FD", float(width))
    voi.VOILUTFunction = function
    with np.errstate(over="ignore"):  # a sigmoid far below the centre is 0
        out = apply_windowing(np.asarray(arr, np.float64), voi)
    return np.clip(out, 0, 255)


def _stored_window(source: Dataset) -> tuple[float, float] | None:
    """The first Window Center/Width pair, None when absent or unusable (width <= 0)."""
    wc, ww = source.get("WindowCenter"), source.get("WindowWidth")
    if wc is None or ww is None or wc == "" or ww == "":
        return None
    try:
        center, width = _first_number(wc), _first_number(ww)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width


def default_window(ds: Dataset, values: np.ndarray, index: int = 0) -> tuple[float, float]:
    """The first Window Center/Width of frame ``index`` (the Frame VOI LUT functional group
    of an enhanced image, PS3.3 C.7.6.16.2.10), else the value range."""
    window = _stored_window(frame_group(ds, index, "FrameVOILUTSequence"))
    if window is not None:
        return window
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2, max(hi - lo, 1.0)


def voi_lut(ds: Dataset, index: int = 0) -> Lut | None:
    """The first VOI LUT Sequence (0028,3010) item of frame ``index``: the frame's Frame
    VOI LUT functional group (C.7.6.16.2.10b) or the top level; None when absent or
    unreadable."""
    source = frame_group(ds, index, "FrameVOILUTSequence")
    items = source.get("VOILUTSequence") or []
    if not items:
        return None
    return read_lut(
        items[0],
        little_endian=_little_endian(ds),
        signed_input=_modality_output_signed(ds, index),
    )


def voi_to_8bit(
    ds: Dataset, values: np.ndarray, index: int = 0, invert: bool = False
) -> np.ndarray:
    """The default VOI stage of frame ``index`` (PS3.4 N.2.1.1) to 8-bit, on Modality LUT
    output ``values``:

    1. the first Window Center/Width with the VOI LUT Function (C.11.2.1.3: SIGMOID and
       LINEAR_EXACT were rendered linear);
    2. else the first VOI LUT Sequence item, its output 0 .. 2**n - 1 (n the LUT
       Descriptor's third value, C.11.2.1.1) scaled to 0..255 (it was ignored and the
       image stretched min to max);
    3. else the frame's value range, linear.

    Window first where both are present: C.11.2 lets an image carry both and names no
    default (IHE RAD TF-2 4.16.4.2.2.1 has the user choose among them); the window is
    what most viewers and our workstation (``Display.use_voi_lut`` off) show first, and
    the explicit ``window=`` of /rendered replaces it.

    Then MONOCHROME1 inverts (``invert``), as the Presentation LUT would."""
    source = frame_group(ds, index, "FrameVOILUTSequence")
    window = _stored_window(source)
    if window is not None:
        return window_to_8bit(values, *window, invert=invert, function=voi_function(source))
    lut = voi_lut(ds, index)
    if lut is not None:
        grey = lut.to_8bit(apply_voi(lut.clip(values), lut.dataset("VOILUTSequence")))
        return 255 - grey if invert else grey
    center, width = default_window(ds, values, index)
    return window_to_8bit(values, center, width, invert=invert)


# --------------------------------------------------------------------------- colour


def palette_to_rgb(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """PALETTE COLOR to 8-bit RGB (PS3.3 C.7.6.3.1.5/6, segmented C.7.9.2) with
    pydicom's ``apply_color_lut``; each entry scaled from the descriptor's depth (16-bit
    entries by 65535; they were scaled by the image's brightest value, an entry of 30000
    rendered 250 instead of 117, probe 47). Alpha, if any, is dropped."""
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    keywords = [f"{c}PaletteColorLookupTable" for c in ("Red", "Green", "Blue")]
    if all(f"{k}Data" in ds for k in keywords):
        luts = [
            lut
            for k in keywords
            if (
                lut := read_lut(
                    ds,
                    little_endian=_little_endian(ds),
                    signed_input=signed,
                    descriptor=f"{k}Descriptor",
                    data=f"{k}Data",
                )
            )
            is not None
        ]
        if len(luts) != len(keywords):
            raise ValueError("the Palette Color Lookup Table Data cannot be read")
        tidy = Dataset()
        for k, lut in zip(keywords, luts, strict=True):
            setattr(tidy, f"{k}Descriptor", lut.descriptor())
            tidy.add_new(ds[f"{k}Data"].tag, "OW", lut.words())
        rgb = apply_color_lut(luts[0].clip(frame), tidy)
        return np.stack([lut.to_8bit(rgb[..., i]) for i, lut in enumerate(luts)], axis=-1)
    # segmented (C.7.9.2): pydicom expands the segments, given tidy descriptors and the
    # data set's byte order
    desc = _ints(ds.RedPaletteColorLookupTableDescriptor)
    count = (desc[0] & 0xFFFF) or 65536
    start = desc[1] - 65536 if signed and desc[1] >= 32768 else desc[1]
    declared = desc[2] & 0xFFFF
    little = _little_endian(ds)
    tidy = Dataset()
    tidy.file_meta = FileMetaDataset()
    tidy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    # pydicom indexes an 8-bit palette with 8 bits: past 256 entries, widen its segments
    # to 16-bit words (same numbers, same segments; output still scaled from 8 bits)
    widen = declared == 8 and count > 256
    for k in keywords:
        setattr(tidy, f"{k}Descriptor", [count % 65536, start, 16 if widen else declared])
        segmented = f"Segmented{k}Data"
        if segmented in ds:
            data = bytes(ds[segmented].value)
            if widen:
                data = _widened_segments(data, little)
            tidy.add_new(ds[segmented].tag, "OW", data)
    clipped = np.clip(frame.astype(np.int64), start, start + count - 1)
    rgb = apply_color_lut(clipped, tidy)[..., :3]
    return _to_8bit(rgb, _depth(declared, int(rgb.max()) if rgb.size else 0))


def _widened_segments(data: bytes, little_endian: bool) -> bytes:
    """8-bit segmented palette data (C.7.9.2) as 16-bit words of the same values. An
    indirect segment (C.7.9.2.3) holds a 32-bit offset in four 8-bit words but two 16-bit
    ones, so it cannot be widened word by word: refused with the reason."""
    i = 0
    while i + 1 < len(data):
        opcode, length = data[i], data[i + 1]
        if opcode == 2:
            raise ValueError(
                "8-bit segmented palettes of more than 256 entries with indirect segments "
                "are not supported"
            )
        i += 2 + (length if opcode == 0 else 1)
    return np.frombuffer(data, np.uint8).astype("<u2" if little_endian else ">u2").tobytes()


def colour_to_8bit(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """RGB with more than 8 bits per sample to 8-bit: by the range Bits Stored allows,
    not the frame's brightest value (which made every dim image bright)."""
    if frame.dtype == np.uint8:
        return frame
    try:
        stored = int(ds.get("BitsStored") or 0)
    except (TypeError, ValueError):
        stored = 0
    top = float((1 << stored) - 1) if 8 < stored <= 16 else max(float(frame.max()), 1.0)
    return np.clip(np.rint(frame.astype(np.float64) / top * 255.0), 0, 255).astype(np.uint8)


def render(ds: Dataset, index: int = 0) -> np.ndarray:
    """A frame as 8-bit grey (rows, cols) or RGB (rows, cols, 3) for /rendered and
    thumbnails: the grey pipeline of PS3.4 N.2.1.1, Modality LUT then VOI then
    MONOCHROME1 inversion; PALETTE COLOR through its palette."""
    frame = decode_frame(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frame.ndim == 3 or photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
        # pydicom 3's pixel_array is already RGB for every YBR_* (its as_rgb default; the
        # JPEG 2000 decoders undo YBR_ICT/YBR_RCT themselves): converting again turned red
        # green, and YBR_ICT/RCT raised NotImplementedError (500 on /rendered, QA probe)
        if photometric == "PALETTE COLOR" and frame.ndim == 2:
            return palette_to_rgb(ds, frame)
        return colour_to_8bit(ds, frame)
    values = modality_lut(ds, frame, index)
    return voi_to_8bit(ds, values, index, invert=photometric == "MONOCHROME1")


def native_frame(
    data: bytes,
    rows: int,
    columns: int,
    bits_allocated: int,
    bits_stored: int,
    signed: bool,
    big_endian: bool = False,
) -> np.ndarray:
    """One native single-sample frame from the Pixel Data value alone, as pydicom decodes
    it: bits above Bits Stored masked off (unsigned) or sign-extended (signed).

    Lets the server assemble a volume from the pixel objects without parsing each data set.
    """
    if bits_allocated not in (8, 16, 32):
        raise ValueError(f"BitsAllocated {bits_allocated} has no native numpy layout")
    kind = "i" if signed else "u"
    order = ">" if big_endian and bits_allocated > 8 else "<"
    dtype = np.dtype(f"{order}{kind}{bits_allocated // 8}")
    count = rows * columns
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(rows, columns)
    arr = arr.astype(dtype.newbyteorder("="), copy=True)
    if 0 < bits_stored < bits_allocated:
        if signed:
            shift = bits_allocated - bits_stored
            arr = (arr << shift) >> shift
        else:
            arr &= (1 << bits_stored) - 1
    return arr


# --------------------------------------------------------------------------- overlays

OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))  # the 16 repeating groups (PS3.5 7.6)


@dataclass(frozen=True)
class OverlayPlane:
    """One overlay plane (PS3.3 C.9.2 Overlay Plane, C.9.3 Multi-frame Overlay).

    ``bits`` is (frames, rows, cols) bool in the overlay's own grid; ``origin`` is Overlay
    Origin (60xx,0050), 1-based (row, column) of the image pixel under overlay pixel (1, 1);
    ``first_frame`` is Image Frame Origin (60xx,0051), 1-based; ``all_frames`` is True when
    the plane has no Number of Frames in Overlay (60xx,0015) and so applies to every frame.
    """

    group: int
    bits: np.ndarray
    origin: tuple[int, int] = (1, 1)
    kind: str = "G"  # Overlay Type (60xx,0040): G graphics, R ROI
    label: str = ""
    first_frame: int = 1
    all_frames: bool = True
    embedded: bool = False


def _int(ds: Dataset, tag: tuple[int, int], default: int) -> int:
    elem = ds.get(tag)
    if elem is None or elem.value in (None, ""):
        return default
    value = elem.value
    if isinstance(value, list | tuple) or (
        hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    ):
        value = list(value)[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _raw_words(ds: Dataset) -> np.ndarray | None:
    """Native Pixel Data as unsigned words (frames, rows, cols), bits above Bits Stored kept.

    pydicom masks those bits away in ``pixel_array``, but the retired embedded overlays
    (PS3.5 8.1.2 before 2004: Overlay Bits Allocated > 1) live exactly there.
    """
    if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_encapsulated:
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if bits not in (8, 16, 32):
        return None
    order = ">" if ts is not None and not ts.is_little_endian and bits > 8 else "<"
    rows, cols, n = int(ds.Rows), int(ds.Columns), frame_count(ds)
    count = rows * cols * n
    data = ds.PixelData
    if len(data) < count * bits // 8:
        return None
    arr = np.frombuffer(data, np.dtype(f"{order}u{bits // 8}"), count=count)
    return arr.reshape(n, rows, cols)


def overlay_planes(ds: Dataset) -> list[OverlayPlane]:
    """Every overlay plane of an image: Overlay Data (60xx,3000) through pydicom's
    ``overlay_array`` (Bits Allocated 1, Bit Position 0), and the retired embedded form whose
    bit sits at Overlay Bit Position (60xx,0102) of each Pixel Data word.

    A plane that cannot be read is skipped: a broken overlay must never hide the image.
    """
    planes: list[OverlayPlane] = []
    words: np.ndarray | None = None
    for g in OVERLAY_GROUPS:
        if (g, 0x0010) not in ds and (g, 0x3000) not in ds:
            continue
        rows = _int(ds, (g, 0x0010), int(ds.get("Rows", 0) or 0))
        cols = _int(ds, (g, 0x0011), int(ds.get("Columns", 0) or 0))
        origin_elem = ds.get((g, 0x0050))
        origin = (1, 1)
        if origin_elem is not None and origin_elem.value not in (None, ""):
            try:
                r, c = list(origin_elem.value)[:2]
                origin = (int(r), int(c))
            except (TypeError, ValueError):
                origin = (1, 1)
        kind = str(ds.get((g, 0x0040)).value if (g, 0x0040) in ds else "G").strip() or "G"
        label = str(ds.get((g, 0x1500)).value if (g, 0x1500) in ds else "").strip()
        n_frames_elem = ds.get((g, 0x0015))
        all_frames = n_frames_elem is None or n_frames_elem.value in (None, "")
        first = _int(ds, (g, 0x0051), 1)
        embedded = (g, 0x3000) not in ds
        try:
            if not embedded:
                bits = np.asarray(ds.overlay_array(g)).astype(bool)
            else:
                position = _int(ds, (g, 0x0102), -1)
                if words is None:
                    words = _raw_words(ds)
                stored = int(ds.get("BitsStored", 16) or 16)
                if words is None or not stored <= position < words.dtype.itemsize * 8:
                    continue
                # Embedded planes share the image grid: same rows, columns and frames.
                bits = ((words >> position) & 1).astype(bool)
                if (rows, cols) != bits.shape[1:]:
                    continue
        except Exception:  # noqa: BLE001 - unreadable plane: show the image without it
            continue
        if bits.ndim == 2:
            bits = bits[np.newaxis]
        planes.append(OverlayPlane(g, bits, origin, kind, label, first, all_frames and
                                   not (embedded and bits.shape[0] > 1), embedded))  # fmt: skip
    return planes


def overlay_masks(ds: Dataset, frames: int | None = None) -> np.ndarray | None:
    """All overlay planes OR-ed into one (frames, rows, cols) bool mask in the image grid.

    Each plane is placed at its Overlay Origin (clipped at every edge, origins may be
    negative) and on the image frames it belongs to (PS3.3 C.9.3.1.1: overlay frame f goes on
    image frame Image Frame Origin + f - 1). None when the image has no overlay.
    """
    planes = overlay_planes(ds)
    if not planes:
        return None
    n = frame_count(ds) if frames is None else frames
    rows, cols = int(ds.Rows), int(ds.Columns)
    out = np.zeros((n, rows, cols), bool)
    for plane in planes:
        r0, c0 = plane.origin[0] - 1, plane.origin[1] - 1
        _, h, w = plane.bits.shape
        top, left = max(0, r0), max(0, c0)
        bottom, right = min(rows, r0 + h), min(cols, c0 + w)
        if bottom <= top or right <= left:
            continue
        src = plane.bits[:, top - r0 : bottom - r0, left - c0 : right - c0]
        if plane.all_frames:
            out[:, top:bottom, left:right] |= src[0]
            continue
        for f in range(src.shape[0]):
            k = plane.first_frame - 1 + f
            if 0 <= k < n:
                out[k, top:bottom, left:right] |= src[f]
    return out
