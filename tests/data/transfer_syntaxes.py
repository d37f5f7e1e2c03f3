"""One sample file per accepted transfer syntax (Conformance 4.2.3.2), with the pixels to expect.

Issue 2 section 4: `storescu` sends "every transfer syntax" and the archive must return bytes
identical to what was sent, or pixels identical where the server transcodes. So each sample
records what a decoder must produce: the exact source array for lossless syntaxes, a shape
and error bound for lossy ones, and the stream parameters for video (pydicom cannot decode
MPEG/H.264/HEVC; tests probe those with ffprobe).

Encoders are real third-party ones, not pydicom round trips of itself: DCMTK (`dcmcjpeg`,
`dcmcjpls`, `dcmcrle`, `dcmconv`), OpenJPEG through pydicom/pylibjpeg, and ffmpeg (Debian's
`ffmpeg` package: libx264, libx265, mpeg2video) for the video syntaxes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from lucent.dicom.transfer_syntaxes import ACCEPTED, EXPLICIT_BE, LOSSY, VIDEO
from tests.data.samples import file_meta_for, make_instance, pattern, set_pixels, write

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"

SIZE = 64  # rows = columns of the still-image samples
JPEG_LS_NEAR = 2  # NEAR parameter for the near-lossless sample: |error| <= 2 per sample


@dataclass(frozen=True)
class VideoStream:
    """What ffprobe must report for a video sample."""

    codec: str  # ffprobe codec_name
    profile: str  # ffprobe profile
    width: int
    height: int
    frames: int
    container: str  # "mpegts" or "mpeg" (program stream)


@dataclass(frozen=True)
class TsSample:
    """A sample file and what decoding it must give."""

    transfer_syntax: str
    path: Path
    sop_class_uid: str
    made_with: str  # the encoder, for reports
    lossless: bool
    shape: tuple[int, ...]  # pydicom pixel_array shape (video: frames, rows, cols, 3)
    expected: np.ndarray | None = field(default=None, compare=False, repr=False)
    max_abs_error: int | None = None  # lossy syntaxes with a hard bound (JPEG-LS NEAR)
    max_mean_abs_error: float | None = None  # lossy syntaxes: loose fidelity check
    video: VideoStream | None = None


def missing_tools() -> list[str]:
    """External programs the full set needs that are not on PATH (Debian: dcmtk, ffmpeg)."""
    tools = ["dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv", "ffmpeg"]
    return [t for t in tools if shutil.which(t) is None]


def _run(*cmd: str | Path) -> None:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _source(kind: str) -> tuple[Dataset, np.ndarray]:
    """A fresh instance (own UIDs, so samples never replace each other) and its pixels."""
    if kind == "ct":  # signed 16-bit, full range: exercises sign handling and byte order
        ds = make_instance(CT, rows=SIZE, cols=SIZE, seed=1)
        arr = pattern(SIZE, SIZE, bits_stored=16, signed=True, seed=1).astype(np.int16)
        set_pixels(ds, arr, bits_allocated=16, bits_stored=16, signed=True)
        ds.RescaleIntercept = -1024
    elif kind == "mr":  # unsigned 12-in-16: the classic JPEG 12-bit / JPEG-LS case
        ds = make_instance(MR, rows=SIZE, cols=SIZE, seed=2)
        arr = pattern(SIZE, SIZE, bits_stored=12, seed=2).astype(np.uint16)
        set_pixels(ds, arr, bits_allocated=16, bits_stored=12)
    elif kind == "rgb":  # 8-bit RGB, 3 frames: colour transforms and per-frame fragments
        ds = make_instance(MF_TRUE_COLOR_SC, rows=SIZE, cols=SIZE, seed=3)
        arr = pattern(SIZE, SIZE, frames=3, samples=3, bits_stored=8, seed=3).astype(np.uint8)
        set_pixels(ds, arr, bits_allocated=8, bits_stored=8)
    elif kind == "mono8":
        ds = make_instance(MR, rows=SIZE, cols=SIZE, seed=4)
        arr = pattern(SIZE, SIZE, bits_stored=8, seed=4).astype(np.uint8)
        set_pixels(ds, arr, bits_allocated=8, bits_stored=8)
    else:
        raise ValueError(kind)
    ds.SeriesDescription = f"Transfer syntax sample ({kind})"
    return ds, arr


def _native(out: Path, ts: str, kind: str, tmp: Path) -> TsSample:
    ds, arr = _source(kind)
    if ts == EXPLICIT_BE:  # pydicom would not swap OW bytes for us; DCMTK does it right
        src = write(ds, tmp / "be_src.dcm")
        _run("dcmconv", "+tb", src, out)
        made = "dcmconv +tb"
    else:
        ds.file_meta = file_meta_for(ds, ts)
        write(ds, out)
        made = "pydicom"
    return TsSample(ts, out, ds.SOPClassUID, made, True, arr.shape, arr)


def _dcmtk(out: Path, ts: str, kind: str, tmp: Path, tool: str, *opts: str) -> TsSample:
    ds, arr = _source(kind)
    src = write(ds, tmp / f"{ts}_src.dcm")
    _run(tool, *opts, src, out)
    written = pydicom.dcmread(out, stop_before_pixels=True)
    if written.file_meta.TransferSyntaxUID != ts:
        raise RuntimeError(f"{tool} {opts} wrote {written.file_meta.TransferSyntaxUID}, not {ts}")
    lossless = ts not in LOSSY
    return TsSample(
        ts,
        out,
        ds.SOPClassUID,
        " ".join((tool, *opts)),
        lossless,
        arr.shape,
        arr,
        max_abs_error=JPEG_LS_NEAR if ts == "1.2.840.10008.1.2.4.81" else None,
        max_mean_abs_error=None if lossless else _mean_error_bound(kind),
    )


def _mean_error_bound(kind: str) -> float:
    """Loose fidelity bound for lossy samples: 6 % of the stored range (noisy test pattern)."""
    return {"mr": 4095 * 0.06, "ct": 65535 * 0.06}.get(kind, 255 * 0.06)


def _pydicom_encode(out: Path, ts: str, kind: str, **kwargs: object) -> TsSample:
    ds, arr = _source(kind)
    ds.compress(ts, arr, generate_instance_uid=False, **kwargs)
    ds.file_meta = file_meta_for(ds, ts)
    write(ds, out)
    lossless = ts not in LOSSY
    return TsSample(
        ts,
        out,
        ds.SOPClassUID,
        f"pydicom compress (pylibjpeg-openjpeg) {kwargs or ''}".strip(),
        lossless,
        arr.shape,
        arr,
        max_mean_abs_error=None if lossless else _mean_error_bound(kind),
    )


# Video: (ffmpeg codec args, container, width, height, fps, profile as ffprobe reports it)
_VIDEO: dict[str, tuple[list[str], str, int, int, int, str]] = {
    "1.2.840.10008.1.2.4.100": (  # MPEG-2 MP@ML: 720x576 PAL
        ["-c:v", "mpeg2video", "-profile:v", "4", "-level:v", "8", "-b:v", "2M"],
        "mpeg",
        720,
        576,
        25,
        "Main",
    ),
    "1.2.840.10008.1.2.4.101": (  # MPEG-2 MP@HL
        ["-c:v", "mpeg2video", "-profile:v", "4", "-level:v", "4", "-b:v", "8M"],
        "mpeg",
        1920,
        1080,
        25,
        "Main",
    ),
    "1.2.840.10008.1.2.4.102": (  # H.264 High @ 4.1
        ["-c:v", "libx264", "-profile:v", "high", "-level:v", "4.1"],
        "mpegts",
        1280,
        720,
        25,
        "High",
    ),
    "1.2.840.10008.1.2.4.103": (  # H.264 BD-compatible High @ 4.1 (BD allows 1280x720p50)
        [
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-level:v",
            "4.1",
            "-x264-params",
            "bluray-compat=1",
        ],
        "mpegts",
        1280,
        720,
        50,
        "High",
    ),
    "1.2.840.10008.1.2.4.104": (  # H.264 High @ 4.2 for 2D video: 1080p60
        ["-c:v", "libx264", "-profile:v", "high", "-level:v", "4.2"],
        "mpegts",
        1920,
        1080,
        60,
        "High",
    ),
    "1.2.840.10008.1.2.4.105": (  # H.264 High @ 4.2 for 3D video: side-by-side frame packing
        [
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-level:v",
            "4.2",
            "-x264-params",
            "frame-packing=3",
        ],
        "mpegts",
        1920,
        1080,
        60,
        "High",
    ),
    # Stereo High Profile (MVC) has no free encoder: this is a High-profile stream marked as a
    # stereo pair. Enough for storage (the server never decodes video), not for a viewer test.
    "1.2.840.10008.1.2.4.106": (
        ["-c:v", "libx264", "-profile:v", "high", "-level:v", "4.2"],
        "mpegts",
        1920,
        1080,
        60,
        "High",
    ),
    "1.2.840.10008.1.2.4.107": (  # HEVC Main @ 5.1
        ["-c:v", "libx265", "-profile:v", "main", "-x265-params", "level-idc=51:log-level=error"],
        "mpegts",
        1920,
        1080,
        25,
        "Main",
    ),
    "1.2.840.10008.1.2.4.108": (  # HEVC Main 10 @ 5.1
        [
            "-c:v",
            "libx265",
            "-profile:v",
            "main10",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "level-idc=51:log-level=error",
        ],
        "mpegts",
        1920,
        1080,
        25,
        "Main 10",
    ),
}
VIDEO_FRAMES = 6


def _video(out: Path, ts: str, tmp: Path) -> TsSample:
    """Encode an ffmpeg test pattern; the whole stream is one fragment (PS3.5 8.2.5-8.2.11)."""
    args, container, width, height, fps, profile = _VIDEO[ts]
    stream = tmp / f"{ts}.{'mpg' if container == 'mpeg' else 'ts'}"
    pix = [] if "-pix_fmt" in args else ["-pix_fmt", "yuv420p"]
    _run(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
        "-frames:v", str(VIDEO_FRAMES), *args, *pix, "-an", "-f", container, stream,
    )  # fmt: skip
    data = stream.read_bytes()
    ds = make_instance(VIDEO_ENDOSCOPIC, rows=16, cols=16, seed=5)
    ds.SeriesDescription = "Transfer syntax sample (video)"
    ten_bit = ts == "1.2.840.10008.1.2.4.108"
    ds.Rows, ds.Columns = height, width
    ds.NumberOfFrames = VIDEO_FRAMES
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (16, 10, 9) if ten_bit else (8, 8, 7)
    ds.PixelRepresentation = 0
    ds.FrameTime = round(1000.0 / fps, 3)
    ds.CineRate = ds.RecommendedDisplayFrameRate = fps
    ds.FrameIncrementPointer = 0x00181063
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = (
        "ISO_13818_2"
        if "mpeg2" in args[1]
        else ("ISO_14496_10" if "264" in args[1] else "ISO_23008_2")
    )
    if ts in ("1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106"):
        ds.StereoPairsPresent = "YES"
    # One fragment holds the whole stream; the Basic Offset Table is empty (PS3.5 8.2.5ff).
    ds.PixelData = encapsulate([data + (b"\x00" if len(data) % 2 else b"")], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.file_meta = file_meta_for(ds, ts)
    write(ds, out)
    codec = {"mpeg2video": "mpeg2video", "libx264": "h264", "libx265": "hevc"}[args[1]]
    shape = (VIDEO_FRAMES, height, width, 3)
    return TsSample(
        ts,
        out,
        ds.SOPClassUID,
        f"ffmpeg {' '.join(args)} -f {container}",
        False,
        shape,
        video=VideoStream(codec, profile, width, height, VIDEO_FRAMES, container),
    )


def build_transfer_syntax_set(directory: Path | str, *, strict: bool = True) -> dict[str, TsSample]:
    """One sample per syntax in ACCEPTED → what it was made with and what it must decode to.

    With ``strict`` (the default) a missing tool is an error naming the Debian package;
    otherwise syntaxes whose encoder is missing are left out.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    missing = missing_tools()
    if strict and missing:
        raise RuntimeError(f"missing {missing}: apt-get install -y dcmtk ffmpeg")
    samples: dict[str, TsSample] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for ts in ACCEPTED:
            out = directory / f"ts_{UID(ts).keyword or ts.replace('.', '_')}.dcm"
            maker = _MAKERS.get(ts)
            if maker is None and ts in VIDEO:
                if "ffmpeg" in missing:
                    continue
                samples[ts] = _video(out, ts, tmp)
                continue
            if maker is None:
                raise RuntimeError(f"no sample recipe for accepted transfer syntax {ts}")
            tool, run = maker
            if tool in missing:
                continue
            samples[ts] = run(out, tmp)
    return samples


