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
    "inputBufferAdcTime" or "outputBufferDacTime"); `now + fallback_s` when the host API reports none."""
    now = time.monotonic()
    try:
        current = float(time_info.currentTime)
        at = float(getattr(time_info, field))
    except (AttributeError, TypeError, ValueError):
        return now + fallback_s
    if current <= 0 or at <= 0 or abs(at - current) > 1.0:
        return now + fallback_s
    return now + (at - current)


class StreamClock:
    """Sample position → monotonic time for one stream; `mark` is called by the audio thread."""

    def __init__(self, rate: int, tolerance_s: float = TOLERANCE_S, follow: float = FOLLOW) -> None:
        self.rate = rate
        self.tolerance_s = tolerance_s
        self.follow = follow
        self._anchor: tuple[int, float] | None = None  # replaced whole: safe to read from another thread
        self.reanchors = 0

    def mark(self, position: int, when: float) -> bool:
        """Sample `position` met the converter at `when`; True when this moved the anchor."""
        anchor = self._anchor
        if anchor is not None:
            expected = anchor[1] + (position - anchor[0]) / self.rate
            if abs(expected - when) <= self.tolerance_s:
                self._anchor = (position, expected + self.follow * (when - expected))
                return False
            self.reanchors += 1
        self._anchor = (position, when)
        return True

    def time_of(self, position: int) -> float | None:
        """When sample `position` met the converter (None before the first mark)."""
        anchor = self._anchor
        if anchor is None:
            return None
        return anchor[1] + (position - anchor[0]) / self.rate
