"""The agent calls the device's tools over MCP through the running daemon: volume, emotion, LEDs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from companion.config import load_settings
from companion.daemon.runtime import RunOptions, Runtime
from companion.events import DeviceState
from firmware_bridge.emulator import AttachedPort, Emulator
from tests.peers.bridge_socat import SocatCable
from tests.peers.xiaozhi_echo import EchoPeer

pytestmark = pytest.mark.slow


async def test_tools_called_by_the_server_act_on_speaker_and_leds(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    async with EchoPeer(port=0) as server, SocatCable(tmp_path) as cable:
        emulator = Emulator(AttachedPort(cable.board))
        board = asyncio.create_task(emulator.run())
        settings = load_settings(
            None,
            [
                f'xiaozhi.websocket_url="{server.websocket_url}"',
                "telemetry.enabled=false",
                f'bridge.port="{cable.host}"',
                f'audio.output="{tmp_path / "out.wav"}"',
                f'audio.input="{speech_wav}"',
                "backend.trigger=button",  # no turn: the file plays, nobody listens
            ],
        )
        runtime = Runtime(settings, RunOptions(console_button=False))
        task = asyncio.create_task(runtime.run())
        try:
            await server.wait_until(lambda: any(r.mcp_initialized for r in server.records), 10)
            assert runtime.conversation is not None
            await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.IDLE), 10)

            reply = await server.call_tool("self.audio_speaker.set_volume", {"volume": 30})
            assert reply["result"]["content"][0]["text"] == "true"
            assert runtime.sink is not None and runtime.sink.gain == pytest.approx(0.09)
            await emulator.wait_for(lambda v: v.volume == 30, 3)

            reply = await server.call_tool("self.audio_speaker.set_volume", {"volume": 150})
            assert reply["error"]["message"] == "Value exceeds maximum allowed: 100"

            await server.call_tool("self.audio_speaker.mute", {"muted": True})
            assert runtime.sink.gain == 0.0

            await server.call_tool("self.led.set_color", {"red": 10, "green": 200, "blue": 30})
            await emulator.wait_for(lambda v: v.lamp == (10, 200, 30), 3)

            await server.call_tool("self.led.set_emotion", {"emotion": "cool"})
            await emulator.wait_for(lambda v: v.emotion == "cool", 3)

            status = json.loads(
                (await server.call_tool("self.get_device_status", {}))["result"]["content"][0]["text"]
            )
            assert status["audio_speaker"] == {"volume": 30, "muted": True}
            assert status["bridge"]["connected"] is True
            assert status["device"]["state"] == "idle"
            assert status["led"]["emotion"] == status["device"]["emotion"] == "cool"  # one owner
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 5)
            emulator.stop()
            await board


async def test_reboot_action_ignore_also_refuses_the_agent_s_reboot_tool(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    async with EchoPeer(port=0) as server:
        settings = load_settings(
            None,
            [
                f'xiaozhi.websocket_url="{server.websocket_url}"',
                'xiaozhi.reboot_action="ignore"',
                "telemetry.enabled=false",
                f'audio.output="{tmp_path / "out.wav"}"',
                f'audio.input="{speech_wav}"',
                "backend.trigger=button",
            ],
        )
        runtime = Runtime(settings, RunOptions(console_button=False))
        task = asyncio.create_task(runtime.run())
        try:
            await server.wait_until(lambda: any(r.mcp_initialized for r in server.records), 10)
            reply = await server.call_tool("self.reboot", {})
            assert "reboot is turned off" in json.dumps(reply)
            await asyncio.sleep(1.5)  # a reboot would have been scheduled 1 s after the reply
            assert not runtime.reload_requested and not task.done()
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 5)
