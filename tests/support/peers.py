"""Real DICOM peers on loopback: DCMTK storescp/dcmqrscp/storescu/echoscu and Orthanc.

Shared by the integration tests and the benchmarks (ARCHITECTURE.md: "real peers on
loopback"), so this module is plain Python with no pytest import. Every launcher is a
context manager that picks its own free port, waits until the peer answers and stops it
(and only it) on exit. Every DCMTK tool runs with ``TCP_NODELAY=1`` in its environment
unless a caller measures Nagle on purpose: DCMTK reads that variable, and Nagle's
algorithm costs ~45 ms per DIMSE message on loopback (issue 2, section 5).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "DcmQrScp",
    "Orthanc",
    "PeerError",
    "StoreResult",
    "StoreScp",
    "dcmtk_tool",
    "dicom_echo_ok",
    "dicom_env",
    "free_port",
    "orthanc_binary",
    "run_storescu",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
#: Default maximum PDU we offer as receiver (DCMTK's ceiling; Conformance 4.2.3.3).
MAX_PDU = 131072


class PeerError(RuntimeError):
    """A peer could not be started or did not answer; the message says why."""


# --------------------------------------------------------------------------- tools


def _is_native_binary(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def dcmtk_tool(name: str) -> str:
    """Absolute path of a DCMTK command-line tool.

    Why not plain ``shutil.which``: pynetdicom installs Python apps with the same names
    (``storescu``, ``echoscu``, ``storescp`` ...) into ``.venv/bin``, which is first on
    PATH inside the virtual environment. ``LUCENT_DCMTK_BIN`` overrides the folder.
    """
    folders: list[str] = []
    if env_dir := os.environ.get("LUCENT_DCMTK_BIN"):
        folders.append(env_dir)
    folders.append("/usr/bin")
    folders.extend(os.environ.get("PATH", "").split(os.pathsep))
    for folder in folders:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_native_binary(candidate):
            return str(candidate)
    raise PeerError(f"DCMTK tool {name!r} not found (install Debian package 'dcmtk')")


def orthanc_binary() -> str:
    """Path of Debian's Orthanc binary (``/usr/sbin/Orthanc``; ``LUCENT_ORTHANC`` overrides)."""
    for candidate in (os.environ.get("LUCENT_ORTHANC"), "/usr/sbin/Orthanc", "Orthanc"):
        if not candidate:
            continue
        found = shutil.which(candidate)
        if found:
            return found
    raise PeerError("Orthanc not found (install Debian package 'orthanc')")


