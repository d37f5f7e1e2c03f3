"""`lucent-workstation` entry point: the reading workstation (issue 5)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Open the workstation; the GUI stack is imported here so `--help` works without Qt."""
    args = list(sys.argv if argv is None else [sys.argv[0], *argv])
    if "--help" in args or "-h" in args:
        print("usage: lucent-workstation\n\nOpens the Lucent reading workstation: log in to the "
              "local server (started if none runs), browse studies, read images.")  # fmt: skip
        return 0
    try:
        from workstation.qt.app import run
    except ImportError as exc:
        print(f"lucent-workstation: the GUI packages are missing ({exc}); "
              "install lucent[gui]", file=sys.stderr)  # fmt: skip
        return 2
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
