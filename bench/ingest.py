"""Ingest benchmark (issue 2, section 5): our Store SCP against DCMTK storescp and Orthanc.

The same N CT instances (512x512 int16, ~0.5 MB) are sent by DCMTK ``storescu`` with one
association and with four parallel associations (TCP_NODELAY=1), and once with defaults
(Nagle on) with one association, to (a) our server (encryption and indexing on), (b) DCMTK
``storescp`` writing plain files, (c) Debian's Orthanc with its default SQLite index, all
in the same run on loopback; our server runs once more with ``archive.sync_writes`` off,
like for like with storescp, which never fsyncs. Every target is started fresh for every
mode so no row pays for (or profits from) the previous one, and the sender's files are read
into memory just before each run (``warm_page_cache``). Prints one table: instances/s,
MB/s, ours/peer and each receiver's peak memory (PSS of the process and its children,
sampled every 50 ms).

Usage: ``.venv/bin/python bench/ingest.py [--count N] [--quick] [--data DIR]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.disk import flush_floor  # noqa: E402
from tests.support.peers import (  # noqa: E402  (needs the repo root on sys.path)
    LOOPBACK,
    Orthanc,
    Peer,
    PeerError,
    StoreScp,
    dcmtk_tool,
    dicom_echo_ok,
    dicom_env,
    free_port,
    iter_processes,
    orthanc_binary,
    run_storescu,
    warm_page_cache,
)

OUR_AET = "LUCENT"
SAMPLE_CONFIG = REPO / "resources" / "lucent-server.sample.toml"


# --------------------------------------------------------------------------- data


def _write_ct_series_local(directory: Path, n: int, rows: int, cols: int) -> list[Path]:
    """Fallback generator (when tests/data/samples.py lacks write_ct_series): one phantom
    computed once with numpy, each slice a cheap roll of it, so disk writes dominate."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r2 = ((x - cols / 2) / (cols * 0.42)) ** 2 + ((y - rows / 2) / (rows * 0.36)) ** 2
    body = np.where(r2 < 1.0, 1064.0, 24.0) + (np.abs(np.sqrt(r2) - 0.85) < 0.04) * 1000.0
    noise = np.random.default_rng(7).normal(0, 12, size=(rows, cols))
    stored = np.round(body + noise).astype("<i2")
    study, series = generate_uid(), generate_uid()
    paths: list[Path] = []
    for i in range(n):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.PatientName, ds.PatientID = "Bench^Ingest", "BENCH-0001"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "CT", 1, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.roll(stored, i % 32, axis=0).tobytes()
        path = directory / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_data(directory: Path, n: int) -> list[Path]:
    """n CT files: the shared generator of tests/data/samples.py when present, else ours."""
    try:
        from tests.data.samples import write_ct_series
    except ImportError:
        return _write_ct_series_local(directory, n, 512, 512)
    return [Path(p) for p in write_ct_series(directory, n, 512, 512)]


# --------------------------------------------------------------------------- memory


def pss_bytes(pid: int) -> int:
    """Proportional set size of pid and all its descendants: a page shared by n processes
    counts 1/n in each (our DICOM workers are forks of one fork server and share its code;
    summed RSS counted those pages once per process). RSS where smaps_rollup is missing."""
    total = 0
    for p in iter_processes(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(ln.split()[1]) for ln in fh if ln.startswith("Pss:")) * 1024
        except (OSError, ValueError, IndexError, StopIteration):
            try:
                with open(f"/proc/{p}/statm") as fh:
                    total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue
    return total


