"""PACS connectivity API: node C-ECHO, multi-PACS query, retrieve, send, jobs, commitment.

Issue 3 / Conformance 4.2.1, 4.2.2, 4.2.4, 4.2.5. The service (and its job threads) is made
on first use, in the API process.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import select

from lucent.api import schemas
from lucent.net import commitment
from server.accounts import audit
from server.api import dicomweb_dates
from server.api.auth import (
    Caller,
    access,
    audit_caller,
    get_caller,
    pools_with,
    require_admin,
)
from server.api.params import OptionalRowId, RowId, row_id_or_404
from server.context import ServerContext
from server.index.models import Study
from server.index.pacs_models import (
    CommitmentItem,
    CommitmentRequest,
    Job,
    SentInstance,
)
from server.pacs import records
from server.pacs.service import REMAINING, NodeView, PacsError, PacsService, remaining_of

_services: list[PacsService] = []
_lock = threading.Lock()


def _close_all() -> None:
    with _lock:
        while _services:
            _services.pop().close()


router = APIRouter(prefix="/api/v1", tags=["pacs"], on_shutdown=[_close_all])


def service(request: Request) -> PacsService:
    state = request.app.state
    svc = getattr(state, "pacs", None)
    if svc is None:
        with _lock:
            svc = getattr(state, "pacs", None)
            if svc is None:
                ctx: ServerContext = state.ctx
                svc = PacsService(ctx)
                state.pacs = svc
                _services.append(svc)
    return svc  # type: ignore[no-any-return]


def _fail(exc: PacsError) -> HTTPException:
    return HTTPException(exc.http, exc.message)


def _audit_job(
    svc: PacsService, caller: Caller, event: str, job: schemas.JobOut, what: dict[str, Any]
) -> None:
    """A send (PS3.15 A.5.3.2 DICOM Instances Transferred) or retrieve (Import) as the user
    asked for it: who, which node, which study/series/instances, under which job."""
    objects = [
        {"type": level, "id": str(uid)}
        for level, uid in (("study", what.get("study_uid")), ("series", what.get("series_uid")))
        if uid
    ]
    uids = list(what.get("sop_instance_uids") or [])
    detail = f"{job.kind} job {job.id} with node '{job.node_name}'" + (
        f", {len(uids)} instance(s) named" if uids else ""
    )
    if what.get("pool"):
        detail += f", into pool {what['pool']}"
    audit_caller(svc.ctx, event, caller, objects, detail)


#: A UID in a job message (five or more components: an IPv4 address has four).
_UID_TEXT = re.compile(r"\b\d+(?:\.\d+){4,}\b")


def _names_for(request: Request | None, caller: Caller | None, created_by: str, pool: str) -> bool:
    """Whether ``caller`` may see which studies and instances a job names: its creator, and
    whoever may read the job's pool. Clinic IT sees every job to run the system but reads
    no patient data (rights.py): its study and SOP Instance UIDs are blanked for it, as
    /shares blanks a link's (``share_routes._share_out``; probe 21)."""
    if request is None or caller is None or created_by == caller.username:
        return True
    acc = access(request, caller)
    return acc.everything or bool(pool and acc.allows(pool, "read"))


def _blank_uids(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (([] if isinstance(v, list) else "") if "uid" in k.lower() else v)
        for k, v in params.items()
    }


def _params_out(params: dict[str, Any], names: bool) -> dict[str, Any]:
    """A job's params as the API shows them; the remaining count is JobOut.remaining."""
    shown = {k: v for k, v in params.items() if k != REMAINING}
    return shown if names else _blank_uids(shown)


