"""What one component logs while the index database is down or frozen (probe 58).

A server whose PostgreSQL went away logged a ~110-line traceback every 2 s from the perfusion
scanner and every 10 s from the storage commitment retries, the store path one line per
worker process (and none at the next outage), and nothing at all when the database was back:
1,720 lines in 1.5 minutes, none of them saying what IT needs to know. With this helper a
component logs ONE error line (the driver's reason, ``db.unavailable``) when an outage
starts, a reminder at most every ``remind_s`` while it lasts, and ONE info line "index
database available again after N s" at its first operation that succeeds afterwards; the
next outage is logged again. Errors that are not an outage keep their traceback: they are
bugs or damage, and someone has to read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.index import db

#: How often a component says again that the database is still away (seconds).
REMIND_S = 300.0


class OutageLog:
    """The outage state of one component (store path, perfusion scanner, commitment
    retries), thread-safe: the store path calls it from every association's thread.

    ``doing`` says what the component does meanwhile, e.g. "refusing instances (C0FF)".
    """

    def __init__(
        self,
        log: logging.Logger,
        doing: str,
        *,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._doing = doing
        self._remind_s = remind_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began (clock), None: none now
        self._told = 0.0  # when it was last logged

    @property
    def down(self) -> bool:
        """Whether an outage is under way (its first line was logged)."""
        return self._since is not None

    def failed(self, exc: BaseException, what: str) -> str | None:
        """Log an operation that raised ``exc``. An outage (``db.unavailable``): its reason,
        once per outage and then as a reminder; returned. Anything else: ``what`` with the
        traceback, every time; None is returned."""
        reason = db.unavailable(exc)
        if reason is None:
            self._log.error("%s", what, exc_info=exc)
            return None
        self.unavailable(reason)
        return reason

    def unavailable(self, reason: str) -> None:
        """An operation failed because the index database is unavailable (``reason``)."""
        now = self._clock()
        with self._lock:
            since = self._since
            if since is None:
                self._since = self._told = now
            elif now - self._told >= self._remind_s:
                self._told = now
            else:
                return
        if since is None:
            self._log.error("index database unavailable, %s: %s", self._doing, reason)
        else:
            self._log.error(
                "index database still unavailable after %.0f s, %s: %s",
                now - since,
                self._doing,
                reason,
            )

    def available(self) -> None:
        """An operation that needed the index database succeeded: ends an outage, once."""
        if self._since is None:  # the usual case, without the lock: every store calls this
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self._log.info("index database available again after %.0f s", self._clock() - since)
