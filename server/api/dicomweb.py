"""DICOMweb (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store, under /dicom-web.

STOW-RS goes through ServerContext.store(), the one ingest path, so a web upload is
validated, sealed and indexed exactly like a C-STORE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import secrets
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.concurrency import run_in_threadpool

from lucent.dicom import pixels
from lucent.net import status
from server.api.archive_routes import ctx_of, load_instance
from server.api.auth import Caller, get_caller, readable_pools
from server.api.params import MAX_OFFSET, single_uid, uid_list
from server.context import ServerContext
from server.dimse import identifiers
from server.index import queries
from server.index.models import Instance

router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])

DICOM_JSON = "application/dicom+json"

# Default return attributes per level (PS3.18 Table 6.7.1-2, the parts we index).
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
)
_SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "StudyInstanceUID",
)
_INSTANCE_KEYS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


def _keyword(param: str) -> str:
    """A QIDO parameter may name an attribute by keyword or by tag (00100010)."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", param):
        from pydicom.datadict import keyword_for_tag

        return keyword_for_tag(int(param, 16)) or param
    return param


def _identifier(
    request: Request, keys: Iterable[str], level: str
) -> tuple[Dataset, dict[str, Any]]:
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k in keys:
        setattr(ident, k, None)
    opts: dict[str, Any] = {"limit": 1000, "offset": 0, "fuzzy": False}
    for param, value in request.query_params.multi_items():
        p = param.lower()
        if p == "limit":
            opts["limit"] = max(1, min(_number(param, value), 10000))
        elif p == "offset":
            opts["offset"] = max(0, min(_number(param, value), MAX_OFFSET))
        elif p == "fuzzymatching":
            opts["fuzzy"] = value.lower() == "true"
        elif p == "includefield":
            for field in value.split(","):
                kw = _keyword(field.strip())
                if kw and kw != "all":
                    with contextlib.suppress(AttributeError, ValueError):
                        setattr(ident, kw, None)
        else:
            kw = _keyword(param)
            try:
                setattr(ident, kw, value)
            except (AttributeError, ValueError, TypeError) as exc:
                raise HTTPException(400, f"unknown query attribute {param}") from exc
    return ident, opts


