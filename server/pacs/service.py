"""Server-side PACS orchestration: node C-ECHO, multi-PACS query, retrieve, send, commitment.

Everything network-bound runs in the API process: queries in a short-lived thread per node
(4.2.1.6: a failing PACS ends only its own query), retrieves/sends/commitments as jobs of
:class:`server.jobs.queue.JobQueue`. Nothing here runs on a DICOM listener thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from lucent.net import commitment, scu
from lucent.net import status as dimse_status
from server.context import ServerContext
from server.index import queries
from server.index.models import Instance, Placeholder, RemoteNode
from server.index.outage_log import OutageLog
from server.index.pacs_models import CommitmentRequest, Job, NodeOptions, SentInstance
from server.jobs.queue import INTERRUPTED, RESUMED, WAITING, JobControl, JobQueue, Outcome, now
from server.pacs import records

#: A node's per-node options (``NodeOptions`` columns the API shows and sets).
OPTION_FIELDS = (
    "propose_compressed",
    "commitment_mode",
    "commitment_wait",
    "dimse_timeout",
    "retries",
)
log = logging.getLogger("lucent.pacs")


class PacsError(Exception):
    """A request the service cannot start; ``http`` is the status the API answers with."""

    def __init__(self, http: int, message: str) -> None:
        super().__init__(message)
        self.http = http
        self.message = message


@dataclass(frozen=True)
class NodeView:
    """A remote node and its PACS options, detached from any session."""

    id: int
    name: str
    ae_title: str
    host: str
    port: int
    query_retrieve: bool
    store_target: bool
    storage_commitment: bool
    tls: bool
    timeout: float
    propose_compressed: bool = False
    commitment_mode: str = "same"
    commitment_wait: float = 10.0
    dimse_timeout: float = 30.0
    retries: int = 3
    #: extra C-STORE attempts: the node's ``retries`` when set, else pacs.store_retries (only
    #: the global setting applied, the node's option was ignored for sends: probe 38 #5)
    store_retries: int = 2


#: Per-instance rows of a send (``SentInstance.reason``) for instances without a result.
NOT_SENT_YET = "not sent yet"
NOT_SENT_CANCELLED = "not sent: cancelled"
NOT_SENT_STOPPED = "not sent: the server stopped"
NOT_IN_ARCHIVE = "not sent: no longer in the archive"
#: Key in a retrieve job's params of the last Number of Remaining Sub-operations the PACS
#: reported (PS3.4 C.4.2.1.6); JobOut.remaining shows it, params do not.
REMAINING = "remaining"
#: Send job states POST /jobs/{id}/retry takes.
RETRYABLE_STATES = ("failed", "partial", "interrupted", "cancelled")


def _ok_row() -> ColumnElement[bool]:
    """A row whose C-STORE succeeded (``StoreOutcome.ok``: 0000 or a B-warning)."""
    return and_(
        SentInstance.status.is_not(None),
        or_(SentInstance.status == 0, SentInstance.status.between(0xB000, 0xBFFF)),
    )


class _Recorder:
    """Writes a send's per-instance results as they come, a batch at most every
    ``INTERVAL`` s: a kill -9 keeps what was stored, so a restart does not send it again."""

    INTERVAL = 0.2

    def __init__(self, ctx: ServerContext, job_pk: int) -> None:
        self.ctx = ctx
        self.job_pk = job_pk
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[scu.StoreOutcome, int]] = {}
        self._last = 0.0

    def add(self, outcome: scu.StoreOutcome, attempts: int) -> None:
        with self._lock:
            self._pending[outcome.sop_instance_uid] = (outcome, attempts)
            if time.monotonic() - self._last < self.INTERVAL:
                return
            self._write_locked()

    def flush(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        self._last = time.monotonic()
        batch, self._pending = self._pending, {}
        if not batch:
            return
        t = now()
        for attempt in range(5):
            try:
                with self.ctx.WriteSession() as db, db.begin():
                    for uid, (o, n) in batch.items():
                        db.execute(
                            update(SentInstance)
                            .where(
                                SentInstance.job_pk == self.job_pk,
                                SentInstance.sop_instance_uid == uid,
                            )
                            .values(
                                status=o.status,
                                reason=o.message,
                                transfer_syntax_uid=o.sent_transfer_syntax,
                                transcoded=o.transcoded,
                                attempts=n,
                                at=t,
                            )  # fmt: skip
                        )
                return
            except Exception:  # noqa: BLE001 - SQLite busy under load: try again
                if attempt == 4:
                    log.exception("could not record results of send job %d", self.job_pk)
                time.sleep(0.05 * (attempt + 1))


def _count(
    tally: dict[str, int], outcome: scu.StoreOutcome, sign: int, settled: bool = True
) -> None:
    """Add (or take back) one outcome in a send's running counts. A failure another attempt
    will retry is "waiting", not "failed": a send whose peer restarted read 149 of 200
    failed, progress 1.0, while those 149 waited for the retry that stored them (issue 3)."""
    if outcome.ok:
        tally["ok"] += sign
        if outcome.status != 0:
            tally["warning"] += sign
    elif settled:
        tally["failed"] += sign
    else:
        tally["waiting"] += sign


def _store_retryable(outcome: scu.StoreOutcome) -> bool:
    """C-STORE failures worth another attempt: lost connection, out of resources. Not one
    that failed before the wire (no context for the class: it was retried twice, 6 s)."""
    if outcome.permanent:
        return False
    code = outcome.status
    return code is None or 0xA700 <= code <= 0xA7FF


def _lost_on(outcome: scu.StoreOutcome | None) -> bool:
    """The association was lost on this instance: sent, and no C-STORE response came."""
    return (
        outcome is not None
        and outcome.attempted
        and outcome.status is None
        and not outcome.permanent
    )


def _association_error(exc: scu.AssociationError | ValueError) -> str:
    """Why a send got no association, with the way out where there is one."""
    if not isinstance(exc, scu.AssociationError):
        return str(exc)
    if exc.uncompressed_refused:  # Conformance 4.2.4.2: the node's compressed list
        return (
            exc.message + " — turn on the node's propose_compressed option to propose "
            "the compressed transfer syntaxes too"
        )
    return exc.message


class PacsService:
    def __init__(self, ctx: ServerContext, *, start_watcher: bool = True) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.pacs
        # pynetdicom logs every DIMSE message at INFO: too much for a server log (and slow).
        pynetdicom_log = logging.getLogger("pynetdicom")
        if pynetdicom_log.getEffectiveLevel() < logging.WARNING:
            pynetdicom_log.setLevel(logging.WARNING)
        self.jobs = JobQueue(ctx, self.settings.job_threads, resumable=("send",))
        # what each node's answers showed about its name matching (None: not known yet);
        # a plain search on a node known to match case-sensitively says so (probe 37)
        self._case_sensitive: dict[int, bool] = {}
        self._stop = threading.Event()
        self._outage = OutageLog(log, "storage commitment requests are not sent again")
        self._watcher: threading.Thread | None = None
        if start_watcher:
            self._watcher = threading.Thread(
                target=self._watch_commitments, name="commitment-retry", daemon=True
            )
            self._watcher.start()
        self._resume_sends()

    def _resume_sends(self) -> None:
        """Start again the sends a previous process left queued or running (kill -9, a stop,
        a power cut). Retrieves stay "interrupted": the PACS decides what a C-MOVE sends, a
        new retrieve asks for it again."""
        for job_id, kind in self.jobs.stale:
            if kind != "send":
                continue
            try:
                self._resume_send(job_id)
            except Exception:  # noqa: BLE001 - one job that cannot resume stays interrupted
                log.exception("send job %d could not be resumed", job_id)

    def close(self) -> None:
        self._stop.set()
        self.jobs.shutdown()

    # ------------------------------------------------------------------ nodes
    @property
    def calling_ae(self) -> str:
        return self.ctx.settings.calling_ae_title

    def node(self, node_id: int) -> NodeView:
        with self.ctx.Session() as db:
            node = db.get(RemoteNode, node_id)
            if node is None:
                raise PacsError(404, f"no remote node with id {node_id}")
            opts = db.scalars(select(NodeOptions).where(NodeOptions.node_pk == node_id)).first()
            extra: dict[str, Any] = {}
            if opts is not None:
                extra = {name: getattr(opts, name) for name in OPTION_FIELDS}
            else:
                extra = {"commitment_wait": self.settings.commitment_wait_seconds}
            own = extra.pop("retries", None)
            extra["retries"] = self.settings.move_retries if own is None else own
            extra["store_retries"] = self.settings.store_retries if own is None else own
            return NodeView(
                id=node.id,
                name=node.name,
                ae_title=node.ae_title,
                host=node.host,
                port=node.port,
                query_retrieve=node.query_retrieve,
                store_target=node.store_target,
                storage_commitment=node.storage_commitment,
                tls=node.tls,
                timeout=node.timeout,
                **extra,
            )

    def set_options(self, node_id: int, **values: Any) -> dict[str, Any]:
        """Set a node's options (a None value keeps the stored one); answers them as this
        call left them, read in the same transaction.

        The node row is locked first, as the other node edits lock it (``app.update_node``):
        on PostgreSQL (READ COMMITTED) two admins saving at once each read the same options
        row and each UPDATE wrote only the columns it changed, so the node kept a mix of
        both (one's commitment mode, the other's timeouts), and two first saves of a node
        without options both inserted a row (outside probe 31). Locked, the second save
        waits, then reads the first one's committed row and writes its whole edit over it."""
        mode = values.get("commitment_mode")
        if mode is not None and mode not in commitment.MODES:
            raise PacsError(422, f"commitment_mode must be one of {', '.join(commitment.MODES)}")
        with self.ctx.WriteSession() as db, db.begin():
            if db.get(RemoteNode, node_id, with_for_update=True) is None:
                raise PacsError(404, f"no remote node with id {node_id}")
            opts = db.scalars(
                select(NodeOptions)
                .where(NodeOptions.node_pk == node_id)
                .execution_options(populate_existing=True)
            ).first()
            if opts is None:
                opts = NodeOptions(
                    node_pk=node_id,
                    propose_compressed=False,
                    commitment_mode="same",
                    commitment_wait=self.settings.commitment_wait_seconds,
                    dimse_timeout=30.0,
                    retries=None,  # not set: each job kind takes its global default
                )
                db.add(opts)
            for key, value in values.items():
                if value is not None:
                    setattr(opts, key, value)
            db.flush()
            out = {name: getattr(opts, name) for name in OPTION_FIELDS}
            if out["retries"] is None:  # shown as before: what a C-MOVE takes
                out["retries"] = self.settings.move_retries
            return out

    def peer(self, node: NodeView) -> scu.Peer:
        d = self.ctx.settings.dimse
        return scu.Peer(
            ae_title=node.ae_title,
            host=scu.unbracketed(node.host),  # a node stored as "[::1]" before the API checked
            port=node.port,
            calling_ae=self.calling_ae,
            timeout=node.timeout,
            dimse_timeout=node.dimse_timeout,
            network_timeout=max(d.network_timeout, node.dimse_timeout),
            max_pdu=d.max_pdu,
            tls=node.tls,
            tls_ca_file=self.settings.tls_ca_file or d.tls_ca_file,
            tls_cert=d.tls_cert,
            tls_key=d.tls_key,
            implementation_class_uid=d.implementation_class_uid,
            implementation_version_name=d.implementation_version_name,
        )

    def echo(self, node_id: int) -> scu.EchoResult:
        return scu.echo(self.peer(self.node(node_id)))

    # ------------------------------------------------------------------ query
    def query(
        self,
        node_ids: Sequence[int],
        level: str,
        keys: dict[str, str],
        *,
        case_insensitive: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Query several PACS at once; results merged, STUDY level grouped by patient."""
        level = level.upper()
        if level not in scu.LEVEL_KEYS:
            raise PacsError(422, "level must be STUDY, SERIES or IMAGE")
        if not node_ids:
            raise PacsError(422, "name at least one node to query")
        try:
            scu.build_query(level, keys)
        except ValueError as exc:
            raise PacsError(422, str(exc)) from exc
        # each node once, in the order named (a repeated id would query that PACS twice)
        nodes = [self.node(i) for i in dict.fromkeys(node_ids)]
        limit = min(limit or self.settings.max_results, self.settings.max_results)

        def one(node: NodeView) -> tuple[NodeView, scu.FindResult]:
            if not node.query_retrieve:
                return node, scu.FindResult(
                    outcome="failed", message="this node is not configured as a Q/R source"
                )
            res = scu.find(
                self.peer(node), level, keys, limit=limit, case_insensitive=case_insensitive,
                known_case_sensitive=self._case_sensitive.get(node.id),
            )  # fmt: skip
            if res.ok and res.case_sensitive is not None:
                self._case_sensitive[node.id] = res.case_sensitive
            return node, res

        with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
            results = list(pool.map(one, nodes))
        return merge(level, results)

    # ------------------------------------------------------------------ retrieve
    def retrieve(
        self,
        node_id: int,
        *,
        study_uid: str,
        series_uid: str = "",
        sop_instance_uid: str = "",
        pool: str = "",
        created_by: str = "",
    ) -> int:
        """C-MOVE into one of our pools: our Store SCP is the move destination (4.2.2)."""
        node = self.node(node_id)
        if not node.query_retrieve:
            raise PacsError(409, f"node '{node.name}' is not a query/retrieve source")
        try:
            target = self.ctx.settings.pool(pool or self.ctx.settings.pools[0].name)
        except KeyError as exc:
            raise PacsError(404, f"no data pool named '{pool}'") from exc
        try:
            identifier = scu.move_identifier(study_uid, series_uid, sop_instance_uid)
        except ValueError as exc:
            raise PacsError(422, str(exc)) from exc
        peer = self.peer(node)
        retries = node.retries
        backoff = self.settings.retry_backoff_seconds
        level = str(identifier.QueryRetrieveLevel)
        params: dict[str, Any] = {
            "study_uid": study_uid,
            "series_uid": series_uid,
            "sop_instance_uid": sop_instance_uid,
            "level": level,
        }

        def run(control: JobControl) -> Outcome:
            started = now()
            # instances of this request archived before the running attempt began: the
            # PACS's counters restart from zero on each attempt (166 -> 65 read as data
            # lost, probe 37), so the progress never shows less than what is already here
            earlier = [0]
            known_total: list[int | None] = [None]  # the last total a PACS reported
            current = [1]  # the running attempt

            def arrived() -> int:
                """Instances of this request archived in the target pool by this job."""
                f = queries.Filter(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_instance_uid=sop_instance_uid,
                    pools=[target.name],
                )
                with self.ctx.Session() as db:
                    found = queries.instances_for(db, level, f)
                return sum(1 for i in found if i.received_at >= started)

            def on_progress(p: scu.MoveProgress) -> None:
                total = p.total
                if total:
                    known_total[0] = total
                completed = max(p.completed, earlier[0])
                fraction = p.fraction
                if total:
                    fraction = max(fraction, min(1.0, earlier[0] / total))
                more: dict[str, Any] = {}
                if current[0] > 1:
                    # the attempt's message said what had arrived when it began ("67 so
                    # far" while completed rose to 173, issue 3): it follows the count
                    more["message"] = _move_attempt_note(
                        current[0], retries, target.ae_title, completed
                    )
                if p.remaining is not None:
                    # Number of Remaining Sub-operations (0000,1020) of the last response
                    # that carried it: pending, cancel (FE00) or final (PS3.4 C.4.2.1.6);
                    # kept in params (JobOut.remaining, ``remaining_of``): no new column
                    more["params"] = {**params, REMAINING: p.remaining}
                control.update(
                    total=total,
                    completed=completed,
                    failed=p.failed,
                    warning=p.warning,
                    progress=round(fraction, 4),
                    **more,
                )

            def on_retry(attempt: int, res: scu.MoveResult, delay: float) -> None:
                earlier[0] = arrived()
                control.update(
                    force=True,
                    attempts=attempt,
                    completed=earlier[0],
                    message=(
                        f"attempt {attempt} of {retries + 1}: {res.message}; "
                        f"{earlier[0]} instance(s) arrived so far; retry in {delay:g} s"
                    ),
                )

            def on_attempt(attempt: int) -> None:
                current[0] = attempt
                if attempt == 1:
                    control.update(force=True, attempts=1, message=f"C-MOVE to {target.ae_title}")
                    return
                control.update(
                    force=True,
                    attempts=attempt,
                    message=_move_attempt_note(attempt, retries, target.ae_title, earlier[0]),
                )

            def refused_here(res: scu.MoveResult) -> str | None:
                """Our Store SCP refused sub-operations of this move as non-conformant
                data: the PACS reports them failed (Orthanc: C000), and another attempt
                would be refused again (7 attempts, 33 s, before: outside probe)."""
                with self.ctx.Session() as db:
                    refused = list(
                        db.scalars(
                            select(Placeholder)
                            .where(
                                Placeholder.received_at >= started,
                                Placeholder.pool == target.name,
                                Placeholder.source_ae == node.ae_title,
                            )
                            .order_by(Placeholder.id)
                            .limit(100)
                        )
                    )
                if not refused:
                    return None
                return (
                    f"{len(refused)} instance(s) refused by this archive as non-conformant "
                    f"data (listed under the patient; first: {refused[0].reason})"
                )

            res = scu.move_with_retries(
                peer,
                identifier,
                target.ae_title,
                retries=retries,
                backoff=backoff,
                on_progress=on_progress,
                on_retry=on_retry,
                cancel=control.cancel,
                final_reason=refused_here,
                on_attempt=on_attempt,
            )
            control.update(force=True, attempts=res.attempts)
            if res.cancelled:
                got = arrived()
                control.update(force=True, completed=max(got, res.progress.completed))
                return Outcome(
                    "cancelled", f"{_cancelled_move_message(res)}; {_arrived(got)}", res.status
                )
            if res.ok and (res.progress.failed or res.progress.warning):
                # 0000 "no failures" with failed/warning counts (a non-conformant PACS; PS3.4
                # C.4.2.1.6 wants B000): the counts say what arrived, so the state follows them
                p = res.progress
                counts = _move_counts(p)
                state = "partial" if p.completed or p.warning else "failed"
                return Outcome(
                    state,
                    f"{counts} (the PACS answered 0x0000 'no failures', its counts disagree)",
                    res.status,
                )
            if (
                res.ok
                and not (res.progress.total or res.progress.completed)
                and not self._select(
                    study_uid, series_uid, [sop_instance_uid] if sop_instance_uid else []
                )
            ):
                # "done, 0 of 0" said nothing: the PACS found nothing for the identifier
                # (wrong UID, or a study it no longer holds) and answered success. A final
                # Success may also carry no counts at all (PS3.4 C.4.2.1.6, no pending
                # responses): then the archive says whether anything came.
                what = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}[level]
                return Outcome(
                    "done",
                    f"the PACS matched no instances for this {what} request "
                    f"({res.message}); nothing was retrieved: check the UIDs, or query the "
                    "PACS to see what it holds",
                    res.status,
                )
            if res.ok:
                return Outcome("done", res.message, res.status)
            if res.status == dimse_status.QR_SUBOPS_WARNING:
                return Outcome("partial", res.message, res.status)
            message = f"{res.message} after {res.attempts} attempt(s)"
            got = arrived()
            if got:
                # cut off (a PACS that died, a lost association): what arrived is archived
                # and usable, "failed" alone hid it (probe 37)
                total = res.progress.total or known_total[0]
                of = f" of {total}" if total else ""
                control.update(force=True, completed=max(got, res.progress.completed))
                return Outcome(
                    "partial",
                    f"{got}{of} instance(s) arrived and are archived; the retrieve did not "
                    f"finish: {message}",
                    res.status,
                )
            refused = refused_here(res)
            if res.status == 0xA801:
                # the PACS said why: it holds the data but does not know where to send it
                # (the generic hint below blamed the study first, probe 37)
                message += (
                    f"; the PACS does not know our AE title {target.ae_title} as a move "
                    f"destination: register {target.ae_title} on the PACS with this "
                    f"server's address and port {target.port}"
                )
            elif refused:
                # the PACS did open an association and send: our Store SCP refused data
                if refused not in message:
                    message += f"; {refused}"
            elif not res.progress.completed and res.status is not None and res.status >= 0xA700:
                # An unspecific failure with nothing received (Orthanc answers C000 both
                # for a UID it lacks and for a move destination it cannot reach): say
                # where to look (outside probe).
                message += (
                    f"; nothing arrived: the PACS may not hold this {level.lower()}, or "
                    f"cannot open an association to {target.ae_title} at this server's "
                    f"port {target.port}: check its entry for that AE title"
                )
            return Outcome("failed", message, res.status)

        return self.jobs.submit(
            "retrieve",
            run,
            node_id=node.id,
            node_name=node.name,
            pool=target.name,
            params=params,
            created_by=created_by,
        )

    # ------------------------------------------------------------------ send
    def _select(
        self,
        study_uid: str,
        series_uid: str,
        sop_instance_uids: Sequence[str],
        pools: list[str] | None = None,
    ) -> list[Instance]:
        """The named instances in ``pools`` (None = every pool): instances of a pool the
        caller may not send from are "not in the archive" to them."""
        f = queries.Filter(
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uid="\\".join(sop_instance_uids),
            pools=pools,
        )
        level = "IMAGE" if sop_instance_uids else "SERIES" if series_uid else "STUDY"
        with self.ctx.Session() as db:
            return queries.instances_for(db, level, f)

    def send(
        self,
        node_id: int,
        *,
        study_uid: str = "",
        series_uid: str = "",
        sop_instance_uids: Sequence[str] = (),
        commit: bool | None = None,
        created_by: str = "",
        pools: list[str] | None = None,
    ) -> int:
        """C-STORE to a store target (4.2.4), then storage commitment when enabled (4.2.5).
        ``pools``: where the caller may send from (None = all)."""
        node = self.node(node_id)
        if not node.store_target:
            raise PacsError(409, f"node '{node.name}' is not a store target")
        if not (study_uid or series_uid or sop_instance_uids):
            raise PacsError(422, "name a study, a series or instances to send")
        found = self._select(study_uid, series_uid, sop_instance_uids, pools)
        if not found:
            raise PacsError(404, "nothing in the archive matches")
        _all_found(sop_instance_uids, found)
        if commit and not node.storage_commitment:  # as POST /pacs/commit refuses it
            raise PacsError(409, _not_a_commitment_scp(node))
        do_commit = node.storage_commitment if commit is None else commit
        params = {
            "study_uid": study_uid,
            "series_uid": series_uid,
            "sop_instance_uids": list(sop_instance_uids)[:1000],
            "instances": len(found),
            "commit": do_commit,
        }
        return self._submit_send(node, found, do_commit, params, created_by)

    def _submit_send(
        self,
        node: NodeView,
        found: Sequence[Instance],
        do_commit: bool,
        params: dict[str, Any],
        created_by: str,
    ) -> int:
        """The send job with one "not sent yet" row per instance, written with the job: a
        restart resumes what has no successful result, and a cancel lists what it left
        (GET /jobs/{id}/instances listed only the 8 of 23 sent, probe 38)."""
        items = [self._outgoing(i) for i in found]

        def prepare(db: Session, job_pk: int) -> None:
            t = now()
            db.add_all(
                SentInstance(
                    job_pk=job_pk,
                    node_id=node.id,
                    sop_instance_uid=i.sop_instance_uid,
                    sop_class_uid=i.sop_class_uid,
                    status=None,
                    reason=NOT_SENT_YET,
                    transfer_syntax_uid="",
                    transcoded=False,
                    attempts=0,
                    at=t,
                )  # fmt: skip
                for i in found
            )

        def run(control: JobControl) -> Outcome:
            return self._run_send(control, node, items, do_commit)

        return self.jobs.submit(
            "send", run, node_id=node.id, node_name=node.name, params=params,
            created_by=created_by, prepare=prepare,
        )  # fmt: skip

    def _outgoing(self, inst: Instance) -> scu.Outgoing:
        return scu.Outgoing(
            inst.sop_class_uid,
            inst.sop_instance_uid,
            inst.transfer_syntax_uid,
            lambda: self.ctx.instance_bytes(inst),
        )

    def _unsent(self, job_pk: int) -> tuple[list[SentInstance], dict[str, scu.StoreOutcome]]:
        """A send job's rows without a successful result, and the outcomes of those with one
        (stored already: never sent again)."""
        with self.ctx.Session() as db:
            rows = list(
                db.scalars(
                    select(SentInstance)
                    .where(SentInstance.job_pk == job_pk)
                    .order_by(SentInstance.id)
                )
            )
            db.expunge_all()
        stored: dict[str, scu.StoreOutcome] = {}
        unsent: list[SentInstance] = []
        for r in rows:
            o = scu.StoreOutcome(r.sop_instance_uid, r.sop_class_uid, r.status, r.reason,
                                 r.transfer_syntax_uid, r.transcoded)  # fmt: skip
            if o.ok:
                stored[r.sop_instance_uid] = o
            elif r.sop_instance_uid not in stored:
                unsent.append(r)
        return [r for r in unsent if r.sop_instance_uid not in stored], stored

    def _resume_send(self, job_pk: int) -> None:
        """Queue a send the previous process left unfinished again, under its own id: the
        instances without a successful result go out, what was stored is not sent again."""
        with self.ctx.Session() as db:
            job = db.get(Job, job_pk)
            if job is None or job.node_id is None:
                return
            node_id, node_name, params = job.node_id, job.node_name, dict(job.params or {})
        try:
            node = self.node(node_id)
        except PacsError:
            node = None
        if node is None or node.name != node_name or not node.store_target:
            why = f"not resumed: node '{node_name}' was deleted or is no longer a store target"
            self.jobs.write(job_pk, message=f"{INTERRUPTED}; {why}")
            return
        unsent, stored = self._unsent(job_pk)
        if not unsent and not stored:
            # a job of a version without per-instance rows: nothing says what it still owed
            self.jobs.write(job_pk, message=f"{INTERRUPTED}; not resumed: no instance list")
            return
        found = (
            {
                i.sop_instance_uid: i
                for i in self._select("", "", [r.sop_instance_uid for r in unsent])
            }
            if unsent
            else {}
        )
        gone = [r for r in unsent if r.sop_instance_uid not in found]
        if gone:
            self._mark_rows(job_pk, [r.sop_instance_uid for r in gone], NOT_IN_ARCHIVE)
        previous = dict(stored)
        for r in gone:
            previous[r.sop_instance_uid] = scu.StoreOutcome(
                r.sop_instance_uid, r.sop_class_uid, None, NOT_IN_ARCHIVE, permanent=True,
                attempted=False,
            )  # fmt: skip
        items = [
            self._outgoing(found[r.sop_instance_uid]) for r in unsent if r.sop_instance_uid in found
        ]
        do_commit = bool(params.get("commit"))

        def run(control: JobControl) -> Outcome:
            return self._run_send(control, node, items, do_commit, previous, resumed=True)

        note = f"{RESUMED}: {len(items)} instance(s) to send, {len(stored)} stored before"
        self.jobs.resume(job_pk, run, note)

    def _mark_rows(self, job_pk: int, uids: Sequence[str], reason: str) -> None:
        """Say why these instances of the job were not sent (no successful result yet)."""
        if not uids:
            return
        with self.ctx.WriteSession() as db, db.begin():
            db.execute(
                update(SentInstance)
                .where(
                    SentInstance.job_pk == job_pk,
                    SentInstance.sop_instance_uid.in_(list(uids)),
                    ~_ok_row(),
                )
                .values(reason=reason, at=now())
            )

    def retry_send(self, job_pk: int, *, created_by: str, pools: list[str] | None) -> int:
        """A new send job for the instances of a failed, partial, cancelled or interrupted
        send that have no successful result (the old job keeps its history). ``pools``: where
        the caller may send from; instances elsewhere or deleted since are "not in the
        archive" (404 when that is all of them).

        A send with storage commitment counts a stored instance the SCP did not commit
        (failed in its report, or never confirmed when the request expired) as failed
        (records.send_state): the retry sends those again too and requests their
        commitment anew, as a clinic's PACS admin expects of "retry" on a job that reads
        failed. A PACS that did not commit an instance may not hold it (IHE RAD-10: the
        sender sends it again); one that does takes the copy as a duplicate. The retry
        answered 409 "every instance was stored: nothing to retry" for a job that read
        "partial, 10 failed" after its commitment expired (outside probe 52)."""
        with self.ctx.Session() as db:
            job = db.get(Job, job_pk)
            if job is None or job.kind != "send":
                raise PacsError(404, f"no send job {job_pk}")
            if job.state not in RETRYABLE_STATES:
                raise PacsError(
                    409, f"job {job_pk} is {job.state}: only a send that ended "
                    f"{', '.join(RETRYABLE_STATES)} can be retried",
                )  # fmt: skip
            node_id, params = job.node_id, dict(job.params or {})
        if node_id is None:
            raise PacsError(409, f"job {job_pk} names no node")
        node = self.node(node_id)
        if not node.store_target:
            raise PacsError(409, f"node '{node.name}' is not a store target")
        unsent, stored = self._unsent(job_pk)
        again = [r.sop_instance_uid for r in unsent]
        if params.get("commit"):
            with self.ctx.Session() as db:
                states = records.instance_states(db, job_pk)
            again += [uid for uid in stored if states.get(uid, "") in records.NOT_COMMITTED]
        if not again:
            what = "stored and committed" if params.get("commit") else "stored"
            raise PacsError(409, f"every instance of job {job_pk} was {what}: nothing to retry")
        found = self._select("", "", again, pools)
        if not found:
            raise PacsError(404, "none of the instances to retry is in the archive")
        do_commit = bool(params.get("commit")) and node.storage_commitment
        uids = [i.sop_instance_uid for i in found]
        retry_params = {
            "study_uid": params.get("study_uid", ""),
            "series_uid": params.get("series_uid", ""),
            "sop_instance_uids": uids[:1000],
            "instances": len(found),
            "commit": do_commit,
            "retry_of": job_pk,
            "not_in_archive": len(again) - len(found),
        }
        return self._submit_send(node, found, do_commit, retry_params, created_by)

    def _run_send(
        self,
        control: JobControl,
        node: NodeView,
        items: list[scu.Outgoing],
        do_commit: bool,
        previous: dict[str, scu.StoreOutcome] | None = None,
        *,
        resumed: bool = False,
    ) -> Outcome:
        """``previous``: results a resumed job had before the restart (not sent again)."""
        out = self._send_items(control, node, items, do_commit, previous or {})
        if resumed:
            out.message = f"{RESUMED}; {out.message}"
        return out

    def _send_items(
        self,
        control: JobControl,
        node: NodeView,
        items: list[scu.Outgoing],
        do_commit: bool,
        previous: dict[str, scu.StoreOutcome],
    ) -> Outcome:
        peer = self.peer(node)
        total = len(items) + len(previous)
        final: dict[str, scu.StoreOutcome] = dict(previous)
        attempts: dict[str, int] = {}
        recorder = _Recorder(self.ctx, control.job_id)
        todo = list(items)
        retries = node.store_retries  # the node's option, else pacs.store_retries
        last_error = ""
        # A permanent association rejection (A-ASSOCIATE-RJ result 1, e.g. a wrong called AE
        # title): no retry and no further association can help, so the send ends at once.
        permanent = threading.Event()
        permanent_error = [""]
        lock = threading.Lock()
        # Running counts for the progress: recounting every outcome per instance made a
        # large send quadratic (10 000 instances: 50 million steps on the lane threads).
        # "failed" counts failures for good (the last attempt's, a permanent one, a status
        # no retry changes); a failure the next attempt retries is "waiting" (``retrying``).
        tally = {"ok": 0, "failed": 0, "warning": 0, "waiting": 0}
        retrying: set[str] = set()
        for o in previous.values():
            _count(tally, o, +1)

        def settle(uid: str, o: scu.StoreOutcome, n: int) -> None:
            """Record ``o`` (attempt ``n``) for an instance; the caller holds ``lock``."""
            earlier = final.get(uid)
            if earlier is not None:  # a retry replaces the earlier outcome
                _count(tally, earlier, -1, uid not in retrying)
            settled = o.ok or n > retries or permanent.is_set() or not _store_retryable(o)
            _count(tally, o, +1, settled)
            if settled:
                retrying.discard(uid)
            else:
                retrying.add(uid)
            final[uid] = o
            attempts[uid] = n
            recorder.add(o, n)

        def counts(force: bool = False, **more: Any) -> None:
            """The job's counts and progress, from what is settled (stored, or failed for
            good): an instance waiting for its retry is neither, so the bar does not fill
            (or move back) while a retry runs. The caller holds ``lock``: the writes keep
            the order of the results they count."""
            control.update(
                force=force,
                completed=tally["ok"],
                failed=tally["failed"],
                warning=tally["warning"],
                progress=round((tally["ok"] + tally["failed"]) / total, 4),
                **more,
            )

        def stored_note() -> str:
            note = f"{tally['ok']} of {total} stored"
            return note + (f", {tally['failed']} failed" if tally["failed"] else "")

        def retry_note(n: int) -> str:
            """What a retry attempt does, kept current as its results come."""
            left = total - tally["ok"] - tally["failed"]
            return (
                f"attempt {n} of {retries + 1}: {left} instance(s) being retried, {stored_note()}"
            )

        with lock:
            counts(force=True, total=total, attempts=1)
        for attempt in range(retries + 1):
            if attempt:
                delay = min(60.0, self.settings.retry_backoff_seconds * 2 ** (attempt - 1))
                with lock:
                    note = (
                        f"attempt {attempt} of {retries + 1}: {len(todo)} instance(s) to "
                        f"retry in {delay:g} s, {stored_note()}"
                    )
                    counts(force=True, attempts=attempt + 1, message=note)
                if control.cancel.wait(delay):
                    break
                with lock:
                    counts(force=True, message=retry_note(attempt + 1))

            def on_result(o: scu.StoreOutcome, n: int = attempt + 1) -> None:
                with lock:
                    previous = final.get(o.sop_instance_uid)
                    if previous is not None and previous.attempted and not o.attempted:
                        return  # not reached this time: the earlier failure says more
                    settle(o.sop_instance_uid, o, n)
                    if n > 1:
                        counts(message=retry_note(n))
                    else:
                        counts()

            def send_lane(lane: Sequence[scu.Outgoing], n: int = attempt + 1) -> str:
                error = ""
                for chunk in scu.iter_chunks(lane, self.settings.instances_per_association):
                    rest: Sequence[scu.Outgoing] = chunk
                    silent = 0  # associations in a row on which the peer answered nothing
                    while rest and not control.cancelled:
                        if permanent.is_set():  # the next association would be rejected too
                            fail_all(rest, permanent_error[0], n)
                            break
                        try:
                            outcomes = scu.store(
                                peer,
                                rest,
                                compressed=node.propose_compressed,
                                on_result=on_result,
                                cancel=control.cancel,
                            )
                        except (scu.AssociationError, ValueError) as exc:
                            error = _association_error(exc)
                            if isinstance(exc, scu.AssociationError) and exc.permanent:
                                with lock:
                                    permanent_error[:] = [error]
                                    permanent.set()
                            final_for_rest = (
                                isinstance(exc, scu.AssociationError) and exc.no_context
                            )
                            fail_all(rest, error, n, final_for_rest)
                            break
                        # The association was lost under one instance (a C-STORE response
                        # timeout, an A-ABORT): that one failed on its own; the others go
                        # on a new association now. One that aborts on every attempt
                        # starved those behind it (outside probe 26). Two associations in a
                        # row without a single answer: a peer that answers no C-STORE, each
                        # try costs the DIMSE timeout; the next attempt takes them.
                        skipped = {o.sop_instance_uid for o in outcomes if not o.attempted}
                        silent = 0 if any(o.status is not None for o in outcomes) else silent + 1
                        if not skipped or silent >= 2:
                            break
                        rest = [it for it in rest if it.sop_instance_uid in skipped]
                    if control.cancelled:
                        break
                return error

            def fail_all(
                chunk: Sequence[scu.Outgoing], error: str, n: int, final_: bool = False
            ) -> None:
                """No association for ``chunk``: each instance not stored yet failed;
                ``final_``: for a reason another attempt does not change."""
                with lock:
                    for it in chunk:
                        uid = it.sop_instance_uid
                        if uid not in final or not final[uid].ok:
                            failure = scu.StoreOutcome(
                                uid, it.sop_class_uid, None, error, permanent=final_,
                                attempted=False,
                            )  # fmt: skip
                            settle(uid, failure, n)
                    if n > 1:
                        counts(message=retry_note(n))
                    else:
                        counts()

            # Several associations in parallel (Conformance 4.2.4.4 allows several Store SCU
            # processes): the PACS's per-instance latency is what bounds one association.
            lanes = [todo[k :: self.settings.store_associations] for k in range(
                min(self.settings.store_associations, len(todo)))]  # fmt: skip
            if len(lanes) == 1:
                errors = [send_lane(lanes[0])]
            else:
                with ThreadPoolExecutor(len(lanes), thread_name_prefix="send-lane") as lane_pool:
                    errors = list(lane_pool.map(send_lane, lanes))
            last_error = next((e for e in errors if e), last_error)
            retry = [
                it
                for it in items
                if it.sop_instance_uid not in final
                or (
                    not final[it.sop_instance_uid].ok
                    and _store_retryable(final[it.sop_instance_uid])
                )
            ]
            # The instances an association was lost on go to the back of the next attempt:
            # the others are tried before them (what follows them may be lost again).
            todo = [it for it in retry if not _lost_on(final.get(it.sop_instance_uid))]
            todo += [it for it in retry if _lost_on(final.get(it.sop_instance_uid))]
            if not todo or control.cancelled:
                break
            if permanent.is_set():  # retries are for transient failures only
                break
        recorder.flush()
        never = [it.sop_instance_uid for it in items if it.sop_instance_uid not in final]
        self._mark_rows(
            control.job_id, never, NOT_SENT_STOPPED if control.stopping else NOT_SENT_CANCELLED
        )
        ok = [o for o in final.values() if o.ok]
        if control.cancelled:
            # what was never sent did not fail: a cancelled send of 600 reported 483 failed
            failed = len(final) - len(ok)
            control.update(force=True, completed=len(ok), failed=failed)
            return Outcome(
                "cancelled",
                f"cancelled after {len(ok)} of {total} instance(s) stored; {failed} failed, "
                f"{total - len(final)} not sent",
            )
        failed = total - len(ok)
        # every instance has its result now (sent, failed, not attempted): the bar is full
        control.update(force=True, completed=len(ok), failed=failed, progress=1.0)
        message = f"{len(ok)} of {total} instance(s) stored on {node.name}"
        warned = [o for o in ok if o.status != dimse_status.SUCCESS]
        if warned:  # PS3.4 B.2.3: stored, but not as sent (B000 coercion, B007, B006)
            texts = {o.message or dimse_status.describe(o.status or 0) for o in warned}
            message += f" ({len(warned)} with a warning: " + "; ".join(sorted(texts)[:3]) + ")"
        if failed:
            reasons = {
                o.message or dimse_status.describe(o.status or 0)
                for o in final.values()
                if not o.ok
            }
            message += f"; {failed} failed: " + "; ".join(sorted(reasons)[:3])
        if permanent.is_set():
            message += " (a permanent rejection: not retried)"
        if do_commit and ok:
            refs = [commitment.Reference(o.sop_class_uid, o.sop_instance_uid) for o in ok]
            control.update(force=True, message=message + "; requesting storage commitment")
            res = self.request_commitment(node, refs, job_pk=control.job_id)
            with self.ctx.Session() as db:
                summary = records.summarize(db, control.job_id)
            if summary is None:  # nothing requested (the job was cancelled meanwhile)
                message += records.SEND_MARKER + res.message
                return Outcome("partial" if failed else "done", message)
            # "waiting" while the report is outstanding, not "done" (outside probe 52); the
            # records move the job on (records.follow_send) as reports arrive on any of
            # the three ways of 4.1.2.5 or the request expires; ``after`` catches a report
            # that raced this end
            state, completed, failed = records.send_state(total, summary)
            control.update(force=True, completed=completed, failed=failed)
            message += records.SEND_MARKER + summary.text
            after = functools.partial(self._sync_job, control.job_id)
            return Outcome(state, message, after=after)
        if not ok:
            return Outcome("failed", message or last_error)
        return Outcome("partial" if failed else "done", message)

    # ------------------------------------------------------------------ commitment
    def commit(
        self,
        node_id: int,
        sop_instance_uids: Sequence[str],
        created_by: str = "",
        pools: list[str] | None = None,
    ) -> int:
        """A storage commitment request on its own (for instances sent earlier)."""
        node = self.node(node_id)
        if not node.storage_commitment:
            raise PacsError(409, _not_a_commitment_scp(node))
        uids = [u.strip() for u in sop_instance_uids if u.strip()]
        if not uids:  # an empty filter would select every instance of the archive
            raise PacsError(422, "name the SOP Instance UIDs to request commitment for")
        found = self._select("", "", uids, pools)
        if not found:
            raise PacsError(404, "none of these instances is in the archive")
        _all_found(uids, found)
        refs = [commitment.Reference(i.sop_class_uid, i.sop_instance_uid) for i in found]

        def run(control: JobControl) -> Outcome:
            control.update(force=True, total=len(refs), attempts=1)
            job_pk = control.job_id
            res = self.request_commitment(node, refs, job_pk=job_pk)
            with self.ctx.Session() as db:
                summary = records.summarize(db, job_pk)
            after = functools.partial(self._sync_job, job_pk)  # a report may race our end
            if summary is None:  # no request recorded: nothing can answer it
                return Outcome("failed", res.message, res.status)
            # Not "done" because the N-ACTION was accepted: "waiting" until every instance
            # is reported or the request expires (the records move the job on from there).
            control.update(
                force=True, completed=summary.committed, failed=summary.failed,
                total=summary.total,
            )  # fmt: skip
            return Outcome(summary.state, summary.text, res.status, after=after)

        return self.jobs.submit(
            "commit",
            run,
            node_id=node.id,
            node_name=node.name,
            params={"instances": len(refs)},
            created_by=created_by,
        )

    def _sync_job(self, job_pk: int) -> None:
        """The job follows its commitment records (records.sync_job) in its own transaction."""
        for attempt in range(5):
            try:
                with self.ctx.WriteSession() as db, db.begin():
                    records.sync_job(db, job_pk)
                return
            except Exception:  # noqa: BLE001 - SQLite busy under load: try again
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def request_commitment(
        self,
        node: NodeView,
        refs: Sequence[commitment.Reference],
        *,
        job_pk: int | None = None,
        attempt: int = 1,
    ) -> commitment.RequestResult:
        """N-ACTION and (ways 1/3) wait; the request row exists before the N-ACTION goes out,
        so a way-2 report that races in through our listener finds it (4.2.5, 5). Nothing is
        requested for a cancelled job."""
        uid = commitment.new_transaction_uid(self.ctx.settings.server.uid_root)
        with self.ctx.WriteSession() as db, db.begin():
            if records.job_cancelled(db, job_pk):
                return commitment.RequestResult(False, uid, "the job was cancelled: not requested")
            self._create_request(db, node, refs, uid=uid, job_pk=job_pk, attempt=attempt)
        return self._send_request(node, refs, uid=uid, job_pk=job_pk)

    def _create_request(
        self,
        db: Session,
        node: NodeView,
        refs: Sequence[commitment.Reference],
        *,
        uid: str,
        job_pk: int | None,
        attempt: int,
    ) -> None:
        records.create_request(
            db,
            transaction_uid=uid,
            node_id=node.id,
            node_name=node.name,
            job_pk=job_pk,
            mode=node.commitment_mode,
            attempt=attempt,
            refs=refs,
            retry_at=now() + timedelta(seconds=self.settings.commitment_retry_seconds),
        )

    def _send_request(
        self,
        node: NodeView,
        refs: Sequence[commitment.Reference],
        *,
        uid: str,
        job_pk: int | None,
    ) -> commitment.RequestResult:
        """The N-ACTION for the recorded request ``uid``, unless a cancel expired it since."""
        if records.request_state(self.ctx, uid) != "pending":
            return commitment.RequestResult(False, uid, "the job was cancelled: not requested")
        res = commitment.request(
            self.peer(node),
            refs,
            transaction_uid=uid,
            mode=node.commitment_mode,
            wait=node.commitment_wait,
            on_report=lambda report: records.receive_report(self.ctx, report, None).refused,
            answered=lambda: records.is_answered(self.ctx, uid),
        )
        with self.ctx.WriteSession() as db, db.begin():
            req = db.scalars(
                select(CommitmentRequest).where(CommitmentRequest.transaction_uid == uid)
            ).one()
            if req.state == "pending":
                req.message = res.message
                if not res.ok and res.status is not None and not _transient(res.status):
                    # The SCP answered and refused (no such SOP class, not authorized,
                    # invalid argument ...): asking again gets the same answer.
                    records.refuse(req, res.status, res.message + "; not requested again")
                elif not res.ok:
                    self._not_taken(req, res)
            records.sync_job(db, job_pk)  # a waiting job names the new attempt or refusal
        if records.is_answered(self.ctx, uid):
            res.message = "N-ACTION accepted; commitment report received"
        return res

    def _not_taken(self, req: CommitmentRequest, res: commitment.RequestResult) -> None:
        """A pending request whose N-ACTION the PACS did not take (no association, no
        response, a transient refusal): its message says so, why, and when the next attempt
        is due (Conformance 4.2.5.3: a new attempt after a configurable timeout). The job
        read "waiting for the commitment report" for the whole retry interval while nothing
        listened on the node's port (probe 56). A request that never reached the PACS on
        its last attempt expires now: no report can come for it."""
        why = res.message
        if res.delivered is False:
            why = f"{records.NOT_DELIVERED}: {why}"
        elif res.delivered is None:
            why = f"{records.NOT_CONFIRMED}: {why}; the PACS may not have received it"
        limit = self.settings.commitment_max_attempts
        if res.delivered is False and req.attempt >= limit:
            req.state, req.retry_at = "expired", None
            req.message = _expiry_note(req.attempt, why, False)
            return
        due = req.retry_at or now()
        when = f"{due:%Y-%m-%d %H:%M:%S} UTC, in {max(0.0, (due - now()).total_seconds()):.0f} s"
        if req.attempt < limit:
            schedule = f"{records.NEXT_ATTEMPT} ({req.attempt + 1} of {limit}) due at {when}"
        else:
            schedule = (
                f"{records.NEXT_ATTEMPT}: none ({req.attempt} of {limit} made); the request "
                f"ends unconfirmed at {when} unless a report comes"
            )
        req.message = why + schedule

    def stop_waiting(self, job_pk: int, who: str) -> bool:
        """Cancel a commit job that waits for its report: its pending requests expire now
        (no retry) and the job ends "cancelled", counting what was confirmed so far. False
        when the job is not waiting (a waiting job holds no thread a cancel could reach)."""
        with self.ctx.WriteSession() as db, db.begin():
            job = db.get(Job, job_pk, with_for_update=True)  # see records.job_cancelled
            if job is None or job.state != WAITING:
                return False
            for req in db.scalars(
                select(CommitmentRequest).where(
                    CommitmentRequest.job_pk == job_pk, CommitmentRequest.state == "pending"
                )
            ):
                req.state, req.retry_at = "expired", None
                req.message = f"cancelled by {who}: no longer waiting for the report"
            db.flush()
            records.sync_job(db, job_pk)
            job.state = "cancelled"
            job.finished_at = now()
            job.message = f"cancelled by {who} while waiting: {job.message}"
        return True

    def retry_commitments(self) -> int:
        """Send again what got no report in time; expire after the last attempt (4.2.5.3)."""
        t = now()
        with self.ctx.Session() as db:
            due = list(
                db.scalars(
                    select(CommitmentRequest).where(
                        CommitmentRequest.state == "pending", CommitmentRequest.retry_at <= t
                    )
                )
            )
            work = [
                (
                    r.id,
                    r.node_id,
                    r.node_name,
                    r.job_pk,
                    r.attempt,
                    [
                        commitment.Reference(i.sop_class_uid, i.sop_instance_uid)
                        for i in r.items
                        if i.state == "pending"
                    ],
                )
                for r in due
            ]
        sent = 0
        for req_id, node_id, node_name, job_pk, attempt, refs in work:
            node: NodeView | None = None
            if node_id is not None:
                with contextlib.suppress(PacsError):  # removed meanwhile
                    node = self.node(node_id)
            if node is not None and node.name != node_name:
                self._end_request(req_id, job_pk, _another_node(node, node_name))
                continue
            uid = commitment.new_transaction_uid(self.ctx.settings.server.uid_root)
            # One transaction supersedes the request and records its successor, the job's
            # state checked there: a cancel in between found nothing pending to expire and
            # the new request brought the cancelled job back to "waiting".
            with self.ctx.WriteSession() as db, db.begin():
                req = db.get(CommitmentRequest, req_id)
                if req is None or req.state != "pending":
                    continue
                if records.job_cancelled(db, job_pk):  # nothing is asked for it any more
                    req.state, req.retry_at = "expired", None
                    req.message = "the job was cancelled: not requested again"
                    db.flush()
                    records.sync_job(db, job_pk)
                    continue
                gone = node is None or db.get(RemoteNode, node_id) is None
                if attempt >= self.settings.commitment_max_attempts or gone:
                    req.state = "expired"
                    req.retry_at = None
                    req.message = _expiry_note(attempt, req.message, gone)
                    db.flush()
                    records.sync_job(db, job_pk)  # the job ends: never confirmed is not done
                    continue
                req.state = "superseded"
                req.retry_at = None
                if refs and node is not None:
                    self._create_request(
                        db, node, refs, uid=uid, job_pk=job_pk, attempt=attempt + 1
                    )
            if refs and node is not None:
                self._send_request(node, refs, uid=uid, job_pk=job_pk)
                sent += 1
        return sent

    def _end_request(self, req_id: int, job_pk: int | None, why: str) -> None:
        """Expire pending request ``req_id`` without asking anyone again (``why``)."""
        with self.ctx.WriteSession() as db, db.begin():
            req = db.get(CommitmentRequest, req_id)
            if req is None or req.state != "pending":
                return
            req.state, req.retry_at, req.message = "expired", None, why
            db.flush()
            records.sync_job(db, job_pk)
        log.warning("commitment request %s not sent again: %s", req_id, why)

    def _watch_commitments(self) -> None:
        interval = max(0.5, min(10.0, self.settings.commitment_retry_seconds / 4))
        while not self._stop.wait(interval):
            try:
                self.retry_commitments()
            except Exception as exc:  # noqa: BLE001 - keep the watcher alive
                # an outage is one line (and a reminder), not a traceback each time (probe 58)
                self._outage.failed(exc, "commitment retry failed")
            else:
                self._outage.available()


def _not_a_commitment_scp(node: NodeView) -> str:
    return (
        f"node '{node.name}' is not a storage commitment SCP "
        "(enable storage_commitment for the node first)"
    )


def _expiry_note(attempt: int, last: str, gone: bool) -> str:
    """Why a request ends after its last attempt. ``last`` is what its N-ACTION got: when
    that was not accepted (refused 0x0110, no presentation context), say so; the job read
    "no commitment report" as if the PACS had been asked and stayed silent (probe 38)."""
    last = records.reason_of(last)  # without the retry schedule it no longer has
    if last and not last.startswith(commitment.ACCEPTED):
        note = f"{records.NOT_ACCEPTED} after {attempt} request(s): {last}"
    else:
        note = f"{records.NO_REPORT} {attempt} request(s)"
    return note + ("; the node was removed" if gone else "")


def _another_node(node: NodeView, requested_from: str) -> str:
    """The request's node id now names another node (SQLite reuses a deleted node's id):
    its N-ACTION, with the patient's UIDs, would go to that node (probe 38)."""
    return (
        f"{records.NODE_CHANGED}: node {node.id} is now '{node.name}' (AE {node.ae_title}), "
        f"not '{requested_from}' the request went to; not requested again"
    )


