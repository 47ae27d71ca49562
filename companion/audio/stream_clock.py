"""When a sample of a sound stream met the converter (ADC or DAC), on `time.monotonic()`.

The echo canceller pairs each microphone sample with what the speaker played at that moment, so both
streams need a time for every sample. PortAudio reports the converter time of each callback's first
sample, with some jitter; counting samples from an anchor gives a smooth timeline, and the anchor moves
only when the count and the report disagree by more than a tolerance (a stream reopened, a dropout).
"""

from __future__ import annotations

import time
from typing import Any

TOLERANCE_S = 0.05
FOLLOW = 0.05  # share of each report's disagreement taken into the anchor


def converter_time(time_info: Any, field: str, fallback_s: float) -> float:
    """The monotonic time of a callback's first sample from PortAudio's `time_info` (`field` is
    "inputBufferAdcTime" or "outputBufferDacTime"); `now + fallback_s` when the host API reports none.

    PortAudio's ALSA host API reports wall-clock times, others a monotonic clock: the report is mapped
    by the clock it is near, never through the moment the callback ran (which a busy machine delays).
    """
    mono, wall = time.monotonic(), time.time()
    try:
        at = float(getattr(time_info, field))
    except (AttributeError, TypeError, ValueError):
        return mono + fallback_s
    if abs(at - wall) < 1.0:
        return at - (wall - mono)
    if abs(at - mono) < 1.0:
        return at
    return mono + fallback_s


class StreamClock:
    """Sample position → monotonic time for one stream; `mark` is called by the audio thread."""

    def __init__(self, rate: int, tolerance_s: float = TOLERANCE_S, follow: float = FOLLOW) -> None:
        self.rate = rate
        self.tolerance_s = tolerance_s
        self.follow = follow
        self._anchor: tuple[int, float] | None = None  # replaced whole: safe to read from another thread
        self._candidate: tuple[int, float] | None = None  # a jump seen once, taken when the next agrees
        self.reanchors = 0

    def mark(self, position: int, when: float) -> tuple[int, float] | None:
        """Sample `position` met the converter at `when`; returns the new anchor when the timeline
        jumped. One report alone never moves it: a late report on a busy machine is not a jump, so a
        jump is taken when the next report agrees with it (and anchored at its first report)."""
        anchor = self._anchor
        if anchor is None:
            self._anchor = (position, when)
            return self._anchor
        expected = anchor[1] + (position - anchor[0]) / self.rate
        if abs(expected - when) <= self.tolerance_s:
            self._candidate = None
            self._anchor = (position, expected + self.follow * (when - expected))
            return None
        candidate = self._candidate
        if candidate is not None:
            predicted = candidate[1] + (position - candidate[0]) / self.rate
            if abs(predicted - when) <= self.tolerance_s:
                self._candidate = None
                self._anchor = candidate
                self.reanchors += 1
                return candidate
        self._candidate = (position, when)
        return None

    def time_of(self, position: int) -> float | None:
        """When sample `position` met the converter (None before the first mark)."""
        anchor = self._anchor
        if anchor is None:
            return None
        return anchor[1] + (position - anchor[0]) / self.rate
