"""What the disk under a folder costs a durable write: the floor the benchmarks print."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def flush_floor(folder: Path, samples: int = 40) -> float:
    """Median seconds of one durable 4 KB write (write + fdatasync of an existing file) on
    the disk under ``folder``: the device cache flush every acknowledged durable store pays
    at least once. With one association the sender waits for each answer, so this alone
    caps a durable receiver at 1/flush instances/s, however fast the rest is."""
    fd, name = tempfile.mkstemp(prefix="flush-probe-", dir=folder)
    path = Path(name)
    times = []
    try:
        block = os.urandom(4096)
        for _ in range(samples):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)[len(times) // 2]