def _job_out(j: Job, names: bool = True) -> schemas.JobOut:
    return schemas.JobOut(
        id=j.id,
        kind=j.kind,
        state=j.state,
        node_id=j.node_id,
        node_name=j.node_name,
        pool=j.pool,
        params=_params_out(j.params or {}, names),
        progress=j.progress,
        total=j.total,
        completed=j.completed,
        failed=j.failed,
        warning=j.warning,
        remaining=remaining_of(j.params) if j.kind == "retrieve" else None,
        attempts=j.attempts,
        status=j.status,
        message=j.message if names else _UID_TEXT.sub("", j.message),
        created_by=j.created_by,
        created_at=j.created_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
    )


def _get_job(
    svc: PacsService, job_id: int, caller: Caller | None = None, request: Request | None = None
) -> schemas.JobOut:
    """The job, 404 when it does not exist or ``caller`` may not see it (``_sees``); its
    UIDs blanked unless the caller may see them (``_names_for``, given ``request``)."""
    with svc.ctx.Session() as db:
        job = db.get(Job, job_id)
        if job is None or (caller is not None and not _sees(caller, job.created_by)):
            raise HTTPException(404, f"no job {job_id}")
        return _job_out(job, _names_for(request, caller, job.created_by, job.pool))


def _sees(caller: Caller, created_by: str) -> bool:
    """A job names studies, instances and nodes: its creator sees and cancels it, and the
    administrators (administrator, clinic-it) who run the system see every job; another
    user learns nothing of it, not even that it exists (404)."""
    return caller.is_admin or created_by == caller.username


def _options_out(n: NodeView) -> schemas.NodeOptionsOut:
    return schemas.NodeOptionsOut(
        node_id=n.id,
        propose_compressed=n.propose_compressed,
        commitment_mode=n.commitment_mode,
        commitment_wait=n.commitment_wait,
        dimse_timeout=n.dimse_timeout,
        retries=n.retries,
    )


# ---------------------------------------------------------------------- nodes


@router.post("/nodes/{node_id}/echo", response_model=schemas.EchoOut)
def echo_node(
    node_id: RowId, svc: PacsService = Depends(service), _: Caller = Depends(get_caller)
) -> schemas.EchoOut:
    """C-ECHO test with one clear message per failure (refused, timeout, rejected and why)."""
    try:
        r = svc.echo(node_id)
    except PacsError as exc:
        raise _fail(exc) from exc
    return schemas.EchoOut(
        ok=r.ok, status=r.status, kind=r.kind, message=r.message, elapsed_ms=r.elapsed_ms
    )


@router.get("/pacs/nodes/{node_id}/options", response_model=schemas.NodeOptionsOut)
def get_options(
    node_id: RowId, svc: PacsService = Depends(service), _: Caller = Depends(get_caller)
) -> schemas.NodeOptionsOut:
    try:
        return _options_out(svc.node(node_id))
    except PacsError as exc:
        raise _fail(exc) from exc


@router.put("/pacs/nodes/{node_id}/options", response_model=schemas.NodeOptionsOut)
def put_options(
    node_id: RowId,
    body: schemas.NodeOptionsIn,
    svc: PacsService = Depends(service),
    _: Caller = Depends(require_admin),
) -> schemas.NodeOptionsOut:
    """Set a node's options; fields left out (null) keep their value.

    Saves of one node are serialised (``PacsService.set_options``); the answer is the row as
    this request left it."""
    try:
        opts = svc.set_options(node_id, **body.model_dump())
    except PacsError as exc:
        raise _fail(exc) from exc
    return schemas.NodeOptionsOut(node_id=node_id, **opts)


# ---------------------------------------------------------------------- query


@router.post("/pacs/query", response_model=schemas.PacsQueryOut)
def pacs_query(
    body: schemas.PacsQueryIn, svc: PacsService = Depends(service), _: Caller = Depends(get_caller)
) -> Any:
    """C-FIND on several PACS at once; one failing PACS does not end the others (4.2.1.6)."""
    for node_id in body.node_ids:
        row_id_or_404(node_id, "remote node with id")
    keys = _checked_keys(body.keys)
    try:
        return svc.query(
            body.node_ids,
            body.level,
            keys,
            case_insensitive=body.case_insensitive,
            limit=body.limit,
        )
    except PacsError as exc:
        raise _fail(exc) from exc


