"""Where sealed objects live: a small StorageArea interface and its filesystem implementation.

Keys are our own random ids, never a UID or any received string (architecture guide).
Writes are atomic and durable: temp file, fsync, rename, fsync of the folder; a crash leaves
either the whole object or a ``.tmp`` file that start-up sweeps away.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{32}\.[a-z]$")


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

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for i in range(256):
            (root / f"{i:02x}").mkdir(exist_ok=True)
        self._dir_fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="archive-write")

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key

    def put(self, key: str, data: bytes) -> None:
        self.put_all([(key, data)])

    def put_all(self, items: list[tuple[str, bytes | Callable[[], bytes]]]) -> None:
        """Write several objects durably; each folder is fsynced once after the renames.

        The objects are written and flushed in parallel (fsync releases the GIL), so an
        instance's metadata and pixel objects cost one disk flush of latency, not two.
        """
        paths = [self._path(key) for key, _ in items]
        if len(items) > 1:
            list(self._pool.map(self._write_durable, paths, [d for _, d in items]))
        else:
            self._write_durable(paths[0], items[0][1])
        for folder in {p.parent for p in paths}:
            self._fsync_dir(folder)

    @staticmethod
    def _write_durable(path: Path, data: bytes | Callable[[], bytes]) -> None:
        if callable(data):  # produced (sealed) on this writer thread, in parallel
            data = data()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _fsync_dir(self, folder: Path) -> None:
        """Make the rename durable; folder descriptors are kept open (open is costly)."""
        if os.name != "posix":
            return
        with self._lock:
            fd = self._dir_fds.get(folder)
            if fd is None:
                fd = self._dir_fds[folder] = os.open(folder, os.O_RDONLY)
        os.fsync(fd)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> Iterator[str]:
        for path in self.root.glob("*/*"):
            if _KEY.match(path.name):
                yield path.name

    def sweep_temporary(self) -> int:
        """Remove half-written objects left by a crash; returns how many."""
        count = 0
        for path in self.root.glob("*/*.tmp"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def free_bytes(self) -> int:
        """Free space for us on the archive's disk (shutil works on Windows and macOS too)."""
        return shutil.disk_usage(self.root).free
