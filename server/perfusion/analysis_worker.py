"""``lucent-perfusion analyse`` as a child of the server that does not outlive it.

The server runs each analysis in its own process (``PerfusionService``). After a kill -9
of the server that process ran on to the end as an orphan (outside probe), taking a core
from the restarted server, which redoes the interrupted run at once. A watchdog thread
here ends the analysis as soon as its parent is gone (POSIX: the parent id changes). On
Windows the parent id stays, so there an orphan still runs to its end.

Run as ``python -m server.perfusion.analysis_worker analyse ...`` (the CLI's arguments).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

POLL_SECONDS = 0.5


def _watch(parent: int) -> None:
    """Leave at once (no clean-up: the server's start-up sweeps the scratch folder)."""
    while os.getppid() == parent:
        threading.Event().wait(POLL_SECONDS)
    os._exit(70)  # EX_SOFTWARE: no one is left to read the result


PARENT_ENV = "LUCENT_PERFUSION_PARENT"
"""The server's pid, set by the server: a server killed while this process was still
starting must not be mistaken for the parent (its orphan's parent is then already init)."""


def main(argv: Sequence[str] | None = None) -> int:
    if os.name == "posix":
        parent = int(os.environ.get(PARENT_ENV) or os.getppid())
        threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()
    from lucent.perfusion import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
