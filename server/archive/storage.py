"""Where sealed objects live: a small StorageArea interface and its filesystem implementation.

Keys are our own random ids, never a UID or any received string (architecture guide).
Writes are atomic and durable: temp file, fsync, rename, fsync of the folder; a crash leaves
either the whole object or a ``.tmp`` file that start-up sweeps away.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{32}\.[a-z]$")


class StorageArea(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def keys(self) -> Iterator[str]: ...


def new_key(kind: str) -> str:
    """A fresh storage key: 128 random bits plus a one-letter kind ('m' metadata, 'p' pixels)."""
    return f"{secrets.token_hex(16)}.{kind}"


class FileSystemStorage:
    """Objects under ``root/ab/cd/<key>``; two levels keep folders small at millions of files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(folder)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[str]:
        for path in self.root.glob("*/*/*"):
            if _KEY.match(path.name):
                yield path.name

    def sweep_temporary(self) -> int:
        """Remove half-written objects left by a crash; returns how many."""
        count = 0
        for path in self.root.glob("*/*/*.tmp"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
