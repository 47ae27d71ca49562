"""Latency from a downlink packet's arrival to its first sample handed to PortAudio.

Runs through a real PortAudio output on a private PulseAudio null sink. Two runs:
- paced: one 60 ms packet per 60 ms; a packet waits for the audio queued ahead of it (at most the
  pre-buffer), so the figure that measures the pipeline is the latency beyond that audio;
- burst: 5 packets ahead, then one per 60 ms (as xiaozhi-esp32-server sends); each packet waits for the
  300 ms queued before it, so the figure is the latency beyond the audio queued ahead of it.
The jitter buffer records, per packet, the time from its push to the callback that hands its first
sample to PortAudio.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from companion.audio.resample import MonoResampler

from .speech import speech_16k

PREBUFFER_MS = 120


async def _measure(seconds: float, burst: int) -> dict[str, Any]:
    from companion.audio.speaker import DeviceSpeaker

    audio = MonoResampler(16000, 24000).process(speech_16k(seconds), last=True)
    packets = [audio[i : i + 1440].tobytes() for i in range(0, len(audio) - 1439, 1440)]
    speaker = DeviceSpeaker("default", 24000, PREBUFFER_MS)
    loop = asyncio.get_running_loop()
    speaker.begin()
    start = loop.time()
    for n, packet in enumerate(packets):
        due = start + max(0, n - burst) * 0.060
        await asyncio.sleep(max(0.0, due - loop.time()))
        await speaker.write(packet)
    speaker.end()
    await speaker.wait_drained(seconds + 5)
    await speaker.close()
    buf = speaker.buffer
    count = min(buf.latency_count, len(buf.latencies))
    total = buf.latencies[:count] * 1000
    excess = buf.excess_latencies[:count] * 1000
    if burst == 0:
        beyond = excess
        return {
            "play_latency_p50_ms": round(float(np.percentile(beyond, 50)), 1),
            "play_latency_p99_ms": round(float(np.percentile(beyond, 99)), 1),
            "play_latency_total_p50_ms": round(float(np.percentile(total, 50)), 1),
            "play_prebuffer_ms": PREBUFFER_MS,
            "play_underruns": buf.underruns,
        }
    return {
        "play_burst_latency_total_p50_ms": round(float(np.percentile(total, 50)), 1),
        "play_burst_beyond_queued_p50_ms": round(float(np.percentile(excess, 50)), 1),
        "play_burst_beyond_queued_p99_ms": round(float(np.percentile(excess, 99)), 1),
        "play_burst_underruns": buf.underruns,
    }


def measure(seconds: float = 20.0) -> dict[str, Any]:
    """Latency percentiles through a private PulseAudio (started and stopped here)."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment():
        return {**asyncio.run(_measure(seconds, 0)), **asyncio.run(_measure(seconds, 5))}


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
