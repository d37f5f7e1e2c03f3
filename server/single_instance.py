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

A PostgreSQL index has no folder here: ``server.index.db.lock_index`` holds a session-level
advisory lock on it instead (probe 58: a second server with its own folders on the same
database took over the first server's instances). The index also records which archive it
belongs to, and a start next to another archive is refused (``owner_problem``): the same
trap, one after the other instead of side by side.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

PID_FILE = "server.lock"
ARCHIVE_ID_SUFFIX = ".archive-id"
"""Beside the key file (``master.keys.archive-id``): the archive folder holds objects only,
and the key file is what the archive's objects belong to (they are sealed with its keys)."""


class AlreadyRunning(Exception):
    """Another process holds a folder of the data; the message names it and the pid."""


class Locks:
    """The locks of one server; keep it open while running, ``close()`` releases all."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.others: list[Callable[[], None]] = []

    def add(self, close: Callable[[], None]) -> None:
        """Hold one more lock (e.g. the index database's) until ``close()``."""
        self.others.append(close)

    def close(self) -> None:
        others, self.others = self.others, []
        try:
            for release in reversed(others):
                release()
        finally:
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
        lock_fd(fd)
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


def lock_fd(fd: int) -> None:
    """An exclusive lock on the open file ``fd`` without waiting (POSIX flock, Windows
    msvcrt); OSError when another process holds it. The kernel drops it when the
    process ends, kill -9 too."""
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ------------------------------------------------------------------ which archive an index is
def archive_id_file(key_file: Path) -> Path:
    """Where the archive's id is kept: beside its key file, named after it."""
    key_file = key_file.expanduser()
    return key_file.with_name(key_file.name + ARCHIVE_ID_SUFFIX)


def archive_id(key_file: Path) -> str | None:
    """The id of the archive whose key file is ``key_file``; None before its first start
    with this version (or when the id file was lost)."""
    try:
        text = archive_id_file(key_file).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeError:
        text = ""
    return text or None


def make_archive_id(key_file: Path) -> str:
    """Give the archive of ``key_file`` its id (random, written atomically and durably,
    mode 0600) and return it."""
    path = archive_id_file(key_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(16)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{value}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if os.name == "posix":
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return value


def owner_problem(
    recorded: str | None, found: str | None, *, index: str, archive_dir: Path, key_file: Path
) -> str | None:
    """Why this server must not use the index ``index`` (a description: a file or a URL
    without password): it records the archive ``recorded`` and this server's archive has the
    id ``found``. None when they agree, or when the index records none yet (an index made
    before this check, or a new one: it adopts this archive). Probe 58: a twin server with
    its own archive on the same database took over the first server's instances."""
    if recorded is None or recorded == found:
        return None
    id_file = archive_id_file(key_file)
    ours = f"id {found}" if found else f"no id yet ({id_file} does not exist)"
    return (
        f"the index database {index} belongs to another archive (archive id {recorded}); "
        f"this server's archive {archive_dir} (key file {key_file}) has {ours}. Point "
        "[archive] path and key_file at the archive this index was made for, or use another "
        "database in [index] database_url (`lucent-server rebuild-index` fills an empty one "
        "from this archive). If this archive really is that one (restored from a backup "
        f"without {id_file.name}), write {recorded} into {id_file}. Nothing was changed."
    )
