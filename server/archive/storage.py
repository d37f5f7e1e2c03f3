"""Where sealed objects live: a small StorageArea interface and its filesystem implementation.

Keys are our own random ids, never a UID or any received string (architecture guide).
Two durable write paths, both crash-safe:

- ``put``/``put_all``: temp file, fsync, rename, fsync of the folder; a crash leaves either
  the whole object or a ``.tmp`` file that start-up sweeps away.
- ``reserve`` + ``put_all(..., reserved=True)`` (the ingest path): a background thread
  creates empty files under fresh random keys ahead of need and makes their names durable
  (one folder fsync per batch), so a C-STORE opens an existing file, writes and fdatasyncs
  it: no inode creation, rename or folder fsync while the sender waits. Creating a file
  costs 40 us of kernel CPU on a quiet ext4 and 200-400 us after other files were deleted
  nearby (no-journal ext4 scans past recently freed inodes); the whole write path went
  from ~0.73 to ~0.35 ms per object. A reserved object is only ever referenced by the
  index after its write is durable; after a crash, an empty one (never written) is swept,
  and a partly written one fails authentication and is removed by recovery — the sealed
  format, not a rename, is what makes it all-or-nothing.

How many are kept ready is ``prepare``'s target (``archive.prepared_objects`` for a DICOM
worker): the stock is topped up while no store is asking for files, and during a burst only
kept above a low-water mark, so a burst shorter than the stock creates no file at all. That
matters where creating one is slow: 300-900 us of kernel CPU measured on this kind of
machine's /tmp (ext4 without a journal, many recent deletes), which at four associations was
a tenth of the server's CPU; NTFS with an on-access scanner is slower still.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[0-9a-f]{32}\.[a-z]$")
QUARANTINE = "quarantine"
"""Folder in the archive for objects recovery could not authenticate (never a key prefix)."""
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation in os.write
RESERVED_KINDS = ("m", "p")  # a reserved base has a metadata and a pixel object
BUSY_SECONDS = 0.5
"""A reserve this recent means a burst is on: the stock is then only kept above low water."""
BATCH = 16
"""Spare pairs made per folder fsync."""
log = logging.getLogger("lucent.archive")


class StorageArea(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def keys(self) -> Iterator[str]: ...


def new_key(kind: str, base: str | None = None) -> str:
    """A storage key: 128 random bits plus a one-letter kind ('m' metadata, 'p' pixels).

    Parts of one instance share ``base`` so they land in one folder (one folder fsync).
    """
    return f"{base or secrets.token_hex(16)}.{kind}"


class FileSystemStorage:
    """Objects under ``root/ab/<key>``: 256 folders, created once, so a write never pays a
    mkdir; ext4/NTFS/APFS index large folders, so millions of objects stay fast."""

    def __init__(self, root: Path, *, spares: int = 32, sync: bool = True) -> None:
        """``sync=False`` skips every fdatasync/fsync (config ``archive.sync_writes``): objects
        still survive a kill -9 (the page cache is the kernel's), not a power loss."""
        self.root = root
        self._sync = sync
        root.mkdir(parents=True, exist_ok=True)
        for i in range(256):
            (root / f"{i:02x}").mkdir(exist_ok=True)
        self._dir_fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="archive-write")
        self._spare_target = spares
        self._spares: deque[str] = deque()
        self._spares_low = threading.Event()
        self._spare_maker: threading.Thread | None = None
        self._last_reserve = 0.0
        self._closed = threading.Event()

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    def put(self, key: str, data: bytes) -> None:
        self.put_all([(key, data)])

    def put_all(
        self, items: list[tuple[str, bytes | Callable[[], bytes]]], *, reserved: bool = False
    ) -> None:
        """Write several objects durably (see ``start_put_all``)."""
        self.start_put_all(items, reserved=reserved)()

    def put_here(self, key: str, data: bytes, *, reserved: bool = False) -> None:
        """Write one object durably on the calling thread (small objects: a hand-over to a
        writer thread costs more than the write)."""
        path = self._path(key)
        if (self._write_reserved if reserved else self._write_durable)(path, data):
            self._fsync_dir(path.parent)

    def start_put_all(
        self, items: list[tuple[str, bytes | Callable[[], bytes]]], *, reserved: bool = False
    ) -> Callable[[], None]:
        """Start writing objects; the returned function waits until all are durable.

        The objects are produced (a callable seals on the writer thread), written and
        flushed in parallel (sealing and fsync release the GIL), so an instance's metadata
        and pixel objects cost one disk flush of latency, and the caller can do its own
        work meanwhile. New objects: each folder is fsynced once after the renames.
        ``reserved``: the keys come from ``reserve()``; their files exist, empty, with
        durable names, so no folder needs a flush.
        """
        paths = [self._path(key) for key, _ in items]
        write = self._write_reserved if reserved else self._write_durable
        futures = [
            self._pool.submit(write, path, data)
            for path, (_, data) in zip(paths, items, strict=True)
        ]

        def finish() -> None:
            created = [future.result() for future in futures]
            for folder in {p.parent for p, new in zip(paths, created, strict=True) if new}:
                self._fsync_dir(folder)

        return finish

    # ------------------------------------------------------------------ reserved objects
    def prepare(self, target: int) -> None:
        """Keep ``target`` spare pairs ready from now on (start making them at once)."""
        self._spare_target = max(0, target)
        self._start_spare_maker()
        self._spares_low.set()

    def _start_spare_maker(self) -> None:
        if self._spare_maker is None:
            with self._lock:
                if self._spare_maker is None and not self._closed.is_set():
                    self._spare_maker = threading.Thread(
                        target=self._make_spares_forever, daemon=True, name="archive-spares"
                    )
                    self._spare_maker.start()

    @property
    def _low_water(self) -> int:
        return min(self._spare_target // 2, 2 * BATCH)

    def reserve(self) -> str:
        """A fresh base whose ``.m`` and ``.p`` files exist, empty, with durable names.

        Taken from the spares a background thread keeps ready; made on the spot when none
        is (the first store of a process, or a burst faster than the thread).
        """
        self._start_spare_maker()
        self._last_reserve = time.monotonic()
        try:
            base = self._spares.popleft()
        except IndexError:
            base = self._make_spares(1)[0]
        if len(self._spares) < self._low_water:
            self._spares_low.set()
        return base

    def _make_spares(self, count: int) -> list[str]:
        """Create ``count`` empty pairs in one random folder, then fsync that folder once."""
        prefix = secrets.token_hex(1)
        bases = [prefix + secrets.token_hex(15) for _ in range(count)]
        folder = self.root / prefix
        for base in bases:
            for kind in RESERVED_KINDS:
                fd = os.open(
                    folder / f"{base}.{kind}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o600
                )
                os.close(fd)
        self._fsync_dir(folder)
        return bases

    def _make_spares_forever(self) -> None:
        """Top the stock up to the target while no store asks for files; during a burst,
        only keep it above low water (creating files then takes CPU from the stores)."""
        while not self._closed.is_set():
            self._spares_low.wait(BUSY_SECONDS)
            self._spares_low.clear()
            while not self._closed.is_set() and len(self._spares) < self._spare_target:
                busy = time.monotonic() - self._last_reserve < BUSY_SECONDS
                if busy and len(self._spares) >= self._low_water:
                    break
                try:
                    batch = self._make_spares(min(BATCH, self._spare_target - len(self._spares)))
                except OSError as exc:  # disk full, folder gone: stores make their own
                    log.warning("could not prepare archive files: %s", exc)
                    break
                self._spares.extend(batch)

    def close(self) -> None:
        """Stop preparing files and remove the unused ones (a crash leaves them to the
        start-up sweep)."""
        self._closed.set()
        self._spares_low.set()
        if self._spare_maker is not None:
            self._spare_maker.join(timeout=10)
        while self._spares:
            base = self._spares.popleft()
            for kind in RESERVED_KINDS:
                with contextlib.suppress(OSError):
                    self._path(f"{base}.{kind}").unlink()
        # The writer threads and folder descriptors stay: a store still in flight while the
        # process stops must finish (and answer) normally.

    def _write_durable(self, path: Path, data: bytes | Callable[[], bytes]) -> bool:
        """Temp file, fsync, rename; True: the folder needs an fsync."""
        if callable(data):  # produced (sealed) on this writer thread, in parallel
            data = data()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _BINARY, 0o600)
        try:
            _write_all(fd, data, self._sync)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True

    def _write_reserved(self, path: Path, data: bytes | Callable[[], bytes]) -> bool:
        """Fill a reserved (existing, empty) file in place; False: no folder fsync needed."""
        if callable(data):
            data = data()
        try:
            fd = os.open(path, os.O_WRONLY | _BINARY)
        except FileNotFoundError:  # swept by a concurrent recovery: write it anew
            return self._write_durable(path, data)
        try:
            if os.fstat(fd).st_size:
                raise FileExistsError(f"archive object {path.name} is already written")
            _write_all(fd, data, self._sync)
        finally:
            os.close(fd)
        return False

    def _fsync_dir(self, folder: Path) -> None:
        """Make new names in a folder durable (renames, prepared files); folder descriptors
        are kept open (open is costly)."""
        if os.name != "posix" or not self._sync:
            return
        with self._lock:
            fd = self._dir_fds.get(folder)
            if fd is None:
                fd = self._dir_fds[folder] = os.open(folder, os.O_RDONLY)
        os.fsync(fd)

    def stream(self, key: str) -> ObjectStream:
        """Write a reserved object piece by piece (the Store SCP, while PDUs arrive)."""
        return ObjectStream(self, key)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def location(self, key: str) -> str:
        """Where an object lives, for the server log (never for API callers: a path tells
        an outsider how the server's disk is laid out)."""
        return str(self._path(key))

    def open(self, key: str) -> BinaryIO:
        """Read part of an object (a header) without loading all of it."""
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> Iterator[str]:
        """Every written object (reserved files still empty are not objects yet)."""
        for path in self.root.glob("*/*"):
            if _KEY.match(path.name) and path.parent.name != QUARANTINE and _size(path) > 0:
                yield path.name

    def has_objects(self) -> bool:
        return next(self.keys(), None) is not None

    def quarantine(self, key: str) -> Path:
        """Move an object that failed authentication aside (``quarantine/`` in the archive)
        instead of deleting it: it may be the only copy of an acknowledged instance, and
        someone may still recover it (a restored key file, a forensic look)."""
        folder = self.root / QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / key
        os.replace(self._path(key), target)
        self._fsync_dir(folder)
        return target

    # ------------------------------------------------------------------ doubtful objects
    DOUBTFUL = "doubtful.log"

    def note_doubtful(self, base: str) -> None:
        """Remember that the objects of ``base`` were written for a store whose index
        commit has an unknown outcome (the connection to PostgreSQL died during COMMIT):
        recovery removes them unless an index row references them. One line per base,
        appended (atomic for a line this short, from any worker process)."""
        if not re.fullmatch(r"[0-9a-f]{32}", base):
            raise ValueError(f"invalid storage base {base!r}")
        fd = os.open(self.root / self.DOUBTFUL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{base}\n".encode("ascii"))
        finally:
            os.close(fd)

    def doubtful(self) -> set[str]:
        try:
            text = (self.root / self.DOUBTFUL).read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return set()
        return {line for line in text.split() if re.fullmatch(r"[0-9a-f]{32}", line)}

    def forget_doubtful(self) -> None:
        (self.root / self.DOUBTFUL).unlink(missing_ok=True)

    def sweep_temporary(self) -> tuple[int, int]:
        """Remove what a crash left: (half-written temp files, reserved files never written).

        Only while no process of this server is storing (start-up, ``rebuild-index``).
        """
        half = unused = 0
        for path in self.root.glob("*/*"):
            if path.parent.name == QUARANTINE:
                continue
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                half += 1
            elif _KEY.match(path.name) and _size(path) == 0:
                path.unlink(missing_ok=True)
                unused += 1
        return half, unused

    def free_bytes(self) -> int:
        """Free space for us on the archive's disk (shutil works on Windows and macOS too)."""
        return shutil.disk_usage(self.root).free


class ObjectStream:
    """A reserved object written piece by piece as its bytes arrive, then flushed on a writer
    thread. Disk writeback of each piece starts at once (Linux ``sync_file_range``), so the
    final fdatasync only waits for the tail and the journal: 0.5 MB written then flushed
    took ~0.7 ms here, a 6 KB tail ~0.25 ms. Crash safety is the reserved object's: the
    caller writes the instance's metadata object only after the pixel object is whole and
    the instance valid, and recovery removes a pixel object that has none."""

    def __init__(self, storage: FileSystemStorage, key: str) -> None:
        self._storage = storage
        self._fd = os.open(storage._path(key), os.O_WRONLY | _BINARY)  # missing: caller gives up
        self._offset = 0
        if os.fstat(self._fd).st_size:
            os.close(self._fd)
            raise FileExistsError(f"archive object {key} is already written")

    def write(self, data: bytes | memoryview) -> None:
        _write_all(self._fd, data, False)
        if self._storage._sync and _WRITEBACK is not None:
            _WRITEBACK(self._fd, self._offset, len(data), _SYNC_FILE_RANGE_WRITE)
        self._offset += len(data)

    def finish(self) -> Future[None]:
        """Flush and close on a writer thread; the future is done when the object is durable."""
        return self._storage._pool.submit(self._flush_and_close)

    def _flush_and_close(self) -> None:
        try:
            if self._storage._sync:
                os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def close(self) -> None:
        """Give up before ``finish`` (the caller deletes the object)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _writeback_starter() -> Callable[..., int] | None:
    """libc's ``sync_file_range`` (Linux): starts writeback of a range without waiting."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_WRITEBACK = _writeback_starter()
_SYNC_FILE_RANGE_WRITE = 2


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _write_all(fd: int, data: bytes | bytearray | memoryview, sync: bool) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if sync:
        os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
