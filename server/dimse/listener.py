"""DICOM listeners: one AE per data pool, spread over worker processes.

A single pynetdicom process tops out around 100–150 instances/s and does not scale with more
associations (the GIL). Each worker process binds every pool port with SO_REUSEPORT, so the
kernel spreads associations over the workers; archive and index stay consistent because
each instance is one atomic write plus one committed transaction (ServerContext.store).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import ssl
import threading
import time
from multiprocessing import reduction
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from lucent.dicom import sop_classes, transfer_syntaxes
from lucent.net import tls, transport
from server import config as config_mod
from server import logs
from server.config import PoolSection, Settings
from server.context import ServerContext
from server.dimse import audit_spool, handlers, refusal
from server.dimse.fast_store import AcceptTrouble, StoreAcceptor

log = logging.getLogger("lucent.dimse")

REUSE_PORT = hasattr(socket, "SO_REUSEPORT") and os.name == "posix"


def worker_context() -> Any:
    """Where the platform has it, a fork server that imported this module once: each worker
    (and each restart of one) is a fork of it. Spawned, every worker imported pydicom,
    pynetdicom, SQLAlchemy and the server again (2-3 s of CPU each; 40 s at the start of a
    16-core server) and kept its own copy of that code in memory. Windows has only spawn.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


class ReusePortServer(ThreadedAssociationServer):
    """Association server whose socket can be shared by several worker processes."""

    def server_bind(self) -> None:
        assert self.socket is not None
        if REUSE_PORT:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.address_family == socket.AF_INET6:
            # '::' serves IPv4 too (dual stack), so one pool port answers both.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def build_ae(settings: Settings) -> AE:
    d = settings.dimse
    # the calling AE of the associations it opens (C-MOVE sub-operations): pynetdicom's
    # default "PYNETDICOM" reached the destination (outside probe 25)
    ae = AE(ae_title=settings.calling_ae_title)
    ae.implementation_class_uid = d.implementation_class_uid
    ae.implementation_version_name = d.implementation_version_name
    ae.maximum_pdu_size = d.max_pdu
    # "Unlimited" simultaneous associations (Conformance 4.2.3.3); pynetdicom's default is 10.
    ae.maximum_associations = 100000
    ae.network_timeout = d.network_timeout
    ae.dimse_timeout = d.dimse_timeout
    ae.acse_timeout = d.acse_timeout
    ae.require_called_aet = False
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    syntaxes = list(transfer_syntaxes.ACCEPTED)
    for uid in sop_classes.ACCEPTED_STORAGE:
        # scp_role: C-GET requestors act as Storage SCP on these contexts.
        ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
    for model in (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model, transfer_syntaxes.ACCEPTED[:4])
    # Storage Commitment Push Model, SCU role: a commitment SCP may open a new association
    # to us to deliver the N-EVENT-REPORT (Conformance 4.1.2.5 way 2, 4.2.5.4).
    ae.add_supported_context(
        StorageCommitmentPushModel, transfer_syntaxes.ACCEPTED[:4], scu_role=True, scp_role=True
    )
    return ae


