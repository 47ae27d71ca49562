"""A debounced push button that tells a press, a double press and a long press apart.

Fed with the raw pin level and the time in ms; no I/O, so the firmware and the tests drive the same
code. Runs under CPython and MicroPython.
"""

from firmware_bridge.protocol import BUTTON_DOUBLE, BUTTON_LONG, BUTTON_PRESS

TICKS_MASK = 0x3FFFFFFF
"""MicroPython's time.ticks_ms() wraps at 2**30."""


def elapsed(now: int, then: int) -> int:
    """ms from `then` to `now` on a clock that wraps at 2**30 (time.ticks_ms)."""
    return (now - then) & TICKS_MASK


class ButtonClassifier:
    """Raw levels in, BUTTON_* kinds out.

    A level must hold for `debounce_ms` to count. A release followed by a second press within
    `double_ms` is a double press; a hold of `long_ms` is a long press (reported while still held);
    otherwise a press is reported `double_ms` after its release.
    """

    def __init__(self, debounce_ms: int = 30, double_ms: int = 300, long_ms: int = 800) -> None:
        self.debounce_ms = debounce_ms
        self.double_ms = double_ms
        self.long_ms = long_ms
        self._raw = False
        self._raw_since = 0
        self._down = False
        self._down_at = 0
        self._long_sent = False
        self._second = False
        self._pending_since = -1  # release time of a press that may still become a double

    def update(self, pressed: bool, now: int) -> int:
        """Feed one sample; returns a BUTTON_* kind when one is complete, else 0."""
        pressed = bool(pressed)
        if pressed != self._raw:
            self._raw = pressed
            self._raw_since = now
        stable = elapsed(now, self._raw_since) >= self.debounce_ms
        if stable and pressed and not self._down:
            self._down = True
            self._down_at = now
            self._long_sent = False
            self._second = self._pending_since >= 0
            self._pending_since = -1
            return 0
        if stable and not pressed and self._down:
            self._down = False
            if self._long_sent:
                return 0
            if self._second:
                self._second = False
                return BUTTON_DOUBLE
            self._pending_since = now
            return 0
        held = elapsed(now, self._down_at) if self._down else 0
        if self._down and not self._long_sent and not self._second and held >= self.long_ms:
            self._long_sent = True
            return BUTTON_LONG
        if self._pending_since >= 0 and elapsed(now, self._pending_since) > self.double_ms:
            self._pending_since = -1
            return BUTTON_PRESS
        return 0
