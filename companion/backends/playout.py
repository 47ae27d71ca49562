"""The z_index sequencer: decides which sentence of a reply plays next, so each plays once and in order.

chat_bot_v3 sends one TTS URL per sentence, tagged with `z_index`, in any order; the downloads finish in
any order too. The sequencer is told what happened (an index was announced, has decodable audio, is
complete, failed; the server ended the turn) and what time it is, and answers with decisions: play this
index now, skip these indices. It does no I/O and reads no clock, so every ordering rule is tested by
plain calls (tests/test_playout*.py).

Rules:
- indices play in increasing order, each at most once, starting at `first_index` (0);
- an index plays as soon as it has decodable audio (its download need not be finished), so the first
  sentence starts while later ones are still downloading;
- an announced index whose download fails (404, timeout, bad MP3) is skipped at once;
- an index that was never announced, while a later one was, is waited for `max_wait_s` (counted from the
  moment it blocks playback), then skipped together with the whole run of missing indices after it;
- a duplicate or late announcement (an index already announced, played or skipped) is ignored;
- after `end_of_turn()`, once everything announced is played or skipped, the reply is finished.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Play:
    """Start handing out the audio of `index` (buffered audio first, then whatever arrives)."""

    index: int


@dataclass(frozen=True)
class Skip:
    """Indices `index`..`last` will never play; `reason` is for the one log line."""

    index: int
    last: int
    reason: str

    @property
    def count(self) -> int:
        """How many indices this skip covers."""
        return self.last - self.index + 1


@dataclass(frozen=True)
class Finished:
    """The server ended the turn and every announced index was played or skipped."""

    played: int
    skipped: int


Decision = Play | Skip | Finished


class _State(enum.Enum):
    ANNOUNCED = "announced"  # URL known, nothing decodable yet
    READY = "ready"  # some audio decodable
    COMPLETE = "complete"  # all of its audio is decoded
    FAILED = "failed"  # download or decode failed


@dataclass
class SequencerStats:
    """Counters for logs and telemetry."""

    played: int = 0
    skipped_missing: int = 0
    skipped_failed: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass
class Sequencer:
    """Orders one reply's sentences by z_index (see the module docstring for the rules)."""

    max_wait_s: float = 1.0
    first_index: int = 0
    stats: SequencerStats = field(default_factory=SequencerStats)

    def __post_init__(self) -> None:
        self._states: dict[int, _State] = {}
        self._reasons: dict[int, str] = {}
        self._cursor = self.first_index  # the next index to decide
        self._current: int | None = None  # the index being handed out (played, not yet complete)
        self._highest = self.first_index - 1  # highest index announced
        self._blocked_since: float | None = None  # when a missing index started holding playback
        self._ended = False
        self._finished = False

    # ------------------------------------------------------------------ inputs
    def announce(self, index: int | None, now: float) -> int | None:
        """A TTS item for `index` arrived; returns the index to fetch, or None to ignore the item.

        An item without z_index (None) takes the next index after everything announced so far (arrival
        order). Duplicates, indices already decided, negative indices and items after the reply finished
        are ignored and counted.
        """
        del now  # the wait for a gap is measured from poll(), when the gap blocks playback
        if self._finished:
            self.stats.late += 1
            return None
        if index is None:
            index = max(self._highest + 1, self._cursor)
        if index < self._cursor or index < 0:
            self.stats.late += 1
            return None
        if index in self._states:
            self.stats.duplicates += 1
            return None
        self._states[index] = _State.ANNOUNCED
        self._highest = max(self._highest, index)
        return index

    def ready(self, index: int) -> None:
        """Some audio of `index` can be decoded now."""
        if self._states.get(index) is _State.ANNOUNCED:
            self._states[index] = _State.READY

    def complete(self, index: int) -> None:
        """All audio of `index` has been decoded (and handed over if it is playing)."""
        if self._states.get(index) in (_State.ANNOUNCED, _State.READY):
            self._states[index] = _State.COMPLETE

    def fail(self, index: int, reason: str) -> None:
        """The download or decode of `index` failed; audio already handed out stays played."""
        if self._states.get(index) in (_State.ANNOUNCED, _State.READY):
            self._states[index] = _State.FAILED
            self._reasons[index] = reason

    def end_of_turn(self) -> None:
        """The server will announce nothing more for this reply (agent_stop)."""
        self._ended = True

    def flush(self) -> None:
        """Barge-in: forget everything; nothing more plays and later announcements are ignored."""
        self._states.clear()
        self._reasons.clear()
        self._current = None
        self._blocked_since = None
        self._cursor = self._highest + 1
        self._finished = True

    # ------------------------------------------------------------------ outputs
    @property
    def current(self) -> int | None:
        """The index whose audio is being handed out, if any."""
        return self._current

    @property
    def finished(self) -> bool:
        """True once Finished was returned."""
        return self._finished

    @property
    def pending(self) -> bool:
        """True while something announced is not yet played or skipped."""
        return self._current is not None or self._cursor <= self._highest

    def next_deadline(self) -> float | None:
        """When poll() must run again even if nothing else happens (a missing index times out)."""
        if self._blocked_since is None:
            return None
        return self._blocked_since + self.max_wait_s

    def poll(self, now: float) -> list[Decision]:
        """The decisions that follow from everything reported so far, in the order to act on them."""
        out: list[Decision] = []
        if self._finished:
            return out
        while True:
            if self._current is not None:
                state = self._states[self._current]
                if state not in (_State.COMPLETE, _State.FAILED):
                    break  # still downloading the sentence that plays
                self._current = None
                self._advance()
                continue
            index = self._cursor
            state_or_none = self._states.get(index)
            if state_or_none is None:
                if index <= self._highest:
                    skip = self._missing(index, now)
                    if skip is None:
                        break
                    out.append(skip)
                    continue
                if self._ended:
                    self._finished = True
                    self._blocked_since = None
                    out.append(Finished(self.stats.played, self._skipped()))
                break
            self._blocked_since = None  # the index that was missing has turned up
            if state_or_none is _State.FAILED:
                reason = self._reasons.pop(index, "failed")
                self.stats.skipped_failed += 1
                out.append(Skip(index, index, reason))
                self._advance()
                continue
            if state_or_none is _State.ANNOUNCED:
                break  # its download is bounded by its own time limit, which ends in fail()
            self._current = index
            self.stats.played += 1
            out.append(Play(index))
        return out

    def _missing(self, index: int, now: float) -> Skip | None:
        if self._blocked_since is None:
            self._blocked_since = now
        if now < self._blocked_since + self.max_wait_s:
            return None
        last = min((i for i in self._states if i > index), default=self._highest + 1) - 1
        self.stats.skipped_missing += last - index + 1
        self._cursor = last + 1
        self._blocked_since = None
        return Skip(index, last, f"never sent (waited {self.max_wait_s:g} s)")

    def _advance(self) -> None:
        self._states.pop(self._cursor, None)
        self._cursor += 1
        self._blocked_since = None

    def _skipped(self) -> int:
        return self.stats.skipped_missing + self.stats.skipped_failed
