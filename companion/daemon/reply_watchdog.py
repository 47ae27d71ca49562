"""The reply watchdog: a server that stops sending a reply's audio, or never ends it, cannot hold the
device in `speaking`. The conversation tells it when a reply begins and when audio comes; it checks
on the conversation's clock and calls `on_cut(why)` once when the reply must end."""

from __future__ import annotations

from collections.abc import Callable

from .clock import Alarm, Clock

REPLY_STALL_S = 30.0  # speaking with no reply audio this long: the server is stuck, the reply ends
MAX_REPLY_S = 600.0  # no reply holds the device in `speaking` longer than this


class ReplyWatchdog:
    """Watches one reply at a time; `still_playing()` counts audio buffered but not yet heard as alive."""

    def __init__(
        self, alarm: Alarm, clock: Clock, *, speaking: Callable[[], bool], still_playing: Callable[[], bool]
    ) -> None:
        self._alarm = alarm  # shared with the conversation's other timers: one pending at a time
        self._clock = clock
        self._speaking = speaking
        self._still_playing = still_playing
        self._began = self._heard = 0.0
        self._on_cut: Callable[[str], None] = lambda why: None

    def start(self, on_cut: Callable[[str], None]) -> None:
        """A reply began now; `on_cut(why)` is called if it stalls or runs too long."""
        self._began = self._heard = self._clock.now()
        self._on_cut = on_cut
        self._alarm.set(REPLY_STALL_S, self._check)

    def heard(self) -> None:
        """Reply audio came."""
        self._heard = self._clock.now()

    def _check(self) -> None:
        if not self._speaking():
            return
        now = self._clock.now()
        if self._still_playing():  # a burst sent ahead and still playing is not a stall
            self._heard = now
        silent, length = now - self._heard, now - self._began
        if silent < REPLY_STALL_S and length < MAX_REPLY_S:
            self._alarm.set(min(REPLY_STALL_S - silent, MAX_REPLY_S - length), self._check)
            return
        too_long = f"longer than {MAX_REPLY_S:.0f} s"
        why = f"no reply audio for {silent:.0f} s" if silent >= REPLY_STALL_S else too_long
        self._on_cut(why)
