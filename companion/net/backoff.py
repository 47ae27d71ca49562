"""The one reconnect policy every long-running task uses: capped exponential backoff with jitter.

Each delay is drawn from [d·(1 − jitter), d], not from [0, d] ("full jitter"): a device that just lost
its server should not hammer it again at once, and the spread still keeps a fleet from reconnecting in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays 1, 2, 4 … capped at `cap` seconds, each jittered; `reset()` after a healthy session."""

    initial: float = 1.0
    cap: float = 60.0
    jitter: float = 0.5  # the delay is drawn from [d*(1-jitter), d]
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        base = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.attempt = 0
