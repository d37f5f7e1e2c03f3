"""One server per data directory: an exclusive lock taken before anything touches the data.

A second `lucent-server run` on a live server's data directory ran start-up recovery on its
files (it removed the running server's prepared archive files) and only then failed on the
busy port (outside probe). The lock is an OS file lock (flock, or msvcrt on Windows) on
``<data_dir>/server.lock``: the kernel releases it when the process ends, even by kill -9,
so there is no stale lock to clean up by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


class AlreadyRunning(Exception):
    """Another process holds the data directory; the message names it."""


def acquire(data_dir: Path) -> IO[str]:
    """Lock ``data_dir`` for this process; keep the returned file open while running."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "server.lock"
    handle = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held for the process life
    try:
        _lock(handle)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"another Lucent server (pid {holder}) is using the data directory {data_dir}"
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _lock(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