def build_video_samples(
    directory: Path | str, only: Sequence[str] | None = None
) -> dict[str, TsSample]:
    """One sample per video syntax (MPEG-2, H.264, HEVC; ``only`` these), as in
    build_transfer_syntax_set."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        return {
            ts: _video(directory / f"ts_{UID(ts).keyword or ts.replace('.', '_')}.dcm", ts,
                       Path(tmp_name))
            for ts in ACCEPTED
            if ts in VIDEO and (only is None or ts in only)
        }  # fmt: skip


def write_transfer_syntax_set(directory: Path | str) -> dict[str, Path]:
    """One Part-10 file per accepted transfer syntax (see build_transfer_syntax_set)."""
    return {ts: s.path for ts, s in build_transfer_syntax_set(directory).items()}


Maker = Callable[[Path, Path], TsSample]

# syntax -> (program it needs, recipe(out, tmp)); video syntaxes are handled by _video.
_MAKERS: dict[str, tuple[str, Maker]] = {
    ExplicitVRLittleEndian: ("python", lambda o, t: _native(o, ExplicitVRLittleEndian, "ct", t)),
    ImplicitVRLittleEndian: ("python", lambda o, t: _native(o, ImplicitVRLittleEndian, "ct", t)),
    DeflatedExplicitVRLittleEndian: (
        "python",
        lambda o, t: _native(o, DeflatedExplicitVRLittleEndian, "ct", t),
    ),
    EXPLICIT_BE: ("dcmconv", lambda o, t: _native(o, EXPLICIT_BE, "ct", t)),
    "1.2.840.10008.1.2.4.50": (
        "dcmcjpeg",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.4.50", "rgb", t, "dcmcjpeg", "+eb", "+un"),
    ),
    "1.2.840.10008.1.2.4.51": (
        "dcmcjpeg",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.4.51", "mr", t, "dcmcjpeg", "+ee", "+un"),
    ),
    "1.2.840.10008.1.2.4.57": (
        "dcmcjpeg",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.4.57", "mr", t, "dcmcjpeg", "+el", "+un"),
    ),
    "1.2.840.10008.1.2.4.70": (
        "dcmcjpeg",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.4.70", "ct", t, "dcmcjpeg", "+e1", "+un"),
    ),
    "1.2.840.10008.1.2.4.80": (
        "dcmcjpls",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.4.80", "mr", t, "dcmcjpls", "+el"),
    ),
    "1.2.840.10008.1.2.4.81": (
        "dcmcjpls",
        lambda o, t: _dcmtk(
            o, "1.2.840.10008.1.2.4.81", "mr", t, "dcmcjpls", "+en", "+md", str(JPEG_LS_NEAR)
        ),
    ),
    JPEG2000Lossless: ("python", lambda o, t: _pydicom_encode(o, JPEG2000Lossless, "ct")),
    JPEG2000: ("python", lambda o, t: _pydicom_encode(o, JPEG2000, "mr", j2k_cr=[15])),
    "1.2.840.10008.1.2.5": (
        "dcmcrle",
        lambda o, t: _dcmtk(o, "1.2.840.10008.1.2.5", "rgb", t, "dcmcrle"),
    ),
}


def decoded(path: Path) -> np.ndarray:
    """pydicom's decoded pixels (native or via pylibjpeg/gdcm plugins)."""
    return pydicom.dcmread(path).pixel_array


