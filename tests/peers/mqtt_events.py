"""An event sink for backend tests: records every event and lets a test wait (bounded) for one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class EventLog:
    """Callable sink that records backend events in order."""

    def __init__(self, also: Callable[[Any], None] | None = None) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()
        self._also = also

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()
        if self._also is not None:
            self._also(event)

    def of(self, kind: type[T]) -> list[T]:
        """Every recorded event of class `kind`."""
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def next(self, kind: type[T], count: int = 1, timeout: float = 5.0) -> T:
        """The `count`-th event of class `kind`, waiting for it."""
        await self.until(lambda: len(self.of(kind)) >= count, timeout)
        return self.of(kind)[count - 1]
