"""Indicators: what shows the device's state to a person (LEDs on the ESP32 bridge, or nothing).

They listen to the one state machine and never decide state themselves. `NullIndicator` stands in
when no bridge is configured, so callers never test for None.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from ..events import DeviceState


@dataclass(frozen=True)
class BoardInfo:
    """What a board said about itself in HELLO."""

    name: str
    protocol: int
    led_count: int
    led_type: str
    has_button: bool
    has_mic: bool
    mic_rate: int

    def __str__(self) -> str:
        parts = [f"protocol {self.protocol}", f"{self.led_count} LEDs {self.led_type}"]
        if self.has_button:
            parts.append("button")
        if self.has_mic:
            parts.append(f"mic {self.mic_rate} Hz")
        return f"{self.name} ({', '.join(parts)})"


class Indicator(Protocol):
    """Shows device state, emotion and volume; `run()` is its long-running task."""

    async def run(self) -> None: ...

    def show_state(self, state: DeviceState, voice_active: bool = False) -> None: ...

    def show_emotion(self, name: str) -> None: ...

    def set_volume(self, percent: int) -> None: ...

    def set_brightness(self, percent: int) -> None: ...

    def set_color(self, r: int, g: int, b: int) -> None: ...

    @property
    def connected(self) -> bool: ...

    @property
    def board(self) -> BoardInfo | None: ...


class NullIndicator:
    """No bridge: every call does nothing; `run()` just waits to be cancelled."""

    async def run(self) -> None:
        """Wait until cancelled (a task that ends by itself would look like a failure)."""
        await asyncio.Event().wait()

    def show_state(self, state: DeviceState, voice_active: bool = False) -> None:
        """Nothing to show it on."""

    def show_emotion(self, name: str) -> None:
        """Nothing to show it on."""

    def set_volume(self, percent: int) -> None:
        """Nothing to show it on."""

    def set_brightness(self, percent: int) -> None:
        """Nothing to dim."""

    def set_color(self, r: int, g: int, b: int) -> None:
        """Nothing to colour."""

    @property
    def connected(self) -> bool:
        """Never connected."""
        return False

    @property
    def board(self) -> BoardInfo | None:
        """No board."""
        return None