def video_stream(path: Path) -> bytes:
    """The encapsulated video bit stream of a video sample (one fragment, padding kept)."""
    from pydicom.encaps import generate_fragments

    ds = pydicom.dcmread(path)
    return b"".join(list(generate_fragments(ds.PixelData))[1:])  # [0] is the offset table


def probe_video(path: Path) -> dict[str, object]:
    """ffprobe's view of a video sample's stream: codec_name, profile, width, height, frames."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(video_stream(path))
        f.flush()
        proc = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
             "-show_entries", "stream=codec_name,profile,width,height,nb_read_frames",
             "-of", "json", f.name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    stream = json.loads(proc.stdout)["streams"][0]
    return {
        "codec": stream["codec_name"],
        "profile": stream.get("profile"),
        "width": int(stream["width"]),
        "height": int(stream["height"]),
        "frames": int(stream["nb_read_frames"]),
    }


def write_storescu_config(path: Path | str, pairs: Iterable[tuple[str, str]]) -> list[str]:
    """A DCMTK association profile proposing exactly these (SOP class, transfer syntax) pairs.

    Plain `storescu` proposes only uncompressed syntaxes (plus one per -x option, and none
    exists for JPEG Lossless Process 14), and converts or fails otherwise. With this profile it
    sends every sample in its own transfer syntax. Returns the storescu arguments to use:
    ``storescu <these> HOST PORT FILE...``. At most 128 pairs (one presentation context each).
    """
    path = Path(path)
    unique = list(dict.fromkeys(pairs))
    if len(unique) > 128:
        raise ValueError("a DICOM association has at most 128 presentation contexts")
    syntaxes = list(dict.fromkeys(ts for _, ts in unique))
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes, start=1):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines.append("[[PresentationContexts]]")
    lines.append("[Lucent]")
    for i, (sop, ts) in enumerate(unique, start=1):
        lines.append(f"PresentationContext{i} = {sop}\\TS{syntaxes.index(ts) + 1}")
    lines += ["[[Profiles]]", "[Lucent]", "PresentationContexts = Lucent"]
    path.write_text("\n".join(lines) + "\n")
    return ["-xf", str(path), "Lucent"]


def storescu_config_for(samples: Iterable[TsSample], path: Path | str) -> list[str]:
    """write_storescu_config for a set of samples (e.g. all of build_transfer_syntax_set)."""
    return write_storescu_config(path, ((s.sop_class_uid, s.transfer_syntax) for s in samples))
