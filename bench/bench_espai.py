"""ESP-AI backend: first-audio latency, end of speech → the reply's first sample handed to PortAudio.

Runs the real parts on loopback: the ESP-AI server of tests/peers/espai_server.py (the esp-ai wire
format, frames of AUDIO_BUFFER_SIZE/2 = 10 KiB as the real server sends them) answers each turn at once
with a 16 kHz mono MP3 sentence (the format the real server re-encodes to); an EspaiBackend receives,
decodes and hands the PCM to a DeviceSpeaker playing into a private PulseAudio null sink.

- espai_first_audio: `stop_listening()` (`iat_end` sent) → the PortAudio callback that hands out the
  reply's first sample. With a server that answers at once this is the device's share of the turn's
  latency: the socket both ways, decoding the first MP3 frames, the speaker's pre-buffer.
- espai_frame_to_sample: the server writes the reply's first audio frame → that first sample (the
  downlink alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "chatbot_v3" / "s2.mp3"
RATE = 24000
PREBUFFER_MS = 120


async def _measure(trials: int) -> dict[str, Any]:
    from companion.audio.speaker import DeviceSpeaker
    from companion.backends.espai import EspaiBackend
    from companion.config import settings_from_mapping
    from companion.events import BackendEvent, Connected, ListenMode, SpeechAudio, SpeechEnded, SpeechStarted
    from tests.peers.espai_server import EspaiServer, Reply, Sentence

    mp3 = FIXTURE.read_bytes()
    firsts: list[float] = []
    downlink: list[float] = []
    async with EspaiServer(
        lambda turn: Reply("hello", [Sentence("Hello.", mp3)]), chunk_bytes=10240
    ) as server:
        speaker = DeviceSpeaker("default", RATE, PREBUFFER_MS)
        connected, done = asyncio.Event(), asyncio.Event()

        def sink(event: BackendEvent) -> None:
            if isinstance(event, Connected):
                connected.set()
            elif isinstance(event, SpeechStarted):
                speaker.begin()
            elif isinstance(event, SpeechAudio):
                asyncio.get_running_loop().create_task(speaker.write(event.payload))
            elif isinstance(event, SpeechEnded):
                done.set()

        settings = settings_from_mapping(
            {
                "backend": {"kind": "espai"},
                "espai_device": {"url": server.url, "device_id": "aa:bb:cc:00:00:01"},
            }
        )
        backend = EspaiBackend(settings, sink, playback_rate=RATE)
        task = asyncio.create_task(backend.run())
        try:
            await asyncio.wait_for(connected.wait(), 10)
            loop = asyncio.get_running_loop()
            for _ in range(trials):
                done.clear()
                await backend.start_listening(ListenMode.MANUAL)
                for _ in range(5):
                    await backend.send_audio(bytes(1920))
                await asyncio.sleep(0.2)  # the server has said iat_start
                t0 = loop.time()
                await backend.stop_listening()
                await asyncio.wait_for(done.wait(), 10)
                await asyncio.sleep(0.05)  # the queued writes reach the ring
                speaker.end()
                await speaker.wait_drained(10)
                first = speaker.buffer.first_sample_time
                if first is not None:
                    firsts.append((first - t0) * 1000)
                    downlink.append((first - server.sent_reply_at[-1]) * 1000)
                speaker.flush()
        finally:
            await backend.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await speaker.close()
    return {
        "espai_first_audio_p50_ms": round(statistics.median(firsts), 1),
        "espai_first_audio_max_ms": round(max(firsts), 1),
        "espai_frame_to_sample_p50_ms": round(statistics.median(downlink), 1),
        "espai_first_audio_prebuffer_ms": PREBUFFER_MS,
        "espai_first_audio_trials": len(firsts),
    }


def measure(trials: int = 10) -> dict[str, Any]:
    """The figures through a private PulseAudio (started and stopped here)."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment():
        return asyncio.run(_measure(trials))


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
