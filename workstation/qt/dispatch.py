"""Run a callable on the GUI thread from any thread (loader workers fill pixels off-thread)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal


class _Invoker(QObject):
    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run)

    def _run(self, fn: Callable[[], None]) -> None:
        fn()


_invoker: _Invoker | None = None


def on_gui_thread(fn: Callable[[], None]) -> None:
    """Call now when already on the GUI thread, else queue it there (Qt queued connection)."""
    global _invoker
    if _invoker is None:
        _invoker = _Invoker()
    if QThread.currentThread() is _invoker.thread():
        fn()
    else:
        _invoker.call.emit(fn)
