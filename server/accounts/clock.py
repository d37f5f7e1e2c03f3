"""The accounts clock: naive UTC like the index, in one place so tests can move time on."""

from __future__ import annotations

from datetime import datetime

from server.index.records import now as _index_now

_offset_seconds = 0.0


def now() -> datetime:
    """Current naive-UTC time plus any offset a test has applied with ``advance``."""
    from datetime import timedelta

    return _index_now() + timedelta(seconds=_offset_seconds)


def advance(seconds: float) -> None:
    """Move the accounts clock forward (tests of expiry and idle logoff; never in production)."""
    global _offset_seconds
    _offset_seconds += seconds


def reset() -> None:
    global _offset_seconds
    _offset_seconds = 0.0
