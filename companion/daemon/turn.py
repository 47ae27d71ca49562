"""Turns: one exchange between the user and the agent with the moments that matter for latency, and the
book that numbers them, closes them and tells who listens (telemetry, the runtime's turn count)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

from .listeners import Listeners

log = logging.getLogger(__name__)

MAX_TURN_TEXT = 2000  # characters of a transcript, and of a reply, kept in the turn's record


@dataclass
class Turn:
    """One exchange, with the moments that matter for latency (monotonic seconds of the clock)."""

    number: int
    trigger: str
    started: float
    wall_start: float
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    reply: list[str] = field(default_factory=list)
    emotion: str = ""
    outcome: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    errors: list[str] = field(default_factory=list)
    wake_word: str = ""  # the phrase that opened the turn, if a wake word did

    def mark(self, name: str, when: float) -> None:
        """Record a moment once (the first occurrence counts)."""
        self.marks.setdefault(name, when)

    @property
    def began(self) -> bool:
        """Something happened worth reporting: speech, a transcript, reply audio, or a text turn (not a
        follow-up window nobody used)."""
        reported = {"speech_start", "stt", "first_reply_audio"}
        return self.trigger == "text" or not reported.isdisjoint(self.marks)

    def mark_speech_end(self, last_voice: float) -> None:
        """The user stopped at the last voiced frame (not when the hangover or the server noticed)."""
        if "speech_start" in self.marks:
            self.mark("speech_end", max(last_voice, self.marks["speech_start"]))

    def heard(self, text: str, now: float, last_voice: float) -> None:
        """The server's transcript of what the user said (kept up to MAX_TURN_TEXT characters)."""
        self.mark("stt", now)
        self.mark_speech_end(last_voice)
        self.transcript = text[:MAX_TURN_TEXT]

    def add_reply(self, text: str) -> None:
        """A sentence of the reply's text; all of them together are kept up to MAX_TURN_TEXT characters."""
        room = MAX_TURN_TEXT - sum(map(len, self.reply))
        if text and room > 0:
            self.reply.append(text[:room])

    def close(self, outcome: str, now: float, first_sample_played: float | None) -> None:
        """The turn is over: its outcome, when the reply's first sample played, and its end."""
        self.outcome = outcome
        if first_sample_played is not None and "first_reply_audio" in self.marks:
            self.mark("first_sample_played", first_sample_played)
        self.mark("turn_end", now)

    def offsets_ms(self) -> dict[str, float]:
        """Each mark in milliseconds since the turn started."""
        return {k: round((v - self.started) * 1000, 1) for k, v in self.marks.items()}


class TurnBook:
    """The turn in progress, if any, and the count of those completed; listeners hear each one that
    began once it is closed (a follow-up window nobody used is dropped unreported)."""

    def __init__(self) -> None:
        self.current: Turn | None = None
        self.completed = 0
        self.finished = asyncio.Event()  # set when a reported turn closes; cleared when one opens
        self.listeners: Listeners[[Turn]] = Listeners("turn")
        self._numbers = itertools.count(1)

    def open(self, trigger: str, now: float, wall: float) -> Turn:
        """A new turn becomes the current one (the previous one, if any, is forgotten unreported)."""
        self.current = Turn(next(self._numbers), trigger, now, wall)
        self.finished.clear()
        return self.current

    def close(self, outcome: str, now: float, first_sample_played: float | None) -> Turn | None:
        """End the current turn with `outcome`; the closed turn if it was worth reporting."""
        turn, self.current = self.current, None
        if turn is None or not turn.began:
            return None
        turn.close(outcome, now, first_sample_played)
        if outcome == "completed":
            self.completed += 1
        log.info("turn %d %s: %s", turn.number, outcome, turn.offsets_ms())
        self.listeners(turn)
        self.finished.set()
        return turn