class PeakMemory:
    """Samples pss_bytes(pid) every `interval` s in a thread; `.peak` is the maximum seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, pss_bytes(self.pid))


# --------------------------------------------------------------------------- targets


class OurServer(Peer):
    """``lucent-server run --config CFG`` as a subprocess; ready when C-ECHO succeeds."""

    name = "lucent-server"
    stop_timeout = 30.0
    start_attempts = 1

    def __init__(
        self,
        *,
        max_pdu: int = 131072,
        workers: int = 0,
        nodelay: bool = True,
        workdir: Path | None = None,
        sync_writes: bool = True,
    ) -> None:
        super().__init__(workdir, LOOPBACK)
        self.nodelay = nodelay
        self.sync_writes = sync_writes
        self.aet = OUR_AET
        self.api_port = 0
        self.max_pdu = max_pdu
        self.workers = workers
        self.config_path = self.workdir / "lucent-server.toml"

    def _choose_ports(self) -> None:
        self.port = free_port(self.host)
        self.api_port = free_port(self.host)

    def write_config(self) -> None:
        """Config from the documented sample: only the keys the benchmark must set change."""
        import tomlkit

        doc: Any = tomlkit.parse(SAMPLE_CONFIG.read_text(encoding="utf-8"))
        doc["server"]["data_dir"] = str(self.workdir / "data")
        doc["dimse"]["bind_address"] = self.host
        doc["dimse"]["max_pdu"] = self.max_pdu
        doc["dimse"]["workers"] = self.workers
        doc["archive"]["min_free_mb"] = 256
        doc["archive"]["sync_writes"] = self.sync_writes
        pool = doc["pools"][0]
        pool["ae_title"], pool["port"] = self.aet, self.port
        doc["api"]["port"] = self.api_port
        self.config_path.write_text(tomlkit.dumps(doc), encoding="utf-8")

    def _command(self) -> tuple[list[str], dict[str, str]]:
        exe = REPO / ".venv" / "bin" / "lucent-server"
        if not exe.exists():
            raise PeerError(f"{exe} missing (run `make setup`)")
        self.write_config()
        subprocess.run(
            [str(exe), "create-admin", "--config", str(self.config_path), "--username",
             "bench", "--password-stdin"],
            input="bench-password\n", capture_output=True, text=True, check=True,
        )  # fmt: skip
        return [str(exe), "run", "--config", str(self.config_path)], dicom_env(self.nodelay)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"exited with code {self.proc.returncode}")
            if dicom_echo_ok(self.host, self.port, self.aet, timeout=2):
                return
            time.sleep(0.25)
        raise PeerError(f"no C-ECHO answer on port {self.port} after {timeout:.0f} s")

    def verify(self, count: int, sent: int) -> str:
        """The archive is encrypted, so files cannot be counted: ask the index via the API."""
        from lucent.api.client import LucentClient

        try:
            with LucentClient(f"http://{self.host}:{self.api_port}") as api:
                api.login("bench", "bench-password")
                stored = int(api.status()["instances"])
        except Exception as exc:  # report, do not hide the throughput row
            return f"{sent}/{count} storescu (API: {exc})"
        return f"{stored}/{count} API"


class Target(Protocol):
    host: str
    port: int
    aet: str

    @property
    def pid(self) -> int | None: ...


@dataclass
class Mode:
    label: str
    associations: int
    nodelay: bool


MODES = [
    Mode("1 assoc", 1, True),
    Mode("4 assoc", 4, True),
    Mode("1 assoc, Nagle on", 1, False),
]


@dataclass
class Row:
    target: str
    mode: str
    per_s: float | None = None
    mb_s: float | None = None
    peak_mb: float | None = None
    arrived: str = ""
    note: str = ""
    ratio: str = ""


_WORK: list[Path] = []  # this run's scratch folder, set by main()


def _workdir(name: str) -> Path:
    """A fresh folder for one target run, removed only when the whole benchmark ends.

    Deleting a row's thousands of files just before the next row starts would bill that
    row for them: ext4 without a journal (this kind of machine) scans past every inode
    freed in the last 5-10 s on each file it creates, which measured 40 us per create
    when quiet and 215-395 us right after a large delete.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_WORK[0] if _WORK else None))
    return folder


@contextmanager
def _storescp(nodelay: bool) -> Iterator[tuple[StoreScp, Callable[[int, int], str]]]:
    with StoreScp(max_pdu=131072, nodelay=nodelay, workdir=_workdir("storescp")) as scp:
        yield scp, lambda count, sent: f"{len(scp.files())}/{count} files"


@contextmanager
def _orthanc(nodelay: bool) -> Iterator[tuple[Orthanc, Callable[[int, int], str]]]:
    with Orthanc(aet="ORTHANC", nodelay=nodelay, workdir=_workdir("orthanc")) as orthanc:
        yield orthanc, lambda count, sent: f"{orthanc.count_instances()}/{count} /statistics"


