"""`lucent-console` entry point.

The admin console is not built yet; the entry point exists so installers and
scripts can rely on the command name, and it says so plainly instead of pretending.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "lucent-console: the admin console is not available in this build yet; "
        "the server API (lucent-server) and DICOMweb serve the archive meanwhile.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
