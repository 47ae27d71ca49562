"""The daemon's device controls: the emotion has one owner (the conversation), the LEDs follow it, and
status reports that one value; the reboot waits on the clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from companion.audio.endpointer import Endpointer
from companion.config import AudioSettings, VadSettings
from companion.daemon.clock import ManualClock
from companion.daemon.conversation import Conversation
from companion.daemon.runtime import follow_conversation
from companion.daemon.runtime_controls import RuntimeControls
from companion.events import Connected, DeviceState, Emotion, SpeechStarted
from companion.indicators import BoardInfo
from companion.tools import ToolError, ToolServer
from tests.conversation_edges import RecordingBackend, RecordingSink


class RecordingIndicator:
    """An LED bridge that keeps what it was asked to show."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.board: BoardInfo | None = None
        self.emotions: list[str] = []
        self.states: list[str] = []

    async def run(self) -> None:
        return None

    def show_state(self, state: DeviceState, voice_active: bool = False) -> None:
        self.states.append(state.value)

    def show_emotion(self, name: str) -> None:
        self.emotions.append(name)

    def set_volume(self, percent: int) -> None:
        pass

    def set_brightness(self, percent: int) -> None:
        pass

    def set_color(self, r: int, g: int, b: int) -> None:
        pass


def wired(connected: bool = True) -> tuple[RuntimeControls, Conversation, RecordingIndicator, ManualClock]:
    clock = ManualClock()
    conv = Conversation(
        RecordingBackend(), RecordingSink(), Endpointer(VadSettings()), AudioSettings(), clock=clock
    )
    indicator = RecordingIndicator(connected)
    follow_conversation(indicator, conv)
    controls = RuntimeControls(conversation=conv, indicator=indicator, clock=clock, backend_name="xiaozhi")
    return controls, conv, indicator, clock


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


async def status_of(controls: RuntimeControls) -> dict[str, Any]:
    reply = await ToolServer.for_device(controls, name="b").handle(call("self.get_device_status", {}))
    assert reply is not None
    return dict(json.loads(reply["result"]["content"][0]["text"]))


async def test_the_set_emotion_tool_goes_through_the_conversation_and_the_leds_follow() -> None:
    controls, conv, indicator, _ = wired()
    reply = await ToolServer.for_device(controls, name="b").handle(
        call("self.led.set_emotion", {"emotion": "cool"})
    )
    assert reply is not None and reply["result"]["content"][0]["text"] == "true"
    assert (conv.emotion, indicator.emotions, controls.emotion) == ("cool", ["cool"], "cool")
    status = await status_of(controls)
    assert status["led"]["emotion"] == status["device"]["emotion"] == "cool"


async def test_status_reports_the_agent_s_emotion_in_both_places() -> None:
    controls, conv, indicator, _ = wired()
    conv.on_backend_event(Connected())
    await controls.set_emotion("sad")
    conv.on_backend_event(SpeechStarted())
    conv.on_backend_event(Emotion("happy"))
    status = await status_of(controls)
    assert status["led"]["emotion"] == status["device"]["emotion"] == "happy"
    assert indicator.emotions == ["sad", "happy"]


async def test_without_a_bridge_set_emotion_fails_and_nothing_changes() -> None:
    controls, conv, indicator, _ = wired(connected=False)
    with pytest.raises(ToolError, match="LED bridge not connected"):
        await controls.set_emotion("happy")
    assert (conv.emotion, indicator.emotions) == ("neutral", [])


async def test_reboot_restarts_one_second_after_the_reply_by_the_clock() -> None:
    controls, _, _, clock = wired()
    restarts: list[float] = []
    controls.restart = lambda: restarts.append(clock.now())
    start = clock.now()
    await controls.reboot()
    clock.advance(0.9)
    assert restarts == []
    clock.advance(0.2)
    assert restarts == [start + 1.0] and controls.reboots == 1


async def test_with_reboot_action_ignore_the_agent_s_reboot_tool_is_refused_too() -> None:
    controls, _, _, clock = wired()
    restarts: list[float] = []
    controls.restart = lambda: restarts.append(clock.now())
    controls.reboot_allowed = False
    reply = await ToolServer.for_device(controls, name="b").handle(call("self.reboot", {}))
    assert reply is not None
    text = json.dumps(reply)
    assert "reboot is turned off" in text and "reboot_action" in text
    clock.advance(5.0)
    assert restarts == [] and controls.reboots == 0