def _checked_keys(keys: dict[str, str]) -> dict[str, str]:
    """DA/TM/DT matching keys checked as QIDO-RS and the local lists check them (PS3.4
    C.2.2.2.5): "2024", "20241301" or a reversed range went to the PACS and came back as an
    empty 200, which looks like "no such study". A 422 names the key and the expected form.
    An ISO date (2024-01-31), which the local lists take, goes out as DICOM's 20240131.
    UID keys take one UID or a backslash list, never wildcards (PS3.4 C.2.2.2.2): "1.2.*"
    went out and Orthanc answered C000.
    """
    out = dict(keys)
    for kw, value in keys.items():
        tag = tag_for_keyword(kw)
        if tag is None or value is None:
            continue  # unknown keywords: the service refuses them with their own reason
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr == "UI" and any(c in str(value) for c in "*?"):
            raise HTTPException(
                422,
                f"{kw}: UIDs match exactly or as a backslash-separated list; wildcards are "
                "not allowed for UID keys (PS3.4 C.2.2.2.2)",
            )
        try:
            dicomweb_dates.check(kw, vr, str(value))
        except HTTPException as exc:
            raise HTTPException(422, exc.detail) from exc
        text = str(value).strip()
        if vr == "DA" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            out[kw] = text.replace("-", "")  # the one ISO form check() takes for DA
        elif vr == "TM" and ":" in text:
            out[kw] = text.replace(":", "")  # ACR-NEMA 10:30 is DICOM 1030 (PS3.5 6.2)
    return out


# ---------------------------------------------------------------------- jobs


