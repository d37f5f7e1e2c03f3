"""A tiny observer so the Qt-free models can tell views what changed (no Qt signals here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Event:
    """Listeners are called in subscription order; a view subscribes, the model emits."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., None]] = []

    def connect(self, listener: Callable[..., None]) -> None:
        self._listeners.append(listener)

    def disconnect(self, listener: Callable[..., None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, *args: Any) -> None:
        for listener in list(self._listeners):
            listener(*args)