def _number(param: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise HTTPException(400, f"{param} must be a whole number") from exc


def _qido(request: Request, level: str, keys: tuple[str, ...], **fixed: str) -> Response:
    ctx = ctx_of(request)
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
    with ctx.Session() as db:
        matches = queries.find(db, level, f, limit=opts["offset"] + opts["limit"])
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    out = []
    for m in matches[opts["offset"] :]:
        ds = identifiers.response(ident, m, ctx.settings.pools[0].ae_title)
        del ds.QueryRetrieveLevel
        url = f"{base}/studies/{m.study.study_uid}" if m.study else base
        if m.series is not None:
            url += f"/series/{m.series.series_uid}"
        if m.instance is not None:
            url += f"/instances/{m.instance.sop_instance_uid}"
        ds.RetrieveURL = url
        out.append(ds.to_json_dict())
    import json

    return Response(json.dumps(out), media_type=DICOM_JSON)


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


def _requested_syntax(request: Request) -> str:
    """The transfer syntax the Accept header asks for; '*' (as stored) when it names none."""
    accept = request.headers.get("accept", "")
    m = re.search(r'transfer-syntax\s*=\s*"?([0-9.*]+)"?', accept)
    return m.group(1) if m else "*"


def _as_syntax(data: bytes, syntax: str) -> bytes:
    """Transcode to a native syntax when the client asks for one (decompressing if needed)."""
    if syntax in ("*", ""):
        return data
    ds = dcmread(io.BytesIO(data))
    current = str(ds.file_meta.TransferSyntaxUID)
    if current == syntax:
        return data
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise HTTPException(406, f"cannot transcode to transfer syntax {syntax}")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _multipart(parts: Iterable[bytes], part_type: str, extra: str = "") -> Response:
    boundary = secrets.token_hex(16)
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: {part_type}{extra}\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(
        body.getvalue(),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
    )


def _retrieve(request: Request, found: list[Instance]) -> Response:
    ctx = ctx_of(request)
    syntax = _requested_syntax(request)
    parts = (_as_syntax(ctx.instance_bytes(i), syntax) for i in found)
    return _multipart(parts, "application/dicom")


@router.get("/studies/{study}")
def wado_study(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _retrieve(request, _select(request, study))


@router.get("/studies/{study}/series/{series}")
def wado_series(
    study: str, series: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _retrieve(request, _select(request, study, series))


@router.get("/studies/{study}/series/{series}/instances/{sop}")
def wado_instance(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _retrieve(request, _select(request, study, series, sop))


def _metadata(request: Request, found: list[Instance]) -> Response:
    import json

    ctx = ctx_of(request)
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    out = []
    for inst in found:
        ds = dcmread(io.BytesIO(ctx.instance_bytes(inst)))
        uri = (
            f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )

        frames = ",".join(str(i + 1) for i in range(pixels.frame_count(ds)))

        def bulk(elem: Any, uri: str = uri, frames: str = frames) -> str:
            if elem.tag == 0x7FE00010:
                return f"{uri}/frames/{frames}"
            return f"{uri}/bulk/{elem.tag:08X}"

        out.append(ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=bulk))
    return Response(json.dumps(out), media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata")
def study_metadata(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return _metadata(request, _select(request, study))


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(
    study: str, series: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _metadata(request, _select(request, study, series))


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata")
def instance_metadata(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    return _metadata(request, _select(request, study, series, sop))


def _image(request: Request, study: str, series: str, sop: str, missing_status: int) -> Dataset:
    """The decrypted instance, which must carry pixel data (else ``missing_status``)."""
    found = _select(request, study, series, sop)
    _, data = load_instance(ctx_of(request), found[0].sop_instance_uid)
    ds = dcmread(io.BytesIO(data))
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
    """Frames as application/octet-stream (native, decompressed when stored compressed)."""
    ds = _image(request, study, series, sop, 404)
    try:
        numbers = [int(n) for n in frames.split(",") if n.strip()]
    except ValueError as exc:
        raise HTTPException(400, "frame list must be comma-separated numbers") from exc
    syntax = _requested_syntax(request)
    encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated
    parts = []
    for n in numbers:
        if not 1 <= n <= pixels.frame_count(ds):
            raise HTTPException(404, f"frame {n} does not exist")
        if encapsulated and syntax != "*":
            parts.append(pixels.decode_frame(ds, n - 1).tobytes())
        else:
            parts.append(pixels.raw_frame(ds, n - 1))
    return _multipart(parts, "application/octet-stream")


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered")
def wado_rendered(
    study: str, series: str, sop: str, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    ds = _image(request, study, series, sop, 406)
    img = Image.fromarray(pixels.render(ds, 0))
    buf = io.BytesIO()
    fmt = "JPEG" if "image/jpeg" in request.headers.get("accept", "") else "PNG"
    img.save(buf, format=fmt)
    return Response(buf.getvalue(), media_type=f"image/{fmt.lower()}")


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
    if len(part) >= 132 and part[128:132] == b"DICM":
        return part
    if part[:4] == b"DICM":
        return b"\0" * 128 + part
    # A bare data set: wrap it in a file meta so the ingest path sees Part 10.
    ds = dcmread(io.BytesIO(part), force=True)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def _stow(request: Request, study: str | None) -> Response:
    import json

    ctx = ctx_of(request)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise HTTPException(415, 'STOW-RS needs multipart/related; type="application/dicom"')
    parts = _parts(await request.body(), content_type)
    result = Dataset()
    stored: list[Dataset] = []
    failed: list[Dataset] = []
    space = 0
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    for part in parts:
        try:
            data = _with_preamble(part)
        except Exception:
            data = part
        item = Dataset()
        if study and _declared_study(data) != study:
            item.FailureReason = status.DATASET_MISMATCH
            failed.append(item)
            continue
        outcome = await run_in_threadpool(
            ctx.store,
            data,
            pool=ctx.settings.pools[0].name,
            source="STOW-RS",
            owner=_caller.user_id if (_caller := getattr(request.state, "caller", None)) else None,
        )
        if outcome.ok:
            inst = ctx.find_instance(outcome.sop_instance_uid)
            assert inst is not None
            item.ReferencedSOPClassUID = inst.sop_class_uid
            item.ReferencedSOPInstanceUID = inst.sop_instance_uid
            item.RetrieveURL = f"{base}/studies/{_study_of(ctx, inst.sop_instance_uid)}"
            stored.append(item)
        else:
            item.ReferencedSOPInstanceUID = outcome.sop_instance_uid or None
            item.FailureReason = outcome.status
            failed.append(item)
            space += outcome.status in (status.OUT_OF_RESOURCES, status.OUT_OF_RESOURCES_QUOTA)
    result.ReferencedSOPSequence = stored
    if failed:
        result.FailedSOPSequence = failed
    code = 200
    if failed and stored:
        code = 202
    elif failed:
        code = 507 if space == len(failed) else 409
    return Response(json.dumps(result.to_json_dict()), status_code=code, media_type=DICOM_JSON)


def _declared_study(data: bytes) -> str:
    try:
        ds = dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            force=True,
            specific_tags=["StudyInstanceUID"],
        )
        return str(ds.get("StudyInstanceUID", ""))
    except Exception:
        return ""


def _study_of(ctx: ServerContext, sop_uid: str) -> str:
    inst = ctx.find_instance(sop_uid)
    if inst is None:
        return ""
    with ctx.Session() as db:
        inst = db.merge(inst)
        return inst.series.study.study_uid


@router.post("/studies")
async def stow(request: Request, _: Caller = Depends(get_caller)) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}")
async def stow_study(study: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    return await _stow(request, study)