@contextmanager
def _ours(
    nodelay: bool, sync_writes: bool = True
) -> Iterator[tuple[OurServer, Callable[[int, int], str]]]:
    # Our server sets TCP_NODELAY on its own sockets; `nodelay` only shapes its environment.
    server = OurServer(nodelay=nodelay, workdir=_workdir("lucent"), sync_writes=sync_writes)
    try:
        server.start(timeout=90)
    except PeerError as exc:
        tail = [ln for ln in server.log_tail(40).splitlines() if ln.strip()]
        why = tail[-1].strip() if tail else ""
        server.stop()
        first = str(exc).splitlines()[0].removeprefix("lucent-server did not start: ")
        raise PeerError(f"{first}{' — ' + why if why else ''}") from None
    try:
        yield server, server.verify
    finally:
        server.stop()


def _ours_unsynced(nodelay: bool) -> Any:
    return _ours(nodelay, sync_writes=False)


OURS, UNSYNCED = "ours (lucent-server)", "ours, sync_writes off"
TARGETS: list[tuple[str, Callable[[bool], Any]]] = [
    (OURS, _ours),
    # storescp never fsyncs; Orthanc 1.10 does ("SyncStorageArea": true, its default). This
    # row runs our whole path (encryption, index) without the flushes: like for like with
    # storescp, and the difference to the row above is what durability costs here.
    (UNSYNCED, _ours_unsynced),
    ("DCMTK storescp", _storescp),
    ("Orthanc (SQLite)", _orthanc),
]


def run_one(name: str, factory: Callable[[bool], Any], mode: Mode, files: list[Path]) -> Row:
    """Start a fresh target, send every file, verify what arrived, stop it.

    "Nagle on" means DCMTK's defaults on both ends (no TCP_NODELAY for storescu, storescp
    and Orthanc, which uses DCMTK for DICOM and does not set it itself in 1.10): ~20/s.
    """
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    row = Row(name, mode.label)
    os.sync()  # dirty pages of the previous row must not be flushed during this one
    warm_page_cache(files)
    with factory(mode.nodelay) as (target, verify):
        assert target.pid is not None
        with PeakMemory(target.pid) as mem:
            result = run_storescu(
                files,
                target.host,
                target.port,
                target.aet,
                nodelay=mode.nodelay,
                associations=mode.associations,
            )
            time.sleep(0.1)  # let the receiver finish the last write before counting
        row.arrived = verify(len(files), result.sent)
    row.per_s = result.sent / result.wall_s
    row.mb_s = size_mb * result.sent / len(files) / result.wall_s
    row.peak_mb = mem.peak / 2**20
    if result.failed:
        first = next((s for s in result.statuses.values() if s != "Success"), "not sent")
        row.note = f"{result.failed} failed ({first})"
    return row


