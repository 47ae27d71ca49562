"""`companion say`: a text turn (xiaozhi `listen detect` with text) whose reply is played."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess
from tests.peers.xiaozhi_echo import EchoPeer

pytestmark = pytest.mark.slow


async def test_say_sends_the_text_and_plays_the_reply(tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    async with EchoPeer(port=0) as server:
        daemon = await DaemonProcess(
            "say", "turn on the light", "--set", f'xiaozhi.websocket_url="{server.websocket_url}"',
            "--set", f'audio.output="{out}"', "--set", "audio.input=no-such-microphone",
            state_dir=tmp_path / "state",
        ).start()  # fmt: skip
        try:
            assert await daemon.wait(30) == 0, daemon.output()
        finally:
            await daemon.stop()
        received = [json.loads(text) for _, text in server.records[-1].received]
    detect = [m for m in received if m.get("type") == "listen" and m.get("state") == "detect"]
    assert detect and detect[0]["text"] == "turn on the light"
    with wave.open(str(out)) as reply:
        assert reply.getnframes() > reply.getframerate() * 0.3  # the reply was played
