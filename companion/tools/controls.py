"""What the device tools act on: the `DeviceControls` interface the runtime provides, and a plain one.

The runtime implements DeviceControls over the real parts (speaker volume, the ESP32 serial bridge for
LEDs, a restart request). The tools know only this interface, so they are tested without hardware and
a board without LEDs just answers the LED tools with an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import EMOTIONS


class DeviceControls(Protocol):
    """The device's adjustable parts, as the MCP tools see them. Every method may raise ToolError."""

    async def status(self) -> dict[str, Any]:
        """The device status object for `self.get_device_status` (firmware shape:
        {"audio_speaker":{"volume":70,…},"led":{…},"network":{…}, …})."""
        ...

    async def set_volume(self, volume: int) -> None:
        """Speaker volume 0..100."""
        ...

    async def set_muted(self, muted: bool) -> None:
        """Mute (True) or unmute (False) the speaker without losing the volume."""
        ...

    async def set_emotion(self, emotion: str) -> None:
        """Show one of EMOTIONS on the LEDs (raise ToolError when no LED bridge is connected)."""
        ...

    async def set_color(self, red: int, green: int, blue: int) -> None:
        """Set the LEDs' base colour, each channel 0..255."""
        ...

    async def set_brightness(self, brightness: int) -> None:
        """LED brightness 0..100."""
        ...

    async def reboot(self) -> None:
        """Schedule a restart of the daemon and return at once, so the tool's reply is still sent
        (the firmware waits 1 s before rebooting)."""
        ...


@dataclass
class MemoryControls:
    """DeviceControls that only remember the values: the null object when nothing is wired, the record
    the runtime's own controls can build on, and what the tests use."""

    volume: int = 70
    muted: bool = False
    color: tuple[int, int, int] = (255, 255, 255)
    brightness: int = 60
    reboots: int = 0
    _emotion: str = field(default="neutral", init=False, repr=False)

    @property
    def emotion(self) -> str:
        """The emotion shown; the runtime's controls read it from the conversation, its one owner."""
        return self._emotion

    async def status(self) -> dict[str, Any]:
        """The remembered values in the firmware's status shape."""
        return {
            "audio_speaker": {"volume": self.volume, "muted": self.muted},
            "led": {
                "emotion": self.emotion,
                "color": "#{:02x}{:02x}{:02x}".format(*self.color),
                "brightness": self.brightness,
            },
        }

    async def set_volume(self, volume: int) -> None:
        """Remember the volume."""
        self.volume = volume

    async def set_muted(self, muted: bool) -> None:
        """Remember the mute state."""
        self.muted = muted

    async def set_emotion(self, emotion: str) -> None:
        """Remember the emotion (one of EMOTIONS)."""
        if emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion {emotion!r}")
        self._emotion = emotion

    async def set_color(self, red: int, green: int, blue: int) -> None:
        """Remember the colour."""
        self.color = (red, green, blue)

    async def set_brightness(self, brightness: int) -> None:
        """Remember the brightness."""
        self.brightness = brightness

    async def reboot(self) -> None:
        """Count the request (there is nothing to restart)."""
        self.reboots += 1
