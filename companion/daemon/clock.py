"""The one source of time for the conversation: now, wall time and timers.

The daemon uses `LoopClock` (monotonic seconds, asyncio timers); tests use `ManualClock` and move time
by hand, so a 15 s reply timeout is checked in microseconds and always fires in the same order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A pending call; cancelling it after it ran is harmless."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds for turn marks, wall seconds for records, and timers."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The daemon's clock: `time.monotonic` (the speaker's first-sample time uses it too) and the
    running loop's timers."""

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop after `delay` seconds."""
        return asyncio.get_running_loop().call_later(delay, callback)


class _ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: `advance()` runs the timers that fall due, in order."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._due: list[tuple[float, int, _ManualTimer, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        """The current (hand-moved) monotonic time."""
        return self._now

    def wall(self) -> float:
        """Wall time moving with `now()`."""
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Schedule `callback` at now + delay."""
        timer = _ManualTimer()
        heapq.heappush(self._due, (self._now + max(0.0, delay), next(self._order), timer, callback))
        return timer

    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer, _ in self._due if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward, running each timer at its due time (timers they set may fire too)."""
        end = self._now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, timer, callback = heapq.heappop(self._due)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.cancelled = True
                callback()
        self._now = end


class Alarm:
    """At most one pending timer: setting it again replaces the one before (reply timeout, follow-up)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._timer: Timer | None = None

    @property
    def pending(self) -> bool:
        """True while a timer is set and has not fired."""
        return self._timer is not None

    def set(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` after `delay` seconds unless set again or cancelled first."""
        self.cancel()

        def fire() -> None:
            self._timer = None
            callback()

        self._timer = self._clock.call_later(delay, fire)

    def cancel(self) -> None:
        """Forget the pending timer, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
