"""`lucent-workstation` entry point: the reading workstation (issue 5)."""

from __future__ import annotations

import os
import sys

HELP = """usage: lucent-workstation

Opens the Lucent reading workstation: log in to the server, browse studies, read images.

When nothing answers at the server address of this machine (default http://127.0.0.1:8750),
the workstation starts the bundled server (`lucent-server run --first-run-admin`) and stops
it again when the workstation exits. On a machine without any account the server creates
the administrator 'admin'; the login dialog shows its password once and asks for your own.
A server that must keep receiving images while no workstation runs is run as a service
(or with `lucent-server run`); the workstation then uses it and leaves it running.

The output of a server the workstation starts goes to workstation-server.log in the user's
log folder (Linux: ~/.local/state/lucent/log; the run before: .log.1); the message shown
when that server stops names the file. The one-time administrator password is never
written there. On a server started separately with --first-run-admin, that password is in
the server's own output (its terminal or service log).

Settings (QSettings "Lucent"/"Workstation"): server (the address), server_config (the
config file of a server the workstation starts; default: the server's own default)."""


def display_problem(env: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Why Qt cannot open a window here, or None. Without a display Qt aborted the process
    (SIGABRT, exit 134, "Reinstalling the application may fix this problem", probe 16);
    we say it in one line before Qt starts. Only X11/Wayland systems need a display server;
    a QT_QPA_PLATFORM that needs none (offscreen, eglfs, ...) or that we do not know is left
    to Qt."""
    env = dict(os.environ) if env is None else env
    if platform in ("win32", "darwin"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    x11, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if qpa == "xcb":
        ok = x11
    elif qpa.startswith("wayland"):
        ok = wayland
    elif qpa:
        ok = True  # offscreen, minimal, eglfs, linuxfb, vnc: no display server
    else:
        ok = x11 or wayland
    if ok:
        return None
    return "needs a display: set DISPLAY or run under xvfb-run (e.g. xvfb-run lucent-workstation)"


def main(argv: list[str] | None = None) -> int:
    """Open the workstation; the GUI stack is imported here so `--help` works without Qt."""
    args = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if "--help" in args or "-h" in args:
        print(HELP)
        return 0
    problem = display_problem()
    if problem:
        print(f"lucent-workstation: {problem}", file=sys.stderr)
        return 2
    try:
        from workstation.qt.app import run
    except ImportError as exc:
        print(f"lucent-workstation: the GUI packages are missing ({exc}); "
              "install lucent[gui]", file=sys.stderr)  # fmt: skip
        return 2
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
