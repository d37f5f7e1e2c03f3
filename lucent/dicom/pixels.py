"""Pixel decoding for the API and the viewer: pydicom with pylibjpeg/gdcm handlers.

Pure functions over Part-10 bytes; the server calls them in its API process and the
workstation can call them on what it downloads.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames


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
    arr = ds.pixel_array
    return arr[index] if n > 1 else arr


def raw_frame(ds: Dataset, index: int) -> bytes:
    """A frame's bytes as stored: native pixel bytes or the encapsulated frame (DICOMweb)."""
    n = frame_count(ds)
    if not 0 <= index < n:
        raise IndexError(f"frame {index + 1} does not exist (instance has {n})")
    data = ds.PixelData
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
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


def modality_lut(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
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


def default_window(ds: Dataset, values: np.ndarray) -> tuple[float, float]:
    """The first Window Center/Width of the instance, else the value range."""
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        if wc is not None and ww is not None:
            c = float(wc[0] if hasattr(wc, "__len__") and not isinstance(wc, str) else wc)
            w = float(ww[0] if hasattr(ww, "__len__") and not isinstance(ww, str) else ww)
            return c, w
    except (TypeError, ValueError, IndexError):
        pass
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2, max(hi - lo, 1.0)


def render(ds: Dataset, index: int = 0) -> np.ndarray:
    """A frame as 8-bit grey (rows, cols) or RGB (rows, cols, 3) for /rendered and thumbnails."""
    frame = decode_frame(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frame.ndim == 3 or photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
        from pydicom.pixels import apply_color_lut, convert_color_space

        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds)
        elif photometric.startswith("YBR") and frame.ndim == 3:
            frame = convert_color_space(frame, photometric, "RGB")
        if frame.dtype != np.uint8:
            frame = (frame / max(float(frame.max()), 1.0) * 255).astype(np.uint8)
        return frame
    values = modality_lut(ds, frame)
    center, width = default_window(ds, values)
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
