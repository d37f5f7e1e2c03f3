"""The server's perfusion analysis process ends when the server is killed (kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

# The "server": starts the analysis worker (its analysis replaced by a long sleep), prints
# the worker's pid and waits.
_SERVER = r"""
import os, subprocess, sys, time
worker = (
    "import sys, time\n"
    "import lucent.perfusion.cli as cli\n"
    "cli.main = lambda argv: time.sleep(120) or 0\n"
    "from server.perfusion import analysis_worker\n"
    "sys.exit(analysis_worker.main(['analyse']))\n"
)
env = {**os.environ, "LUCENT_PERFUSION_PARENT": str(os.getpid())}
proc = subprocess.Popen([sys.executable, "-c", worker], env=env)
print(proc.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(os.name != "posix", reason="the parent watch is POSIX only")
def test_analysis_process_ends_with_a_killed_server() -> None:
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        time.sleep(1.0)
        assert _alive(worker), "the worker should run while the server does"
        server.send_signal(signal.SIGKILL)
        server.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the analysis outlived the killed server"
    finally:
        server.kill()
        server.wait()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
