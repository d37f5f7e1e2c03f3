"""DICOMweb (PS3.18) under /dicom-web: WADO-RS retrieve, and the one router for all of it.

QIDO-RS search is in dicomweb_qido, STOW-RS store in dicomweb_stow. ``router`` includes
the three in the order their routes always had, as FastAPI matches in order: QIDO-RS,
then WADO-RS, then STOW-RS. Each part keeps the /dicom-web prefix on its own router, so
a route's path (what server.api.auth looks its access rule up by) is the full one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from lucent.dicom import pixels, transcode
from server.api import dicomweb_accept as media
from server.api import dicomweb_common as common
from server.api import (
    dicomweb_qido,
    dicomweb_render,
    dicomweb_sr,
    dicomweb_stow,
    dicomweb_xml,
)
from server.api.archive_routes import ctx_of, load_instance
from server.api.auth import Caller, get_caller, readable_pools
from server.api.dicomweb_common import DICOM_JSON, DICOM_XML
from server.api.params import single_uid
from server.context import ArchiveReadError
from server.index import queries
from server.index.models import Instance

log = logging.getLogger("lucent.dicomweb")

#: The WADO-RS routes; ``router`` below is what the app includes.
wado = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])


# ---------------------------------------------------------------------------- WADO-RS
def _select(request: Request, study: str, series: str = "", sop: str = "") -> list[Instance]:
    """The instances a WADO path names: one study (series, instance), each UID exactly one
    object, and only in the pools the caller may read. (A backslash once turned a path UID
    into a UID list, which reached studies of pools the caller cannot read: the rights check
    looks the path UID up as one UID, found nothing, and let the listing narrowing apply,
    which this query did not.)"""
    ctx = ctx_of(request)
    f = queries.Filter(
        study_uid=single_uid(study, "study"),
        series_uid=single_uid(series, "series") if series else "",
        sop_instance_uid=single_uid(sop, "instance") if sop else "",
        pools=readable_pools(request),
    )
    with ctx.Session() as db:
        found = queries.instances_for(db, "IMAGE", f)
    if not found:
        raise HTTPException(404, "no matching instances")
    return found


def _stored_syntax(data: bytes) -> str:
    """The Transfer Syntax UID of a Part 10 file, from its file meta alone."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(ds.file_meta.TransferSyntaxUID)


def _as_syntax(data: bytes, syntax: str) -> tuple[bytes, str]:
    """The instance in ``syntax`` ('*': as stored), and the syntax it is in.

    We transcode only to Explicit VR Little Endian (decompressing, or swapping the byte
    order of data stored big endian), with ``lucent.dicom.transcode`` like the DIMSE
    senders: same SOP Instance UID. Any other syntax the stored one is not is 406 (PS3.18
    8.7.3.5.2). Implicit VR is never sent (PS3.18 8.6.2): asked for, it is 406, and '*' of
    an instance stored implicit is Explicit VR Little Endian."""
    if syntax == media.IMPLICIT_LE:
        raise HTTPException(
            406,
            "DICOM web services do not use Implicit VR Little Endian (PS3.18 8.6.2); "
            f"ask for transfer-syntax={media.EXPLICIT_LE}",
        )
    current = _stored_syntax(data)
    if syntax in ("*", ""):
        if current != media.IMPLICIT_LE:
            return data, current
        syntax = media.EXPLICIT_LE
    if current == syntax:
        return data, current
    if syntax not in media.NATIVE:
        raise HTTPException(406, f"cannot transcode to transfer syntax {syntax}")
    ds = dcmread(io.BytesIO(data))
    done = transcode.prepare(ds, current, {syntax}, str(ds.get("SOPClassUID", "")))
    if done.dataset is None:  # no decoder for this syntax: the client may take it as is
        raise HTTPException(406, f"{done.error}; ask for transfer-syntax=*")
    out = io.BytesIO()
    done.dataset.save_as(out, enforce_file_format=True)
    return out.getvalue(), done.syntax