def end_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: DCMTK storescp in the middle of an
    association (or a TLS handshake a refused SCU left half open) can miss SIGTERM for a
    while on a loaded CI machine, and a test's checks, not its clean-up, are the test."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def dicom_env(nodelay: bool = True) -> dict[str, str]:
    """Environment for a DCMTK process: ``TCP_NODELAY=1`` unless measuring Nagle."""
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` now.

    Why not only ``bind(0)``: that returns an ephemeral port, which the kernel also hands
    to outgoing connections (every storescu association takes one), so a port picked that
    way can be taken before the peer binds it. We pick at random below the ephemeral range
    (parallel pytest-xdist workers rarely collide; launchers retry when they do) and never
    hand out the same port twice in one process.
    """
    low, _ = _ephemeral_range()
    lo, hi = 20000, min(low, 32768) - 1
    rng = random.SystemRandom()
    with _port_lock:
        if hi - lo > 1000:
            for _ in range(200):
                port = rng.randint(lo, hi)
                if port not in _handed_out and _bindable(host, port):
                    _handed_out.add(port)
                    return port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 15.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until something accepts TCP connections on host:port.

    Raises PeerError early when ``proc`` (the process meant to listen) has exited, so a
    crashed peer is reported at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"process exited with code {proc.returncode} before {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise PeerError(f"nothing listening on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)


def dicom_echo_ok(
    host: str,
    port: int,
    aet: str,
    *,
    calling_aet: str = "ECHOSCU",
    timeout: float = 10.0,
) -> bool:
    """True when DCMTK ``echoscu`` gets a successful C-ECHO from host:port (called AE ``aet``)."""
    cmd = [
        dcmtk_tool("echoscu"),
        "-aet", calling_aet,
        "-aec", aet,
        "-to", str(max(1, int(timeout))),
        "-ta", str(max(1, int(timeout))),
        "-td", str(max(1, int(timeout))),
        host, str(port),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd, env=dicom_env(), capture_output=True, timeout=timeout + 5, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


# --------------------------------------------------------------------------- processes


class Peer:
    """Common life cycle: own temp folder, one child process in its own session, clean stop.

    The child gets its own session (process group) so that stop() can signal everything it
    forked (dcmqrscp forks per association) without touching any other process.
    """

    name = "peer"
    #: Seconds to wait after SIGTERM before SIGKILL.
    stop_timeout = 15.0
    #: Start attempts (a new free port each time) when the port was taken meanwhile.
    start_attempts = 3

    def __init__(self, workdir: str | os.PathLike[str] | None, host: str) -> None:
        self.host = host
        self._own_dir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix=f"lucent-{self.name}-")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    # subclasses implement these two
    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        wait_for_port(self.host, self.port, timeout, proc=self.proc)

    def _choose_ports(self) -> None:
        self.port = free_port(self.host)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the peer and wait until it answers; retries on a port clash."""
        last: Exception | None = None
        for _ in range(self.start_attempts):
            self._choose_ports()
            cmd, env = self._command()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_ready(timeout)
            except PeerError as exc:
                last = exc
                self._terminate()
                continue
            # it runs in its own session, so it would outlive an interrupted test run
            atexit.register(self.stop)
            return self
        raise PeerError(f"{self.name} did not start: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the peer's log, for error messages a person can act on."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """Stop the peer (SIGTERM, then SIGKILL) and remove its folder if we created it."""
        atexit.unregister(self.stop)
        self._terminate()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StoreScp(Peer):
    """DCMTK ``storescp`` writing every received instance as a plain file into ``output_dir``.

    The reference receiver of the ingest benchmark: no index, no encryption. ``+xa``
    accepts every transfer syntax DCMTK knows, so compressed data is stored as sent, and
    ``-pm`` accepts unknown (private) SOP classes.
    """

    name = "storescp"

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        aet: str = "STORESCP",
        host: str = LOOPBACK,
        nodelay: bool = True,
        max_pdu: int = MAX_PDU,
        bit_preserving: bool = False,
        extra_args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(workdir, host)
        self.aet = aet
        self.output_dir = Path(output_dir) if output_dir else self.workdir / "received"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.nodelay = nodelay
        self.max_pdu = max_pdu
        self.bit_preserving = bit_preserving
        self.extra_args = list(extra_args)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            dcmtk_tool("storescp"),
            "-aet", self.aet,
            "-od", str(self.output_dir),
            "-pdu", str(self.max_pdu),
            "+xa", "-pm", "-dhl",
        ]  # fmt: skip
        if self.bit_preserving:
            cmd.append("+B")
        cmd += [*self.extra_args, str(self.port)]
        return cmd, dicom_env(self.nodelay)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        wait_for_port(self.host, self.port, timeout, proc=self.proc)

    def files(self) -> list[Path]:
        """Files received so far."""
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def clear(self) -> None:
        """Delete every received file (between benchmark rounds)."""
        for path in self.files():
            path.unlink(missing_ok=True)

    def echo_ok(self) -> bool:
        return dicom_echo_ok(self.host, self.port, self.aet)


class Orthanc(Peer):
    """Debian's Orthanc started from a generated JSON config in its own folder.

    Loopback only (``RemoteAccessAllowed`` false), own SQLite index and storage, no plugins,
    DICOM and HTTP on free ports. ``modalities`` maps a symbolic name to (AET, host, port) or
    to Orthanc's object form, so it can C-MOVE / C-STORE to our server. Nagle is off on both
    sides: ``TcpNoDelay`` for its HTTP server and ``TCP_NODELAY=1`` for the DCMTK sockets it
    uses for DICOM.
    """

    name = "orthanc"
    stop_timeout = 20.0

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Sequence[Any] | Mapping[str, Any]] | None = None,
        user: tuple[str, str] | None = None,
        host: str = LOOPBACK,
        nodelay: bool = True,
        config: Mapping[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(workdir, host)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.user = user
        self.nodelay = nodelay
        self.extra_config = dict(config or {})
        self.http_port = 0
        self.config_path = self.workdir / "orthanc.json"

    @property
    def dicom_port(self) -> int:
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _choose_ports(self) -> None:
        self.port = free_port(self.host)
        self.http_port = free_port(self.host)

    def config(self) -> dict[str, Any]:
        """The configuration written for this run (defaults of Orthanc 1.10 elsewhere)."""
        cfg: dict[str, Any] = {
            "Name": f"lucent-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": self.user is not None,
            "RegisteredUsers": dict([self.user]) if self.user else {},
            "DicomModalities": self.modalities,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "StorageCommitmentReportsSize": 100,
            "TcpNoDelay": True,
            "KeepAlive": True,
            "SaveJobs": False,
            "ExecuteLuaEnabled": False,
            "HttpDescribeErrors": True,
        }
        cfg.update(self.extra_config)
        return cfg

    def _command(self) -> tuple[list[str], dict[str, str]]:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        return [orthanc_binary(), str(self.config_path)], dicom_env(self.nodelay)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PeerError(f"Orthanc exited with code {self.proc.returncode}")
            try:
                self.get("/system", timeout=1.0)
                break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise PeerError(f"Orthanc REST {self.url}/system silent after {timeout:.0f} s")
            time.sleep(0.1)
        wait_for_port(self.host, self.port, max(1.0, deadline - time.monotonic()), proc=self.proc)

    # ---- REST helpers (stdlib only, so the benchmark needs nothing extra)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> Any:
        """One REST call; returns decoded JSON (or None for an empty body)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        if self.user:
            token = base64.b64encode(f"{self.user[0]}:{self.user[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data

    def get(self, path: str, *, timeout: float = 60.0) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json.dumps(payload).encode())

    def upload(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Store one DICOM file through REST (POST /instances); returns Orthanc's answer."""
        data = Path(path).read_bytes()
        answer = self.request("POST", "/instances", data, content_type="application/dicom")
        return dict(answer)

    def statistics(self) -> dict[str, Any]:
        return dict(self.get("/statistics"))

    def count_instances(self) -> int:
        return int(self.statistics()["CountInstances"])

    def delete_all(self) -> None:
        """Remove every patient (and so every instance), e.g. between benchmark rounds."""
        for patient in self.get("/patients"):
            self.request("DELETE", f"/patients/{patient}")

    def echo_ok(self) -> bool:
        return dicom_echo_ok(self.host, self.port, self.aet)


class DcmQrScp(Peer):
    """DCMTK ``dcmqrscp``: a second, differently behaving PACS (case-sensitive matching).

    One storage area for ``aet`` that anybody may query and store into; ``peers`` maps a
    symbolic name to (AET, host, port) of move destinations (e.g. our Store SCP). Runs in
    its default fork-per-association mode: DCMTK 3.6.7's ``--single-process`` mode crashes
    (SIGSEGV) when the first association is released. stop() signals the whole process
    group, so forked children go too.
    """

    name = "dcmqrscp"

    def __init__(
        self,
        *,
        aet: str = "DCMQRSCP",
        peers: Mapping[str, tuple[str, str, int]] | None = None,
        host: str = LOOPBACK,
        nodelay: bool = True,
        max_pdu: int = MAX_PDU,
        single_process: bool = False,
        extra_args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(workdir, host)
        self.aet = aet
        self.peers = dict(peers or {})
        self.nodelay = nodelay
        self.max_pdu = max_pdu
        self.single_process = single_process
        self.extra_args = list(extra_args)
        self.storage_dir = self.workdir / "db" / aet
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "dcmqrscp.cfg"

    def config_text(self) -> str:
        """The dcmqrscp.cfg for this run (format of /etc/dcmtk/dcmqrscp.cfg)."""
        hosts = "\n".join(
            f"{name} = ({aet}, {host}, {port})" for name, (aet, host, port) in self.peers.items()
        )
        return (
            f"NetworkTCPPort  = {self.port}\n"
            f"MaxPDUSize      = {self.max_pdu}\n"
            "MaxAssociations = 16\n\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\n\n"
            "VendorTable BEGIN\nVendorTable END\n\n"
            "AETable BEGIN\n"
            f"{self.aet} {self.storage_dir} RW (500, 1024mb) ANY\n"
            "AETable END\n"
        )

    def _command(self) -> tuple[list[str], dict[str, str]]:
        self.config_path.write_text(self.config_text())
        cmd = [dcmtk_tool("dcmqrscp"), "-c", str(self.config_path)]
        if self.single_process:
            cmd.append("-s")
        cmd += [*self.extra_args, str(self.port)]
        return cmd, dicom_env(self.nodelay)

    def add_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
        """Copy files into the storage area and register them in its index (dcmqridx)."""
        copied: list[Path] = []
        for i, src in enumerate(paths):
            dst = self.storage_dir / f"added{i:06d}_{Path(src).name}"
            shutil.copyfile(src, dst)
            copied.append(dst)
        if copied:
            subprocess.run(
                [dcmtk_tool("dcmqridx"), str(self.storage_dir), *map(str, copied)],
                check=True,
                capture_output=True,
            )
        return copied

    def echo_ok(self) -> bool:
        return dicom_echo_ok(self.host, self.port, self.aet)


# --------------------------------------------------------------------------- storescu


@dataclass
class StoreResult:
    """What one run_storescu() call did: wall time, counts and per-file statuses.

    ``statuses`` maps each file to the status text storescu printed ("Success",
    "Refused: OutOfResources", "Failure: <network error>" ...) when it printed one;
    ``codes`` has the numeric DIMSE status per file when run with ``status_codes=True``.
    ``failed`` counts files without a success or warning status (including files never
    sent, e.g. unreadable ones storescu skips).
    """

    wall_s: float
    requested: int
    sent: int
    failed: int
    returncodes: list[int]
    statuses: dict[str, str] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.sent == self.requested

    @property
    def per_second(self) -> float:
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0


def _expand(files_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    items: Iterable[str | os.PathLike[str]]
    items = [files_or_dir] if isinstance(files_or_dir, str | os.PathLike) else files_or_dir
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            out.append(path)
    return out


_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")


def _association_config(files: Sequence[Path], path: Path) -> Path | None:
    """Write a storescu profile that proposes each file's own transfer syntax ("as is").

    Why: without it storescu proposes only uncompressed syntaxes (plus whatever one -x
    option names) and decompresses, or fails on, JPEG 2000 / JPEG-LS / video files. Each
    (SOP class, transfer syntax) pair gets its own presentation context, plus one
    uncompressed context per SOP class as a fallback. Returns None when a file has no
    readable meta header (storescu's own defaults then apply).
    """
    from pydicom.filereader import read_file_meta_info

    pairs: dict[str, set[str]] = {}
    for file in files:
        try:
            meta = read_file_meta_info(file)
            sop = str(meta.MediaStorageSOPClassUID)
            ts = str(meta.TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - any unreadable header means "use defaults"
            return None
        pairs.setdefault(sop, set()).add(ts)
    syntaxes = sorted({ts for tss in pairs.values() for ts in tss} - set(_UNCOMPRESSED))
    contexts: list[str] = []
    for sop, tss in sorted(pairs.items()):
        for ts in sorted(tss - set(_UNCOMPRESSED)):
            contexts.append(f"{sop}\\TS{syntaxes.index(ts)}")
        contexts.append(f"{sop}\\Uncompressed")
    if len(contexts) > 128:
        raise PeerError(f"{len(contexts)} presentation contexts needed, DICOM allows 128")
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += [f"TransferSyntax{i + 1} = {ts}" for i, ts in enumerate(_UNCOMPRESSED)]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Files]"]
    lines += [f"PresentationContext{i + 1} = {pc}" for i, pc in enumerate(contexts)]
    lines += ["[[Profiles]]", "[AsIs]", "PresentationContexts = Files", ""]
    path.write_text("\n".join(lines))
    return path


_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((.*)\)$")
_STATUS = re.compile(r"^D: DIMSE Status\s*: 0x([0-9a-fA-F]{4}): (.*)$")
_FAILED = re.compile(r"^E: Store Failed, file: (.*?):?$")


def _parse_storescu(output: str) -> tuple[dict[str, str], dict[str, int]]:
    """Per-file status text (from -v) and status code (only printed at -d) of storescu."""
    statuses: dict[str, str] = {}
    codes: dict[str, int] = {}
    current: str | None = None
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if m := _SENDING.match(line):
            current = m.group(1)
        elif (m := _RESPONSE.match(line)) and current is not None:
            statuses[current] = m.group(1)
        elif (m := _STATUS.match(line)) and current is not None:
            codes[current] = int(m.group(1), 16)
            statuses[current] = m.group(2)
        elif m := _FAILED.match(line):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            reason = nxt[3:] if nxt.startswith("E: ") else ""
            # a refusal was already recorded from the response; keep that reason
            if statuses.get(m.group(1), "Success") == "Success":
                statuses[m.group(1)] = f"Failure: {reason}".strip()
    return statuses, codes


def _good(status: str, code: int | None) -> bool:
    if code is not None:
        return code == 0 or code & 0xF000 == 0xB000
    return status == "Success" or status.startswith("Warning")


def run_storescu(
    files_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    host: str,
    port: int,
    aet: str = "LUCENT",
    *,
    nodelay: bool = True,
    associations: int = 1,
    calling_aet: str = "STORESCU",
    propose: str = "as-is",
    max_pdu: int = MAX_PDU,
    halt_on_failure: bool = False,
    status_codes: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 600.0,
) -> StoreResult:
    """Send files with DCMTK ``storescu``; N parallel processes = N simultaneous associations.

    ``propose``: "as-is" proposes each file's own transfer syntax (compressed data goes
    out compressed, see _association_config); "uncompressed" uses storescu's defaults.
    Files are split round-robin over the processes; ``wall_s`` runs from the first start
    to the last exit. Statuses come from storescu's ``-v`` output (cheap: one line per file);
    ``status_codes`` switches to ``-d``, which also prints the numeric status (verbose).
    """
    files = _expand(files_or_dir)
    if not files:
        return StoreResult(0.0, 0, 0, 0, [])
    associations = max(1, min(associations, len(files)))
    chunks = [files[i::associations] for i in range(associations)]
    with tempfile.TemporaryDirectory(prefix="lucent-storescu-") as tmp:
        profile = None
        if propose == "as-is":
            profile = _association_config(files, Path(tmp) / "storescu.cfg")
        base = [
            dcmtk_tool("storescu"), "-d" if status_codes else "-v",
            "-aet", calling_aet, "-aec", aet,
            "-pdu", str(max_pdu),
            "-to", "30", "-ta", "30", "-td", "60",
        ]  # fmt: skip
        base += ["-xf", str(profile), "AsIs"] if profile else ["-R"]
        if not halt_on_failure:
            base.append("-nh")
        base += list(extra_args)
        procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        env = dicom_env(nodelay)
        start = time.perf_counter()
        for n, chunk in enumerate(chunks):
            list_file = Path(tmp) / f"out{n}.log"
            with list_file.open("wb") as log:
                cmd = [*base, host, str(port), *map(str, chunk)]
                proc = subprocess.Popen(
                    cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            procs.append((proc, list_file))
        deadline = start + timeout
        for proc, _ in procs:
            try:
                proc.wait(max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - start
        outputs = [log.read_text(errors="replace") for _, log in procs]
    statuses: dict[str, str] = {}
    codes: dict[str, int] = {}
    for out in outputs:
        texts, numbers = _parse_storescu(out)
        statuses.update(texts)
        codes.update(numbers)
    sent = sum(1 for path, text in statuses.items() if _good(text, codes.get(path)))
    return StoreResult(
        wall_s=wall,
        requested=len(files),
        sent=sent,
        failed=len(files) - sent,
        returncodes=[proc.returncode for proc, _ in procs],
        statuses=statuses,
        codes=codes,
        output="\n".join(outputs),
    )


def iter_processes(root_pid: int) -> Iterator[int]:
    """The pid and every descendant pid of ``root_pid`` (scans /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        yield pid
        stack.extend(children.get(pid, ()))


def warm_page_cache(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Read files (folders: every file below) just before a benchmark run, so the sender
    reads them from memory.

    This machine reclaims cold page cache on its own (DAMON, ``kdamond``): files written
    minutes earlier were read from disk again, queued behind a durable receiver's fsyncs,
    so the receiver measured its sender's disk as much as itself (our Store SCP, one
    association: 453/s cold, 625/s warm, same server).
    """
    for root in paths:
        path = Path(root)
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                with f.open("rb") as fh:
                    while fh.read(1 << 20):
                        pass
