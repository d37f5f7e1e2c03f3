"""`python -m server` is the same as `lucent-server`."""

from server.cli import main

raise SystemExit(main())