def _instance_media(request: Request, single: bool) -> list[tuple[bool, str]]:
    """The (multipart?, transfer syntax) choices an instance retrieve may answer with, from
    the Accept header, best first.

    PS3.18 8.7.3: instances come as multipart/related; type="application/dicom" (single
    part application/dicom for one instance); with no transfer-syntax parameter the default
    is Explicit VR Little Endian, '*' means as stored. Anything else we cannot produce is
    406 (a JSON or octet-stream answer to a request for DICOM broke clients)."""
    choices = []
    for r in media.parse(common.accept(request)):
        syntax = r.transfer_syntax or media.EXPLICIT_LE
        if media.is_any(r.media) or (
            r.media == "multipart/related" and r.part_type in ("", "application/dicom")
        ):
            choices.append((True, syntax))
        elif r.media == "application/dicom" and single:
            choices.append((False, syntax))
    if not choices:
        raise HTTPException(
            406, 'instances are available as multipart/related; type="application/dicom"'
        )
    return choices


def _first_producible(data: bytes, choices: list[tuple[bool, str]]) -> tuple[bool, bytes, str]:
    """(multipart?, bytes, syntax) of one instance in the first choice we can produce for
    it; the first refusal (406) when none fits."""
    refusal: HTTPException | None = None
    for multipart, syntax in choices:
        try:
            part, ts = _as_syntax(data, syntax)
        except HTTPException as exc:
            if exc.status_code != 406:
                raise
            refusal = refusal or exc
            continue
        return multipart, part, ts
    assert refusal is not None
    raise refusal


def _retrieve(request: Request, found: list[Instance], single: bool = False) -> Response:
    """Each instance in the first media range of the Accept header we can produce for it
    (RFC 9110 12.5.1, PS3.18 8.7.3.5): the choice is made per instance, per part. One
    syntax for the whole answer made a study of a JPEG 2000 and a 12-bit JPEG instance
    406 although the client accepted both stored syntaxes, and sent '*' (q=0.5) for both
    where the JPEG 2000 one could be decoded to the native syntax asked first (probe 40).
    An instance none fits is left out: 206 with a Warning; 406 only when none fits."""
    ctx = ctx_of(request)
    choices = _instance_media(request, single)
    parts: list[tuple[bytes, str]] = []
    left_out: list[tuple[str, HTTPException]] = []
    multipart = True
    for inst in found:
        try:
            multipart, data, ts = _first_producible(ctx.instance_bytes(inst), choices)
        except HTTPException as exc:
            left_out.append((inst.sop_instance_uid, exc))
            continue
        except ArchiveReadError as exc:
            left_out.append((inst.sop_instance_uid, unreadable(exc)))
            continue
        parts.append((data, f"application/dicom; transfer-syntax={ts}"))
    if not parts:
        raise left_out[0][1]
    if not multipart:  # one instance, asked for as a single part
        return Response(parts[0][0], media_type=parts[0][1])
    return _partial(request, common.multipart(parts, "application/dicom"), left_out)


def unreadable(exc: ArchiveReadError) -> HTTPException:
    """The answer for an instance whose archive object is missing or fails authentication:
    500 with the reason (no server path), as /api/v1 and the app-wide handler answer.
    Retrieve Instance and Retrieve Metadata let the error escape: a bare "Internal Server
    Error" and a traceback (outside probe 48). Of a study or series, the instance is left
    out (206 with a Warning) and the rest still served; ``ServerContext`` has logged and
    audited it (Security Alert)."""
    return HTTPException(500, f"archive object unreadable: {exc}")


def _partial(
    request: Request, answer: Response, left_out: list[tuple[str, HTTPException]]
) -> Response:
    """``answer`` as is when nothing was left out, else 206 Partial Content with a Warning
    per instance left out (PS3.18 8.7.3.5 / 10.4.1.3: some but not all of the target
    resources), each logged."""
    for uid, exc in left_out:
        log.warning("%s: instance %s left out: %s", request.url.path, uid, exc.detail)
    if left_out:
        answer.status_code = 206
        answer.headers["Warning"] = ", ".join(
            common.warning(f"instance {uid} left out: {exc.detail}") for uid, exc in left_out
        )
    return answer


