"""The DICOM worker processes: forked from one fork server, replaced when one dies, and
none outlives the server, however it ends (kill -9 of the main process only, SIGTERM to it,
SIGTERM to the whole group as a service manager sends it). Real server subprocess, DCMTK
echoscu/storescu."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.data import samples
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer
from tests.support.peers import dicom_echo_ok


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _gone(pgid: int, timeout: float = 15.0) -> list[int]:
    """What is left of the group after ``timeout`` seconds (empty: all ended)."""
    deadline = time.monotonic() + timeout
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _worker_pids(srv: LucentServer) -> list[tuple[int, int]]:
    """(worker index, pid) of each worker start the log announced, in order."""
    found = re.findall(r"\[worker (\d+)\] .*\(pid (\d+)\)", srv.log_path.read_text())
    return [(int(index), int(pid)) for index, pid in found]


def _both_workers(srv: LucentServer) -> list[tuple[int, int]]:
    """The two workers' (index, pid) once both announced themselves: the server counts as
    started at its first C-ECHO answer, which one worker may give before the other is up."""

    def both() -> list[tuple[int, int]] | None:
        found = _worker_pids(srv)
        return found if len(found) == 2 else None

    return srv.wait_until(both, 30, "both workers")


@pytest.mark.parametrize(
    "how", ["kill -9 of the main process", "SIGTERM to the main process", "SIGTERM to the group"]
)
def test_no_process_outlives_the_server(tmp_path: Path, how: str) -> None:
    srv = LucentServer(tmp_path / "srv", workers=2).start()
    assert srv.proc is not None
    pgid = srv.proc.pid
    try:
        # main process, fork server, 2 workers (and multiprocessing's resource tracker)
        assert len(_group(pgid)) >= 4, _group(pgid)
        if how == "SIGTERM to the group":
            os.killpg(pgid, signal.SIGTERM)
        else:
            os.kill(pgid, signal.SIGKILL if how.startswith("kill") else signal.SIGTERM)
        srv.proc.wait(timeout=30)
        assert _gone(pgid) == [], f"{how}: left running\n{srv.log_tail()}"
        assert "restarting" not in srv.log_path.read_text(), srv.log_tail()
    finally:
        srv.kill()
        for pid in _group(pgid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_the_pool_keeps_storing(tmp_path: Path) -> None:
    ct = samples.write_ct_series(tmp_path / "ct", n=4, rows=16, cols=16)
    with LucentServer(tmp_path / "srv", workers=2) as srv:
        first = _both_workers(srv)
        index, pid = first[0]
        os.kill(pid, signal.SIGKILL)
        srv.wait_until(lambda: len(_worker_pids(srv)) == 3, 30, "a replacement worker")
        assert f"DICOM worker {index} exited (-9); restarting" in srv.log_path.read_text()
        # round robin hands the next associations to both workers, the new one included
        for _ in range(4):
            assert dicom_echo_ok("127.0.0.1", srv.port, srv.ae_title)
        assert storescu("127.0.0.1", srv.port, srv.ae_title, ct).returncode == 0
        assert srv.client().status()["instances"] == len(ct)
        assert _worker_pids(srv)[-1][0] == index
        after = srv.log_path.read_text().split(f"(pid {_worker_pids(srv)[-1][1]})")[-1]
        assert f"[worker {index}] lucent.dimse: ECHOSCU released" in after


def _fork_servers(main_pid: int) -> list[int]:
    """The main process's fork server(s), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == main_pid and b"multiprocessing.forkserver" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_fork_server_restarts_no_worker_that_still_serves(tmp_path: Path) -> None:
    """Outside probe 54: with the fork server killed, every live worker read "exited (255)"
    (its status pipe ended), all were replaced, and the old ones then quit."""
    ct = samples.write_ct_series(tmp_path / "ct", n=4, rows=16, cols=16)
    with LucentServer(tmp_path / "srv", workers=2) as srv:
        assert srv.proc is not None
        before = _both_workers(srv)
        (fork_server,) = _fork_servers(srv.proc.pid)
        os.kill(fork_server, signal.SIGKILL)
        time.sleep(4)  # the supervisor looks every second, after a grace second
        assert "restarting" not in srv.log_path.read_text(), srv.log_tail()
        assert _worker_pids(srv) == before
        assert all(Path(f"/proc/{pid}").exists() for _, pid in before)
        for _ in range(4):  # round robin: both old workers still take associations
            assert dicom_echo_ok("127.0.0.1", srv.port, srv.ae_title)
        assert storescu("127.0.0.1", srv.port, srv.ae_title, ct).returncode == 0
        assert srv.client().status()["instances"] == len(ct)
        # a worker that then really dies is replaced, by a new fork server
        index, pid = before[0]
        os.kill(pid, signal.SIGKILL)
        srv.wait_until(lambda: len(_worker_pids(srv)) == 3, 30, "a replacement worker")
        assert f"DICOM worker {index} exited (status unknown" in srv.log_path.read_text()
        assert len(_fork_servers(srv.proc.pid)) == 1
        assert dicom_echo_ok("127.0.0.1", srv.port, srv.ae_title)
    assert _gone(srv.proc.pid) == [], srv.log_tail()