def _move_counts(p: scu.MoveProgress) -> str:
    """ "3 of 5 sub-operation(s) completed, 1 failed, 1 warning" from a C-MOVE's counters."""
    done = p.completed + p.warning
    total = p.total or done + p.failed
    text = f"{done} of {total} sub-operation(s) completed"
    if p.failed:
        text += f", {p.failed} failed"
    if p.warning:
        text += f", {p.warning} with warnings"
    return text


def _move_attempt_note(attempt: int, retries: int, ae_title: str, arrived: int) -> str:
    """A C-MOVE retry attempt under way (Conformance 4.2.2.6) and what has arrived."""
    return (
        f"attempt {attempt} of {retries + 1}: C-MOVE to {ae_title}; "
        f"{arrived} instance(s) arrived so far"
    )


def _arrived(count: int) -> str:
    """What a cut-off or cancelled retrieve left in the archive (probe 37)."""
    if not count:
        return "no instance of it arrived in this archive"
    return f"{count} instance(s) arrived and are archived"


def remaining_of(params: dict[str, Any] | None) -> int | None:
    """A retrieve job's Number of Remaining Sub-operations as the PACS last reported it
    (None: no response carried it yet, or not a retrieve)."""
    value = (params or {}).get(REMAINING)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cancelled_move_message(res: scu.MoveResult) -> str:
    """What a cancelled retrieve did (Conformance 4.2.2): the PACS may stop with FE00 or
    finish anyway; a job that read "cancelled", status 0000, "no failures" said neither.
    The FE00 response's Number of Remaining Sub-operations says what it did not send."""
    counts = _move_counts(res.progress)
    if res.progress.remaining:
        counts += f", {res.progress.remaining} remaining (not sent)"
    code = "" if res.status is None else f" (0x{res.status:04X})"
    if res.cancel_unconfirmed:  # a hung PACS: aborted after scu.CANCEL_GRACE_S
        return f"cancel requested (C-CANCEL); {res.message}: {counts}"
    if res.status == dimse_status.QR_CANCEL:
        return f"cancel requested (C-CANCEL); the PACS stopped the retrieve{code}: {counts}"
    if res.ok or res.status == dimse_status.QR_SUBOPS_WARNING:
        return (
            f"cancel requested (C-CANCEL), but the PACS completed the retrieve anyway{code}: "
            f"{counts}"
        )
    if res.status is None:
        return f"cancel requested; the retrieve ended without a final status: {counts}"
    return f"cancel requested; the PACS ended the retrieve with {res.message}: {counts}"


