"""The runtime against the echo server's OTA: activation, transport choice, and a turn afterwards."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from companion.config import load_settings
from companion.daemon.runtime import RunOptions, Runtime
from companion.events import DeviceState
from tests.peers.xiaozhi_echo import EchoPeer, Variant

pytestmark = pytest.mark.slow


async def test_an_unbound_device_shows_and_speaks_its_code_then_talks_once_bound(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    async with EchoPeer(port=0, activation=True) as server:
        settings = load_settings(
            None,
            [
                f'xiaozhi.ota_url="{server.ota_url}"',
                "xiaozhi.settle_ms=200",
                "telemetry.enabled=false",
                f'audio.input="{speech_wav}"',
                f'audio.output="{tmp_path / "out.wav"}"',
            ],
        )
        states: list[DeviceState] = []
        runtime = Runtime(settings, RunOptions(turns=1, on_state=lambda old, new: states.append(new)))
        task = asyncio.create_task(runtime.run())
        await server.wait_until(lambda: bool(server.codes), 10)
        await asyncio.sleep(0)  # the runtime task has built its parts
        assert runtime.conversation is not None and runtime.cues is not None
        await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.ACTIVATING), 10)
        code = next(iter(server.codes.values()))
        # the code is spoken in the same step that enters the activating state
        assert f"activation:{code}" in runtime.cues.played
        assert not runtime.conversation or not runtime.conversation.backend.connected
        server.bind(code)
        assert await asyncio.wait_for(task, 40) == 0
    assert states.index(DeviceState.ACTIVATING) < states.index(DeviceState.IDLE)
    assert runtime.conversation is not None and runtime.conversation.turns.completed == 1


async def test_an_idle_device_whose_channel_the_server_retires_stays_idle_and_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """xiaozhi-esp32-server closes a connection 180 s after the last speech: the device must not go
    offline and speak "offline" / "reconnected" every three minutes on a quiet desk."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    quiet = tmp_path / "quiet.wav"
    with wave.open(str(quiet), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(3200))
    async with EchoPeer(port=0, variant=Variant(idle_close_s=5.5)) as server:
        settings = load_settings(
            None,
            [
                f'xiaozhi.websocket_url="{server.websocket_url}"',
                "telemetry.enabled=false",
                f'audio.input="{quiet}"',
                f'audio.output="{tmp_path / "out.wav"}"',
            ],
        )
        states: list[DeviceState] = []
        runtime = Runtime(
            settings, RunOptions(console_button=False, on_state=lambda old, new: states.append(new))
        )
        task = asyncio.create_task(runtime.run())
        try:
            await server.wait_until(
                lambda: len(server.records) == 2 and server.records[1].mcp_initialized, 20
            )
            assert runtime.conversation is not None and runtime.cues is not None
            await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.IDLE), 5)
            assert server.records[0].closed  # the server did close the first channel
            assert DeviceState.OFFLINE not in states and not runtime.cues.played
            assert runtime.reconnects == 0
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 5)
