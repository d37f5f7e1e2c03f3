"""A C-MOVE or C-GET refused before any sub-operation, answered with its own status.

pynetdicom drives a C-MOVE/C-GET handler as a generator and only knows two ways to end it
early: an unknown destination (it answers A801) or a failure status after the number of
sub-operations, which it reports as one failed sub-operation with an empty Failed SOP
Instance UID List (getscu then aborts its release; PS3.4 Table C.4-2 lists only Offending
Element and Error Comment for A900). For a C-MOVE it also associated with the destination
first, so an identifier error towards a destination that is down came back as A801.

A handler raises ``Refused`` before its first yield instead: pynetdicom's ``attempt``
guard catches exceptions there and answers with a fixed status; ours answers the
refusal's status and comment, with no sub-operation counts, and logs one line.
"""

from __future__ import annotations

import logging
from types import TracebackType

from pynetdicom import service_class

from lucent.net import status

log = logging.getLogger("lucent.dimse")
_state = {"installed": False}


class Refused(Exception):
    """End a C-MOVE/C-GET at once with ``status`` and ``comment`` (no sub-operations)."""

    def __init__(self, status: int, comment: str = "") -> None:
        super().__init__(f"0x{status:04X} {comment}")
        self.status = status
        self.comment = comment


def install() -> None:
    """Teach pynetdicom's ``attempt`` guard to answer a ``Refused`` (idempotent)."""
    if _state["installed"]:
        return
    original = service_class.attempt.__exit__

    def __exit__(  # noqa: N807 - the method it replaces
        self: service_class.attempt,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        if not isinstance(exc_val, Refused):
            return original(self, exc_type, exc_val, exc_tb)
        if self._assoc is not None:
            self._assoc.abort = self._assoc._abort_blocking  # type: ignore[method-assign]
        log.info("request refused: %s", exc_val)
        self._rsp.Status = exc_val.status
        if exc_val.comment:
            self._rsp.ErrorComment = status.error_comment(exc_val.comment)
        self._dimse.send_msg(self._rsp, self._cx_id)
        self._success = False
        return True

    service_class.attempt.__exit__ = __exit__  # type: ignore[method-assign]
    _state["installed"] = True
