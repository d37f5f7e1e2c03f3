"""GUI tests: each pytest process (xdist worker) gets its own Xvfb, started before Qt.

`make test` runs `pytest -n 2` without xvfb-run, so the display is ours to start:
`Xvfb -displayfd` picks a free display number itself (no race between workers). Mesa
software GL (LIBGL_ALWAYS_SOFTWARE) serves VTK. Without Xvfb we fall back to Qt's offscreen
platform: the stack viewports draw with QPainter and need no GL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lucent.api.client import LucentClient
from tests.gui import scenes
from tests.integration.dicom_io import storescu
from tests.support.lucent import LucentServer

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _die_with_parent() -> None:
    """Runs in the Xvfb child: SIGTERM it when this pytest process ends (Linux prctl)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_xvfb() -> subprocess.Popen[bytes] | None:
    exe = shutil.which("Xvfb")
    if exe is None:
        return None
    r, w = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(w), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    os.close(w)
    with os.fdopen(r) as pipe:
        number = pipe.readline().strip()
    if not number or proc.poll() is not None:
        proc.kill()
        return None
    os.environ["DISPLAY"] = f":{number}"
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fallback where PR_SET_PDEATHSIG is missing: at interpreter exit, after the tests."""
    if proc.poll() is None:
        proc.terminate()


def _xcb_works() -> bool:
    """Qt's xcb plugin needs libxcb-icccm4/-keysyms1/-cursor0; probe in a child process
    (a failed platform plugin aborts the process, which must not be pytest's)."""
    probe = "from PySide6.QtWidgets import QApplication; QApplication([])"
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def gui_display() -> Iterator[str]:
    """DISPLAY of our own Xvfb (or "offscreen"); must exist before the QApplication."""
    os.environ["LIBGL_ALWAYS_SOFTWARE"] = "1"
    os.environ.setdefault("QT_QUICK_BACKEND", "software")
    proc = _start_xvfb()
    if proc is not None and not _xcb_works():
        proc.terminate()
        proc.wait(timeout=10)
        proc = None
    if proc is not None:
        os.environ["QT_QPA_PLATFORM"] = "xcb"
        yield os.environ["DISPLAY"]
        # Not terminated here: the QApplication outlives the session fixtures, and once a
        # native GL window (VTK) has made Qt open an Xlib connection, losing the X server
        # makes Xlib exit(1) the whole pytest run. Xvfb gets SIGTERM when this process ends.
        if not sys.platform.startswith("linux"):
            atexit.register(_stop, proc)
    else:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        yield "offscreen"


@pytest.fixture
def needs_x(gui_display: str) -> None:
    """Native VTK windows (QVTKRenderWindowInteractor) need an X server; under Xvfb they run."""
    if gui_display == "offscreen":
        pytest.skip("no X server (Xvfb missing or Qt xcb plugin unusable): Qt's offscreen "
                    "platform has no native window for QVTKRenderWindowInteractor")  # fmt: skip


@pytest.fixture(scope="session")
def qapp_cls(gui_display: str) -> type:
    """pytest-qt builds its QApplication from this: depending on the display orders them."""
    from PySide6.QtWidgets import QApplication

    return QApplication


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def scene(server: LucentServer, tmp_path_factory: pytest.TempPathFactory) -> scenes.Scene:
    sc = scenes.build(tmp_path_factory.mktemp("gui-scene"), uuid.uuid4().hex[:6].upper())
    done = storescu("127.0.0.1", server.port, server.ae_title, sc.files)
    assert done.returncode == 0, done.stderr
    return sc


@pytest.fixture
def window(qtbot, api: LucentClient, scene: scenes.Scene) -> Iterator[object]:  # noqa: ANN001
    from workstation.qt.main_window import MainWindow

    win = MainWindow(api)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.cancel_loading()
    win.pool.waitForDone(20000)
