"""/api/v1: patients → studies → series → instances, instance files, frames and volumes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from lucent.api import schemas
from lucent.dicom import pixels
from server.accounts import rights
from server.api import dicomweb_dates, series_volume
from server.api.auth import (
    Caller,
    get_caller,
    hidden_uids,
    pool_filter,
    pools_with,
    readable_pools,
)
from server.api.params import Offset, uid_list
from server.context import ArchiveReadError, ServerContext
from server.index import queries
from server.index.models import Instance, Patient, Series, Study

log = logging.getLogger("lucent.api")

router = APIRouter(prefix="/api/v1", tags=["archive"])


def ctx_of(request: Request) -> ServerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def filter_params(
    request: Request,
    patient_name: str = Query("", description="wildcards * and ?"),
    case_insensitive: bool = Query(True, description="match names regardless of case"),
    patient_id: str = "",
    birth_date: str = Query("", description="YYYYMMDD or range A-B"),
    study_date: str = Query("", description="YYYYMMDD, YYYY-MM-DD or range A-B"),
    modality: str = Query("", description="one or more, separated by , or \\"),
    accession_number: str = "",
    description: str = Query("", description="study description, wildcards allowed"),
    study_uid: str = "",
    pool: str = "",
) -> queries.Filter:
    """Search keys of the list routes. Dates are checked as QIDO-RS checks them: a typo
    (``garbage``, ``2024-13-45``) or a reversed range answered 200 with nothing in it,
    which a user cannot tell from an empty archive; now a 400 that says what is expected."""
    dicomweb_dates.check("birth_date", "DA", birth_date)
    dicomweb_dates.check("study_date", "DA", study_date)
    return queries.Filter(
        patient_name=patient_name,
        name_case_insensitive=case_insensitive,
        patient_id=patient_id,
        birth_date=birth_date,
        study_date=study_date,
        modality=modality,
        accession_number=accession_number,
        description=description,
        study_uid=uid_list(study_uid),
        pool=pool_filter(request, pool),  # resolved by the access check into ``pools``
        pools=readable_pools(request),  # accounts: narrowed to the pools the caller may read
    )


@router.get("/pools", response_model=list[schemas.Pool])
def list_pools(request: Request, _: Caller = Depends(get_caller)) -> list[schemas.Pool]:
    return [
        schemas.Pool(name=p.name, ae_title=p.ae_title, port=p.port)
        for p in ctx_of(request).settings.pools
    ]


@router.get("/patients", response_model=schemas.Page[schemas.PatientOut])
def list_patients(
    request: Request,
    f: queries.Filter = Depends(filter_params),
    offset: Offset = 0,
    limit: int = Query(100, ge=1, le=1000),
    _: Caller = Depends(get_caller),
) -> schemas.Page[schemas.PatientOut]:
    with ctx_of(request).Session() as db:
        rows = queries.patients(db, f, offset, limit)
        total = queries.count_patients(db, f)
        items = [
            schemas.PatientOut(
                patient_id=r.patient.patient_id,
                issuer=r.patient.issuer,
                name=r.patient.name,
                birth_date=r.patient.birth_date,
                sex=r.patient.sex,
                study_count=r.study_count,
                non_conformant=r.non_conformant,
            )
            for r in rows
        ]
    return schemas.Page[schemas.PatientOut](items=items, offset=offset, limit=limit, total=total)


def study_out(r: queries.StudyRow) -> schemas.StudyOut:
    s, p = r.study, r.patient
    return schemas.StudyOut(
        study_uid=s.study_uid,
        patient_id=p.patient_id,
        patient_name=p.name,
        birth_date=p.birth_date,
        study_date=s.study_date,
        study_time=s.study_time,
        description=s.description,
        accession_number=s.accession_number,
        referring_physician=s.referring_physician,
        study_id=s.study_id,
        modalities=r.modalities,
        series_count=r.series_count,
        instance_count=r.instance_count,
        pool=s.pool,
        non_conformant=r.non_conformant,
    )


@router.get("/studies", response_model=schemas.Page[schemas.StudyOut])
def list_studies(
    request: Request,
    f: queries.Filter = Depends(filter_params),
    offset: Offset = 0,
    limit: int = Query(100, ge=1, le=1000),
    include_placeholders: bool = Query(True, description="list non-conformant data entries"),
    show_hidden: bool = Query(False, description="include the studies this user has hidden"),
    _: Caller = Depends(get_caller),
) -> schemas.Page[schemas.StudyOut]:
    """One ordered list, paged as a whole: the "non-conformant data" entries of studies that
    were never archived (newest first), then the archived studies (newest study date first).
    ``total`` counts both; hidden studies are left out before paging, so a page is never
    short while more exist, nor longer than ``limit``."""
    with ctx_of(request).Session() as db:
        hidden = hidden_uids(request, "study", show_hidden)  # accounts: per-user hidden
        entries = _placeholder_studies(db, f, hidden) if include_placeholders else []
        items = entries[offset : offset + limit]
        rest = limit - len(items)
        if rest > 0:
            rows = queries.studies(db, f, max(0, offset - len(entries)), rest, exclude=hidden)
            items.extend(study_out(r) for r in rows)
        total = len(entries) + queries.count_studies(db, f, exclude=hidden)
    return schemas.Page[schemas.StudyOut](items=items, offset=offset, limit=limit, total=total)


def _placeholder_studies(db: Any, f: queries.Filter, hidden: set[str]) -> list[schemas.StudyOut]:
    """Refused instances whose study was never archived appear as their own entry."""
    if f.study_date or f.modality or f.accession_number or f.description:
        return []
    out: dict[str, schemas.StudyOut] = {}
    for ph in queries.orphan_placeholders(db, f):
        key = ph.study_uid or f"unknown:{ph.id}"
        if key in out or (ph.study_uid and ph.study_uid in hidden):
            continue
        out[key] = schemas.StudyOut(
            study_uid=ph.study_uid,
            patient_id=ph.patient.patient_id,
            patient_name=ph.patient.name,
            birth_date=ph.patient.birth_date,
            study_date="",
            study_time="",
            description="non-conformant data",
            accession_number="",
            referring_physician="",
            study_id="",
            modalities=[],
            series_count=0,
            instance_count=0,
            pool=ph.pool,
            non_conformant=1,
            placeholder=True,
            reason=ph.reason,
        )
    return list(out.values())


@router.get("/placeholders", response_model=list[schemas.PlaceholderOut])
def list_placeholders(
    request: Request,
    f: queries.Filter = Depends(filter_params),
    series_uid: str = "",
    sop_instance_uid: str = Query("", description="the refused instance's UID(s)"),
    _: Caller = Depends(get_caller),
) -> list[schemas.PlaceholderOut]:
    """Refused instances, newest first. ``sop_instance_uid`` and ``series_uid`` were ignored
    (every placeholder came back), so "why was this instance refused?" had to be answered
    by reading the whole list (outside probe 28)."""
    f.series_uid, f.sop_instance_uid = uid_list(series_uid), uid_list(sop_instance_uid)
    with ctx_of(request).Session() as db:
        return [
            schemas.PlaceholderOut(
                patient_id=ph.patient.patient_id,
                patient_name=ph.patient.name,
                study_uid=ph.study_uid,
                series_uid=ph.series_uid,
                sop_instance_uid=ph.sop_instance_uid,
                sop_class_uid=ph.sop_class_uid,
                status=ph.status,
                reason=ph.reason,
                pool=ph.pool,
                source_ae=ph.source_ae,
                received_at=ph.received_at,
            )
            for ph in queries.placeholders(db, f)
        ]


@router.get("/studies/{study_uid}/series", response_model=list[schemas.SeriesOut])
def list_series(
    study_uid: str,
    request: Request,
    show_hidden: bool = Query(False, description="include the series this user has hidden"),
    _: Caller = Depends(get_caller),
) -> list[schemas.SeriesOut]:
    with ctx_of(request).Session() as db:
        if db.scalars(select(Study.id).where(Study.study_uid == study_uid)).first() is None:
            raise HTTPException(404, f"study {study_uid} not found")
        hidden = hidden_uids(request, "series", show_hidden)  # accounts: per-user hidden
        return [
            schemas.SeriesOut(
                series_uid=s.series_uid,
                study_uid=study_uid,
                modality=s.modality,
                series_number=s.series_number,
                description=s.description,
                body_part=s.body_part,
                frame_of_reference_uid=s.frame_of_reference_uid,
                instance_count=n,
            )
            for s, n in queries.series(db, study_uid)
            if s.series_uid not in hidden
        ]


def instance_out(i: Instance) -> schemas.InstanceOut:
    return schemas.InstanceOut(
        sop_instance_uid=i.sop_instance_uid,
        sop_class_uid=i.sop_class_uid,
        transfer_syntax_uid=i.transfer_syntax_uid,
        instance_number=i.instance_number,
        rows=i.rows,
        columns=i.columns,
        frames=i.frames,
        lossy=i.lossy,
        size=i.size,
        sha256=i.sha256,
        received_at=i.received_at,
        attrs=i.attrs or {},
    )


@router.get("/series/{series_uid}/instances", response_model=list[schemas.InstanceOut])
def list_instances(
    series_uid: str, request: Request, _: Caller = Depends(get_caller)
) -> list[schemas.InstanceOut]:
    with ctx_of(request).Session() as db:
        if db.scalars(select(Series.id).where(Series.series_uid == series_uid)).first() is None:
            raise HTTPException(404, f"series {series_uid} not found")
        return [instance_out(i) for i in queries.instances(db, series_uid)]


def load_instance(ctx: ServerContext, sop_uid: str) -> tuple[Instance, bytes]:
    inst = ctx.find_instance(sop_uid)
    if inst is None:
        raise HTTPException(404, f"instance {sop_uid} not found")
    try:
        return inst, ctx.instance_bytes(inst)
    except ArchiveReadError as exc:
        raise HTTPException(500, f"archive object unreadable: {exc}") from exc


@router.get("/instances/{sop_uid}", response_model=schemas.InstanceOut)
def get_instance(
    sop_uid: str, request: Request, _: Caller = Depends(get_caller)
) -> schemas.InstanceOut:
    inst = ctx_of(request).find_instance(sop_uid)
    if inst is None:
        raise HTTPException(404, f"instance {sop_uid} not found")
    return instance_out(inst)


@router.get("/instances/{sop_uid}/file", response_class=Response)
def get_instance_file(sop_uid: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    """The instance as a DICOM Part-10 file, decrypted."""
    _, data = load_instance(ctx_of(request), sop_uid)
    return Response(data, media_type="application/dicom")


def npy(arr: np.ndarray) -> Response:
    """An array as a .npy body, streamed from the array's own memory (no 2nd/3rd copy of a
    few hundred MB volume)."""
    arr = np.ascontiguousarray(arr)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
    body = memoryview(arr.reshape(-1).view(np.uint8))
    chunk = 8 * 1024 * 1024

    def parts() -> Iterator[bytes]:
        yield header.getvalue()
        for start in range(0, len(body), chunk):
            yield bytes(body[start : start + chunk])

    length = len(header.getvalue()) + len(body)
    return StreamingResponse(
        parts(), media_type="application/x-npy", headers={"Content-Length": str(length)}
    )


@router.get("/instances/{sop_uid}/frames/{number}", response_class=Response)
def get_frame(
    sop_uid: str, number: int, request: Request, _: Caller = Depends(get_caller)
) -> Response:
    """Frame ``number`` (1-based, as in DICOMweb) as decoded stored values in .npy format."""
    _, data = load_instance(ctx_of(request), sop_uid)
    ds = pixels.read(data)
    if not pixels.has_pixels(ds):  # Float/Double Float Pixel Data too (Parametric Maps)
        raise HTTPException(404, "instance has no pixel data")
    try:
        frame = pixels.decode_frame(ds, number - 1)
    except IndexError as exc:
        raise HTTPException(404, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise anything; each is a reason
        raise _undecodable(sop_uid, exc) from exc
    return npy(frame)


def _undecodable(sop_uid: str, exc: Exception) -> HTTPException:
    """Stored pixel data no decoder can read (a damaged fragment, no codec): 422 with the
    reason, where the exception escaped as a bare 500 and a traceback in the log."""
    reason = f"pixel data cannot be decoded: {type(exc).__name__}: {exc}"
    log.warning("instance %s: %s", sop_uid, reason)
    return HTTPException(422, reason)


def _series_instances(ctx: ServerContext, series_uid: str) -> list[Instance]:
    with ctx.Session() as db:
        found = [
            i for i in queries.instances(db, series_uid) if i.rows and i.columns and i.pixel_key
        ]
    if not found:
        raise HTTPException(404, f"series {series_uid} has no image instances")
    return found


def _plan(ctx: ServerContext, series_uid: str) -> series_volume.VolumePlan:
    """The one volume plan of both routes: the same checks, order and values."""
    return series_volume.plan(
        _series_instances(ctx, series_uid),
        series_volume.metadata_frame_of_reference(ctx),
        series_volume.metadata_reader(ctx),
    )


@router.get("/series/{series_uid}/geometry", response_model=schemas.VolumeGeometry)
def get_geometry(
    series_uid: str, request: Request, _: Caller = Depends(get_caller)
) -> schemas.VolumeGeometry:
    """Geometry of the series as one volume (see :func:`server.api.series_volume.plan`:
    the same checks and order as ``/volume``, so both answer 409 for the same series)."""
    plan = _plan(ctx_of(request), series_uid)
    ordered = plan.slices
    first = ordered[0]
    a: dict[str, Any] = first.instance.attrs or {}
    slopes = {(s.rescale_slope, s.rescale_intercept) for s in ordered}
    return schemas.VolumeGeometry(
        series_uid=series_uid,
        rows=int(first.instance.rows or 0),
        columns=int(first.instance.columns or 0),
        slices=[
            schemas.SliceGeometry(
                sop_instance_uid=s.sop_instance_uid,
                frame_number=s.frame_number,
                image_position=s.position,
                rescale_slope=s.rescale_slope,
                rescale_intercept=s.rescale_intercept,
                modality_lut_applied=s.modality_lut,
            )
            for s in ordered
        ],
        image_orientation=first.orientation,
        pixel_spacing=first.pixel_spacing,
        slice_spacing=plan.slice_spacing,
        uniform_spacing=plan.uniform_spacing,
        slice_gaps=plan.slice_gaps,
        stack_direction=plan.stack_direction,
        gantry_tilt_deg=plan.gantry_tilt_deg,
        tilted=plan.tilted,
        dtype=plan.dtype,
        modality_lut_applied=plan.modality_lut_applied,
        window_center=first.window_center,
        window_width=first.window_width,
        photometric=str(a.get("PhotometricInterpretation", "MONOCHROME2")),
        uniform_rescale=len(slopes) == 1,
    )


@router.get("/series/{series_uid}/volume", response_class=Response)
def get_volume(series_uid: str, request: Request, _: Caller = Depends(get_caller)) -> Response:
    """All slices as one (slices, rows, cols[, samples]) array of ``/geometry``'s dtype, .npy.

    Order and geometry are those of ``/geometry`` (one :func:`series_volume.plan` for both,
    so they refuse the same series); rescale is per slice there. Values are stored values,
    except a slice with a Modality LUT Sequence: its values through that LUT (PS3.3 C.11.1).
    """
    ctx = ctx_of(request)
    plan = _plan(ctx, series_uid)
    first = plan.slices[0].instance
    samples = int((first.attrs or {}).get("SamplesPerPixel", 1))
    shape = (len(plan.slices), int(first.rows or 0), int(first.columns or 0))
    out = np.empty(shape + ((samples,) if samples > 1 else ()), np.dtype(plan.dtype))
    by_instance: dict[int, list[tuple[int, series_volume.Slice]]] = {}
    for k, s in enumerate(plan.slices):
        by_instance.setdefault(s.instance.id, []).append((k, s))

    def fill(slices: list[tuple[int, series_volume.Slice]]) -> None:
        inst = slices[0][1].instance
        stored = series_volume.numpy_dtype(inst.attrs or {})
        if _is_native(inst) and all(s.dtype == stored and not s.modality_lut for _, s in slices):
            _native_frames(ctx, inst, slices, out)
        else:
            _decoded_frames(ctx, inst, slices, out)

    # Reading, decrypting and decoding release the GIL for most of their time: in parallel.
    list(_VOLUME_POOL.map(fill, by_instance.values()))
    return npy(out)


_VOLUME_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="volume")
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _is_native(inst: Instance) -> bool:
    a = inst.attrs or {}
    return (
        inst.transfer_syntax_uid in _NATIVE_SYNTAXES
        and int(a.get("SamplesPerPixel", 1)) == 1
        and int(a.get("BitsAllocated", 0)) in (8, 16, 32)
    )


def _native_frames(
    ctx: ServerContext,
    inst: Instance,
    slices: list[tuple[int, series_volume.Slice]],
    out: np.ndarray,
) -> None:
    """From the pixel object alone: no metadata decryption, no data set parsing."""
    a = inst.attrs or {}
    bits = int(a["BitsAllocated"])
    rows, columns = int(inst.rows or 0), int(inst.columns or 0)
    data = ctx.pixel_bytes(inst)
    size = rows * columns * bits // 8
    for k, s in slices:
        out[k] = pixels.native_frame(
            data[s.frame * size : (s.frame + 1) * size],
            rows,
            columns,
            bits,
            int(a.get("BitsStored", bits)),
            int(a.get("PixelRepresentation", 0)) == 1,
            big_endian=inst.transfer_syntax_uid == "1.2.840.10008.1.2.2",
        )


def _decoded_frames(
    ctx: ServerContext,
    inst: Instance,
    slices: list[tuple[int, series_volume.Slice]],
    out: np.ndarray,
) -> None:
    """Decoded by pydicom; a slice with a Modality LUT Sequence through it (PS3.3 C.11.1)."""
    ds = pixels.read(ctx.instance_bytes(inst))
    try:
        for k, s in slices:
            frame = pixels.decode_frame(ds, s.frame)
            out[k] = pixels.modality_lut(ds, frame, s.frame) if s.modality_lut else frame
    except Exception as exc:  # noqa: BLE001 - decoders raise anything; each is a reason
        raise _undecodable(inst.sop_instance_uid, exc) from exc


@router.get("/status")
def server_status(request: Request, caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Pools, free space and counts: of the whole archive for those who run the system
    (configure right), else of the pools the caller may read (a user without any right saw
    the counts of every pool: outside probe)."""
    ctx = ctx_of(request)
    pools = (
        None
        if rights.role_allows(caller.role, "configure")
        else pools_with(request, caller, "read")
    )
    with ctx.Session() as db:
        if pools is None:  # the whole archive, patients of refused data only included
            counts = {
                name: db.scalar(select(func.count(model.id)))
                for name, model in (
                    ("patients", Patient),
                    ("studies", Study),
                    ("instances", Instance),
                )
            }
        else:
            studies = select(Study.id, Study.patient_pk).where(Study.pool.in_(pools)).subquery()
            counts = {
                "patients": db.scalar(select(func.count(func.distinct(studies.c.patient_pk)))),
                "studies": db.scalar(select(func.count()).select_from(studies)),
                "instances": db.scalar(
                    select(func.count(Instance.id)).where(Instance.pool.in_(pools))
                ),
            }
    return {
        "pools": [p.name for p in ctx.settings.pools],
        "free_mb": ctx.storage.free_bytes() // (1024 * 1024),
        **{k: int(v or 0) for k, v in counts.items()},
    }