@router.post("/pacs/retrieve", response_model=schemas.JobOut, status_code=202)
def retrieve(
    body: schemas.RetrieveIn,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    row_id_or_404(body.node_id, "remote node with id")
    pool = body.pool or svc.ctx.settings.pools[0].name
    if pool not in {p.name for p in svc.ctx.settings.pools}:
        raise HTTPException(404, f"no data pool named '{pool}'")
    with svc.ctx.Session() as db:
        archived = db.scalars(select(Study.pool).where(Study.study_uid == body.study_uid)).first()
    acc = access(request, caller)
    if archived is not None and archived != pool and not acc.allows(archived, "import"):
        # What arrives would join the study's pool, where the caller may not import: a
        # write into that pool is refused, even though the refusal tells that the study is
        # archived (it was answered like an unknown study for a while: the job then said
        # "into DEFAULT" while the instances went into the hidden pool). Audited.
        detail = f"POST {request.url.path}: study archived in pool {archived}"
        objects = [{"type": "study", "id": body.study_uid}]
        audit_caller(svc.ctx, "refused", caller, objects, detail, audit.MINOR_FAILURE)
    if archived is not None and archived != pool:
        # A study lives in one pool: what arrives joins it there. The job said "into
        # DEFAULT" while the instances went into the study's ONCO pool (outside probe).
        if not acc.allows(archived, "import"):
            raise HTTPException(
                403, "the study is archived in a pool where your account may not import"
            )
        pool = archived
    if not acc.allows(pool, "import"):
        raise HTTPException(403, f"your account lacks the 'import' right for pool {pool}")
    try:
        job_id = svc.retrieve(
            body.node_id,
            study_uid=body.study_uid,
            series_uid=body.series_uid,
            sop_instance_uid=body.sop_instance_uid,
            pool=pool if archived is not None else body.pool,
            created_by=caller.username,
        )
    except PacsError as exc:
        raise _fail(exc) from exc
    job = _get_job(svc, job_id)
    _audit_job(svc, caller, "import", job, body.model_dump() | {"pool": pool})
    return job


@router.post("/pacs/send", response_model=schemas.JobOut, status_code=202)
def send(
    body: schemas.SendIn,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    row_id_or_404(body.node_id, "remote node with id")
    try:
        job_id = svc.send(
            body.node_id,
            study_uid=body.study_uid,
            series_uid=body.series_uid,
            sop_instance_uids=body.sop_instance_uids,
            commit=body.commit,
            created_by=caller.username,
            pools=pools_with(request, caller, "send"),
        )
    except PacsError as exc:
        raise _fail(exc) from exc
    job = _get_job(svc, job_id)
    _audit_job(svc, caller, "send", job, body.model_dump())
    return job


@router.post("/pacs/commit", response_model=schemas.JobOut, status_code=202)
def commit(
    body: schemas.CommitIn,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    row_id_or_404(body.node_id, "remote node with id")
    try:
        job_id = svc.commit(
            body.node_id,
            body.sop_instance_uids,
            created_by=caller.username,
            pools=pools_with(request, caller, "send"),
        )
    except PacsError as exc:
        raise _fail(exc) from exc
    return _get_job(svc, job_id)


@router.get("/jobs", response_model=list[schemas.JobOut])
def list_jobs(
    kind: str = "",
    # a typo was an empty 200, now a 422 naming it; "state=" (empty) still means any state
    state: schemas.JobState | Literal[""] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    *,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> list[schemas.JobOut]:
    """Newest first; the caller's own jobs (every job for administrators, ``_sees``)."""
    stmt = select(Job).order_by(Job.id.desc()).offset(offset).limit(limit)
    if not caller.is_admin:
        stmt = stmt.where(Job.created_by == caller.username)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if state:
        stmt = stmt.where(Job.state == state)
    with svc.ctx.Session() as db:
        return [
            _job_out(j, _names_for(request, caller, j.created_by, j.pool)) for j in db.scalars(stmt)
        ]


@router.get("/jobs/{job_id}", response_model=schemas.JobOut)
def get_job(
    job_id: RowId,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    return _get_job(svc, job_id, caller, request)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.JobOut)
def cancel_job(
    job_id: RowId,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    """Cancel a queued or running job; a running C-MOVE gets a C-CANCEL (4.2.2); a commit
    job waiting for its report stops waiting (what was confirmed stays counted). Only its
    creator or an administrator may (any logged-in user could cancel anyone's transfer)."""
    job = _get_job(svc, job_id, caller, request)
    if job.finished:
        raise HTTPException(409, f"job {job_id} has already finished ({job.state})")
    if job.state == "waiting" and svc.stop_waiting(job_id, caller.username):
        return _get_job(svc, job_id, caller, request)
    if not svc.jobs.cancel(job_id):
        raise HTTPException(409, f"job {job_id} is not running in this server process")
    return _get_job(svc, job_id, caller, request)


@router.post("/jobs/{job_id}/retry", response_model=schemas.JobOut, status_code=202)
def retry_job(
    job_id: RowId,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.JobOut:
    """Send again what a failed, partial, cancelled or interrupted send job did not store.

    A NEW send job (202, its ``params.retry_of`` names the old one) for the instances of job
    ``job_id`` without a successful per-instance result; the old job keeps its history and
    what was stored is not sent again. Only a caller who sees the job (its creator or an
    administrator) may, and only from pools where the caller has the 'send' right, as for
    POST /pacs/send; audited as a send. 409 when the job is not a finished send or nothing is
    left to send; 404 when none of those instances is in the archive any more."""
    old = _get_job(svc, job_id, caller, request)
    if old.kind != "send":
        raise HTTPException(409, f"job {job_id} is a {old.kind} job: only sends are retried")
    try:
        new_id = svc.retry_send(
            job_id, created_by=caller.username, pools=pools_with(request, caller, "send")
        )
    except PacsError as exc:
        raise _fail(exc) from exc
    job = _get_job(svc, new_id)
    _audit_job(svc, caller, "send", job, job.params)
    return job


@router.get("/jobs/{job_id}/instances", response_model=list[schemas.SentInstanceOut])
def job_instances(
    job_id: RowId,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> list[schemas.SentInstanceOut]:
    """Per-instance C-STORE results of a send job (4.2.4) and, where it requested one, each
    instance's storage commitment (4.2.5: the job counts a stored instance the SCP did not
    commit as failed, and the list said "status 0" for all, outside probe 52); 404 for an
    unknown job; the SOP Instance UIDs blanked for whoever may not see them (``_names_for``)."""
    job = _get_job(svc, job_id, caller)
    names = _names_for(request, caller, job.created_by, job.pool)
    with svc.ctx.Session() as db:
        committed = records.instance_states(db, job_id)
        rows = db.scalars(
            select(SentInstance).where(SentInstance.job_pk == job_id).order_by(SentInstance.id)
        )
        return [
            schemas.SentInstanceOut(
                sop_instance_uid=r.sop_instance_uid if names else "",
                sop_class_uid=r.sop_class_uid,
                status=r.status,
                reason=r.reason,
                transfer_syntax_uid=r.transfer_syntax_uid,
                transcoded=r.transcoded,
                attempts=r.attempts,
                at=r.at,
                commitment=committed.get(r.sop_instance_uid),
            )
            for r in rows
        ]


@router.get("/pacs/commitments", response_model=list[schemas.CommitmentOut])
def commitments(
    node_id: OptionalRowId = None,
    sop_instance_uid: str = "",
    job_id: OptionalRowId = None,
    transaction_uid: str = "",
    limit: int = Query(1000, ge=1, le=10000),
    *,
    request: Request,
    svc: PacsService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> list[schemas.CommitmentOut]:
    """Commitment state per instance, newest request first (4.2.5, 5.1.2); of the caller's
    own jobs unless an administrator asks (``_sees``, as for /jobs)."""
    stmt = (
        select(CommitmentItem, CommitmentRequest, Job.created_by, Job.pool)
        .join(CommitmentRequest, CommitmentItem.request_pk == CommitmentRequest.id)
        .outerjoin(Job, Job.id == CommitmentRequest.job_pk)
        .order_by(CommitmentRequest.id.desc(), CommitmentItem.id)
        .limit(limit)
    )
    if not caller.is_admin:
        own = select(Job.id).where(Job.created_by == caller.username)
        stmt = stmt.where(CommitmentRequest.job_pk.in_(own))
    if node_id is not None:
        stmt = stmt.where(CommitmentRequest.node_id == node_id)
    if job_id is not None:
        stmt = stmt.where(CommitmentRequest.job_pk == job_id)
    if sop_instance_uid:
        stmt = stmt.where(CommitmentItem.sop_instance_uid == sop_instance_uid)
    if transaction_uid:
        stmt = stmt.where(CommitmentRequest.transaction_uid == transaction_uid)
    with svc.ctx.Session() as db:
        return [
            schemas.CommitmentOut(
                transaction_uid=req.transaction_uid,
                node_id=req.node_id,
                node_name=req.node_name,
                request_state=req.state,
                attempt=req.attempt,
                # blanked as for the job's own listing (``_names_for``)
                sop_instance_uid=(
                    item.sop_instance_uid
                    if _names_for(request, caller, creator or "", job_pool or "")
                    else ""
                ),
                sop_class_uid=item.sop_class_uid,
                state=records.item_state(item.state, req.state),
                failure_reason=item.failure_reason,
                failure_text=(
                    commitment.failure_text(item.failure_reason)
                    if item.failure_reason is not None
                    else ""
                ),
                updated_at=item.updated_at,
                # "pending" alone did not tell a request the PACS never got (nothing
                # listened on its port) from one whose report is outstanding (probe 56)
                awaiting=records.awaiting(req.state, req.message),
                retry_at=req.retry_at if req.state == "pending" else None,
                request_message=req.message,
            )
            for item, req, creator, job_pool in db.execute(stmt).all()
        ]
