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

    def mark(self, name: str, when: float) -> None:
        """Record a moment once (the first occurrence counts)."""
        self.marks.setdefault(name, when)

    def offsets_ms(self) -> dict[str, float]:
        """Each mark in milliseconds since the turn started."""
        return {k: round((v - self.started) * 1000, 1) for k, v in self.marks.items()}
