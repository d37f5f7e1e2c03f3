"""Store SCP fast path: storage-only associations served without pynetdicom's reactors.

pynetdicom costs ~3 ms of CPU per received instance (PDU objects, queues and polling threads
per association), as much as our whole ingest path. Most associations a clinic server sees
carry only Storage and Verification, so this acceptor reads the A-ASSOCIATE-RQ itself and,
when nothing else is proposed, serves the association on one thread with plain socket reads
(PS3.8 upper layer, PS3.7 C-STORE/C-ECHO). Any other association — Query/Retrieve, storage
commitment, role selection, user identity — is handed to pynetdicom with the request bytes
pushed back onto the socket, so behaviour there is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom.presentation import QueryRetrievePresentationContexts

from lucent.dicom import transfer_syntaxes
from lucent.net import status as st
from lucent.net import tls, transport
from lucent.net import upper_layer as ul
from server.archive.incoming import IncomingObjects
from server.config import PoolSection, Settings
from server.context import ServerContext, StoreResult
from server.dimse import access, audit_trail

log = logging.getLogger("lucent.dimse")

VERIFICATION = "1.2.840.10008.1.1"
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
ASSOCIATION_PDU_LIMIT = 1 << 20
_ACCEPTED = frozenset(transfer_syntaxes.ACCEPTED)
#: Query/Retrieve SOP classes (C-FIND, C-MOVE, C-GET of every information model).
QUERY_RETRIEVE = frozenset(str(c.abstract_syntax) for c in QueryRetrievePresentationContexts)


class AcceptTrouble:
    """What an accept loop does when accept() fails with the listener still open: out of
    file descriptors (EMFILE/ENFILE, e.g. a flood of idle HTTP clients under ulimit -n 1024)
    makes accept fail at once, again and again. The loop spun on it silently while every
    association was refused; now it says so (once per ``every`` seconds) and backs off."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last = 0.0
        self._count = 0

    def __call__(self, exc: OSError, where: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.error(
                "%s: cannot accept connections (%s; %d time(s) since the last report)",
                where,
                exc,
                self._count,
            )
            self._last, self._count = now, 0
        time.sleep(0.05)


class Abort(Exception):
    """End the association with an A-ABORT; the message says why (logged)."""


def _read_pdu(sock: socket.socket, limit: int) -> tuple[int, bytearray, bytes]:
    try:
        return transport.read_pdu(sock, limit)
    except ValueError as exc:  # unknown PDU type or over the limit
        raise Abort(str(exc)) from exc


class StoreAcceptor:
    """Accepts on one pool's listening socket; one thread per association."""

    def __init__(
        self,
        settings: Settings,
        ctx: ServerContext,
        pool: PoolSection,
        listener: socket.socket | None,
        handoff: Any,
        storage_classes: set[str],
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.ctx = ctx
        self.pool = pool
        self.listener = listener
        self.handoff = handoff
        self.abstract = storage_classes | {VERIFICATION}
        self.pdu_limit = max(settings.dimse.max_pdu, ASSOCIATION_PDU_LIMIT) + 6
        self._stop = threading.Event()

    def serve_connection(self, sock: socket.socket) -> None:
        """Serve one connection accepted elsewhere (the supervisor's round robin)."""
        transport.set_nodelay(sock)
        try:
            address = sock.getpeername()
        except OSError:
            sock.close()
            return
        threading.Thread(
            target=self._serve, args=(sock, address), daemon=True, name="store-assoc"
        ).start()

    def serve_forever(self) -> None:
        assert self.listener is not None
        self.listener.settimeout(0.5)
        trouble = AcceptTrouble()
        while not self._stop.is_set():
            try:
                sock, address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                trouble(exc, f"pool {self.pool.name}")
                continue
            transport.set_nodelay(sock)
            threading.Thread(
                target=self._serve, args=(sock, address), daemon=True, name="store-assoc"
            ).start()

    def shutdown(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.close()

    # ----------------------------------------------------------------- one association
    def _serve(self, sock: socket.socket, address: Any) -> None:
        handed_off = False
        try:
            sock.settimeout(self.settings.dimse.acse_timeout)
            if self.tls_context is not None:
                sock = self._handshake(sock, address)
            pdu_type, body, header = _read_pdu(sock, ASSOCIATION_PDU_LIMIT)
            if pdu_type != ul.A_ASSOCIATE_RQ:
                raise Abort("association must start with A-ASSOCIATE-RQ")
            raw = header + bytes(body)
            try:
                req = ul.parse_associate_rq(raw)
            except ul.ProtocolError as exc:
                if exc.rejection is None:  # malformed: A-ABORT, invalid PDU parameter value
                    sock.sendall(ul.abort(2, 6))
                    log.warning("association from %s aborted: %s", address[0], exc)
                    return
                sock.sendall(ul.associate_rj(*exc.rejection))
                raise Abort(str(exc)) from exc
            if self._needs_full_stack(req):
                try:
                    unknown = self._unknown_query_retrieve_caller(req, address)
                except access.IndexUnavailable:
                    # the index cannot say who the caller is (logged once per outage):
                    # rejected-transient, service provider (presentation), temporary
                    # congestion (PS3.8 9.3.4) - it was an A-ABORT with a traceback
                    sock.sendall(ul.associate_rj(2, 3, 1))
                    return
                if unknown:
                    # rejected-permanent, service user, calling AE title not recognised
                    sock.sendall(ul.associate_rj(1, 1, 3))
                    return
                # PS3.8 9.3.2: only bit 0 of the protocol version is tested; pynetdicom
                # rejected a version with other bits set that the fast path accepts
                transport.push_back(sock, raw[:6] + b"\x00\x01" + raw[8:])
                sock.settimeout(None)
                self.handoff.process_request(sock, address)
                handed_off = True
                return
            self._run(sock, req, address)
        except Abort as exc:
            log.warning("association from %s aborted: %s", address[0], exc)
            with contextlib.suppress(OSError):
                sock.sendall(ul.abort(2, 0))
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.info("association from %s ended: %s", address[0], exc)
        except Exception:
            log.exception("association from %s failed", address[0])
            with contextlib.suppress(OSError):
                sock.sendall(ul.abort(2, 0))
        finally:
            if not handed_off:
                with contextlib.suppress(OSError):
                    sock.close()

    def _handshake(self, sock: socket.socket, address: Any) -> ssl.SSLSocket:
        """TLS before any DICOM byte (PS3.15 B.1); a caller without a trusted certificate
        never reaches the association (logged with the reason)."""
        assert self.tls_context is not None
        try:
            wrapped = self.tls_context.wrap_socket(sock, server_side=True)
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            log.warning(
                "TLS connection from %s to pool %s refused: %s", address[0], self.pool.name, reason
            )
            audit_trail.tls_refused(self.ctx, str(address[0]), self.pool.name, reason)
            raise ConnectionError("TLS handshake failed") from exc
        log.info(
            "TLS %s from %s (certificate '%s') on pool %s",
            wrapped.version(),
            address[0],
            tls.peer_subject(wrapped) or "none",
            self.pool.name,
        )
        return wrapped

    def _unknown_query_retrieve_caller(self, req: ul.AssociateRequest, address: Any) -> bool:
        """An association that proposes only Query/Retrieve (a C-GET's storage contexts
        included) from a caller that may not use it is rejected outright, so the caller is
        told at once and why (findscu, getscu: "Calling AE Title Not Recognized"), not
        refused request by request. An association that also proposes storage towards us
        stays open: storage is open to all (Conformance 4.2.3.5). ``IndexUnavailable``
        while the index database cannot say who the caller is (probe 58)."""
        if not self.settings.dimse.restrict_query_retrieve or not req.contexts:
            return False
        if not any(c.abstract_syntax in QUERY_RETRIEVE for c in req.contexts):
            return False
        # A storage context the caller proposes to be the SCP for carries C-GET
        # sub-operations towards it (getscu proposes its storage classes so): not a store.
        if any(
            c.abstract_syntax not in QUERY_RETRIEVE
            and c.abstract_syntax not in req.scp_role_classes
            for c in req.contexts
        ):
            return False
        return access.query_retrieve_caller(self.ctx, req.calling_ae, str(address[0])) is None

    def _needs_full_stack(self, req: ul.AssociateRequest) -> bool:
        if req.other_user_items:
            return True
        return any(c.abstract_syntax not in self.abstract for c in req.contexts)

    def _run(self, sock: socket.socket, req: ul.AssociateRequest, address: Any) -> None:
        received = audit_trail.Received(req.calling_ae, str(address[0]), self.pool.name)
        try:
            self._associate(sock, req, received)
        finally:
            received.flush(self.ctx)

    def _associate(
        self, sock: socket.socket, req: ul.AssociateRequest, received: audit_trail.Received
    ) -> None:
        accepted: dict[int, tuple[str, str]] = {}
        results = []
        for c in req.contexts:
            # the first syntax the requestor proposes that we accept: its order is its
            # preference (ours forced a needless decompression, or lossy over lossless)
            chosen = next((ts for ts in c.transfer_syntaxes if ts in _ACCEPTED), None)
            if chosen is None:
                results.append((c.id, ul.TRANSFER_NOT_SUPPORTED, ""))
            else:
                results.append((c.id, ul.ACCEPTANCE, chosen))
                accepted[c.id] = (c.abstract_syntax, chosen)
        d = self.settings.dimse
        sock.sendall(
            ul.associate_ac(
                req,
                results,
                max_pdu=d.max_pdu,
                implementation_class_uid=d.implementation_class_uid,
                implementation_version=d.implementation_version_name,
            )
        )
        sock.settimeout(d.network_timeout)
        reader = transport.PduReader(sock, self.pdu_limit)
        receiving = _Receiving(self, sock, req, accepted, received)
        try:
            while True:
                try:
                    pdu_type, body = reader.next()
                except ValueError as exc:  # unknown PDU type or over the limit
                    raise Abort(str(exc)) from exc
                if pdu_type == ul.A_RELEASE_RQ:
                    sock.sendall(ul.release_rp())
                    (log.warning if receiving.refused else log.info)(
                        "%s released after %d instance(s) stored into %s, %d refused",
                        req.calling_ae,
                        receiving.stored,
                        self.pool.name,
                        receiving.refused,
                    )
                    return
                if pdu_type == ul.A_ABORT:
                    log.info("%s aborted the association", req.calling_ae)
                    return
                if pdu_type != ul.P_DATA_TF:
                    raise Abort(f"unexpected PDU type 0x{pdu_type:02X} during the association")
                for ctx_id, control, fragment in ul.iter_pdvs(body):
                    receiving.pdv(ctx_id, control, fragment)
        finally:
            receiving.close()

    def _echo(
        self, sock: socket.socket, req: ul.AssociateRequest, cmd: dict[int, bytes], ctx_id: int
    ) -> None:
        msg_id = ul.command_uint(cmd, 0x00000110) or 0
        rsp = ul.response(C_ECHO_RSP, msg_id, st.SUCCESS, sop_class=VERIFICATION)
        _send_command(sock, req, ctx_id, rsp)

    def _file_meta(
        self, req: ul.AssociateRequest, cmd: dict[int, bytes], transfer_syntax: str
    ) -> bytes:
        """The Part-10 header the archived file starts with (PS3.10 7.1)."""
        d = self.settings.dimse
        return ul.file_meta(
            ul.command_uid(cmd, 0x00000002),
            ul.command_uid(cmd, 0x00001000),
            transfer_syntax,
            d.implementation_class_uid,
            d.implementation_version_name,
            req.calling_ae,
        )

    def _store(
        self,
        sock: socket.socket,
        req: ul.AssociateRequest,
        cmd: dict[int, bytes],
        ctx_id: int,
        data: bytes,
        sha256: str,
        incoming: IncomingObjects | None = None,
    ) -> StoreResult:
        sop_class = ul.command_uid(cmd, 0x00000002)
        sop_instance = ul.command_uid(cmd, 0x00001000)
        msg_id = ul.command_uint(cmd, 0x00000110) or 0
        result = self.ctx.store(
            data,
            pool=self.pool.name,
            source=req.calling_ae,
            expected_sop_class=sop_class,
            expected_sop_instance=sop_instance,
            sha256=sha256,
            incoming=incoming,
        )
        rsp = ul.response(
            C_STORE_RSP,
            msg_id,
            result.status,
            sop_class=sop_class,
            sop_instance=sop_instance,
            error_comment="" if result.ok else result.reason,
        )
        _send_command(sock, req, ctx_id, rsp)
        return result


class _Receiving:
    """One storage association's state between PDVs (PS3.8 E.2): the command being
    assembled, and the instance arriving with its archive objects, written as it comes in."""

    def __init__(
        self,
        acceptor: StoreAcceptor,
        sock: socket.socket,
        req: ul.AssociateRequest,
        accepted: dict[int, tuple[str, str]],
        received: audit_trail.Received,
    ) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.req = req
        self.accepted = accepted
        self.received = received
        self.stored = self.refused = 0
        self._command = bytearray()
        # A BytesIO hands its buffer over as bytes without a copy (getvalue), where
        # bytearray + bytes() copied the whole instance once more into fresh pages: ~1.4 ms
        # of 0.5 MB here, 0.05 ms.
        self._data = io.BytesIO()
        self._digest = hashlib.sha256()  # of the data, hashed between PDUs (the sender's turn)
        self._pending: dict[int, bytes] | None = None
        self._pending_ctx = 0
        self._incoming: IncomingObjects | None = None

    def pdv(self, ctx_id: int, control: int, fragment: memoryview | bytes) -> None:
        """Take one presentation data value; answers go out when a message is complete."""
        if ctx_id not in self.accepted:
            raise Abort(f"PDV on presentation context {ctx_id}, which was not accepted")
        if control & 1:
            self._command_fragment(ctx_id, control, fragment)
        else:
            self._data_fragment(ctx_id, control, fragment)

    def close(self) -> None:
        """Released, aborted or cut mid-instance: nothing half-received stays."""
        if self._incoming is not None:
            self._incoming.abandon()
            self._incoming = None

    def _command_fragment(self, ctx_id: int, control: int, fragment: memoryview | bytes) -> None:
        self._command += fragment
        if not control & 2:
            return
        cmd = ul.parse_command(bytes(self._command))
        self._command.clear()
        field = ul.command_uint(cmd, 0x00000100)
        if field == C_ECHO_RQ:
            self.acceptor._echo(self.sock, self.req, cmd, ctx_id)
            self._pending = None
            return
        if field != C_STORE_RQ:
            raise Abort(f"DIMSE command 0x{field or 0:04X} not supported here")
        if ul.command_uint(cmd, 0x00000800) == 0x0101:
            raise Abort("C-STORE-RQ without a data set")
        self._pending, self._pending_ctx = cmd, ctx_id
        syntax = self.accepted[ctx_id][1]
        meta = self.acceptor._file_meta(self.req, cmd, syntax)
        self._data = io.BytesIO()
        self._data.write(meta)
        self._digest = hashlib.sha256(meta)
        self.close()
        self._incoming = self.acceptor.ctx.incoming_objects(len(meta), syntax)

    def _data_fragment(self, ctx_id: int, control: int, fragment: memoryview | bytes) -> None:
        if self._pending is None or ctx_id != self._pending_ctx:
            raise Abort("data set fragment without a C-STORE-RQ")
        self._data.write(fragment)  # copied out of the reader's buffer
        self._digest.update(fragment)
        if self._incoming is not None:
            self._incoming.feed(self._data, fragment)
        if not control & 2:
            return
        arrived, self._incoming = self._incoming, None  # store() adopts or drops it
        result = self.acceptor._store(
            self.sock,
            self.req,
            self._pending,
            ctx_id,
            self._data.getvalue(),
            self._digest.hexdigest(),
            arrived,
        )
        self.received.add(result)
        if result.ok:
            self.stored += 1
        else:
            self.refused += 1
        self._pending, self._data = None, io.BytesIO()


def _send_command(
    sock: socket.socket, req: ul.AssociateRequest, ctx_id: int, command: bytes
) -> None:
    """A response command in PDUs no longer than the peer's Maximum Length (PS3.8 D.1)."""
    sock.sendall(b"".join(ul.p_data_fragments(ctx_id, command, command=True, max_pdu=req.max_pdu)))
