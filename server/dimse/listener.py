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
import sys
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts
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
from lucent.net import transport
from server import config as config_mod
from server.config import Settings
from server.context import ServerContext
from server.dimse import handlers
from server.dimse.fast_store import StoreAcceptor

log = logging.getLogger("lucent.dimse")

REUSE_PORT = hasattr(socket, "SO_REUSEPORT") and os.name == "posix"


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


def storage_class_uids() -> list[str]:
    """Table 1 classes first, then every other storage class pynetdicom knows."""
    uids = [c.uid for c in sop_classes.TABLE_1]
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax not in uids:
            uids.append(str(cx.abstract_syntax))
    return uids


def build_ae(settings: Settings) -> AE:
    d = settings.dimse
    ae = AE()
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
    for uid in storage_class_uids():
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


def start_listeners(settings: Settings, ctx: ServerContext) -> tuple[AE, list[Any]]:
    """Bind every pool's port in this process and serve in background threads."""
    transport.install(settings.dimse.max_pdu)
    ae = build_ae(settings)
    servers: list[Any] = []
    storage = set(storage_class_uids())
    for pool in settings.pools:
        address = (settings.dimse.bind_address, pool.port)
        if settings.dimse.fast_store:
            handoff = ae.make_server(
                address,
                ae_title=pool.ae_title,
                evt_handlers=handlers.bindings(ctx, pool),
                server_class=HandoffServer,
            )
            server: Any = StoreAcceptor(
                settings, ctx, pool, listening_socket(*address), handoff, storage
            )
            servers.append(handoff)
        else:
            server = ae.make_server(
                address,
                ae_title=pool.ae_title,
                evt_handlers=handlers.bindings(ctx, pool),
                server_class=ReusePortServer,
            )
        thread = threading.Thread(
            target=server.serve_forever, name=f"dimse-{pool.name}", daemon=True
        )
        thread.start()
        if not settings.dimse.fast_store:
            ae._servers.append(server)  # as AE.start_server does, so shutdown() can find it
        servers.append(server)
        log.info(
            "pool %s: AE %s listening on %s:%d (pid %d)",
            pool.name,
            pool.ae_title,
            settings.dimse.bind_address,
            pool.port,
            os.getpid(),
        )
    return ae, servers


def check_ports_free(settings: Settings) -> None:
    """Refuse to start when another program holds a pool port.

    SO_REUSEPORT would otherwise let a stale server silently share connections with us.
    """
    for pool in settings.pools:
        family = socket.AF_INET6 if ":" in settings.dimse.bind_address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.dimse.bind_address, pool.port))
            except OSError as exc:
                raise OSError(
                    f"pool {pool.name}: port {pool.port} is in use ({exc.strerror})"
                ) from exc


def worker_main(config_path: str, index: int) -> None:
    """Entry point of one DICOM worker process."""
    settings = config_mod.load(Path(config_path))
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    switch = os.environ.get("LUCENT_SWITCH_INTERVAL")
    if switch:
        sys.setswitchinterval(float(switch))
    ctx = ServerContext(settings)
    ae, servers = start_listeners(settings, ctx)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        if os.getppid() == 1:  # the supervisor died (kill -9): do not linger as an orphan
            break
    for server in servers:
        with contextlib.suppress(ValueError, OSError):
            server.shutdown()
    ctx.close()


class WorkerPool:
    """Starts and supervises the DICOM worker processes; restarts one that dies."""

    def __init__(self, config_path: Path, count: int) -> None:
        self.config_path = str(config_path)
        self.count = count if REUSE_PORT else 1
        self._ctx = mp.get_context("spawn")
        self.processes: list[Any] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _spawn(self, index: int) -> Any:
        proc = self._ctx.Process(
            target=worker_main, args=(self.config_path, index), name=f"lucent-dimse-{index}"
        )
        proc.daemon = True
        proc.start()
        return proc

    def start(self) -> None:
        self.processes = [self._spawn(i) for i in range(self.count)]
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="dimse-watch")
        self._monitor.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.processes):
                if not proc.is_alive() and not self._stop.is_set():
                    log.error("DICOM worker %d exited (%s); restarting", i, proc.exitcode)
                    self.processes[i] = self._spawn(i)

    def stop(self) -> None:
        self._stop.set()
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
        for proc in self.processes:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
