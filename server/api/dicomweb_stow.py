"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related under /dicom-web.

STOW-RS goes through ServerContext.store(), the one ingest path, so a web upload is
validated, sealed and indexed exactly like a C-STORE.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.valuerep import VR
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from lucent.net import status
from server.accounts import audit
from server.api import dicomweb_accept as media
from server.api import dicomweb_common as common
from server.api import dicomweb_xml
from server.api.archive_routes import ctx_of
from server.api.auth import Caller, access, get_caller
from server.api.dicomweb_common import DICOM_JSON, DICOM_XML
from server.context import ServerContext
from server.index.models import Instance, Study

log = logging.getLogger("lucent.dicomweb")

#: Included in dicomweb.router, after the WADO-RS routes.
router = APIRouter(prefix="/dicom-web", tags=["DICOMweb"])


def _delimiter(content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise HTTPException(400, "multipart/related body needs a boundary")
    return b"--" + m.group(1).encode()


def _payload(buf: bytearray, end: int) -> bytes | None:
    """The body of the part in ``buf[:end]`` (what follows its header lines, less the CRLF
    before the next delimiter), copied once; None for a chunk without a header block."""
    head_end = buf.find(b"\r\n\r\n", 0, end)
    if head_end < 0:
        return None
    if buf[end - 2 : end] == b"\r\n" and end - 2 >= head_end + 4:
        end -= 2
    with memoryview(buf) as view:
        return bytes(view[head_end + 4 : end])


async def _parts(stream: AsyncIterator[bytes], delimiter: bytes) -> AsyncIterator[bytes]:
    """The parts of a multipart/related body as they arrive.

    The whole body used to be read, split and sliced: about three copies of it held at
    once (a 300 MB upload took ~1 GB; outside probe 18). Now one part at a time is held,
    and each is stored before the next is read. The preamble before the first delimiter
    and the epilogue after the closing one are dropped."""
    buf = bytearray()
    scanned = 0  # delimiter search resumes here, not from the start of a growing part
    started = closed = False
    async for chunk in stream:
        if closed:
            continue  # the epilogue: read to the end, ignored
        buf += chunk
        while True:
            at = buf.find(delimiter, scanned)
            if at < 0:
                scanned = max(0, len(buf) - len(delimiter) + 1)
                if not started:  # the preamble: only a delimiter's head may matter
                    del buf[:scanned]
                    scanned = 0
                break
            if started:
                part = _payload(buf, at)
                if part is not None:
                    yield part
            started = True
            del buf[: at + len(delimiter)]
            scanned = 0
            if buf[:2] == b"--":
                closed = True
                break
    if started and not closed and buf and not buf.startswith(b"--"):
        part = _payload(buf, len(buf))  # no closing delimiter: the body was cut short
        if part is not None:
            yield part


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
    answer_as = _stow_media(common.accept(request))  # 406 before anything is stored
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise HTTPException(415, 'STOW-RS needs multipart/related; type="application/dicom"')
    declared = media.parse(content_type)[0].part_type
    if declared not in ("", "application/dicom"):
        raise HTTPException(
            415, f'STOW-RS takes type="application/dicom" only, not type="{declared}"'
        )
    delimiter = _delimiter(content_type)
    result = Dataset()
    stored: list[Dataset] = []
    failed: list[Dataset] = []
    studies: set[str] = set()
    received: dict[str, tuple[str, str, int]] = {}  # study -> (patient, pool, count)
    space = 0
    base = common.base(request)
    count = 0
    async for part in _parts(request.stream(), delimiter):
        count += 1
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
        # A SOP Class the Store SCP would not negotiate is refused by the ingest path too
        # (0122), which lists it as "non-conformant data" (Conformance 4.1.3.2: "treated the
        # same way"). It was refused here, before the ingest path: no entry said that
        # something arrived and why it was refused (outside probe 28).
        pool = _target_pool(request, ctx, header.get("StudyInstanceUID", ""))
        if pool is None:
            item.FailureReason = status.NOT_AUTHORIZED
            failed.append(item)
            continue
        # The file meta's SOP Class and Instance must be the data set's (PS3.10 7.1), as a
        # C-STORE request's must: a mismatch is refused by the ingest path with A900.
        outcome = await run_in_threadpool(
            ctx.store,
            data,
            pool=pool,
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
            patient, _pool, n = received.get(study_uid, (outcome.patient_id, pool, 0))
            received[study_uid] = (patient, pool, n + 1)
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
    if not count:
        raise HTTPException(400, "the multipart/related body has no part (check the boundary)")
    await run_in_threadpool(_audit_received, request, ctx, received, len(failed))
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
    body = common.json_body(common.to_json(result))  # ascending tag order (PS3.18 F.2.2)
    return Response(body, status_code=code, media_type=DICOM_JSON)


def _audit_received(
    request: Request, ctx: ServerContext, received: dict[str, tuple[str, str, int]], refused: int
) -> None:
    """PS3.15 A.5.3.4 DICOM Instances Transferred (110104, action C) per study, as for
    C-STORE receipt (server.dimse.audit_trail): who sent them, from where, which patient and
    study (probe 34: STOW-RS uploads went unaudited). Never fails the upload."""
    caller = getattr(request.state, "caller", None)
    user = caller.username if isinstance(caller, Caller) else ""
    address = caller.address if isinstance(caller, Caller) else ""
    entries = [
        audit.Entry(
            "receive",
            audit.SUCCESS,
            user,
            address,
            [{"type": "study", "id": uid}, {"type": "patient", "id": patient}],
            f"{n} instance(s) received into pool {pool} (STOW-RS)",
        )
        for uid, (patient, pool, n) in received.items()
    ]
    if refused:
        entries.append(
            audit.Entry(
                "receive",
                audit.MINOR_FAILURE,
                user,
                address,
                [],
                f"{refused} instance(s) refused (STOW-RS)",
            )
        )
    if not entries:
        return
    try:
        audit.record(ctx.WriteSession, *entries)
    except Exception:  # auditing must never fail the stored upload
        log.exception("could not write the STOW-RS audit record(s)")


def _target_pool(request: Request, ctx: ServerContext, study_uid: str) -> str | None:
    """The pool an instance goes into: its study's, when the study is archived (a study
    lives in one pool), else the first pool; None when the caller may not import there.
    A user with import rights on the first pool only added a series of another patient to
    a study of another pool (outside probe)."""
    default = ctx.settings.pools[0].name
    if not study_uid:
        return default
    with ctx.Session() as db:
        pool = db.scalars(select(Study.pool).where(Study.study_uid == study_uid)).first()
    if pool is None:
        return default
    caller = getattr(request.state, "caller", None)
    if isinstance(caller, Caller) and not access(request, caller).allows(pool, "import"):
        return None
    return pool


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
