"""WADO-RS rendered resources (PS3.18 8.3.5.1 query parameters, 8.7.4 rendered media types).

The query parameters ``window``, ``viewport`` and ``quality`` were ignored and any Accept
was answered with PNG; a viewer asking for a thumbnail-sized, windowed JPEG got the full
image in the stored window. image/gif, which PS3.18 requires for single-frame images, is
offered as well.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
from fastapi import HTTPException
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID
from starlette.datastructures import QueryParams

from lucent.dicom import pixels
from server import logs
from server.api import dicomweb_accept as media

#: PS3.18 Table 8.7.4-1: image/jpeg is the default rendered media type; image/gif is
#: required for single-frame images too (it was 406); PNG also offered.
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
_MAX_VIEWPORT = 8192


def rendered_format(accept: str | None, *, multipart: bool = False) -> str:
    """The media type to answer with (image/jpeg for ``*/*``); 406 when none is offered.

    With ``multipart`` (study, series and frame-list resources, whose answer is several
    images) ``multipart/related; type=image/png`` names the type of each part."""
    for r in media.parse(accept):
        kind = r.media
        if multipart and kind == "multipart/related":
            kind = r.part_type or "image/jpeg"
        if kind in _FORMATS:
            return kind
        if media.is_any(kind) or kind == "image/*":
            return "image/jpeg"
    raise HTTPException(406, "rendered images are available as image/jpeg, image/png or image/gif")


def _numbers(name: str, value: str, count: tuple[int, ...]) -> list[float]:
    items = value.split(",")
    if len(items) not in count:
        raise HTTPException(400, f"{name} takes {' or '.join(map(str, count))} numbers")
    try:
        out = [float(v) for v in items]
    except ValueError as exc:
        raise HTTPException(400, f"{name} must be comma-separated numbers") from exc
    if not all(np.isfinite(out)):
        raise HTTPException(400, f"{name} must be finite numbers")
    return out


#: PS3.18 8.3.5.1.4 ``window`` functions to VOI LUT Function (0028,1056) Defined Terms.
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def _window(ds: Dataset, frame: np.ndarray, index: int, value: str) -> np.ndarray:
    """``window=center,width,function`` (PS3.18 8.3.5.1.4): linear, linear-exact, sigmoid,
    after the Modality LUT stage; the same VOI code as the default rendering (where the
    image's own VOI LUT Function is used, PS3.3 C.11.2.1.3)."""
    parts = value.split(",")
    if len(parts) != 3:
        raise HTTPException(400, "window takes center,width,function")
    center, width = _numbers("window", ",".join(parts[:2]), (2,))
    function = parts[2].strip().lower()
    if width <= 0 or function not in _FUNCTIONS:
        raise HTTPException(400, "window needs a positive width and linear|linear-exact|sigmoid")
    values = pixels.modality_lut(ds, frame, index).astype(np.float64)
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    return pixels.window_to_8bit(
        values, center, width, invert=invert, function=_FUNCTIONS[function]
    )


def _viewport(img: Image.Image, value: str) -> Image.Image:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3): the (cropped) image scaled to fit."""
    nums = _numbers("viewport", value, (2, 6))
    vw, vh = int(nums[0]), int(nums[1])
    if not (0 < vw <= _MAX_VIEWPORT and 0 < vh <= _MAX_VIEWPORT):
        raise HTTPException(400, f"viewport width and height must be 1..{_MAX_VIEWPORT}")
    if len(nums) == 6:
        sx, sy, sw, sh = (int(n) for n in nums[2:])
        if sw == 0 or sh == 0:
            raise HTTPException(400, "viewport source width and height must not be 0")
        left, right = sorted((sx, sx + sw))
        top, bottom = sorted((sy, sy + sh))
        img = img.crop((left, top, right, bottom))
        if sw < 0:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(vw / img.width, vh / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _quality(value: str | None) -> int:
    if value is None:
        return 90
    try:
        q = int(value)
    except ValueError as exc:
        raise HTTPException(400, "quality must be a whole number 1..100") from exc
    if not 1 <= q <= 100:
        raise HTTPException(400, "quality must be a whole number 1..100")
    return q


def _encode(img: Image.Image, media_type: str, quality: int) -> bytes:
    buf = io.BytesIO()
    kind = _FORMATS[media_type]
    if kind == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:  # GIF: Pillow quantises colour images to its 256-entry palette
        img.save(buf, format=kind)
    return buf.getvalue()


class RenderFailed(HTTPException):
    """The pixels of an instance could not be rendered: a JSON 500 that says why (damaged
    data), where the exception escaped as a bare 500 or a reset connection; 406 when no
    decoder here reads its stored syntax (see :func:`decoded`). Study and series resources
    skip such an instance instead (one broken image made the whole study's rendered and
    thumbnail fail, QA probe)."""

    def __init__(self, reason: str, status_code: int = 500) -> None:
        super().__init__(status_code, reason)


logs.quiet_decoder_tracebacks()  # also where the API is built without cmd_run (tests)


@contextlib.contextmanager
def rendering(what: str) -> Iterator[None]:
    """Turn any failure but a request error (HTTPException: window, viewport...) into
    :class:`RenderFailed` naming ``what`` could not be rendered."""
    try:
        yield
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise anything; each is a reason
        raise RenderFailed(f"cannot render {what}: {type(exc).__name__}: {exc}") from exc


def _no_decoder(syntax: UID, error: BaseException | None) -> bool:
    """Whether a decoding ``error`` says no decoder here reads this kind of pixel data (not
    that the data is damaged): pydicom has none for the syntax or none installed, or its
    plugins refused the data's features; their NotImplementedError ("GDCM does not support
    'JPEG Extended' for samples with 12-bit precision") reaches us only as text, in the
    error that lists every plugin's failure."""
    if not syntax.is_encapsulated:
        return False
    try:
        if not get_decoder(syntax).is_available:
            return True
    except NotImplementedError:
        return True
    return "does not support" in str(error)


def decoded(ds: Dataset, frame_index: int) -> np.ndarray:
    """One frame's stored values. A compressed frame that no decoder here reads is 406
    with the reason (PS3.18 8.7.4: we cannot produce the rendered media type for it), as
    the other WADO routes answer for the same instance: it was a 500. Damaged pixel data
    stays a 500. pydicom keeps the decoded pixels: rendering then decodes nothing again."""
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    try:
        with rendering(f"frame {frame_index + 1}"):
            return pixels.decode_frame(ds, frame_index)
    except RenderFailed as exc:
        if not _no_decoder(syntax, exc.__cause__):
            raise  # pixels a decoder should read but cannot are damaged: 500
        cause = " ".join(str(exc.__cause__).split())
        raise RenderFailed(
            f"cannot render frame {frame_index + 1}: no decoder here reads its transfer "
            f"syntax {syntax} ({cause}); retrieve it with transfer-syntax=*",
            406,
        ) from exc.__cause__


def render_as(ds: Dataset, frame_index: int, query: QueryParams, media_type: str) -> bytes:
    """One frame rendered in a media type already negotiated (see ``rendered_format``)."""
    quality = _quality(query.get("quality"))
    window = query.get("window")
    frame = decoded(ds, frame_index)
    with rendering(f"frame {frame_index + 1}"):
        colour = frame.ndim == 3 or str(ds.get("PhotometricInterpretation", "")) in (
            "RGB",
            "PALETTE COLOR",
        )
        if window and not colour:
            arr = _window(ds, frame, frame_index, window)
        else:
            arr = pixels.render(ds, frame_index)
        img = Image.fromarray(arr)
        if (viewport := query.get("viewport")) is not None:
            img = _viewport(img, viewport)
        return _encode(img, media_type, quality)


def render(
    ds: Dataset, frame_index: int, query: QueryParams, accept: str | None
) -> tuple[bytes, str]:
    """One frame rendered as the client asked: (image bytes, media type)."""
    media_type = rendered_format(accept)
    return render_as(ds, frame_index, query, media_type), media_type


#: Longest side of a thumbnail when the client names no viewport.
THUMBNAIL_SIZE = 128


def thumbnail(
    ds: Dataset, frame_index: int, query: QueryParams, accept: str | None
) -> tuple[bytes, str]:
    """PS3.18 10.4.1.1.4 / 10.4.3.3.4: one small representative image in a rendered media
    type. ``viewport`` is honoured; without it the frame is shrunk (never enlarged) to fit
    THUMBNAIL_SIZE. The default window is used and nothing is burnt in, so the thumbnail
    carries no patient-identifying text, as the standard requires."""
    media_type = rendered_format(accept)
    decoded(ds, frame_index)
    with rendering(f"frame {frame_index + 1}"):
        img = Image.fromarray(pixels.render(ds, frame_index))
        if (viewport := query.get("viewport")) is not None:
            img = _viewport(img, viewport)
        else:
            img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        return _encode(img, media_type, 90), media_type


#: Encapsulated Document (0042,0011), its MIME Type (0042,0012) and Length (0042,0015).
_DOCUMENT, _DOCUMENT_MIME, _DOCUMENT_LENGTH = 0x00420011, 0x00420012, 0x00420015

#: PS3.3 A.45.1, A.45.2, A.85.1, A.85.2, A.85.3: the media type of each encapsulated
#: document class, for a data set that does not name it in its MIME Type.
_DOCUMENT_MEDIA = {
    "1.2.840.10008.5.1.4.1.1.104.1": "application/pdf",
    "1.2.840.10008.5.1.4.1.1.104.2": "text/xml",  # CDA
    "1.2.840.10008.5.1.4.1.1.104.3": "model/stl",
    "1.2.840.10008.5.1.4.1.1.104.4": "model/obj",
    "1.2.840.10008.5.1.4.1.1.104.5": "model/mtl",
}

#: Text formats, whose trailing NUL can only be the pad to an even length (PS3.5 7.1.1):
#: for a PDF a byte after %%EOF. A binary STL keeps all its bytes.
_PADDED = frozenset({"application/pdf", "text/xml", "model/obj", "model/mtl"})


def is_document(ds: Dataset) -> bool:
    """An encapsulated document (PDF, CDA, STL, OBJ, MTL): its rendered form is the
    document itself (PS3.18 Table 8.7.4-1)."""
    return _DOCUMENT in ds and (
        str(ds.get("SOPClassUID", "")) in _DOCUMENT_MEDIA or bool(ds.get(_DOCUMENT_MIME))
    )


def _document_media(ds: Dataset) -> str:
    stated = ds.get(_DOCUMENT_MIME)
    value = str(stated.value or "").partition(";")[0].strip().lower() if stated else ""
    return value or _DOCUMENT_MEDIA.get(str(ds.get("SOPClassUID", "")), "")


def document(ds: Dataset, accept: str | None) -> tuple[bytes, str]:
    """PS3.18 8.7.4 (Table 8.7.4-1): the rendered form of an encapsulated document is the
    document in its own media type, application/pdf for a PDF (absent Accept and ``*/*``
    included); any other media type is 406 naming the one offered. ``/rendered`` of a PDF
    was 406 "no pixel data and is not a report" whatever was asked (outside probe 57).

    The bytes are the Encapsulated Document (0042,0011) without the pad byte DICOM adds to
    an odd length: cut to Encapsulated Document Length (0042,0015) when that is shorter,
    and for text formats (PDF, XML, OBJ, MTL) a trailing NUL removed."""
    kind = _document_media(ds)
    if not _acceptable(kind, accept):
        raise HTTPException(406, f"this encapsulated document is rendered as {kind} only")
    data = bytes(ds[_DOCUMENT].value or b"")
    length = ds.get(_DOCUMENT_LENGTH)
    if length is not None and isinstance(length.value, int) and 0 < length.value < len(data):
        data = data[: length.value]
    if kind in _PADDED and data.endswith(b"\0"):
        data = data[:-1]
    return data, kind


def _acceptable(kind: str, accept: str | None) -> bool:
    """Whether an Accept header takes ``kind`` (``*/*``, ``type/*`` or the type itself)."""
    family = kind.partition("/")[0]
    return any(r.media in ("*/*", "*", kind, f"{family}/*") for r in media.parse(accept))
