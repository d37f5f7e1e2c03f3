"""DICOMweb (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store, under /dicom-web.

STOW-RS goes through ServerContext.store(), the one ingest path, so a web upload is
validated, sealed and indexed exactly like a C-STORE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pydicom.valuerep import VR
from starlette.concurrency import run_in_threadpool

from lucent.dicom import pixels, sop_classes, transcode
from lucent.net import status
from server.api import dicomweb_accept as media
from server.api import (
    dicomweb_dates,
    dicomweb_fields,
    dicomweb_render,
    dicomweb_sr,
    dicomweb_xml,
)
from server.api.archive_routes import ctx_of, load_instance
from server.api.auth import Caller, get_caller, readable_pools
from server.api.params import MAX_OFFSET, single_uid, uid_list
from server.context import ServerContext
from server.dimse import identifiers
from server.index import queries
from server.index.models import Instance

log = logging.getLogger("lucent.dicomweb")

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"

# Default return attributes per level (PS3.18 Table 6.7.1-2, the parts we index).
# PS3.18 Tables 10.6.3-3..5 (required return attributes) too: InstanceAvailability at study
# and instance level, BitsAllocated for instances, the Performed Procedure Step start and the
# Request Attribute Sequence for series; what the index does not keep is zero-length.
_STUDY_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "InstanceAvailability",
)
_SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "StudyInstanceUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
_INSTANCE_KEYS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "InstanceAvailability",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


#: Most index rows a QIDO with a key checked per answer (not in SQL) looks through.
_SCAN = 10000


def _base(request: Request) -> str:
    """The DICOMweb root for the absolute URLs we hand out (RetrieveURL, BulkDataURI).

    dicomweb-client (requests) sends ``Host: 127.0.0.1`` without the port even when it
    talks to port 8042, so every link we built pointed at port 80. When the Host header
    names the very address we listen on and no port, the port we listen on is added; a
    name a proxy put there (another host) is left as it is."""
    url = request.base_url
    server = request.scope.get("server")
    if server and url.port is None and url.hostname == server[0]:
        default = 443 if url.scheme == "https" else 80
        if server[1] and server[1] != default:
            url = url.replace(port=server[1])
    return str(url).rstrip("/") + "/dicom-web"


def _warning(text: str) -> str:
    """A Warning header value (RFC 7234 5.5, as PS3.18 8.3.4 uses for QIDO notices)."""
    return f'299 lucent "{text}"'


#: Most results one QIDO answer holds: a larger ``limit`` is this (PS3.18 8.3.4.4 lets the
#: origin server return fewer than asked, with the Warning that more can be requested).
MAX_LIMIT = 10000


def _identifier(
    request: Request, keys: Iterable[str], level: str
) -> tuple[Dataset, dict[str, Any]]:
    """The C-FIND-style identifier and options of a QIDO request.

    An attribute that is not a DICOM attribute is 400; one we cannot match on is ignored
    and named in a Warning (both used to be ignored silently, so ``PatientSex=F`` answered
    every study as if it matched). UID lists may be comma- or backslash-separated.

    A matching key given twice (``ModalitiesInStudy=MR&ModalitiesInStudy=CT``, or by
    keyword and by tag) is 400 naming it: PS3.18 8.3.4.1 gives each key one value, and we
    used to keep the last one silently. A list goes in that one value (UIDs and modalities
    comma-separated). ``limit``, ``offset`` and ``fuzzymatching`` may appear once too."""
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k in keys:
        setattr(ident, k, None)
    opts: dict[str, Any] = {
        "limit": MAX_LIMIT,
        "offset": 0,
        "fuzzy": False,
        "ignored": [],
        "unindexed": [],
        "included": [],
        "all": False,
    }
    seen: dict[str, str] = {}

    def once(name: str, param: str) -> None:
        if name in seen:
            raise HTTPException(
                400, f"query key {param} is given more than once (as {seen[name]} before)"
            )
        seen[name] = param

    includes: list[str] = []
    for param, value in request.query_params.multi_items():
        p = param.lower()
        if p in ("limit", "offset", "fuzzymatching"):
            once(p, param)
        if p == "limit":
            opts["limit"] = min(_count(param, value), MAX_LIMIT)
        elif p == "offset":
            opts["offset"] = min(_count(param, value), MAX_OFFSET)
        elif p == "fuzzymatching":
            opts["fuzzy"] = value.lower() == "true"
        elif p == "includefield":
            includes.append(value)
        elif "." in param and all(dicomweb_fields.keyword(k) for k in param.split(".")):
            opts["ignored"].append(param)  # sequence matching (PS3.18 8.3.4.1): not supported
        else:
            kw = dicomweb_fields.keyword(param)
            if kw is None:
                raise HTTPException(400, f"unknown query attribute {param}")
            once(kw, param)
            if dictionary_VR(kw) == "UI":
                value = value.replace(",", "\\")
            dicomweb_dates.check(param, dictionary_VR(kw), value)  # DA/TM/DT: 400 if invalid
            try:
                setattr(ident, kw, value)
            except (AttributeError, ValueError, TypeError) as exc:
                raise HTTPException(400, f"invalid value for {param}: {value[:64]}") from exc
            probe = Dataset()
            setattr(probe, kw, getattr(ident, kw))
            matched = identifiers.to_filter(probe) != identifiers.to_filter(Dataset())
            if value not in ("", "*") and not matched:
                opts["unindexed"].append((param, kw))
    included, opts["all"] = dicomweb_fields.parse(includes)
    if opts["all"]:
        included += [k for k in dicomweb_fields.ALL[level] if k not in included]
    for kw in included:
        if kw not in ident:  # a matching key stays as it is
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(ident, kw, None)
    opts["included"] = [k for k in included if k not in keys]
    return ident, opts


def _count(param: str, value: str) -> int:
    """PS3.18 8.3.4.4: ``limit`` and ``offset`` are non-negative integers. A negative or
    non-integer value is 400 (-1 used to mean "everything", 0 "one"). ``limit=0`` is taken
    as the standard writes it, at most zero results: an empty answer, with the Warning that
    more can be requested when anything matches."""
    digits = value.strip()
    if not re.fullmatch(r"[0-9]+", digits):
        raise HTTPException(400, f"{param} must be a non-negative whole number, not {value[:32]!r}")
    return int(digits) if len(digits) <= 18 else 10**18  # beyond any archive: capped anyway


def _qido(request: Request, level: str, keys: tuple[str, ...], **fixed: str) -> Response:
    ctx = ctx_of(request)
    answer_as = _metadata_media(request)  # 406 before any search
    ident, opts = _identifier(request, keys, level)
    for kw, value in fixed.items():  # UIDs from the path: one object each
        setattr(ident, kw, single_uid(value, kw))
    f = identifiers.to_filter(ident, case_insensitive_names=opts["fuzzy"])
    # UID-list query keys: empty entries dropped (a list of blanks is no restriction).
    f = dataclasses.replace(
        f,
        study_uid=uid_list(f.study_uid),
        series_uid=uid_list(f.series_uid),
        sop_instance_uid=uid_list(f.sop_instance_uid),
    )
    if (allowed := readable_pools(request)) is not None:  # accounts: pools the caller may read
        f = dataclasses.replace(f, pools=allowed)
    # Keys the index does not match: checked on each answer where we keep the value
    # (PatientSex, BodyPartExamined...), else named in a Warning (PS3.18 8.3.4.1).
    keep, unsupported = identifiers.extra_matching(ident)
    opts["ignored"] += [p for p, kw in opts["unindexed"] if kw in unsupported]
    checked = any(kw not in unsupported for _, kw in opts["unindexed"])
    want = opts["offset"] + opts["limit"] + 1
    with ctx.Session() as db:
        if checked:
            matches = [m for m in queries.find(db, level, f, limit=_SCAN) if keep(m)][:want]
        else:
            matches = queries.find(db, level, f, limit=want)
    warnings = []
    if opts["ignored"]:
        names = ", ".join(opts["ignored"])
        warnings.append(_warning(f"The following attributes are not supported: {names}"))
    if len(matches) > opts["offset"] + opts["limit"]:  # PS3.18 8.3.4.4: tell the client
        matches = matches[: opts["offset"] + opts["limit"]]
        warnings.append(_warning("There are additional results that can be requested"))
    base = _base(request)
    out = []
    for m in matches[opts["offset"] :]:
        ds = identifiers.response(ident, m, ctx.settings.pools[0].ae_title)
        del ds.QueryRetrieveLevel
        dicomweb_fields.complete(ds, m, opts["included"], opts["all"], _reader(ctx, m))
        url = f"{base}/studies/{m.study.study_uid}" if m.study else base
        if m.series is not None:
            url += f"/series/{m.series.series_uid}"
        if m.instance is not None:
            url += f"/instances/{m.instance.sop_instance_uid}"
        ds.RetrieveURL = url
        out.append(ds)
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return _datasets(out, answer_as, headers)


def _reader(ctx: ServerContext, m: queries.Match) -> Callable[[], Dataset | None]:
    """Reads the archived data set of an instance match (no pixels) when asked to."""

    def read() -> Dataset | None:
        if m.instance is None:
            return None
        data = ctx.metadata_bytes(m.instance)
        return dcmread(io.BytesIO(data), stop_before_pixels=True)

    return read


def _metadata_media(request: Request) -> str:
    """The media type of a QIDO-RS or metadata answer (PS3.18 8.7.5, 10.6.3.2): DICOM JSON
    (application/dicom+json, application/json or any) or PS3.19 XML, one part per data
    set (multipart/related; type="application/dicom+xml"), both required of an origin
    server. Anything else is 406; it used to be answered with JSON whatever was asked."""
    for r in media.parse(request.headers.get("accept")):
        if r.media in (DICOM_JSON, "application/json", "application/*", "*/*", "*"):
            return DICOM_JSON
        if r.media in ("multipart/related", "multipart/*") and r.part_type in ("", DICOM_XML):
            return DICOM_XML
    raise HTTPException(
        406,
        "search results and metadata are available as application/dicom+json or "
        'multipart/related; type="application/dicom+xml"',
    )


def _datasets(
    items: list[Dataset], answer_as: str, headers: dict[str, str] | None = None
) -> Response:
    """Data sets as one DICOM JSON array, or as multipart/related XML, a part each."""
    if answer_as == DICOM_XML:
        response = _multipart(((dicomweb_xml.to_xml(ds), DICOM_XML) for ds in items), DICOM_XML)
        response.headers.update(headers or {})
        return response
    body = json.dumps([ds.to_json_dict() for ds in items])
    return Response(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies")
def qido_studies(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "STUDY", _STUDY_KEYS)


@router.get("/series")
def qido_all_series(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "SERIES", _SERIES_KEYS)


@router.get("/studies/{study}/series")
def qido_series(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "SERIES", _SERIES_KEYS, StudyInstanceUID=study)


@router.get("/instances")
def qido_all_instances(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS)


@router.get("/studies/{study}/instances")
def qido_study_instances(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS, StudyInstanceUID=study)


@router.get("/studies/{study}/series/{series}/instances")
def qido_instances(
    study: str, series: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _qido(request, "IMAGE", _INSTANCE_KEYS, StudyInstanceUID=study, SeriesInstanceUID=series)


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

    We transcode only to the native syntaxes (decompressing, or swapping the byte order of
    data stored big endian), with ``lucent.dicom.transcode`` like the DIMSE senders: same
    SOP Instance UID. Any other syntax the stored one is not is 406 (PS3.18 8.7.3.5.2)."""
    if syntax in ("*", ""):
        return data, _stored_syntax(data)
    current = _stored_syntax(data)
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


