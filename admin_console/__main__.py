"""`lucent-console` entry point.

The admin console is not built yet; the entry point exists so installers and
scripts can rely on the command name, and it says so plainly instead of pretending.
"""

from __future__ import annotations

import sys

HELP = """usage: lucent-console [-h]

The Lucent admin console is not built yet: running this command only says so (exit 2).
Meanwhile administer the server through its API (http://127.0.0.1:8750/api/v1, every route
listed at /openapi.json): accounts (/api/v1/users, /api/v1/groups), remote DICOM nodes
(/api/v1/nodes), lockouts, quotas, the audit trail; and with `lucent-server` on the server
machine (create-admin, check-config, rotate-key, rebuild-index, make-cert)."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(HELP)
        return 0
    print(
        "lucent-console: the admin console is not available in this build yet; "
        "the server API (lucent-server) and DICOMweb serve the archive meanwhile "
        "(lucent-console --help says where).",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
