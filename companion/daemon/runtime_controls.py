"""The daemon's own controls behind the MCP device tools: speaker volume and mute (a gain on the
playback path), LEDs through the serial bridge, the emotion shown, status, and reboot.

The emotion has one owner, the conversation: the `set_emotion` tool goes through it, the LEDs follow it
as they follow the agent's emotions, and status reports its value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..audio.speaker import AudioSink
from ..indicators import Indicator
from ..tools.controls import MemoryControls
from ..tools.registry import ToolError
from .clock import Clock, LoopClock
from .conversation import Conversation


@dataclass
class RuntimeControls(MemoryControls):
    """MemoryControls that also act: the speaker's gain, the bridge's LEDs, the conversation's emotion."""

    sink: AudioSink | None = None
    conversation: Conversation | None = None
    indicator: Indicator | None = None
    restart: Callable[[], None] | None = None
    backend_name: str = ""
    clock: Clock = field(default_factory=LoopClock)
    reboot_allowed: bool = True  # False with xiaozhi.reboot_action = "ignore": no server nor tool reboots

    def __post_init__(self) -> None:
        self._apply_gain()

    def _apply_gain(self) -> None:
        if self.sink is not None:
            self.sink.gain = 0.0 if self.muted else (self.volume / 100) ** 2  # loudness is ~ square law

    async def status(self) -> dict[str, Any]:
        """Speaker, LEDs, bridge and connection, in the firmware's status shape plus our own keys."""
        status = await super().status()
        conv = self.conversation
        if conv is not None:
            status["device"] = {"state": conv.state.value, "emotion": conv.emotion}
            status["network"] = {"backend": self.backend_name, "connected": conv.backend.connected}
        indicator = self.indicator
        if indicator is not None:
            board = indicator.board
            status["bridge"] = {
                "connected": indicator.connected,
                "board": getattr(board, "name", "") if board is not None else "",
            }
        return status

    async def set_volume(self, volume: int) -> None:
        await super().set_volume(volume)
        self._apply_gain()
        if self.indicator is not None:
            self.indicator.set_volume(volume)

    async def set_muted(self, muted: bool) -> None:
        await super().set_muted(muted)
        self._apply_gain()

    @property
    def emotion(self) -> str:
        """The conversation's emotion: what the LEDs show and status reports."""
        return self.conversation.emotion if self.conversation is not None else super().emotion

    async def set_emotion(self, emotion: str) -> None:
        """Show `emotion` through the conversation; the LEDs follow it (ToolError without a bridge)."""
        self._bridge()
        if self.conversation is None:
            await super().set_emotion(emotion)
        else:
            self.conversation.set_emotion(emotion)

    async def set_color(self, red: int, green: int, blue: int) -> None:
        bridge = self._bridge()
        await super().set_color(red, green, blue)
        bridge.set_color(red, green, blue)

    async def set_brightness(self, brightness: int) -> None:
        bridge = self._bridge()
        await super().set_brightness(brightness)
        bridge.set_brightness(brightness)

    def _bridge(self) -> Indicator:
        """The LED bridge, or ToolError so the agent hears why nothing lit up."""
        if self.indicator is None or not self.indicator.connected:
            raise ToolError("LED bridge not connected")
        return self.indicator

    async def reboot(self) -> None:
        if not self.reboot_allowed:
            raise ToolError('reboot is turned off on this device (xiaozhi.reboot_action = "ignore")')
        await super().reboot()
        if self.restart is not None:
            # after the tool's reply has gone out, as the firmware waits before rebooting
            self.clock.call_later(1.0, self.restart)
