"""Frames of MPEG-2, H.264 and HEVC video instances (PS3.5 8.2.5-8.2.8) as RGB pixels.

pydicom has no decoder for these transfer syntaxes, so the API answered 422 for a frame
of an endoscopy or ultrasound clip it had accepted (outside probe 41). The encapsulated
Pixel Data is one video bit stream split into fragments (PS3.5 A.4.5-A.4.7): joined, FFmpeg
(through PyAV) decodes it like a file. The decoded frames are RGB, as pydicom gives YBR
colour images.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from lucent.dicom.transfer_syntaxes import VIDEO


def is_video(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or "") in VIDEO


def bit_stream(ds: Dataset) -> bytes:
    """The video bit stream: the Pixel Data fragments joined, the Basic Offset Table item
    (always the first item, empty or not; PS3.5 A.4) left out."""
    items = generate_fragments(ds.PixelData)
    next(items, None)
    return b"".join(items)


MAX_DECODED_BYTES = 2 << 30
"""``decode_all`` refuses clips whose decoded frames would take more (a minute of 1080p is
11 GB of RGB): the viewer shows them frame by frame through the API instead."""


def decode_all(ds: Dataset) -> np.ndarray:
    """Every frame as (frames, rows, cols, 3) uint8 RGB, like pydicom's ``pixel_array`` of
    a colour multi-frame image; ValueError for a damaged stream or a clip over
    ``MAX_DECODED_BYTES``."""
    import av

    frames = int(ds.get("NumberOfFrames") or 1)
    size = frames * int(ds.Rows) * int(ds.Columns) * 3
    if size > MAX_DECODED_BYTES:
        raise ValueError(
            f"the clip's {frames} frames would take {size / 2**30:.1f} GiB decoded; "
            f"the limit is {MAX_DECODED_BYTES / 2**30:.0f} GiB"
        )
    out: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(bit_stream(ds)), mode="r") as container:
            if not container.streams.video:
                raise ValueError("the Pixel Data holds no video stream")
            for frame in container.decode(video=0):
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == frames:
                    break
    except av.FFmpegError as exc:
        raise ValueError(f"the video stream cannot be decoded: {exc}") from exc
    if not out:
        raise ValueError("the video stream holds no frame")
    return np.stack(out)


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, decode order as displayed) as (rows, cols, 3) uint8 RGB.

    Raises IndexError when the stream holds fewer frames, ValueError when FFmpeg cannot read
    it (a damaged or truncated stream)."""
    import av  # FFmpeg: loaded only for video instances

    if index < 0:
        raise IndexError(f"frame {index + 1} does not exist")
    seen = 0
    try:
        with av.open(io.BytesIO(bit_stream(ds)), mode="r") as container:
            if not container.streams.video:
                raise ValueError("the Pixel Data holds no video stream")
            for frame in container.decode(video=0):
                if seen == index:
                    return np.asarray(frame.to_ndarray(format="rgb24"))
                seen += 1
    except av.FFmpegError as exc:
        raise ValueError(f"the video stream cannot be decoded: {exc}") from exc
    raise IndexError(f"frame {index + 1} does not exist (the video stream has {seen})")