def _transient(code: int) -> bool:
    """N-ACTION failure statuses worth asking again (PS3.7 10.1.4.1.10): processing failure,
    resource limitation and the out-of-resources range; the others refuse the request as
    such and are final."""
    return code in (0x0110, 0x0213) or 0xA700 <= code <= 0xA7FF


def _all_found(uids: Sequence[str], found: Sequence[Instance]) -> None:
    """404 naming the instances asked for by UID that are not archived (or not in the named
    study/series): a send or commitment of the others went ahead and reported success, so
    a typo or a deleted instance went unnoticed (outside probe)."""
    have = {i.sop_instance_uid for i in found}
    missing = [u for u in dict.fromkeys(u.strip() for u in uids) if u and u not in have]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise PacsError(404, f"not in the archive: {', '.join(missing[:5])}{more}")


# ---------------------------------------------------------------------- merging

#: Multi-valued keys whose merged value is the union of what the PACS answered: a study
#: split over two PACS has the modalities of both (ModalitiesInStudy, PS3.4 Table C.6-5).
_UNION_KEYS = frozenset({"ModalitiesInStudy"})


def _merge_attrs(attrs: dict[str, Any], row: dict[str, Any]) -> None:
    """Fill the merged answer ``attrs`` from a later node's ``row``, in node order: an
    attribute the earlier PACS left out or empty takes this one's value (dcmqrscp returns
    no ModalitiesInStudy or NumberOfStudyRelatedInstances, Orthanc does: the merged row
    lacked them, issue 3); ModalitiesInStudy is the union, in order of first mention."""
    for key, value in row.items():
        have = attrs.get(key)
        if have in (None, ""):
            attrs[key] = value
        elif key in _UNION_KEYS and isinstance(have, str) and isinstance(value, str) and value:
            both = f"{have}\\{value}".split("\\")
            attrs[key] = "\\".join(dict.fromkeys(v for v in both if v))


