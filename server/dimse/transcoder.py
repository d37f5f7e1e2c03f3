"""Transcoding for C-GET/C-MOVE sub-operations in helper processes, never on an association
thread: a decode holds the GIL and would stall every association of the DICOM worker.

Why not ``concurrent.futures.ProcessPoolExecutor``: DICOM workers are daemonic
multiprocessing children, and those may not start multiprocessing children of their own
("daemonic processes are not allowed to have children"). So each helper is a plain
``python -m server.dimse.transcoder`` subprocess fed length-prefixed pickles over its
stdin/stdout (bytes in, bytes out: :func:`lucent.dicom.transcode.prepare_part10`). A helper
exits when its stdin closes, so it never outlives its worker, even one killed with -9; a
helper that crashes or hangs in a decoder costs that one instance, and the next call starts
a fresh one. Helpers start lazily (at most ``SIZE``) and stop with the worker
(``multiprocessing.util.Finalize`` runs at a worker's exit and at interpreter exit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Collection
from multiprocessing import util as mp_util
from typing import IO, Any

log = logging.getLogger("lucent.dimse")

#: Helper processes per DICOM worker: two let two associations decode at once.
SIZE = 2
#: A decode that takes longer than this is taken for a hung decoder: the helper is killed.
TIMEOUT_S = 300.0

_HEADER = struct.Struct("<Q")

Result = tuple[bytes | None, str, bool, str]


class HelperError(Exception):
    """The helper process died, hung or answered nonsense (a reason for the log)."""


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    return _read_exact(stream, _HEADER.unpack(header)[0])


class _Helper:
    """One helper process and its pipes; used by one caller at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # import as we do
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.dimse.transcoder"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def call(self, request: tuple[Any, ...], timeout: float) -> Result:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        watchdog = threading.Timer(timeout, self.proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            _write_frame(self.proc.stdin, pickle.dumps(request, pickle.HIGHEST_PROTOCOL))
            answer = _read_frame(self.proc.stdout)
        except OSError as exc:
            raise HelperError(f"helper process unreachable: {exc}") from exc
        finally:
            watchdog.cancel()
        if answer is None:
            code = self.proc.poll()
            why = f"exited with {code}" if code is not None else "closed its output"
            raise HelperError(f"transcoding helper {why} (decoder crash or over {timeout:g} s)")
        result: Result = pickle.loads(answer)
        return result

    def close(self, wait: float = 5.0) -> None:
        """Close stdin (the helper exits at EOF); kill it if it does not within ``wait``."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Transcoder:
    """Up to ``size`` helper processes, started on first use and shared by all threads."""

    def __init__(self, size: int = SIZE, timeout: float = TIMEOUT_S) -> None:
        self.size = size
        self.timeout = timeout
        self._idle: list[_Helper] = []
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()

    def _acquire(self) -> _Helper:
        with self._cond:
            while True:
                if self._closed:
                    raise HelperError("the transcoder is shut down")
                if self._idle:
                    return self._idle.pop()
                if self._started < self.size:
                    self._started += 1
                    break
                self._cond.wait()
        try:
            return _Helper()
        except Exception:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, helper: _Helper, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(helper)
                self._cond.notify()
                return
            self._started -= 1
            self._cond.notify()
        helper.close(wait=1.0)

    def run(self, raw: bytes, own: str, accepted: Collection[str], sop_class_uid: str) -> Result:
        """:func:`lucent.dicom.transcode.prepare_part10` in a helper process. A helper that
        fails is replaced; its instance answers with the reason (never an exception)."""
        try:
            helper = self._acquire()
        except (OSError, HelperError) as exc:
            return None, "", False, f"no transcoding helper: {exc}"
        healthy = False
        try:
            result = helper.call((raw, own, sorted(accepted), sop_class_uid), self.timeout)
            healthy = True
            return result
        except HelperError as exc:
            log.warning("transcoding helper replaced: %s", exc)
            return None, "", False, str(exc)
        finally:
            self._release(helper, healthy)

    def close(self) -> None:
        """Stop every idle helper; one still working stops when its caller gives it back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for helper in idle:
            helper.close()


_shared: Transcoder | None = None
_shared_lock = threading.Lock()


def shared() -> Transcoder:
    """This process's transcoder, created on first use and closed at process exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Transcoder()
            mp_util.Finalize(None, shutdown, exitpriority=10)
        return _shared


def shutdown() -> None:
    """Stop this process's helpers (worker exit; also safe when none was started)."""
    global _shared
    with _shared_lock:
        transcoder, _shared = _shared, None
    if transcoder is not None:
        transcoder.close()


def main() -> None:
    """Helper process: answer one request per frame until stdin closes."""
    from lucent.dicom.transcode import prepare_part10

    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break frames
    try:
        while (frame := _read_frame(requests)) is not None:
            raw, own, accepted, sop_class_uid = pickle.loads(frame)
            _write_frame(answers, pickle.dumps(prepare_part10(raw, own, accepted, sop_class_uid)))
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
