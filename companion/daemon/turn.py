"""One exchange between the user and the agent, with the moments that matter for latency."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def close(self, outcome: str, now: float, first_sample_played: float | None) -> None:
        """The turn is over: its outcome, when the reply's first sample played, and its end."""
        self.outcome = outcome
        if first_sample_played is not None and "first_reply_audio" in self.marks:
            self.mark("first_sample_played", first_sample_played)
        self.mark("turn_end", now)

    def offsets_ms(self) -> dict[str, float]:
        """Each mark in milliseconds since the turn started."""
        return {k: round((v - self.started) * 1000, 1) for k, v in self.marks.items()}
