"""The display pixel pipeline in pure numpy (PS3.3 C.11; PS3.4 N.2 "grayscale pipeline").

stored values → Modality LUT (rescale) → VOI LUT (window or LUT table) → Presentation
(MONOCHROME1 inversion, user invert) → 8-bit; colour images (RGB, YBR_*, PALETTE COLOR) are
converted to RGB once at decode time. Overlay planes (60xx) are burnt in after VOI, as
viewers do. Everything is testable without Qt; the viewport only blits the result.

Speed matters (issue 5: W/L drag and scrolling at ≥ 60 fps): for 8/16-bit data the whole
chain is folded into one lookup table indexed by the stored value, so a frame costs one
fancy-index (≈1 ms for 512²) instead of float arithmetic per pixel.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

#: Names the "JPG" badge gives each syntax that may lose information. Whether an
#: instance did is ``lucent.dicom.transfer_syntaxes.is_lossy`` (the server's index flag
#: decides with it too): JPEG 2000 only when its codestream is irreversible.
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2",
    "1.2.840.10008.1.2.4.100": "MPEG2",
    "1.2.840.10008.1.2.4.101": "MPEG2",
    "1.2.840.10008.1.2.4.102": "MPEG-4",
    "1.2.840.10008.1.2.4.103": "MPEG-4",
    "1.2.840.10008.1.2.4.104": "MPEG-4",
    "1.2.840.10008.1.2.4.105": "MPEG-4",
    "1.2.840.10008.1.2.4.106": "MPEG-4",
    "1.2.840.10008.1.2.4.107": "HEVC",
    "1.2.840.10008.1.2.4.108": "HEVC",
    "1.2.840.10008.1.2.4.111": "JPEG XL",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}


@dataclass(frozen=True)
class Lossy:
    """FAQ "JPG": the image was lossy compressed at some point; ratio/method when known."""

    lossy: bool
    method: str = ""
    ratio: str = ""

    @property
    def badge(self) -> str:
        """Text of the viewer badge: "JPG" plus what is known (e.g. "JPG 10:1 ISO_10918_1")."""
        if not self.lossy:
            return ""
        parts = ["JPG"]
        if self.ratio:
            parts.append(f"{self.ratio}:1")
        if self.method:
            parts.append(self.method)
        return " ".join(parts)


def _first(values: Any) -> str:
    if values is None:
        return ""
    if isinstance(values, list | tuple):
        return str(values[0]) if values else ""
    if hasattr(values, "__iter__") and not isinstance(values, str | bytes):
        seq = list(values)
        return str(seq[0]) if seq else ""
    return str(values)


def lossy_of(
    lossy_flag: Any = None,
    transfer_syntax: str = "",
    ratio: Any = None,
    method: Any = None,
    index_flag: bool | None = None,
    irreversible: bool | None = None,
) -> Lossy:
    """``transfer_syntaxes.is_lossy`` (Lossy Image Compression (0028,2110) "01", an
    always-lossy syntax, an irreversible JPEG 2000 codestream), or the server's index flag
    (the same function over the stored codestream). A JPEG 2000 instance whose codestream
    is not at hand (``irreversible`` None) takes the index flag, else counts as lossy: a
    reversible .91 with "00" showed "JPG" (probe 59)."""
    from lucent.dicom.transfer_syntaxes import is_lossy

    by_syntax = LOSSY_TRANSFER_SYNTAXES.get(str(transfer_syntax), "")
    verdict = is_lossy(str(transfer_syntax), lossy_flag, irreversible)
    if verdict is None:
        verdict = True if index_flag is None else index_flag
    is_lossy_now = verdict or bool(index_flag)
    ratio_s = _first(ratio)
    if ratio_s:
        with contextlib.suppress(ValueError):
            ratio_s = f"{float(ratio_s):g}"
    return Lossy(is_lossy_now, _first(method) or by_syntax, ratio_s)


def lossy_of_dataset(ds: Dataset, index_flag: bool | None = None) -> Lossy:
    """``lossy_of`` of a data set, its JPEG 2000 codestream read when it has pixel data."""
    from lucent.dicom.codestream import dataset_irreversible

    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    return lossy_of(
        ds.get("LossyImageCompression"),
        ts,
        ds.get("LossyImageCompressionRatio"),
        ds.get("LossyImageCompressionMethod"),
        index_flag,
        dataset_irreversible(ds),
    )


@dataclass
class VoiLut:
    """A VOI LUT table (0028,3010): first stored value mapped, table, bits per entry."""

    first: int
    table: np.ndarray
    bits: int
    explanation: str = ""  # LUT Explanation (0028,3003), shown when the user picks the LUT


@dataclass
class Frame:
    """One decoded frame ready for the display pipeline.

    ``stored`` is (rows, cols) stored values for greyscale, (rows, cols, 3) uint8 RGB for
    colour. ``overlay`` is a boolean mask of all overlay planes (or None).
    """

    stored: np.ndarray
    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)
    voi_function: str = "LINEAR"
    voi_lut: VoiLut | None = None
    overlay: np.ndarray | None = None
    bits_stored: int = 16

    @property
    def is_colour(self) -> bool:
        return self.stored.ndim == 3

    @property
    def monochrome1(self) -> bool:
        return self.photometric == "MONOCHROME1"

    def modality_values(self) -> np.ndarray:
        """Modality LUT (PS3.3 C.11.1): stored × slope + intercept (HU for CT)."""
        if self.slope == 1 and self.intercept == 0:
            return self.stored
        return self.stored.astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)

    def default_window(self) -> tuple[float, float]:
        """The first Window Center/Width of the image, else the full modality value range."""
        if self.windows:
            return self.windows[0]
        if self.is_colour:
            return 127.5, 256.0
        values = self.modality_values()
        lo, hi = float(np.min(values)), float(np.max(values))
        return (lo + hi) / 2 + 0.5, max(hi - lo + 1, 2.0)


def _floats(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or (
        hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    ):
        return [float(v) for v in value]
    return [float(value)]


def frames_from_dataset(ds: Dataset) -> list[Frame]:
    """Decode every frame of an image instance (pydicom + pylibjpeg/gdcm handlers).

    pydicom converts YBR_* to RGB and applies Planar Configuration; PALETTE COLOR goes
    through its Palette Colour LUT here so the viewer only ever sees grey or RGB.
    """
    from lucent.dicom import codestream, video
    from lucent.dicom.pixels import ignore_bits_above_high_bit, modality_lut, palette_to_rgb

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    n = int(ds.get("NumberOfFrames") or 1)
    if video.is_video(ds):  # MPEG-2 / H.264 / HEVC: pydicom has no decoder
        arr = video.decode_all(ds)  # (frames, rows, cols, 3) RGB, even for one frame
        n, photometric = len(arr), "RGB"
    else:
        problem = codestream.frame_problem(ds)
        if problem is not None:  # never hand a malformed stream to a decoder (GDCM aborts)
            raise ValueError(f"the encapsulated pixel data is malformed: {problem}")
        # Bits above High Bit are not part of the value (PS3.5 8.1.1); JPEG-LS from
        # dcmcjpls keeps them: unmasked, 12-bit black read as 61440 and showed as white noise.
        arr = ignore_bits_above_high_bit(ds, ds.pixel_array)
        if n == 1:
            arr = arr[np.newaxis]
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        # the server's palette reader (PS3.3 C.7.6.3.1.5/6): 8-bit entries in 16-bit words
        # and 8-bit palettes of more than 256 entries were read wrong by apply_color_lut
        # here (the same mistake as the VOI LUT's, probe 59)
        arr = palette_to_rgb(ds, arr)
        samples = 3
    elif samples == 3 and arr.dtype != np.uint8:
        top = float((1 << int(ds.get("BitsStored", 8))) - 1)
        arr = np.clip(arr.astype(np.float32) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    windows = list(
        zip(_floats(ds.get("WindowCenter")), _floats(ds.get("WindowWidth")), strict=False)
    )
    # Read even when the image also has a window: both are offered (PS3.3 C.11.2), the
    # viewport picks the default (the LUT only when there is no window, PS3.4 N.2.1.1).
    voi = _voi_lut(ds)
    per_frame_voi = bool(ds.get("PerFrameFunctionalGroupsSequence")) and any(
        "FrameVOILUTSequence" in group for group in ds.PerFrameFunctionalGroupsSequence
    )
    overlay = _overlay_mask(ds, n)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if samples == 1 and ds.get("ModalityLUTSequence"):
        # the Modality LUT Sequence replaces rescale (PS3.3 C.11.1): a CR whose LUT maps
        # stored x to 4095 - x showed inverted (outside probe 47); the server's rendering
        # and the viewer read it with one function
        arr = np.stack([modality_lut(ds, arr[k]) for k in range(n)])
        slope, intercept = 1.0, 0.0
    frames: list[Frame] = []
    for k in range(n):
        frames.append(
            Frame(
                stored=arr[k],
                photometric="RGB" if samples == 3 else photometric,
                slope=slope,
                intercept=intercept,
                windows=windows,
                voi_function=str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper(),
                voi_lut=_voi_lut(ds, k) if per_frame_voi and k else voi,
                overlay=None if overlay is None or not overlay[k].any() else overlay[k],
                bits_stored=int(ds.get("BitsStored", 8) or 8),
            )
        )
    return frames


def _voi_lut(ds: Dataset, index: int = 0) -> VoiLut | None:
    """The first VOI LUT Sequence (0028,3010) item of frame ``index`` (its Frame VOI LUT
    functional group or the top level), PS3.3 C.11.2.1.1, read by the server's
    ``lucent.dicom.pixels.voi_lut`` so both apps read LUTs with one piece of code: 8-bit
    entries are stored as with 8 bits allocated, one byte each (C.8.11.3.1.5); read as
    16-bit words here they halved the table and showed stored 2048 white instead of mid
    grey (probe 59). The first mapped value is signed when the Modality LUT output can be
    negative. None when the image has none or it cannot be read (a broken LUT must not
    hide the image)."""
    from lucent.dicom.pixels import frame_group, voi_lut

    items = frame_group(ds, index, "FrameVOILUTSequence").get("VOILUTSequence")
    if not items:
        return None
    try:
        lut = voi_lut(ds, index)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return None
    if lut is None:
        return None
    explanation = str(items[0].get("LUTExplanation", "") or "")
    return VoiLut(lut.first, lut.data.astype(np.float32), lut.bits, explanation)


def _overlay_mask(ds: Dataset, frames: int) -> np.ndarray | None:
    """All 60xx overlay planes (Overlay Data, embedded bits, multi-frame overlays) as one
    boolean mask per image frame (PS3.3 C.9.2/C.9.3); lucent.dicom.pixels does the work."""
    from lucent.dicom.pixels import overlay_masks

    return overlay_masks(ds, frames)


def read_part10(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


# --------------------------------------------------------------------------- VOI


def window_function(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """VOI window to [0, 255] float (PS3.3 C.11.2.1.2 LINEAR, C.11.2.1.3.1 LINEAR_EXACT/SIGMOID).

    LINEAR is the same formula as lucent.dicom.pixels.window_to_8bit (before rounding down).
    """
    v = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (v - center) / max(width, 1e-6)))
        return out.astype(np.float32)
    if function == "LINEAR_EXACT":
        w = max(width, 1e-6)
        return np.clip((v - center) / w * 255.0 + 127.5, 0, 255).astype(np.float32)
    w = max(width, 1.0)
    low = center - 0.5 - (w - 1) / 2
    if w <= 1:
        return np.where(v > center - 0.5, 255.0, 0.0).astype(np.float32)
    return np.clip((v - low) / (w - 1) * 255.0, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Display:
    """What the user chose for one viewport: window, inversion; the rest comes from the image."""

    center: float
    width: float
    invert: bool = False
    use_voi_lut: bool = False
    overlays: bool = True  # overlay planes (60xx) shown; the user toggles them (key O)


def _grey_8bit(frame: Frame, values: np.ndarray, display: Display) -> np.ndarray:
    if display.use_voi_lut and frame.voi_lut is not None:
        lut = frame.voi_lut
        idx = np.clip(np.round(values).astype(np.int64) - lut.first, 0, len(lut.table) - 1)
        out = lut.table[idx] / float((1 << lut.bits) - 1) * 255.0
    else:
        out = window_function(values, display.center, display.width, frame.voi_function)
    grey = out.astype(np.uint8)
    if frame.monochrome1 != display.invert:
        grey = 255 - grey  # after rounding down, so inversion is exact: v ↔ 255 - v
    return grey


def lut_for(frame: Frame, display: Display) -> np.ndarray | None:
    """The whole grey chain as one table indexed by the stored value's unsigned bit pattern.

    Only for 8/16-bit integer data; None means "compute per pixel" (float, 32-bit, colour).
    """
    dt = frame.stored.dtype
    if frame.is_colour or dt.kind not in "iu" or dt.itemsize > 2:
        return None
    n = 1 << (8 * dt.itemsize)
    codes = np.arange(n, dtype=np.uint16 if dt.itemsize == 2 else np.uint8).view(dt)
    values = codes.astype(np.float32)
    if frame.slope != 1 or frame.intercept != 0:
        values = values * np.float32(frame.slope) + np.float32(frame.intercept)
    return _grey_8bit(frame, values, display)


def render(frame: Frame, display: Display, lut: np.ndarray | None = None) -> np.ndarray:
    """Display values: uint8 (rows, cols) grey or (rows, cols, 3) RGB, overlays burnt in."""
    if frame.is_colour:
        out = frame.stored
        if display.invert:
            out = 255 - out
        if frame.overlay is not None and display.overlays:
            out = out.copy()
            out[frame.overlay] = 255
        return out
    if lut is None:
        lut = lut_for(frame, display)
    if lut is not None:
        dt = frame.stored.dtype
        unsigned = frame.stored.view(np.uint16 if dt.itemsize == 2 else np.uint8)
        out = lut[unsigned]
    else:
        out = _grey_8bit(frame, frame.modality_values(), display)
    if frame.overlay is not None and display.overlays:
        out = out.copy() if not out.flags.writeable else out
        out[frame.overlay] = 255  # drawn on top in full white, after MONOCHROME1 inversion
    return out


# --------------------------------------------------------------------------- presets

# Modality presets (centre, width) in HU as radiologists expect them (Weasis/Horos values).
CT_PRESETS: dict[str, tuple[float, float]] = {
    "Brain": (40.0, 80.0),
    "Subdural": (75.0, 215.0),
    "Stroke": (32.0, 8.0),
    "Bone": (500.0, 2000.0),
    "Lung": (-600.0, 1500.0),
    "Soft tissue": (40.0, 400.0),
    "Liver": (60.0, 160.0),
    "Mediastinum": (50.0, 350.0),
}
