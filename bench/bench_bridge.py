"""Figures for the ESP32 bridge: protocol cost, ping round trip and replug latency.

- codec: µs to encode and to decode one frame (a 20 ms MIC_AUDIO block, a STATE), and the CPU share
  of receiving the microphone stream (50 blocks a second);
- ping: PING → PONG round trip through a pty to the emulator (median, p95, max);
- replug: from socat being back (cable replugged) to the emulator showing the host's current state.

Run: python -m bench.bench_bridge (prints JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware_bridge import protocol
from firmware_bridge.emulator import AttachedPort, Emulator, PtyPort
from firmware_bridge.link import BridgeLink


def _per_call_us(func: Any, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        func()
    return (time.perf_counter() - start) / repeat * 1e6


def codec() -> dict[str, float]:
    """Encode/decode cost per frame."""
    mic = protocol.MicAudio(1, bytes(range(256)) * 2 + bytes(128))
    state = protocol.State(2, True)
    encoder = protocol.Encoder()
    mic_frame = encoder.encode(mic)
    state_frame = encoder.encode(state)
    decoder = protocol.Decoder()
    decode_mic = _per_call_us(lambda: decoder.feed(mic_frame), 5000)
    return {
        "bridge_encode_mic_block_us": round(_per_call_us(lambda: encoder.encode(mic), 5000), 1),
        "bridge_decode_mic_block_us": round(decode_mic, 1),
        "bridge_encode_state_us": round(_per_call_us(lambda: encoder.encode(state), 20000), 2),
        "bridge_decode_state_us": round(_per_call_us(lambda: decoder.feed(state_frame), 20000), 2),
        "bridge_mic_stream_cpu_percent": round(decode_mic * 50 / 1e6 * 100, 3),
        "bridge_crc16_pure_1k_us": round(_per_call_us(lambda: protocol.crc16_pure(bytes(1024)), 500), 1),
    }


async def ping(count: int = 200) -> dict[str, float]:
    """Round trip of PING/PONG over a pty to the emulator."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "board"
        emulator = Emulator(PtyPort(path))
        pongs: asyncio.Queue[float] = asyncio.Queue()
        link = BridgeLink(str(path), on_message=lambda m: pongs.put_nowait(time.perf_counter()))
        tasks = [asyncio.create_task(emulator.run()), asyncio.create_task(link.run())]
        await link.wait_connected(2.0)
        samples = []
        for i in range(count):
            sent = time.perf_counter()
            link._write(protocol.Ping(i))  # the heartbeat's own write path
            while True:
                got = await asyncio.wait_for(pongs.get(), 1.0)
                if got >= sent:
                    break
            samples.append((got - sent) * 1e6)
        for task in tasks:
            task.cancel()
        emulator.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    samples.sort()
    return {
        "bridge_ping_rtt_median_us": round(statistics.median(samples)),
        "bridge_ping_rtt_p95_us": round(samples[int(len(samples) * 0.95)]),
        "bridge_ping_rtt_max_us": round(samples[-1]),
    }


async def replug(cycles: int = 20) -> dict[str, float]:
    """Time from replug to the current state on the emulator, over socat."""
    if shutil.which("socat") is None:
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.peers.bridge_socat import SocatCable

    with tempfile.TemporaryDirectory() as tmp:
        cable = SocatCable(Path(tmp))
        await cable.plug()
        emulator = Emulator(AttachedPort(cable.board))
        link = BridgeLink(str(cable.host))
        tasks = [asyncio.create_task(emulator.run()), asyncio.create_task(link.run())]
        await link.wait_connected(2.0)
        samples = []
        for i in range(cycles):
            state = ("listening", "speaking")[i % 2]
            await cable.unplug()
            await emulator.wait_for(lambda v: not v.host_connected, 2.0)
            link.set_state(state)
            await cable.plug()
            start = time.perf_counter()
            await emulator.wait_for(lambda v: v.state == state, 2.0)  # noqa: B023
            samples.append((time.perf_counter() - start) * 1000)
        for task in tasks:
            task.cancel()
        emulator.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cable.unplug()
    return {
        "bridge_replug_to_state_median_ms": round(statistics.median(samples), 1),
        "bridge_replug_to_state_max_ms": round(max(samples), 1),
    }


def measure() -> dict[str, float]:
    """All bridge figures."""
    figures: dict[str, float] = codec()
    figures.update(asyncio.run(ping()))
    figures.update(asyncio.run(replug()))
    return figures


if __name__ == "__main__":
    logging.getLogger("firmware_bridge").setLevel(logging.ERROR)  # every replug logs a line
    json.dump(measure(), sys.stdout, indent=2)
    print()