def merge(level: str, results: Sequence[tuple[NodeView, scu.FindResult]]) -> dict[str, Any]:
    """Per-node status plus merged rows; STUDY level grouped by patient (4.2.1.4)."""
    nodes_out = []
    rows: list[dict[str, Any]] = []
    unique = scu.UNIQUE_KEY[level]
    by_uid: dict[str, dict[str, Any]] = {}
    for node, res in results:
        nodes_out.append(
            {
                "node_id": node.id,
                "node": node.name,
                "outcome": res.outcome,
                "status": res.status,
                "message": res.message,
                "count": len(res.rows),
                "warnings": res.warnings,
                "truncated": res.outcome == "truncated",
                "case_sensitive": res.case_sensitive,
                "hidden_matches_possible": res.hidden_matches_possible,
                "case_note": res.case_note,
                "elapsed_ms": res.elapsed_ms,
            }
        )
        for row in res.rows:
            key = row.get(unique, "")
            if key and key in by_uid:
                seen = by_uid[key]
                if node.id not in seen["node_ids"]:  # names, ids and answers stay aligned
                    seen["nodes"].append(node.name)
                    seen["node_ids"].append(node.id)
                    seen["node_attrs"].append(row)
                    _merge_attrs(seen["attrs"], row)
                continue
            merged = {
                "attrs": dict(row),  # its own copy: node_attrs keep each answer as it came
                "nodes": [node.name],
                "node_ids": [node.id],
                "node_attrs": [row],
            }
            if key:
                by_uid[key] = merged
            rows.append(merged)
    out: dict[str, Any] = {"level": level, "nodes": nodes_out, "rows": [], "patients": []}
    if level != "STUDY":
        out["rows"] = rows
        return out
    patients: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        a = r["attrs"]
        pkey = (a.get("PatientID", ""), a.get("PatientName", "").upper())
        p = patients.setdefault(
            pkey,
            {
                "patient_id": a.get("PatientID", ""),
                "patient_name": a.get("PatientName", ""),
                "birth_date": a.get("PatientBirthDate", ""),
                "studies": [],
            },
        )
        p["studies"].append(r)
    for p in patients.values():
        p["studies"].sort(key=lambda s: s["attrs"].get("StudyDate", ""), reverse=True)
    out["patients"] = sorted(patients.values(), key=lambda p: p["patient_name"].upper())
    return out
