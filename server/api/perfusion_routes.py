"""Perfusion API: examine a series, start (manual), status/progress, cancel, result JSON.

Issue 6, "Server integration". The service (scanner thread, job threads) lives in the API
process; ``start(app)`` is called by ``lucent-server run`` so complete series start on their
own. An app made without it (tests in-process) gets the service on first use, without the
scanner: manual starts only.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from sqlalchemy import select

from lucent.api import schemas
from server.api import pacs_routes
from server.api.auth import (
    Caller,
    access,
    audit_caller,
    get_caller,
    not_found,
    pools_with,
    require_pool,
)
from server.api.params import RowId
from server.index.models import Series, Study
from server.index.pacs_models import Job
from server.index.perfusion_models import PerfusionRun
from server.perfusion.service import PerfusionError, PerfusionService

_services: list[PerfusionService] = []
_lock = threading.Lock()


def _close_all() -> None:
    with _lock:
        while _services:
            _services.pop().close()


router = APIRouter(prefix="/api/v1/perfusion", tags=["perfusion"], on_shutdown=[_close_all])


def _make(app: FastAPI, scanner: bool) -> PerfusionService:
    state = app.state
    with _lock:
        svc = getattr(state, "perfusion", None)
        if svc is not None:
            return svc  # type: ignore[no-any-return]
    # The PACS service first: its queue marks stale jobs interrupted when it is made, and it
    # sends our results (C-STORE SCU); reuse the app's one instance.
    pacs = pacs_routes.service(SimpleNamespace(app=app))  # type: ignore[arg-type]
    with _lock:
        svc = getattr(state, "perfusion", None)
        if svc is None:
            svc = PerfusionService(state.ctx, pacs, start_scanner=scanner)
            state.perfusion = svc
            _services.append(svc)
    return svc  # type: ignore[no-any-return]


def start(app: FastAPI) -> PerfusionService:
    """Start the service with its scanner (automatic evaluations) in this process."""
    return _make(app, scanner=True)


def service(request: Request) -> PerfusionService:
    return _make(request.app, scanner=False)


def _run_out(svc: PerfusionService, run: PerfusionRun) -> schemas.PerfusionRunOut:
    progress, message = 0.0, run.message
    if run.job_id is not None:
        with svc.ctx.Session() as db:
            job = db.get(Job, run.job_id)
            if job is not None:
                progress = job.progress
                if run.state in ("queued", "running"):
                    message = job.message
    if run.state in ("done", "partial"):
        progress = 1.0
    return schemas.PerfusionRunOut(
        id=run.id,
        series_uid=run.series_uid,
        study_uid=run.study_uid,
        pool=run.pool,
        job_id=run.job_id,
        state=run.state,
        trigger=run.trigger,
        confidence=run.confidence,
        recognition=run.recognition,
        instances=run.instances,
        progress=progress,
        message=message,
        result_series_uids=list(run.result_series_uids or []),
        stored=run.stored,
        send_job_ids=list(run.send_job_ids or []),
        created_by=run.created_by,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def _get_run(
    svc: PerfusionService,
    run_id: int,
    request: Request | None = None,
    caller: Caller | None = None,
    right: str = "read",
) -> PerfusionRun:
    """The run, or 404 also when it analysed a series of a pool the caller lacks ``right``
    in (its result is that patient's clinical data)."""
    unknown = HTTPException(404, f"no perfusion run {run_id}")
    with svc.ctx.Session() as db:
        run = db.get(PerfusionRun, run_id)
        if run is None:
            raise unknown
    if request is not None and caller is not None:
        study = [{"type": "study", "id": run.study_uid}]
        for needed in dict.fromkeys(("read", right)):
            require_pool(request, caller, run.pool, needed, study, unknown)
    return run


@router.get("/examine/{series_uid}", response_model=schemas.PerfusionExamineOut)
def examine_series(
    series_uid: str, svc: PerfusionService = Depends(service), _: Caller = Depends(get_caller)
) -> schemas.PerfusionExamineOut:
    with svc.ctx.Session() as db:
        series = db.scalars(select(Series).where(Series.series_uid == series_uid)).first()
        if series is None:
            raise HTTPException(404, f"no series {series_uid}")
        pk = series.id
    e = svc.examine_series(pk)
    return schemas.PerfusionExamineOut(
        series_uid=series_uid,
        confidence=e.confidence,
        modality=e.modality,
        slice_positions=e.slice_positions,
        time_points=e.time_points,
        reason=e.reason,
    )


@router.post("/runs", response_model=schemas.PerfusionRunOut, status_code=202)
def start_run(
    body: schemas.PerfusionStartIn,
    request: Request,
    svc: PerfusionService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.PerfusionRunOut:
    """Manual start; 422 with the reason when the series is not perfusion. The results are
    stored into the series' pool: the caller needs read and import there."""
    with svc.ctx.Session() as db:
        pool = db.scalars(
            select(Study.pool)
            .join(Series, Series.study_pk == Study.id)
            .where(Series.series_uid == body.series_uid)
        ).first()
    if pool is None and not access(request, caller).everything:
        raise not_found()  # as for a series of a pool the caller may not read (probe 21)
    if pool is not None:
        require_pool(request, caller, pool, "read", [{"type": "series", "id": body.series_uid}])
        if not access(request, caller).allows(pool, "import"):
            raise HTTPException(403, f"your account lacks the 'import' right for pool {pool}")
    try:
        run_id = svc.start(body.series_uid, created_by=caller.username)
    except PerfusionError as exc:
        raise HTTPException(exc.http, exc.message) from exc
    run = _get_run(svc, run_id)
    audit_caller(
        svc.ctx,
        "import",
        caller,
        [{"type": "study", "id": run.study_uid}, {"type": "series", "id": run.series_uid}],
        f"perfusion run {run.id} started; results go into pool {run.pool}",
    )
    return _run_out(svc, run)


@router.get("/runs", response_model=list[schemas.PerfusionRunOut])
def list_runs(
    request: Request,
    series_uid: str = "",
    state: str = "",
    limit: int = 100,
    svc: PerfusionService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> list[schemas.PerfusionRunOut]:
    stmt = select(PerfusionRun).order_by(PerfusionRun.id.desc()).limit(max(1, min(limit, 1000)))
    pools = pools_with(request, caller, "read")
    if pools is not None:
        stmt = stmt.where(PerfusionRun.pool.in_(pools))
    if series_uid:
        stmt = stmt.where(PerfusionRun.series_uid == series_uid)
    if state:
        stmt = stmt.where(PerfusionRun.state == state)
    with svc.ctx.Session() as db:
        runs = list(db.scalars(stmt))
    return [_run_out(svc, r) for r in runs]


@router.get("/runs/{run_id}", response_model=schemas.PerfusionRunOut)
def get_run(
    run_id: RowId,
    request: Request,
    svc: PerfusionService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.PerfusionRunOut:
    return _run_out(svc, _get_run(svc, run_id, request, caller))


@router.post("/runs/{run_id}/cancel", response_model=schemas.PerfusionRunOut)
def cancel_run(
    run_id: RowId,
    request: Request,
    svc: PerfusionService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> schemas.PerfusionRunOut:
    run = _get_run(svc, run_id, request, caller, "import")
    if run.state not in ("queued", "running"):
        raise HTTPException(409, f"perfusion run {run_id} has already finished ({run.state})")
    if not svc.cancel(run_id):
        raise HTTPException(409, f"perfusion run {run_id} is not running in this server process")
    return _run_out(svc, _get_run(svc, run_id))


@router.get("/runs/{run_id}/result")
def run_result(
    run_id: RowId,
    request: Request,
    svc: PerfusionService = Depends(service),
    caller: Caller = Depends(get_caller),
) -> dict[str, Any]:
    """result.json of the run (or the refusal with its reason). Audited here, after the
    pool check: the access rule's audit recorded refused and unknown runs as reads."""
    run = _get_run(svc, run_id, request, caller)
    if svc.ctx.settings.audit.data_access:
        study = [{"type": "study", "id": run.study_uid}]
        audit_caller(svc.ctx, "view", caller, study, f"GET /api/v1/perfusion/runs/{run_id}/result")
    if run.result is None:
        if run.state in ("queued", "running"):
            raise HTTPException(409, f"perfusion run {run_id} is {run.state}")
        raise HTTPException(404, f"perfusion run {run_id} has no result ({run.state})")
    return dict(run.result)
