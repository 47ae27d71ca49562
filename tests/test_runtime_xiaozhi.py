"""The runtime against the echo server's OTA: activation, transport choice, and a turn afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from companion.config import load_settings
from companion.daemon.runtime import RunOptions, Runtime
from companion.events import DeviceState
from tests.peers.xiaozhi_echo import EchoPeer

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
    assert runtime.conversation is not None and runtime.conversation.turns_completed == 1