def _multipart(
    parts: Iterable[tuple[bytes, str]], part_type: str, locations: Iterable[str] = ()
) -> Response:
    """multipart/related (RFC 2387) of (payload, part Content-Type) pairs; ``locations``
    gives parts a Content-Location (PS3.18 10.4.3.3.5: bulk data names its BulkDataURI)."""
    boundary = secrets.token_hex(16)
    body = io.BytesIO()
    where = iter(locations)
    for payload, content_type in parts:
        location = next(where, None)
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        if location:
            head += f"Content-Location: {location}\r\n"
        body.write(f"{head}\r\n".encode())
        body.write(payload)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(
        body.getvalue(),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
    )


def _instance_media(request: Request, single: bool) -> list[tuple[bool, str]]:
    """The (multipart?, transfer syntax) choices an instance retrieve may answer with, from
    the Accept header, best first.

    PS3.18 8.7.3: instances come as multipart/related; type="application/dicom" (single
    part application/dicom for one instance); with no transfer-syntax parameter the default
    is Explicit VR Little Endian, '*' means as stored. Anything else we cannot produce is
    406 (a JSON or octet-stream answer to a request for DICOM broke clients)."""
    choices = []
    for r in media.parse(request.headers.get("accept")):
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


def _retrieve(request: Request, found: list[Instance], single: bool = False) -> Response:
    """The instances in the first media range of the Accept header we can satisfy (RFC 9110
    12.5.1, PS3.18 8.7.3.5): a range naming a syntax we cannot transcode to is passed over
    for the next one (``transfer-syntax=1.2.840.10008.1.2.4.50, ...; transfer-syntax=*``
    was 406 "cannot transcode" although '*' could be served); 406 when none can."""
    ctx = ctx_of(request)
    choices = _instance_media(request, single)
    stored = [ctx.instance_bytes(i) for i in found]
    refusal: HTTPException | None = None
    for multipart, syntax in choices:
        try:
            parts = [_as_syntax(data, syntax) for data in stored]
        except HTTPException as exc:
            if exc.status_code != 406:
                raise
            refusal = refusal or exc
            continue
        if not multipart:
            data, ts = parts[0]
            return Response(data, media_type=f"application/dicom; transfer-syntax={ts}")
        return _multipart(
            ((data, f"application/dicom; transfer-syntax={ts}") for data, ts in parts),
            "application/dicom",
        )
    assert refusal is not None
    raise refusal


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
        router.add_api_route(path + suffix, endpoint, methods=["GET"], name=f"wado_{level}_{name}")


