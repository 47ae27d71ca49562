"""Listeners: the callbacks told about one kind of change (state, emotion, voice, finished turns).

A listener that fails is logged and the others still hear: an LED bridge that throws must not stop the
turn from being recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

log = logging.getLogger(__name__)

P = ParamSpec("P")


class Listeners(Generic[P]):
    """Callbacks called in the order they were added."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._callbacks: list[Callable[P, None]] = []

    def add(self, callback: Callable[P, None]) -> None:
        """Call `callback` on every change from now on."""
        self._callbacks.append(callback)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell every listener."""
        for callback in list(self._callbacks):
            try:
                callback(*args, **kwargs)
            except Exception:
                log.exception("%s listener failed", self.what)
