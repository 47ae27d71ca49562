"""Faults inside the daemon are routed to the part that failed: a speaker that cannot open is a sound
problem, logged as one, and never shown as a network reconnect."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from companion.config import load_settings
from companion.daemon.runtime import RunOptions, Runtime
from companion.errors import AudioDeviceError
from tests.peers.xiaozhi_echo import EchoPeer

pytestmark = pytest.mark.slow


async def test_a_speaker_that_cannot_open_is_logged_and_the_channel_stays_up(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    async with EchoPeer(port=0) as server:
        settings = load_settings(
            None,
            [
                f'xiaozhi.websocket_url="{server.websocket_url}"',
                "telemetry.enabled=false",
                f'audio.output="{tmp_path / "out.wav"}"',
                f'audio.input="{speech_wav}"',
            ],
        )
        runtime = Runtime(settings, RunOptions(console_button=False))
        task = asyncio.create_task(runtime.run())
        try:
            await server.wait_until(lambda: any(r.mcp_initialized for r in server.records), 10)
            assert runtime.sink is not None and runtime.backend is not None

            def unplugged() -> None:  # the sound card went away just as the reply starts
                raise AudioDeviceError("cannot open output device 'USB Audio': device unavailable")

            monkeypatch.setattr(runtime.sink, "begin", unplugged)
            with caplog.at_level(logging.INFO):
                await server.wait_until(
                    lambda: any(
                        '"start"' in text and '"tts"' in text for r in server.records for _, text in r.sent
                    ),
                    20,
                )
                await asyncio.sleep(1.0)
            assert runtime.backend.connected and runtime.reconnects == 0
            assert len(server.records) == 1  # the same connection all along
            messages = [r.getMessage() for r in caplog.records]
            assert any("cannot open output device" in m for m in messages)
            assert not any("channel down" in m for m in messages)
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 5)
