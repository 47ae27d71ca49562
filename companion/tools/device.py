"""The device's own MCP tools: status, speaker volume and mute, LED emotion/colour/brightness, reboot.

Names follow the firmware's `self.<module>.<action>` convention so servers and prompts written for
xiaozhi boards work unchanged. To add a tool, add one typed function inside `device_tools`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from .controls import DeviceControls
from .registry import Range, ToolRegistry

Emotion = Literal[
    "neutral", "happy", "laughing", "funny", "sad", "angry", "crying",
    "loving", "embarrassed", "surprised", "shocked", "thinking", "confident", "confused",
    "winking", "cool", "relaxed", "delicious", "kissy", "sleepy", "silly",
]  # fmt: skip  # the 21 names of companion.events.EMOTIONS (a test keeps them equal)

Channel = Annotated[int, Range(0, 255)]


def device_tools(controls: DeviceControls, *, leds: bool = True) -> ToolRegistry:
    """The registry of built-in tools acting on `controls`; `leds=False` leaves out the LED tools
    (no serial bridge configured)."""
    registry = ToolRegistry()

    @registry.tool("self.get_device_status")
    async def get_device_status() -> dict[str, Any]:
        """Provides the real-time status of the device: speaker volume and mute, LED emotion, colour
        and brightness.
        Use this tool for:
        1. Answering questions about the current state (e.g. what is the speaker volume?)
        2. As the first step before changing something (e.g. turning the volume up or down)."""
        return await controls.status()

    @registry.tool("self.audio_speaker.set_volume")
    async def set_volume(
        volume: Annotated[int, Range(0, 100), "Volume, 0 (silent) to 100 (loudest)"],
    ) -> bool:
        """Set the volume of the audio speaker. If the current volume is unknown, call
        `self.get_device_status` first and then this tool."""
        await controls.set_volume(volume)
        return True

    @registry.tool("self.audio_speaker.mute")
    async def mute(muted: Annotated[bool, "true to mute the speaker, false to unmute it"] = True) -> bool:
        """Mute or unmute the audio speaker; the volume is kept for when it is unmuted."""
        await controls.set_muted(muted)
        return True

    if leds:

        @registry.tool("self.led.set_emotion")
        async def set_emotion(emotion: Annotated[Emotion, "The emotion to show"]) -> bool:
            """Show an emotion on the device's LEDs (an animation and colour for each emotion)."""
            await controls.set_emotion(emotion)
            return True

        @registry.tool("self.led.set_color")
        async def set_color(red: Channel, green: Channel, blue: Channel) -> bool:
            """Set the base colour of the device's LEDs.

            Args:
                red: red channel, 0 to 255
                green: green channel, 0 to 255
                blue: blue channel, 0 to 255
            """
            await controls.set_color(red, green, blue)
            return True

        @registry.tool("self.led.set_brightness")
        async def set_brightness(
            brightness: Annotated[int, Range(0, 100), "Brightness, 0 (off) to 100 (brightest)"],
        ) -> bool:
            """Set the brightness of the device's LEDs."""
            await controls.set_brightness(brightness)
            return True

    @registry.tool("self.reboot", user_only=True)
    async def reboot() -> bool:
        """Reboot the system (restarts the companion daemon)."""
        await controls.reboot()
        return True

    return registry
