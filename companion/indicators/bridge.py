"""The ESP32 bridge as the daemon's indicator: state and emotions out, button and microphone in.

A thin adapter over firmware_bridge.link.BridgeLink, which owns reconnecting and re-sending what the
LEDs should show. Follows the xiaozhi firmware's rule that the emotion shows only while speaking: it is
reset to neutral on entering idle, connecting or listening.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from firmware_bridge import protocol
from firmware_bridge.link import BridgeLink
from firmware_bridge.ports import parse_usb_id

from ..config import BridgeSettings, LedSettings
from ..errors import ConfigError
from ..events import DeviceState
from . import BoardInfo, NullIndicator

__all__ = ["BridgeIndicator", "NullIndicator", "parse_color"]

log = logging.getLogger(__name__)

_NEUTRAL_STATES = (DeviceState.IDLE, DeviceState.CONNECTING, DeviceState.LISTENING)
_COLOR = re.compile(r"#?([0-9a-fA-F]{6})")


def parse_color(text: str, where: str = "leds.idle_color") -> tuple[int, int, int]:
    """'#RRGGBB' → (r, g, b); '' → (0, 0, 0); ConfigError naming `where` otherwise."""
    if not text:
        return (0, 0, 0)
    match = _COLOR.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{where}: expected a colour like '#ff8000', got {text!r}")
    value = int(match.group(1), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


class BridgeIndicator:
    """LEDs, button and optional microphone of an ESP32 running the bridge firmware (or the emulator).

    `on_button` gets "press", "double" or "long"; `on_mic_audio` (if given) gets 16 kHz s16le mono PCM,
    and its presence asks the board to stream its microphone. Both are called on the event loop.
    All other methods may be called any time from the loop, connected or not.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        on_button: Callable[[str], None],
        on_mic_audio: Callable[[bytes], None] | None = None,
        *,
        show_emotions: bool = True,
        usb_ids: list[tuple[int, int | None]] | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self.on_button = on_button
        self.on_mic_audio = on_mic_audio
        self.show_emotions = show_emotions
        self.link = BridgeLink(
            port,
            baudrate,
            want_mic=on_mic_audio is not None,
            on_message=self._on_message,
            usb_ids=usb_ids or (),
            timeout_s=timeout_s,
        )
        self.button_presses = 0
        self.mic_blocks = 0

    @classmethod
    def from_settings(
        cls,
        bridge: BridgeSettings,
        leds: LedSettings,
        on_button: Callable[[str], None],
        on_mic_audio: Callable[[bytes], None] | None = None,
    ) -> BridgeIndicator:
        """Built from [bridge] and [leds], with brightness and idle colour already applied."""
        try:
            usb_ids = [parse_usb_id(text) for text in bridge.usb_ids]
        except ValueError as exc:
            raise ConfigError(f"bridge.usb_ids: {exc}") from None
        indicator = cls(
            bridge.port,
            bridge.baudrate,
            on_button,
            on_mic_audio,
            show_emotions=leds.show_emotions,
            usb_ids=usb_ids,
            timeout_s=bridge.timeout_s,
        )
        indicator.set_brightness(leds.brightness)
        if leds.idle_color:
            indicator.set_color(*parse_color(leds.idle_color))
        return indicator

    async def run(self) -> None:
        """The supervised link task: reconnects forever; ends only by cancellation."""
        while True:
            try:
                await self.link.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # BridgeLink.run handles its own failures; this is the last net
                log.exception("bridge: link task failed; restarting it")
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------ state machine → LEDs
    def show_state(self, state: DeviceState, voice_active: bool = False) -> None:
        """Show a device state; `voice_active` brightens listening while voice is detected."""
        if state in _NEUTRAL_STATES:
            self.link.set_emotion("neutral")
        self.link.set_state(str(state.value), voice_active and state is DeviceState.LISTENING)

    def show_emotion(self, name: str) -> None:
        """Tint the speaking animation (one of the 21 names; any other name means no tint)."""
        if self.show_emotions:
            self.link.set_emotion(name)

    def set_volume(self, percent: int) -> None:
        """Show a volume change as a short bar."""
        self.link.set_volume(_clamp(percent))

    def set_brightness(self, percent: int) -> None:
        """LED brightness 0..100 (kept across reconnects)."""
        self.link.set_brightness(_clamp(percent))

    def set_color(self, r: int, g: int, b: int) -> None:
        """Lamp colour while idle; 0, 0, 0 = off (kept across reconnects)."""
        self.link.set_color(_byte(r), _byte(g), _byte(b))

    @property
    def connected(self) -> bool:
        """True while a board with our protocol version is answering."""
        return self.link.connected

    @property
    def board(self) -> BoardInfo | None:
        """The connected board's capabilities, or None."""
        hello = self.link.board
        if hello is None or not self.link.connected:
            return None
        return BoardInfo(
            name=hello.name,
            protocol=hello.version,
            led_count=hello.led_count,
            led_type=protocol.LED_TYPES.get(hello.led_type, f"type-{hello.led_type}"),
            has_button=hello.button,
            has_mic=hello.mic,
            mic_rate=hello.mic_rate,
        )

    def stats(self) -> dict[str, int]:
        """Link counters (connects, dropped frames, lost mic blocks …) plus buttons and mic blocks."""
        counters = self.link.stats()
        counters.update(button_presses=self.button_presses, mic_blocks=self.mic_blocks)
        return counters

    # ------------------------------------------------------------ board → daemon
    def _on_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Button):
            kind = message.kind_name()
            if message.kind not in protocol.BUTTONS:
                log.debug("bridge: ignoring unknown button kind %d", message.kind)
                return
            self.button_presses += 1
            self.on_button(kind)
        elif isinstance(message, protocol.MicAudio):
            board = self.link.board
            if self.on_mic_audio is None or board is None or board.mic_rate != protocol.MIC_RATE:
                return
            self.mic_blocks += 1
            self.on_mic_audio(message.pcm)


def _clamp(percent: int) -> int:
    return max(0, min(100, int(percent)))


def _byte(value: int) -> int:
    return max(0, min(255, int(value)))
