"""`companion run` with backend.kind = "espai": a spoken question in, the ESP-AI reply played, and the
reply's emotion on the ESP32's LEDs (the emulated board on a socat cable), the device key never logged."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import miniaudio
import numpy as np
import pytest

from firmware_bridge.emulator import AttachedPort, Emulator
from tests.audio_match import best_match
from tests.daemon_process import DaemonProcess
from tests.peers.bridge_socat import SocatCable
from tests.peers.espai_server import EspaiServer, Reply, Sentence

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SocatCable.available(), reason="socat missing")]

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chatbot_v3"
KEY = "espai-device-key-0123456789"


async def test_a_spoken_turn_is_answered_and_its_emotion_reaches_the_leds(
    speech_wav: Path, tmp_path: Path
) -> None:
    mp3s = [(FIXTURES / f"{name}.mp3").read_bytes() for name in ("s0", "s1")]
    sentences = [Sentence("Hello there, nice to meet you.", mp3s[0], "开心"),
                 Sentence("Today the weather is sunny and warm.", mp3s[1])]  # fmt: skip
    out = tmp_path / "reply.wav"
    async with (
        EspaiServer(lambda turn: Reply("hello", sentences), api_key=KEY) as server,
        SocatCable(tmp_path) as cable,
    ):
        emulator = Emulator(AttachedPort(cable.board))
        board = asyncio.create_task(emulator.run())
        daemon = await DaemonProcess(
            "run", "--input", str(speech_wav), "--output", str(out), "--turns", "1",
            "--set", "backend.kind=espai", "--set", f'espai_device.url="{server.url}"',
            "--set", f'bridge.port="{cable.host}"', "--set", "telemetry.enabled=false",
            state_dir=tmp_path / "state", env={"COMPANION_ESPAI_DEVICE_KEY": KEY},
        ).start()  # fmt: skip
        try:
            speaking = await emulator.wait_for(
                lambda v: v.host_state == "speaking" and v.emotion != "neutral", 30
            )
            assert speaking.emotion == "happy"
            assert await daemon.wait(60) == 0, daemon.output()
        finally:
            await daemon.stop()
            emulator.stop()
            await board
    log = daemon.output()
    assert "turn 1 completed" in log and "heard: hello" in log
    assert KEY not in log
    conn = server.connections[0]
    assert conn.query["api_key"] == KEY and len(conn.query["device_id"]) == 17  # the machine's MAC
    assert len(conn.pcm) > 16000  # more than half a second of the question reached the server
    assert server.texts_of("iat_end") and server.texts_of("client_out_audio_over")
    with wave.open(str(out)) as w:
        rate = w.getframerate()
        played = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    offsets = []
    for data in mp3s:
        reference = np.frombuffer(
            miniaudio.decode(data, nchannels=1, sample_rate=rate).samples, dtype=np.int16
        )
        offset, score = best_match(reference, played)
        assert score >= 0.9
        offsets.append(offset)
    assert offsets == sorted(offsets)