_wado_routes("", "retrieve", _retrieve, instance=False)  # one instance: single part allowed


@router.get("/studies/{study}/series/{series}/instances/{sop}")
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
    answer_as = _metadata_media(request)  # 406 before any instance is read
    ctx = ctx_of(request)
    base = _base(request)
    items: list[tuple[Dataset, dict[int, tuple[str, str]]]] = []
    for inst in found:
        ds = dcmread(io.BytesIO(ctx.metadata_bytes(inst)))  # pixels: a BulkDataURI
        pixel_vrs = {tag: ds[tag].VR for tag in _PIXEL_TAGS if tag in ds}
        uri = _pixel_uri(base, ds) if pixel_vrs else ""
        for tag in pixel_vrs:
            del ds[tag]
        items.append((ds, {tag: (vr, uri) for tag, vr in pixel_vrs.items()}))
    if answer_as == DICOM_XML:
        parts = ((dicomweb_xml.to_xml(ds, bulk), DICOM_XML) for ds, bulk in items)
        return _multipart(parts, DICOM_XML)
    out = []
    for ds, bulk in items:
        item = ds.to_json_dict()
        for tag, (vr, uri) in bulk.items():
            item[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": uri}
        out.append(dict(sorted(item.items())))
    return Response(json.dumps(out), media_type=DICOM_JSON)


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
    if "PixelData" not in ds:
        raise HTTPException(missing_status, "instance has no pixel data")
    return ds


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
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
    multipart, part_type, syntax = _frame_media(request, str(ds.file_meta.TransferSyntaxUID))
    parts = _frame_bytes(ds, numbers, syntax)
    content_type = f"{part_type}; transfer-syntax={syntax}"
    if not multipart:
        return Response(parts[0], media_type=content_type)
    return _multipart(((p, content_type) for p in parts), part_type)


def _frame_numbers(ds: Dataset, frames: str) -> list[int]:
    """The 1-based frame list of a path (PS3.18 10.4.1.1.1): 400 if malformed, 404 if a
    frame does not exist."""
    try:
        numbers = [int(n) for n in frames.split(",") if n.strip()]
    except ValueError as exc:
        raise HTTPException(400, "frame list must be comma-separated numbers") from exc
    if not numbers:
        raise HTTPException(400, "frame list must name at least one frame")
    for n in numbers:
        if not 1 <= n <= pixels.frame_count(ds):
            raise HTTPException(404, f"frame {n} does not exist")
    return numbers


def _frame_bytes(ds: Dataset, numbers: list[int], syntax: str) -> list[bytes]:
    """The frames' bytes in ``syntax`` (decoded when a native syntax is asked of an
    encapsulated instance, as stored otherwise); 406 when we cannot decode."""
    decode = ds.file_meta.TransferSyntaxUID.is_encapsulated and syntax in media.NATIVE
    try:
        return [
            pixels.decode_frame(ds, n - 1).tobytes() if decode else pixels.raw_frame(ds, n - 1)
            for n in numbers
        ]
    except Exception as exc:  # no decoder for this syntax: the client may take it as is
        stored = ds.file_meta.TransferSyntaxUID
        raise HTTPException(406, f"cannot decode {stored}; ask for transfer-syntax=*") from exc


def _frame_media(request: Request, stored: str) -> tuple[bool, str, str]:
    """(multipart?, part media type, transfer syntax) for frames; 406 when none fits."""
    encapsulated = UID(stored).is_encapsulated
    as_stored = stored if encapsulated or stored not in media.NATIVE else media.EXPLICIT_LE
    for r in media.parse(request.headers.get("accept")):
        single = r.media != "multipart/related" and not media.is_any(r.media)
        kind = r.media if single else (r.part_type or "application/octet-stream")
        if media.is_any(kind) or kind == "application/octet-stream":
            ts = r.transfer_syntax or media.EXPLICIT_LE
            if ts == "*":
                return not single, "application/octet-stream", as_stored
            if ts in media.NATIVE:
                return not single, "application/octet-stream", ts
            if ts == stored:
                return not single, "application/octet-stream", stored
        elif stored in media.PIXEL_MEDIA.get(kind, ()) and r.transfer_syntax in (
            None,
            "*",
            stored,
        ):
            return not single, kind, stored
    raise HTTPException(
        406,
        f"frames are stored as {stored}: ask for application/octet-stream "
        "(native, or transfer-syntax=*)",
    )


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
def wado_rendered(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    """PS3.18 8.3.5.1: the first frame with the window, viewport and quality asked for; a
    structured report as text/html or text/plain (dicomweb_sr)."""
    ds = _instance(request, study, series, sop)
    if "PixelData" not in ds:
        if not dicomweb_sr.is_report(ds):
            raise HTTPException(406, "instance has no pixel data and is not a report")
        kind = dicomweb_sr.text_format(request.headers.get("accept"))
        return Response(dicomweb_sr.render(ds, kind), media_type=f"{kind}; charset=utf-8")
    data, media_type = dicomweb_render.render(
        ds, 0, request.query_params, request.headers.get("accept")
    )
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
    media_type = dicomweb_render.rendered_format(request.headers.get("accept"), multipart=True)
    parts = [
        (dicomweb_render.render_as(ds, index, request.query_params, media_type), media_type)
        for ds, index in images
    ]
    return _multipart(parts, media_type)


def _rendered_instances(request: Request, found: list[Instance]) -> Response:
    """Study/series rendered: the first frame of each image instance, in series and
    instance order; 406 when none of them has pixel data (as for one instance)."""
    dicomweb_render.rendered_format(request.headers.get("accept"), multipart=True)
    images = _images(found)
    if not images:
        raise HTTPException(406, "no instance here has pixel data to render")
    return _rendered_many(request, ((_read(request, i), 0) for i in images))


_wado_routes("/rendered", "rendered", _rendered_instances, instance=False)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered")
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
    accept = request.headers.get("accept")
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
        ds, frame_index, request.query_params, request.headers.get("accept")
    )
    return Response(data, media_type=media_type)


def _representative(request: Request, found: list[Instance]) -> Dataset:
    """PS3.18 10.4.3.3.4 lets the origin server choose: the middle image instance of the
    first series (in series number order) that has any."""
    dicomweb_render.rendered_format(request.headers.get("accept"))  # 406 before any decoding
    images = _images(found)
    if not images:
        raise HTTPException(406, "no instance here has pixel data for a thumbnail")
    first = [i for i in images if i.series_pk == images[0].series_pk]
    return _read(request, first[len(first) // 2])


def _thumbnail_of(request: Request, found: list[Instance]) -> Response:
    return _thumbnail(request, _representative(request, found))


_wado_routes("/thumbnail", "thumbnail", _thumbnail_of, instance=False)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail")
def wado_instance_thumbnail(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _thumbnail(request, _image(request, study, series, sop, 406))


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail")
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
    base = _base(request)
    parts: list[tuple[bytes, str]] = []
    locations: list[str] = []
    kinds: set[str] = set()
    single = False
    for inst in _images(found):
        ds = _read(request, inst)
        if "PixelData" not in ds:
            continue
        multipart, part_type, syntax = _frame_media(request, str(ds.file_meta.TransferSyntaxUID))
        single = single or not multipart
        kinds.add(part_type)
        numbers = list(range(1, pixels.frame_count(ds) + 1))
        frames = _frame_bytes(ds, numbers, syntax)
        content_type = f"{part_type}; transfer-syntax={syntax}"
        if syntax in media.NATIVE:
            parts.append((b"".join(frames), content_type))
            locations.append(_pixel_uri(base, ds))
        else:
            parts += [(f, content_type) for f in frames]
            locations += [f"{_instance_uri(base, ds)}/frames/{n}" for n in numbers]
    if not parts:
        raise HTTPException(404, "no bulk data here: metadata carries every value inline")
    if single:
        if len(parts) > 1:
            raise HTTPException(406, "bulk data of several parts needs multipart/related")
        return Response(parts[0][0], media_type=parts[0][1])
    kind = kinds.pop() if len(kinds) == 1 else "application/octet-stream"
    return _multipart(parts, kind, locations)


_wado_routes("/bulkdata", "bulkdata", _bulkdata)


# ---------------------------------------------------------------------------- STOW-RS
def _parts(body: bytes, content_type: str) -> list[bytes]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise HTTPException(400, "multipart/related body needs a boundary")
    delimiter = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


def _with_preamble(part: bytes) -> bytes:
    """A part as a Part 10 stream, which the one ingest path takes: as it is, with the
    preamble it lacks, or (a bare data set, as pydicom's ``write_dataset`` writes) with a
    file meta put in front. ValueError, with the reason, when none of these fits."""
    if len(part) >= 132 and part[128:132] == b"DICM":
        return part
    if part[:4] == b"DICM":
        return b"\0" * 128 + part
    return b"\0" * 128 + b"DICM" + _file_meta(part) + part


def _file_meta(part: bytes) -> bytes:
    """The file meta of a bare data set, so its bytes are archived unchanged.

    It used to be read and saved again, which failed for want of a transfer syntax (the
    exception was swallowed and the part refused as "no DICM prefix"). Without file meta
    the syntax is Implicit or Explicit VR Little Endian (PS3.10 7.1 leaves no other for a
    stream that starts with a data element): explicit when the first element's bytes 4-6
    are a VR."""
    if len(part) < 8 or part[1] != 0 or part[0] == 0:
        raise ValueError("neither a Part 10 stream nor a little endian data set")
    explicit = part[4:6].decode("latin-1") in VR.__members__
    ds = dcmread(
        io.BytesIO(part),
        force=True,
        stop_before_pixels=True,
        specific_tags=["SOPClassUID", "SOPInstanceUID"],
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or ""
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or ""
    if not (meta.MediaStorageSOPClassUID and meta.MediaStorageSOPInstanceUID):
        raise ValueError("a data set without file meta needs its SOP Class and Instance UIDs")
    meta.TransferSyntaxUID = media.EXPLICIT_LE if explicit else media.IMPLICIT_LE
    out = io.BytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


async def _stow(request: Request, study: str | None) -> Response:
    """PS3.18 10.5: store each part through the one ingest path and report per instance.

    Checked against PS3.18 10.5.2/10.5.3: a body whose parts we cannot find (no part, or a
    boundary that does not match) is 400, not "200, nothing stored"; a ``type`` other than
    application/dicom (the JSON/XML metadata + bulk data forms, which we do not take) is
    415; every Failed SOP Sequence item names the SOP Class and Instance it is about."""
    ctx = ctx_of(request)
    answer_as = _stow_media(request.headers.get("accept"))  # 406 before anything is stored
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise HTTPException(415, 'STOW-RS needs multipart/related; type="application/dicom"')
    declared = media.parse(content_type)[0].part_type
    if declared not in ("", "application/dicom"):
        raise HTTPException(
            415, f'STOW-RS takes type="application/dicom" only, not type="{declared}"'
        )
    parts = _parts(await request.body(), content_type)
    if not parts:
        raise HTTPException(400, "the multipart/related body has no part (check the boundary)")
    result = Dataset()
    stored: list[Dataset] = []
    failed: list[Dataset] = []
    studies: set[str] = set()
    space = 0
    base = _base(request)
    for part in parts:
        item = Dataset()
        try:
            data = _with_preamble(part)
        except Exception as exc:
            log.info("STOW-RS part refused: %s", exc)
            item.ReferencedSOPClassUID = None
            item.ReferencedSOPInstanceUID = None
            item.FailureReason = status.CANNOT_UNDERSTAND
            failed.append(item)
            continue
        header = _header(data)
        item.ReferencedSOPClassUID = header.get("SOPClassUID") or None
        item.ReferencedSOPInstanceUID = header.get("SOPInstanceUID") or None
        if study and header.get("StudyInstanceUID", "") != study:
            item.FailureReason = status.DATASET_MISMATCH
            failed.append(item)
            continue
        sop_class = header.get("SOPClassUID") or header.get("MediaStorageSOPClassUID", "")
        if sop_class and not sop_classes.is_storage_class(sop_class):
            # as the Store SCP would not negotiate it
            item.FailureReason = status.SOP_CLASS_NOT_SUPPORTED
            failed.append(item)
            continue
        # The file meta's SOP Class and Instance must be the data set's (PS3.10 7.1), as a
        # C-STORE request's must: a mismatch is refused by the ingest path with A900.
        outcome = await run_in_threadpool(
            ctx.store,
            data,
            pool=ctx.settings.pools[0].name,
            source="STOW-RS",
            expected_sop_class=header.get("MediaStorageSOPClassUID") or None,
            expected_sop_instance=header.get("MediaStorageSOPInstanceUID") or None,
            owner=_caller.user_id if (_caller := getattr(request.state, "caller", None)) else None,
        )
        if outcome.ok:
            inst = ctx.find_instance(outcome.sop_instance_uid)
            assert inst is not None
            study_uid, series_uid = _location(ctx, inst)
            studies.add(study_uid)
            item.ReferencedSOPClassUID = inst.sop_class_uid
            item.ReferencedSOPInstanceUID = inst.sop_instance_uid
            # PS3.18 Table 10.5.3-3: each item's Retrieve URL is the instance's.
            item.RetrieveURL = (
                f"{base}/studies/{study_uid}/series/{series_uid}/instances/{inst.sop_instance_uid}"
            )
            stored.append(item)
        else:
            item.ReferencedSOPInstanceUID = (
                outcome.sop_instance_uid or header.get("SOPInstanceUID") or None
            )
            item.FailureReason = outcome.status
            failed.append(item)
            space += outcome.status in (status.OUT_OF_RESOURCES, status.OUT_OF_RESOURCES_QUOTA)
    if len(studies) == 1:  # PS3.18 Table 10.5.3-2: the study's Retrieve URL
        result.RetrieveURL = f"{base}/studies/{studies.pop()}"
    result.ReferencedSOPSequence = stored
    if failed:
        result.FailedSOPSequence = failed
    code = 200
    if failed and stored:
        code = 202
    elif failed:
        code = 507 if space == len(failed) else 409
    if answer_as == DICOM_XML:
        return Response(dicomweb_xml.to_xml(result), status_code=code, media_type=DICOM_XML)
    return Response(json.dumps(result.to_json_dict()), status_code=code, media_type=DICOM_JSON)


def _stow_media(accept: str | None) -> str:
    """The STOW-RS response media type (PS3.18 10.5.3): DICOM JSON for
    application/dicom+json, application/json or any; PS3.19 XML for application/dicom+xml;
    406 when the client takes neither (it used to get JSON whatever it asked for)."""
    for r in media.parse(accept):
        if r.media in (DICOM_JSON, "application/json", "*/*", "*", "application/*"):
            return DICOM_JSON
        if r.media == DICOM_XML:
            return DICOM_XML
    raise HTTPException(
        406, "the STOW-RS response is available as application/dicom+json or application/dicom+xml"
    )


_HEADER_KEYS = ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")
_META_KEYS = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")


def _header(data: bytes) -> dict[str, str]:
    """Study, SOP Class and SOP Instance UID of a part and the SOP Class and Instance its
    file meta names, as far as they can be read."""
    try:
        ds = dcmread(
            io.BytesIO(data), stop_before_pixels=True, force=True, specific_tags=list(_HEADER_KEYS)
        )
    except Exception:
        return {}
    out = {k: str(ds.get(k, "") or "") for k in _HEADER_KEYS}
    meta = getattr(ds, "file_meta", None) or Dataset()
    out.update({k: str(meta.get(k, "") or "") for k in _META_KEYS})
    return out


def _location(ctx: ServerContext, inst: Instance) -> tuple[str, str]:
    """The Study and Series Instance UIDs of an archived instance."""
    with ctx.Session() as db:
        merged = db.merge(inst)
        return merged.series.study.study_uid, merged.series.series_uid


@router.post("/studies")
async def stow(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}")
async def stow_study(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return await _stow(request, study)
