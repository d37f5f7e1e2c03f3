"""`lucent-workstation` entry point.

The reading workstation (issue 5) is not built yet; the entry point exists so installers and
scripts can rely on the command name, and it says so plainly instead of pretending.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "lucent-workstation: the reading workstation is not available in this build yet; "
        "the server API (lucent-server) and DICOMweb serve the archive meanwhile.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