Answer = Callable[[Request, list[Instance]], Response]


def _wado_routes(suffix: str, name: str, answer: Answer, *, instance: bool = True) -> None:
    """One WADO-RS resource at study, series and (``instance``) instance level (PS3.18
    Table 10.4.1-1): the same answer over the instances each path selects."""

    def study_level(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
        return answer(request, _select(request, study))

    def series_level(
        study: str, series: str, request: Request, _: Caller = Depends(get_caller)
    ) -> Response:
        return answer(request, _select(request, study, series))

    def instance_level(
        study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
    ) -> Response:
        return answer(request, _select(request, study, series, sop))

    levels = [("/studies/{study}", study_level, "study")]
    levels.append(("/studies/{study}/series/{series}", series_level, "series"))
    if instance:
        path = "/studies/{study}/series/{series}/instances/{sop}"
        levels.append((path, instance_level, "instance"))
    for path, endpoint, level in levels:
        wado.add_api_route(path + suffix, endpoint, methods=["GET"], name=f"wado_{level}_{name}")


_wado_routes("", "retrieve", _retrieve, instance=False)  # one instance: single part allowed


@wado.get("/studies/{study}/series/{series}/instances/{sop}")
def wado_instance(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _retrieve(request, _select(request, study, series, sop), single=True)


#: Pixel Data, Float Pixel Data, Double Float Pixel Data: always bulk data in metadata.
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _metadata(request: Request, found: list[Instance]) -> Response:
    """PS3.18 10.4.1.1.2 / F.2.6: the instances as DICOM JSON (or PS3.19 XML, one part
    each) with the pixel data replaced by a BulkDataURI (its frames). Small pixel data used
    to come inline (InlineBinary) and other large values as links to a /bulk resource that
    does not exist (404); other binary values now come inline, which every DICOM JSON
    reader accepts."""
    answer_as = common.metadata_media(request)  # 406 before any instance is read
    ctx = ctx_of(request)
    base = common.base(request)
    items: list[tuple[Dataset, dict[int, tuple[str, str]]]] = []
    left_out: list[tuple[str, HTTPException]] = []
    for inst in found:
        try:
            meta = ctx.metadata_bytes(inst)
        except ArchiveReadError as exc:
            left_out.append((inst.sop_instance_uid, unreadable(exc)))
            continue
        ds = dcmread(io.BytesIO(meta))  # pixels: a BulkDataURI
        pixel_vrs = {tag: ds[tag].VR for tag in _PIXEL_TAGS if tag in ds}
        uri = _pixel_uri(base, ds) if pixel_vrs else ""
        for tag in pixel_vrs:
            del ds[tag]
        # InlineBinary has no transfer syntax: OW/OF/... words in little endian (F.2.7);
        # a value of no whole number of words stays as stored rather than fail the answer
        with contextlib.suppress(ValueError):
            transcode.to_little_endian(ds)
        items.append((ds, {tag: (vr, uri) for tag, vr in pixel_vrs.items()}))
    if not items and left_out:
        raise left_out[0][1]
    if answer_as == DICOM_XML:
        parts = ((dicomweb_xml.to_xml(ds, bulk), DICOM_XML) for ds, bulk in items)
        return _partial(request, common.multipart(parts, DICOM_XML), left_out)
    out = []
    for ds, bulk in items:
        item = common.to_json(ds)  # one bad attribute does not fail the study (probe 49)
        for tag, (vr, uri) in bulk.items():
            item[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": uri}
        out.append(dict(sorted(item.items())))
    body = common.json_body(out)
    return _partial(request, Response(body, media_type=DICOM_JSON), left_out)


def _instance_uri(base: str, ds: Dataset) -> str:
    return (
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _pixel_uri(base: str, ds: Dataset) -> str:
    """The BulkDataURI metadata gives pixel data: all its frames (PS3.18 F.2.6)."""
    frames = ",".join(str(i + 1) for i in range(pixels.frame_count(ds)))
    return f"{_instance_uri(base, ds)}/frames/{frames}"


_wado_routes("/metadata", "metadata", _metadata)


def _instance(request: Request, study: str, series: str, sop: str) -> Dataset:
    """The decrypted instance."""
    found = _select(request, study, series, sop)
    _, data = load_instance(ctx_of(request), found[0].sop_instance_uid)
    return dcmread(io.BytesIO(data))


def _image(request: Request, study: str, series: str, sop: str, missing_status: int) -> Dataset:
    """The decrypted instance, which must carry pixel data (else ``missing_status``)."""
    ds = _instance(request, study, series, sop)
    if not pixels.has_pixels(ds):
        raise HTTPException(missing_status, "instance has no pixel data")
    return ds


@wado.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
def wado_frames(
    study: str,
    series: str,
    sop: str,
    frames: str,
    request: Request,
    _: Caller = Depends(get_caller),
) -> Response:
    """Frames as multipart/related (PS3.18 8.7.3.3): each part's Content-Type names the
    transfer syntax of its bytes, which OHIF/Cornerstone reads to decide how to decode.

    With no transfer-syntax in Accept the default is native (Explicit VR Little Endian), so
    compressed frames are decoded; ``*`` sends them as stored. Compressed frames used to go
    out as stored under a bare application/octet-stream, which clients took for raw pixels.
    """
    ds = _image(request, study, series, sop, 404)
    numbers = _frame_numbers(ds, frames)
    multipart, part_type, syntax, parts = _frames_as(request, ds, numbers)
    content_type = f"{part_type}; transfer-syntax={syntax}"
    if not multipart:
        return Response(parts[0], media_type=content_type)
    return common.multipart(((p, content_type) for p in parts), part_type)


def _frame_numbers(ds: Dataset, frames: str) -> list[int]:
    """The 1-based frame list of a path (PS3.18 10.4.1.1.1, 8.3.3.1: comma-separated
    frame numbers, each a positive integer): 400 if malformed, 404 if a frame does not
    exist. ``0`` and ``-1`` were 404 "does not exist" and an empty item (``1,,2``) was
    dropped, 200 (outside probe 57): each is no frame number, so the list is malformed."""
    items = [n.strip() for n in frames.split(",")]
    if not any(items):
        raise HTTPException(400, "frame list must name at least one frame")
    bad = next((n for n in items if not re.fullmatch(r"[0-9]+", n) or int(n) < 1), None)
    if bad is not None:
        raise HTTPException(
            400,
            f"frame list must be comma-separated frame numbers from 1, not {bad[:32]!r}",
        )
    numbers = [int(n) for n in items]
    for n in numbers:
        if n > pixels.frame_count(ds):
            raise HTTPException(404, f"frame {n} does not exist")
    return numbers


def _frame_bytes(ds: Dataset, numbers: list[int], syntax: str) -> list[bytes]:
    """The frames' bytes in ``syntax`` (decoded when a native syntax is asked of an
    encapsulated instance, as stored otherwise); 406 when we cannot decode.

    Native frames of an instance stored big endian are byte-swapped to the little endian
    the part is labelled with; they went out as stored, wrong in every viewer (QA probe)."""
    try:
        if syntax in media.NATIVE:
            transcode.to_little_endian(ds)
        decode = ds.file_meta.TransferSyntaxUID.is_encapsulated and syntax in media.NATIVE
        return [
            pixels.decode_frame(ds, n - 1).tobytes() if decode else pixels.raw_frame(ds, n - 1)
            for n in numbers
        ]
    except Exception as exc:  # no decoder for this syntax: the client may take it as is
        stored = ds.file_meta.TransferSyntaxUID
        raise HTTPException(406, f"cannot decode {stored}; ask for transfer-syntax=*") from exc


def _frames_as(
    request: Request, ds: Dataset, numbers: list[int]
) -> tuple[bool, str, str, list[bytes]]:
    """(multipart?, part media type, syntax, frames) in the first acceptable range we can
    produce these frames in: a range whose syntax we cannot decode to is passed over for
    the next (native asked first and '*' next was 406 'cannot decode' for a 12-bit JPEG,
    probe 40); the first refusal when none can."""
    stored = str(ds.file_meta.TransferSyntaxUID)
    refusal: HTTPException | None = None
    tried: set[tuple[str, str]] = set()
    for multipart, part_type, syntax in _frame_media(request, stored, len(numbers)):
        if (part_type, syntax) in tried:
            continue  # already refused: decoding again would only fail again
        tried.add((part_type, syntax))
        try:
            return multipart, part_type, syntax, _frame_bytes(ds, numbers, syntax)
        except HTTPException as exc:
            refusal = refusal or exc
    several = " in multipart/related (several frames)" if len(numbers) > 1 else ""
    raise refusal or HTTPException(
        406,
        f"frames are stored as {stored}: ask for application/octet-stream "
        f"(native, or transfer-syntax=*){several}",
    )


def _frame_media(request: Request, stored: str, count: int) -> Iterator[tuple[bool, str, str]]:
    """(multipart?, part media type, transfer syntax) for ``count`` frames of each range
    of the Accept header that fits, best first. A single-part type holds one frame: several
    asked that way got the first one alone, 200 OK (outside probe), so such a range is
    passed over for a multipart one."""
    encapsulated = UID(stored).is_encapsulated
    # native frames are one thing whatever the data set's syntax: little endian pixel
    # values (big endian and deflated instances were labelled with their own syntax)
    as_stored = stored if encapsulated else media.EXPLICIT_LE
    for r in media.parse(common.accept(request)):
        single = r.media != "multipart/related" and not media.is_any(r.media)
        if single and count > 1:
            continue
        kind = r.media if single else (r.part_type or "application/octet-stream")
        if media.is_any(kind) or kind == "application/octet-stream":
            ts = r.transfer_syntax or media.EXPLICIT_LE
            if ts == media.IMPLICIT_LE:
                continue  # PS3.18 8.6.2: Implicit VR is not used; another range may fit
            if ts == "*":
                yield not single, "application/octet-stream", as_stored
            elif ts in media.NATIVE:
                yield not single, "application/octet-stream", ts
            elif ts == stored:
                yield not single, "application/octet-stream", stored
        elif stored in media.PIXEL_MEDIA.get(kind, ()) and r.transfer_syntax in (
            None,
            "*",
            stored,
        ):
            yield not single, kind, stored


@wado.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
def wado_rendered(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    """PS3.18 8.3.5.1: the first frame with the window, viewport and quality asked for; a
    structured report as text/html or text/plain (dicomweb_sr); an encapsulated document
    (PDF, CDA, STL...) as the document itself (dicomweb_render.document)."""
    ds = _instance(request, study, series, sop)
    if dicomweb_render.is_document(ds):
        data, media_type = dicomweb_render.document(ds, common.accept(request))
        return Response(data, media_type=media_type)
    if not pixels.has_pixels(ds):
        if not dicomweb_sr.is_report(ds):
            raise HTTPException(406, "instance has no pixel data and is not a report")
        kind = dicomweb_sr.text_format(common.accept(request))
        return Response(dicomweb_sr.render(ds, kind), media_type=f"{kind}; charset=utf-8")
    data, media_type = dicomweb_render.render(ds, 0, request.query_params, common.accept(request))
    return Response(data, media_type=media_type)


def _read(request: Request, inst: Instance) -> Dataset:
    return dcmread(io.BytesIO(ctx_of(request).instance_bytes(inst)))


def _images(found: list[Instance]) -> list[Instance]:
    """The instances that carry pixel data (the index keeps Rows for those)."""
    return [i for i in found if i.rows]


def _rendered_many(request: Request, images: Iterable[tuple[Dataset, int]]) -> Response:
    """Several rendered frames as multipart/related; type=image/jpeg (or image/png), one
    part per frame (PS3.18 10.4.1.1.3 / 10.4.3.3.3). The Accept header is checked (406)
    before any pixel is decoded."""
    media_type = dicomweb_render.rendered_format(common.accept(request), multipart=True)
    parts = [
        (dicomweb_render.render_as(ds, index, request.query_params, media_type), media_type)
        for ds, index in images
    ]
    return common.multipart(parts, media_type)


def _rendered_instances(request: Request, found: list[Instance]) -> Response:
    """Study/series rendered: the first frame of each image instance, in series and
    instance order; 406 when none of them has pixel data (as for one instance). An
    instance that cannot be rendered is left out (one such instance failed the whole
    study): 206 with a Warning naming it, as Retrieve Study/Series answers (it was 200 with
    the image silently missing, outside probe 51); only when none can is the answer the
    first one's error."""
    media_type = dicomweb_render.rendered_format(common.accept(request), multipart=True)
    images = _images(found)
    if not images:
        raise HTTPException(406, "no instance here has pixel data to render")
    parts: list[tuple[bytes, str]] = []
    left_out: list[tuple[str, HTTPException]] = []
    for inst in images:
        try:
            ds = _read_to_render(request, inst)
            data = dicomweb_render.render_as(ds, 0, request.query_params, media_type)
        except dicomweb_render.RenderFailed as exc:
            left_out.append((inst.sop_instance_uid, exc))
            continue
        parts.append((data, media_type))
    if not parts:
        raise left_out[0][1]
    return _partial(request, common.multipart(parts, media_type), left_out)


def _read_to_render(request: Request, inst: Instance) -> Dataset:
    """An instance of a study or series resource: one that cannot be read is a
    RenderFailed like one that cannot be decoded, so it is skipped the same way."""
    with dicomweb_render.rendering(f"instance {inst.sop_instance_uid}"):
        return _read(request, inst)


def _log_skipped(request: Request, inst: Instance, exc: HTTPException) -> None:
    log.warning("%s: instance %s left out: %s", request.url.path, inst.sop_instance_uid, exc.detail)


_wado_routes("/rendered", "rendered", _rendered_instances, instance=False)


@wado.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered")
def wado_frames_rendered(
    study: str,
    series: str,
    sop: str,
    frames: str,
    request: Request,
    _: Caller = Depends(get_caller),
) -> Response:
    """PS3.18 10.4.1.1.3: the frames asked for, rendered; one frame is a single image
    (unless only multipart/related is accepted), several are multipart/related."""
    ds = _image(request, study, series, sop, 406)
    numbers = _frame_numbers(ds, frames)
    accept = common.accept(request)
    if len(numbers) == 1:
        try:  # a single image, if the client takes one
            media_type = dicomweb_render.rendered_format(accept)
        except HTTPException:
            media_type = ""  # only multipart/related: one part
        if media_type:
            data = dicomweb_render.render_as(ds, numbers[0] - 1, request.query_params, media_type)
            return Response(data, media_type=media_type)
    return _rendered_many(request, ((ds, n - 1) for n in numbers))


def _thumbnail(request: Request, ds: Dataset, frame_index: int | None = None) -> Response:
    """The thumbnail of one instance: the frame given, else its middle frame."""
    if frame_index is None:
        frame_index = pixels.frame_count(ds) // 2
    data, media_type = dicomweb_render.thumbnail(
        ds, frame_index, request.query_params, common.accept(request)
    )
    return Response(data, media_type=media_type)


#: How many series' representative instances a study thumbnail tries before it gives up.
_THUMBNAIL_TRIES = 5


def _representatives(found: list[Instance]) -> list[Instance]:
    """PS3.18 10.4.3.3.4 lets the origin server choose: the middle image instance of each
    series that has any, in series number order (the first is the thumbnail; the next
    stand in when it cannot be rendered)."""
    by_series: dict[int, list[Instance]] = {}
    for inst in _images(found):
        by_series.setdefault(inst.series_pk, []).append(inst)
    return [images[len(images) // 2] for images in by_series.values()]


def _thumbnail_of(request: Request, found: list[Instance]) -> Response:
    """A study's or series' thumbnail: that of its representative instance, else of the
    next series' one when it cannot be rendered (logged: one broken instance answered 500
    for the whole study); the first error when none can."""
    dicomweb_render.rendered_format(common.accept(request))  # 406 before any decoding
    candidates = _representatives(found)
    if not candidates:
        raise HTTPException(406, "no instance here has pixel data for a thumbnail")
    failed: dicomweb_render.RenderFailed | None = None
    for inst in candidates[:_THUMBNAIL_TRIES]:
        try:
            return _thumbnail(request, _read_to_render(request, inst))
        except dicomweb_render.RenderFailed as exc:
            _log_skipped(request, inst, exc)
            failed = failed or exc
    assert failed is not None
    raise failed


_wado_routes("/thumbnail", "thumbnail", _thumbnail_of, instance=False)


@wado.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail")
def wado_instance_thumbnail(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _thumbnail(request, _image(request, study, series, sop, 406))


@wado.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail")
def wado_frame_thumbnail(
    study: str,
    series: str,
    sop: str,
    frames: str,
    request: Request,
    _: Caller = Depends(get_caller),
) -> Response:
    """The thumbnail of a frame list is that of its first frame (one image only)."""
    ds = _image(request, study, series, sop, 406)
    return _thumbnail(request, ds, _frame_numbers(ds, frames)[0] - 1)


def _bulkdata(request: Request, found: list[Instance]) -> Response:
    """PS3.18 10.4.1.1.5 / 10.4.3.3.5: all bulk data of the instances, each part with the
    Content-Location of the BulkDataURI the metadata gives it.

    Pixel data is the only value metadata sends as bulk data (others come inline), so this
    is the pixel data of each image: in a native syntax one part with all its frames (the
    metadata's ``frames/1,..,n`` URI); as stored when encapsulated (transfer-syntax=*), one
    part per frame (``frames/k``), as compressed pixel data is sent frame by frame."""
    base = common.base(request)
    parts: list[tuple[bytes, str]] = []
    locations: list[str] = []
    kinds: set[str] = set()
    single = False
    left_out: list[tuple[str, HTTPException]] = []
    for inst in _images(found):
        try:
            ds = _read(request, inst)
        except ArchiveReadError as exc:
            left_out.append((inst.sop_instance_uid, unreadable(exc)))
            continue
        if not pixels.has_pixels(ds):
            continue
        numbers = list(range(1, pixels.frame_count(ds) + 1))
        # chosen per instance, as one part (native); the check for several parts is below
        try:
            multipart, part_type, syntax, frames = _frames_as(request, ds, numbers[:1])
            if len(numbers) > 1:
                frames = _frame_bytes(ds, numbers, syntax)
        except HTTPException as exc:
            left_out.append((inst.sop_instance_uid, exc))
            continue
        single = single or not multipart
        kinds.add(part_type)
        content_type = f"{part_type}; transfer-syntax={syntax}"
        if syntax in media.NATIVE:
            parts.append((b"".join(frames), content_type))
            locations.append(_pixel_uri(base, ds))
        else:
            parts += [(f, content_type) for f in frames]
            locations += [f"{_instance_uri(base, ds)}/frames/{n}" for n in numbers]
    if not parts and left_out:
        raise left_out[0][1]
    if not parts:
        raise HTTPException(404, "no bulk data here: metadata carries every value inline")
    if single:
        if len(parts) > 1:
            raise HTTPException(406, "bulk data of several parts needs multipart/related")
        return _partial(request, Response(parts[0][0], media_type=parts[0][1]), left_out)
    kind = kinds.pop() if len(kinds) == 1 else "application/octet-stream"
    return _partial(request, common.multipart(parts, kind, locations), left_out)


_wado_routes("/bulkdata", "bulkdata", _bulkdata)


#: All of DICOMweb, in matching order (QIDO-RS GET /studies before WADO-RS /studies/{study}).
router = APIRouter()
router.include_router(dicomweb_qido.router)
router.include_router(wado)
router.include_router(dicomweb_stow.router)
