"""The daemon as a process: start-up time, idle CPU, CPU of one echo turn, and RSS after the turn.

Runs `companion run` on a private PulseAudio (virtual microphone and speaker) against the echo server in
this process, so the server's work is not counted. CPU comes from /proc/<pid>/stat.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
IDLE_SECONDS = 10.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(pulse: Any) -> dict[str, Any]:
    from companion.fieldtest.echo_server import EchoServer
    from tests.daemon_process import DaemonProcess

    async with EchoServer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            spawned = time.monotonic()
            daemon = await DaemonProcess(
                "run", "--input", "default", "--output", "default",
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
                state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("ready in", timeout=30)
                startup = time.monotonic() - spawned
                await daemon.wait_for_line("→ idle", timeout=30)
                assert daemon.proc is not None
                pid = daemon.proc.pid
                await asyncio.sleep(2.0)
                cpu0, t0 = _cpu_seconds(pid), time.monotonic()
                await asyncio.sleep(IDLE_SECONDS)
                idle_percent = 100 * (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
                cpu_before_turn = _cpu_seconds(pid)
                player = pulse.play_into_mic(ASSET)
                await daemon.wait_for_line("turn 1 completed", timeout=40)
                turn_cpu = _cpu_seconds(pid) - cpu_before_turn
                await asyncio.to_thread(player.wait, 10)
                await asyncio.sleep(1.0)
                rss = _rss_mb(pid)
            finally:
                await daemon.stop()
    return {
        "startup_s": round(startup, 3),
        "idle_cpu_percent": round(idle_percent, 2),
        "turn_cpu_s": round(turn_cpu, 3),
        "rss_mb": round(rss, 1),
    }


async def _rss_with_wav_io() -> float:
    """RSS after a turn when microphone and speaker are WAV files: the daemon without PortAudio."""
    from companion.fieldtest.echo_server import EchoServer
    from tests.daemon_process import DaemonProcess

    async with EchoServer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            daemon = await DaemonProcess(
                "run", "--input", str(ASSET), "--output", str(Path(state) / "out.wav"),
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
                state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("turn 1 completed", timeout=40)
                await asyncio.sleep(1.0)
                assert daemon.proc is not None
                return _rss_mb(daemon.proc.pid)
            finally:
                await daemon.stop()


def measure() -> dict[str, Any]:
    """Start a private PulseAudio, run the daemon through one turn, and report."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment() as server:
        figures = asyncio.run(_measure(server))
        figures["rss_mb_wav_io"] = round(asyncio.run(_rss_with_wav_io()), 1)
        return figures


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