class HandoffServer(ThreadedAssociationServer):
    """pynetdicom server without a socket of its own: the fast-path acceptor hands it the
    associations it does not serve itself (Query/Retrieve, commitment, negotiation)."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def shutdown(self) -> None:
        """Close only: ``serve_forever`` never ran here, so BaseServer.shutdown() would wait
        forever for it to stop, and SIGTERM would hang the worker until it is killed."""
        self.server_close()


def listening_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if REUSE_PORT:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(128)
    return sock


def endpoints(settings: Settings) -> list[tuple[PoolSection, int, bool]]:
    """Every listening port: (pool, port, speaks TLS). The supervisor and the workers use
    this order to agree on which acceptor a handed-over connection belongs to."""
    out: list[tuple[PoolSection, int, bool]] = []
    for pool in settings.pools:
        out.append((pool, pool.port, False))
        if pool.tls_port:
            out.append((pool, pool.tls_port, True))
    return out


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    d = settings.dimse
    if not d.tls_cert:
        return None
    return tls.server_context(
        d.tls_cert, d.tls_key, d.tls_ca_file, require_client_cert=d.tls_require_client_cert
    )


def start_listeners(
    settings: Settings, ctx: ServerContext, *, dispatched: bool = False
) -> tuple[AE, list[Any], list[StoreAcceptor]]:
    """Serve every pool in this process, in background threads.

    ``dispatched``: the supervisor accepts connections and hands them to this worker (fast
    path, balanced over workers); otherwise this process binds the pool ports itself
    (SO_REUSEPORT, shared with the other workers).
    """
    transport.install(settings.dimse.max_pdu)
    refusal.install()
    ae = build_ae(settings)
    tls_context = server_tls_context(settings)
    servers: list[Any] = []
    acceptors: list[StoreAcceptor] = []
    handoffs: dict[str, Any] = {}
    storage = set(sop_classes.ACCEPTED_STORAGE)
    for pool, port, secure in endpoints(settings):
        address = (settings.dimse.bind_address, port)
        context = tls_context if secure else None
        if settings.dimse.fast_store:
            handoff = handoffs.get(pool.name)
            if handoff is None:
                handoff = handoffs[pool.name] = ae.make_server(
                    address,
                    ae_title=pool.ae_title,
                    evt_handlers=handlers.bindings(ctx, pool),
                    server_class=HandoffServer,
                )
                servers.append(handoff)
            listener = None if dispatched else listening_socket(*address)
            acceptor = StoreAcceptor(
                settings, ctx, pool, listener, handoff, storage, tls_context=context
            )
            acceptors.append(acceptor)
            if listener is not None:
                threading.Thread(
                    target=acceptor.serve_forever, name=f"dimse-{pool.name}", daemon=True
                ).start()
                servers.append(acceptor)
        else:
            server = ae.make_server(
                address,
                ae_title=pool.ae_title,
                evt_handlers=handlers.bindings(ctx, pool),
                server_class=ReusePortServer,
                ssl_context=context,
            )
            threading.Thread(
                target=server.serve_forever, name=f"dimse-{pool.name}", daemon=True
            ).start()
            ae._servers.append(server)  # as AE.start_server does, so shutdown() can find it
            servers.append(server)
        log.info(
            "pool %s: AE %s on %s:%d%s (pid %d)",
            pool.name,
            pool.ae_title,
            settings.dimse.bind_address,
            port,
            " (DICOM TLS)" if secure else "",
            os.getpid(),
        )
    return ae, servers, acceptors


def busy_ports(settings: Settings) -> list[str]:
    """Which of our listening ports another program holds now, one line each (the API port
    too: taken, uvicorn failed after the banner had said "running", exit 3)."""
    wanted = [(f"pool {pool.name}", settings.dimse.bind_address, port)
              for pool, port, _ in endpoints(settings)]  # fmt: skip
    wanted.append(("[api]", settings.api.bind_address, settings.api.port))
    busy = []
    for what, address, port in wanted:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                busy.append(f"{what}: port {port} is in use ({exc.strerror})")
    return busy


def check_ports_free(settings: Settings) -> None:
    """Refuse to start when another program holds one of our ports.

    SO_REUSEPORT would otherwise let a stale server silently share connections with us.
    Unusable TLS files are reported here too, before any worker starts.
    """
    try:
        server_tls_context(settings)
    except tls.TlsConfigError as exc:
        raise OSError(f"[dimse] DICOM TLS: {exc}") from exc
    busy = busy_ports(settings)
    if busy:
        raise OSError("; ".join(busy))


def _receive_connections(handles: Any, acceptors: list[StoreAcceptor]) -> None:
    """Take the connections the supervisor hands over and serve each on its own thread."""
    while True:
        try:
            pool_index = handles.recv()
            fd = reduction.recv_handle(handles)
        except (EOFError, OSError):
            return
        sock = socket.socket(fileno=fd)
        acceptors[pool_index].serve_connection(sock)


def worker_main(config_path: str, index: int, handles: Any = None) -> None:
    """Entry point of one DICOM worker process."""
    settings = config_mod.load(Path(config_path))
    logs.configure(settings.server.log_level, f"worker {index}")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    ctx = ServerContext(settings)
    # pending association records; at its start it writes those of workers that are gone
    # (the server was killed, or this worker is a restarted one), then retries what the
    # database did not take (probe 58)
    spool = audit_spool.install(ctx)
    try:
        ctx.warm_up(settings.pools[0].name)
    except Exception:  # a cold first store is slower, not wrong
        logging.getLogger("lucent.dimse").exception("warm-up failed")
    ae, servers, acceptors = start_listeners(settings, ctx, dispatched=handles is not None)
    if handles is not None:
        threading.Thread(
            target=_receive_connections, args=(handles, acceptors), daemon=True,
            name="dimse-handover",
        ).start()  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    supervisor = mp.parent_process()  # the server's main process, also under a fork server
    while not stop.wait(1.0):
        if supervisor is not None and not supervisor.is_alive():
            break  # the supervisor died (kill -9): do not linger as an orphan
    for server in servers:
        with contextlib.suppress(ValueError, OSError):
            server.shutdown()
    audit_spool.uninstall(spool)
    ctx.close()


def worker_alive(proc: Any) -> bool:
    """Whether a DICOM worker process still runs.

    Under a fork server, ``is_alive()`` reads the worker's exit status from a pipe to the
    fork server: with the fork server gone (killed, or taken by the OOM killer: it is the
    largest child) that pipe ends and every worker read "exited (255)" while it still
    served, and all were replaced (outside probe 54). So for 255 the kernel is asked about
    the worker itself."""
    if proc.is_alive():
        return True
    if proc.exitcode != 255 or proc.pid is None or os.name != "posix":
        return False  # (Windows: spawn only, and os.kill(pid, 0) would terminate it)
    try:
        os.kill(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError, IndexError):  # a zombie waiting for init: gone
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def _signal(proc: Any, sig: int) -> None:
    """``sig`` to a worker ``worker_alive`` says runs (``terminate()`` does nothing once
    an exit status, even the fork server's 255, was read)."""
    if proc.pid is not None and worker_alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


class WorkerPool:
    """Starts and supervises the DICOM worker processes; restarts one that dies.

    With the fast path, the supervisor owns the listening sockets and hands each accepted
    connection to the next worker in turn (round robin): SO_REUSEPORT's hashing often put
    three of four associations on one worker of two, leaving a core idle.
    """

    def __init__(self, config_path: Path, settings: Settings) -> None:
        self.config_path = str(config_path)
        self.settings = settings
        self.dispatch = settings.dimse.fast_store
        count = settings.worker_count
        self.count = count if (REUSE_PORT or self.dispatch) else 1
        self._ctx = worker_context()
        self.processes: list[Any] = []
        self._pipes: list[Any] = []
        self._locks = [threading.Lock() for _ in range(self.count)]
        self._next = 0
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []

    def _spawn(self, index: int) -> Any:
        handles = None
        if self.dispatch:
            # duplex: a socketpair, which can carry file descriptors (SCM_RIGHTS)
            receive, send = self._ctx.Pipe(duplex=True)
            handles = receive
            if index < len(self._pipes):
                self._pipes[index] = send
            else:
                self._pipes.append(send)
        proc = self._ctx.Process(
            target=worker_main,
            args=(self.config_path, index, handles),
            name=f"lucent-dimse-{index}",
        )
        proc.daemon = True
        proc.start()
        if handles is not None:
            handles.close()
        return proc

    def start(self) -> None:
        if self.dispatch:
            d = self.settings.dimse
            self._listeners = [
                listening_socket(d.bind_address, port) for _, port, _ in endpoints(self.settings)
            ]
        self.processes = [self._spawn(i) for i in range(self.count)]
        threading.Thread(target=self._watch, daemon=True, name="dimse-watch").start()
        for index, listener in enumerate(self._listeners):
            threading.Thread(
                target=self._accept, args=(index, listener), daemon=True, name="dimse-accept"
            ).start()

    def _accept(self, pool_index: int, listener: socket.socket) -> None:
        listener.settimeout(0.5)
        trouble = AcceptTrouble()
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                trouble(exc, f"DICOM port {listener.getsockname()[1]}")
                continue
            try:
                self._hand_over(pool_index, conn)
            finally:
                conn.close()  # the worker holds its own duplicate now

    def _hand_over(self, pool_index: int, conn: socket.socket) -> None:
        for _ in range(self.count):
            i = self._next % self.count
            self._next += 1
            proc = self.processes[i]
            if not worker_alive(proc):
                continue
            try:
                with self._locks[i]:
                    self._pipes[i].send(pool_index)
                    reduction.send_handle(self._pipes[i], conn.fileno(), proc.pid)
                return
            except OSError as exc:
                log.warning("could not hand a connection to worker %d: %s", i, exc)
        log.error("no DICOM worker available; connection dropped")

    def begin_stop(self) -> None:
        """No more restarts: the server is stopping (workers may already be gone)."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.processes):
                # a grace second first: a signal to the whole process group reaches a
                # worker before the supervisor's handler calls begin_stop()
                if not worker_alive(proc) and not self._stop.wait(1.0):
                    status = proc.exitcode
                    if status == 255 and self._ctx.get_start_method() == "forkserver":
                        status = "status unknown: its fork server had ended"
                    log.error("DICOM worker %d exited (%s); restarting", i, status)
                    with self._locks[i]:
                        self.processes[i] = self._spawn(i)

    def stop(self) -> None:
        self._stop.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()
        for proc in self.processes:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            proc.join(timeout=max(deadline - time.monotonic(), 0))
            while worker_alive(proc) and time.monotonic() < deadline:
                time.sleep(0.1)  # orphaned by its fork server: no exit status to wait for
            _signal(proc, signal.SIGKILL)
