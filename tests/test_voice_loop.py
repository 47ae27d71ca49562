"""The voice loop on real parts: virtual microphone → `companion run` → echo server → virtual speaker."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from companion.audio.capture import read_wav_16k_mono
from companion.fieldtest.echo_server import EchoServer
from tests.audio_match import best_match
from tests.daemon_process import DaemonProcess
from tests.peers.pulse import PulseServer

pytestmark = [pytest.mark.audio, pytest.mark.slow]


def daemon_args(server: EchoServer, *extra: str) -> list[str]:
    return [
        "run", "--set", f'xiaozhi.websocket_url="{server.websocket_url}"',
        "--set", "xiaozhi.settle_ms=200", "--set", "telemetry.enabled=false", *extra,
    ]  # fmt: skip


async def test_speech_into_the_microphone_comes_back_out_of_the_speaker(
    pulse: PulseServer, speech_wav: Path, tmp_path: Path
) -> None:
    recording = tmp_path / "speaker.raw"
    async with EchoServer(port=0) as server:
        daemon = await DaemonProcess(
            *daemon_args(server, "--input", "default", "--output", "default", "--turns", "1"),
            state_dir=tmp_path / "state",
        ).start()
        try:
            await daemon.wait_for_line("→ idle", timeout=30)
            recorder = pulse.record_speaker(recording)
            await asyncio.sleep(0.3)
            player = pulse.play_into_mic(speech_wav)
            code = await daemon.wait(timeout=40)
            await asyncio.to_thread(player.wait, 10)
            await asyncio.sleep(0.3)
            recorder.terminate()
            recorder.wait(5)
        finally:
            await daemon.stop()
    assert code == 0, daemon.output()
    assert "turn 1 completed" in daemon.output()
    reference = read_wav_16k_mono(speech_wav)
    played = recording.read_bytes()
    lag, score = best_match(reference, played)
    assert score >= 0.9, f"correlation {score:.3f} at {lag / 16000:.2f} s\n{daemon.output()}"


async def test_wav_in_and_wav_out_completes_a_scripted_turn(speech_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    async with EchoServer(port=0) as server:
        daemon = await DaemonProcess(
            *daemon_args(server, "--input", str(speech_wav), "--output", str(out), "--turns", "1"),
            state_dir=tmp_path / "state",
        ).start()
        try:
            code = await daemon.wait(timeout=40)
        finally:
            await daemon.stop()
    assert code == 0, daemon.output()
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000
        reply = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    from companion.audio.resample import MonoResampler

    reference24 = MonoResampler(16000, 24000).process(
        np.frombuffer(read_wav_16k_mono(speech_wav), dtype=np.int16), last=True
    )
    _, score = best_match(reference24, reply)
    assert score >= 0.9