def _median_row(runs: list[Row]) -> Row:
    """One row for several runs of a target: median rate, highest peak memory, each run's
    rate in the note (a failed run's note wins: it is what must be read)."""
    if len(runs) == 1:
        return runs[0]
    rates = [r.per_s for r in runs if r.per_s]
    middle = sorted(runs, key=lambda r: r.per_s or 0.0)[len(runs) // 2]
    row = Row(runs[0].target, runs[0].mode, middle.per_s, middle.mb_s)
    row.peak_mb = max(r.peak_mb or 0.0 for r in runs)
    row.arrived = middle.arrived
    failed = [r.note for r in runs if r.note]
    row.note = failed[0] if failed else "runs: " + " / ".join(f"{x:,.0f}" for x in rates)
    return row


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[Row], header: list[str]) -> None:
    ours = {r.mode: r for r in rows if r.target == OURS and r.per_s}
    peers = {(r.target, r.mode): r.per_s for r in rows if r.per_s}
    for row in rows:
        mine = ours.get(row.mode)
        if row.target.startswith("ours") or not mine or not row.per_s:
            row.ratio = "—"
        else:
            row.ratio = f"{mine.per_s / row.per_s:.2f}×"  # type: ignore[operator]
        if row.target == UNSYNCED and row.per_s and (not row.note or row.note.startswith("runs")):
            versus = [
                f"{row.per_s / rate:.2f}× {name.split()[-1] if 'DCMTK' in name else 'Orthanc'}"
                for name in ("DCMTK storescp", "Orthanc (SQLite)")
                if (rate := peers.get((name, row.mode)))
            ]
            extra = ("no fsync: " + ", ".join(versus)) if versus else "no fsync"
            row.note = f"{extra}; {row.note}" if row.note else extra
    cols = ["target", "mode", "inst/s", "MB/s", "ours/peer", "peak PSS MB", "arrived", "note"]
    cells = [
        [
            r.target,
            r.mode,
            _fmt(r.per_s),
            _fmt(r.mb_s, 1),
            r.ratio,
            _fmt(r.peak_mb),
            r.arrived,
            r.note,
        ]
        for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    right = {2, 3, 4, 5}

    def line(values: list[str]) -> str:
        return " | ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    for h in header:
        print(h)
    print(line(cols))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(line(c))
    print(
        "ours/peer = our instances/s (durable writes, the first row) ÷ this peer's, same mode; "
        "storescp writes without fsync, Orthanc 1.10 fsyncs each file. "
        "'Nagle on': no TCP_NODELAY for "
        "storescu, storescp and Orthanc (DCMTK defaults); our server sets it on its sockets "
        "regardless. Peak PSS sums the process and its children (a page shared by n "
        "processes counts 1/n in each)."
    )
    sys.stdout.flush()


def _versions() -> str:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return "?"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    dcmtk = first_line([dcmtk_tool("storescu"), "--version"]).replace("$", "").strip()
    try:
        orthanc = first_line([orthanc_binary(), "--version"]).split("/")[-1]
    except PeerError:
        orthanc = "not installed"
    return f"{dcmtk}; {orthanc}"


def _cpu() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="instances per send (500)")
    parser.add_argument("--quick", action="store_true", help="100 instances: a smoke run")
    parser.add_argument("--data", type=Path, help="reuse/keep the generated files here")
    parser.add_argument(
        "--targets",
        default="ours,ours-nosync,storescp,orthanc",
        help="comma-separated subset of ours,ours-nosync,storescp,orthanc",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per target in the Nagle-off modes, interleaved; the median is shown (3)",
    )
    args = parser.parse_args(argv)
    count = 100 if args.quick and args.count == 500 else args.count
    wanted = {t.strip() for t in args.targets.split(",")}
    keys = {OURS: "ours", UNSYNCED: "ours-nosync", "DCMTK storescp": "storescp"}
    keys["Orthanc (SQLite)"] = "orthanc"
    targets = [(n, f) for n, f in TARGETS if keys[n] in wanted]

    tmp = Path(tempfile.mkdtemp(prefix="lucent-bench-ingest-"))
    _WORK[:] = [tmp]
    try:
        data = args.data or tmp / "data"
        files = sorted(data.glob("*.dcm")) if data.is_dir() else []
        if len(files) < count:
            shutil.rmtree(data, ignore_errors=True)
            t0 = time.perf_counter()
            files = make_data(data, count)
            print(f"generated {len(files)} files in {time.perf_counter() - t0:.1f} s", flush=True)
        files = files[:count]
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        rows: list[Row] = []
        unavailable: dict[str, str] = {}
        for mode in MODES:
            # Targets take turns, `repeat` rounds: this machine's disk and CPU drift over a
            # run by tens of percent, and a median of interleaved runs is comparable.
            runs: dict[str, list[Row]] = {}
            for _ in range(max(1, args.repeat) if mode.nodelay else 1):
                for name, factory in targets:
                    if name == UNSYNCED and not mode.nodelay:
                        continue  # the Nagle row is about TCP, not the disk
                    if name in unavailable:
                        continue
                    print(f"… {name}: {mode.label}", file=sys.stderr, flush=True)
                    try:
                        runs.setdefault(name, []).append(run_one(name, factory, mode, files))
                    except PeerError as exc:
                        reason = f"not available: {' '.join(str(exc).split())[:160]}"
                        unavailable[name] = reason
            for name, _factory in targets:
                if name in unavailable:
                    rows.append(Row(name, mode.label, note=unavailable[name]))
                elif name in runs:
                    rows.append(_median_row(runs[name]))
        header = [
            f"Ingest: {len(files)} CT instances, {size_mb / len(files):.2f} MB each "
            f"({size_mb:.0f} MB), DCMTK storescu, loopback, max PDU 131072",
            f"{os.cpu_count()} CPUs ({_cpu()}); {_versions()}",
        ]
        floor = flush_floor(tmp)
        header.append(
            f"disk flush (4 KB write + fdatasync, median of 40): {floor * 1e3:.2f} ms; a "
            f"durable receiver answering one association is capped at {1 / floor:.0f} inst/s"
        )
        print_table(rows, header)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # --data lives outside tmp and is kept
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
