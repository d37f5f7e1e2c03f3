"""Pixel decoding for the API and the viewer: pydicom with pylibjpeg/gdcm handlers.

Pure functions over Part-10 bytes; the server calls them in its API process and the
workstation can call them on what it downloads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

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
    """Rescale Slope/Intercept of frame ``index`` (PS3.3 C.11.1, C.7.6.16.2.9: the Pixel
    Value Transformation functional group of an enhanced image)."""
    source = frame_group(ds, index, "PixelValueTransformationSequence")
    try:
        slope = _first_number(source.get("RescaleSlope", 1) or 1)
        intercept = _first_number(source.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError, IndexError):
        slope, intercept = 1.0, 0.0
    if slope == 1 and intercept == 0:
        return arr
    return arr.astype(np.float32) * slope + intercept


def window_to_8bit(
    arr: np.ndarray, center: float, width: float, invert: bool = False
) -> np.ndarray:
    """Linear VOI LUT (PS3.3 C.11.2.1.2.1) to 8-bit display values."""
    width = max(width, 1.0)
    low = center - 0.5 - (width - 1) / 2
    out = np.clip((arr.astype(np.float32) - low) / (width - 1) * 255.0, 0, 255)
    if invert:
        out = 255 - out
    return out.astype(np.uint8)


def default_window(ds: Dataset, values: np.ndarray, index: int = 0) -> tuple[float, float]:
    """The first Window Center/Width of frame ``index`` (the Frame VOI LUT functional group
    of an enhanced image, PS3.3 C.7.6.16.2.10), else the value range."""
    source = frame_group(ds, index, "FrameVOILUTSequence")
    wc, ww = source.get("WindowCenter"), source.get("WindowWidth")
    try:
        if wc is not None and ww is not None:
            return _first_number(wc), _first_number(ww)
    except (TypeError, ValueError, IndexError):
        pass
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2, max(hi - lo, 1.0)


def render(ds: Dataset, index: int = 0) -> np.ndarray:
    """A frame as 8-bit grey (rows, cols) or RGB (rows, cols, 3) for /rendered and thumbnails."""
    frame = decode_frame(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frame.ndim == 3 or photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
        from pydicom.pixels import apply_color_lut

        # pydicom 3's pixel_array is already RGB for every YBR_* (its as_rgb default; the
        # JPEG 2000 decoders undo YBR_ICT/YBR_RCT themselves): converting again turned red
        # green, and YBR_ICT/RCT raised NotImplementedError (500 on /rendered, QA probe)
        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds)
        if frame.dtype != np.uint8:
            frame = (frame / max(float(frame.max()), 1.0) * 255).astype(np.uint8)
        return frame
    values = modality_lut(ds, frame, index)
    center, width = default_window(ds, values, index)
    return window_to_8bit(values, center, width, invert=photometric == "MONOCHROME1")


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
