"""server.index.outage_log: one line per index database outage, a reminder, and one line
when it is over (probe 58: a traceback every 2 s, nothing when the database was back)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from server.index.outage_log import OutageLog

LOGGER = "lucent.test-outage"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _down() -> OperationalError:
    # what SQLAlchemy raises when connecting failed (no statement): an outage
    return OperationalError(None, None, Exception("connection refused"))


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [
        (r.levelno, r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name == LOGGER
    ]


def test_one_line_per_outage_a_reminder_and_one_line_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = Clock()
    outage = OutageLog(logging.getLogger(LOGGER), "scans wait", remind_s=300, clock=clock)
    outage.available()  # nothing to end: silent
    assert _lines(caplog) == [] and not outage.down
    for _ in range(100):  # a scan every 2 s for 200 s
        assert outage.failed(_down(), "scan failed") == "connection refused"
        clock.t += 2
    assert outage.down
    assert _lines(caplog) == [
        (logging.ERROR, "index database unavailable, scans wait: connection refused", False)
    ]
    clock.t += 100  # 300 s after the first line: one reminder
    outage.failed(_down(), "scan failed")
    outage.failed(_down(), "scan failed")
    assert _lines(caplog)[1:] == [
        (
            logging.ERROR,
            "index database still unavailable after 300 s, scans wait: connection refused",
            False,
        )
    ]
    clock.t += 12
    outage.available()
    outage.available()
    assert _lines(caplog)[2:] == [
        (logging.INFO, "index database available again after 312 s", False)
    ]
    assert not outage.down
    # the next outage is logged again, at once
    caplog.clear()
    clock.t += 5
    outage.unavailable("connection timeout expired")
    assert _lines(caplog) == [
        (logging.ERROR, "index database unavailable, scans wait: connection timeout expired", False)
    ]


def test_an_error_that_is_not_an_outage_keeps_its_traceback_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    outage = OutageLog(logging.getLogger(LOGGER), "scans wait")
    for _ in range(2):
        try:
            raise ValueError("a bug")
        except ValueError as exc:
            assert outage.failed(exc, "scan failed") is None
    assert _lines(caplog) == [(logging.ERROR, "scan failed", True)] * 2
    assert not outage.down
