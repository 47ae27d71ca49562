"""Turn rules that real servers force on a client (xiaozhi spec §7 and vector 14), end to end."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from companion.config import Settings, load_settings
from companion.daemon.runtime import RunOptions, Runtime
from companion.events import DeviceState
from tests.peers.xiaozhi_echo import EchoPeer

pytestmark = pytest.mark.slow


def settings_for(url: str, speech_wav: Path, out: Path, *extra: str) -> Settings:
    return load_settings(
        None,
        [
            f'xiaozhi.websocket_url="{url}"',
            "xiaozhi.settle_ms=200",
            "telemetry.enabled=false",
            f'audio.input="{speech_wav}"',
            f'audio.output="{out}"',
            *extra,
        ],
    )


async def test_no_uplink_while_speaking_and_one_listen_start_after_playback_drains(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    async with EchoPeer(port=0) as server:
        runtime = Runtime(settings_for(server.websocket_url, speech_wav, tmp_path / "out.wav"), RunOptions())
        task = asyncio.create_task(runtime.run())
        try:
            await server.wait_until(lambda: server.turns_completed >= 1, 30)
            assert runtime.conversation is not None
            await asyncio.wait_for(runtime.conversation.turns.finished.wait(), 10)
            await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.LISTENING), 5)
            await asyncio.sleep(0.5)
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 5)
        record = server.records[-1]
    assert record.uplink_while_speaking == 0
    sent = list(record.sent)
    received = list(record.received)
    tts_stop = max(t for t, text in sent if json.loads(text).get("state") == "stop")
    listen_starts = [t for t, text in received if _is_listen_start(json.loads(text))]
    starts_after = [t for t in listen_starts if t > tts_stop]
    assert len(starts_after) == 1
    # the listen start waits for our playback to drain: the reply is ~3.6 s of audio
    first_audio_sent = min(t for t, text in sent if json.loads(text).get("state") == "sentence_start")
    assert starts_after[0] - first_audio_sent >= 3.0


async def test_an_unreachable_server_is_retried_and_reached_once_it_appears(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"
    states: list[DeviceState] = []
    runtime = Runtime(
        settings_for(url, speech_wav, tmp_path / "out.wav", "backend.reconnect_max_s=1"),
        RunOptions(on_state=lambda old, new: states.append(new), cues=False),
    )
    task = asyncio.create_task(runtime.run())
    try:
        while runtime.conversation is None:
            await asyncio.sleep(0)
        await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.OFFLINE), 10)
        async with EchoPeer(port=port):
            await asyncio.wait_for(runtime.conversation.wait_for_state(DeviceState.IDLE), 10)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 5)
    assert DeviceState.IDLE in states
    assert states.index(DeviceState.OFFLINE) < states.index(DeviceState.IDLE)


def _is_listen_start(message: dict[str, object]) -> bool:
    return message.get("type") == "listen" and message.get("state") == "start"
