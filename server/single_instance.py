"""One server per data: exclusive locks taken before anything touches the data.

A second `lucent-server run` on a live server's data directory ran start-up recovery on its
files (it removed the running server's prepared archive files) and only then failed on the
busy port (outside probe). A second server with its own data directory but the same archive
folder or SQLite file did the same (probe 16), so every folder that holds the data is
locked: the data directory, the archive folder and the folder of a SQLite index.

Each lock is an OS lock the kernel releases when the process ends, even by kill -9, so there
is no stale lock to clean up by hand. On POSIX it is flock() on the folder itself: no file is
added to the archive (its folder holds objects only). The data directory also gets
``server.lock`` with the pid, for people; the pid of a holder is read from there or, for an
archive folder, from /proc/locks (Linux). Windows locks ``<folder>/server.lock`` (msvcrt).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PID_FILE = "server.lock"


class AlreadyRunning(Exception):
    """Another process holds a folder of the data; the message names it and the pid."""


class Locks:
    """The locks of one server; keep it open while running, ``close()`` releases all."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def acquire(data_dir: Path, others: Iterable[tuple[str, Path]] = ()) -> Locks:
    """Lock ``data_dir`` (created mode 0700 when missing) and each ``(what, folder)`` of
    ``others`` (e.g. ``("archive folder", path)``) for this process. A folder given twice,
    or equal to ``data_dir``, is locked once."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted: list[tuple[str, Path]] = [("data directory", data_dir), *others]
    seen: set[Path] = set()
    fds: list[int] = []
    try:
        for what, folder in wanted:
            folder = folder.expanduser()
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            real = folder.resolve()
            if real in seen:
                continue
            seen.add(real)
            fds.append(_acquire_one(folder, what))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    pid = str(os.getpid()).encode("ascii")
    if os.name == "nt":  # the locked file itself, through the handle that holds it
        os.ftruncate(fds[0], 0)
        os.lseek(fds[0], 0, os.SEEK_SET)
        os.write(fds[0], pid)
    else:
        (data_dir / PID_FILE).write_bytes(pid)
    return Locks(fds)


def _acquire_one(folder: Path, what: str) -> int:
    if os.name == "nt":
        fd = os.open(folder / PID_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    else:
        fd = os.open(folder, os.O_RDONLY)
    try:
        _lock(fd)
    except OSError as exc:
        os.close(fd)
        raise AlreadyRunning(
            f"another Lucent server (pid {_holder(folder)}) is using the {what} {folder}"
        ) from exc
    return fd


def _holder(folder: Path) -> str:
    """The pid that holds ``folder``: from /proc/locks (the folder's inode), else from the
    pid note a data directory has."""
    try:
        inode = folder.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(f":{inode}"):
                return parts[4]
    except OSError:
        pass
    try:
        return (folder / PID_FILE).read_text(encoding="ascii").strip() or "unknown"
    except (OSError, UnicodeError):
        return "unknown"


def _lock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
