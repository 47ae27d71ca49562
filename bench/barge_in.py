"""Headset voice barge-in: from the voice's onset in the (virtual) microphone while a reply plays, to the
`abort` arriving at the server. The onset is found in the test's own capture of the microphone
(tests/echo_rig.py `MicTap`); `barge_in_from_player_launch_*` is the older measure from paplay's launch
(its start-up and the clip's 17 ms of silence before the voice included)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"


def _abort_times(server: Any) -> list[float]:
    return [
        when
        for record in server.records
        for when, text in record.received
        if json.loads(text).get("type") == "abort"
    ]


def _aborted_more_than(server: Any, count: int) -> bool:
    return len(_abort_times(server)) > count


async def _measure(pulse: Any, tries: int) -> dict[str, Any]:
    from tests.daemon_process import DaemonProcess
    from tests.echo_rig import MicTap, read_clip
    from tests.peers.xiaozhi_echo import EchoPeer

    latencies, launched = [], []
    clip = read_clip(ASSET)
    tap = await MicTap().start()
    async with EchoPeer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            daemon = await DaemonProcess(
                "run", "--input", "default", "--output", "default", "--set", "audio.echo=headset",
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
                "--set", "telemetry.enabled=false", state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("→ idle", 30)
                for _ in range(tries):
                    seen = len(_abort_times(server))
                    speaking = sum("→ speaking" in line for line in daemon.lines)
                    await asyncio.to_thread(pulse.play_into_mic(ASSET).wait, 10)
                    while sum("→ speaking" in line for line in daemon.lines) <= speaking:
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.5)
                    launch = time.monotonic()
                    player = pulse.play_into_mic(ASSET)
                    await server.wait_until(partial(_aborted_more_than, server, seen), 5)
                    aborted = _abort_times(server)[seen]
                    await asyncio.to_thread(player.wait, 10)
                    await tap.heard_until(time.monotonic())
                    onset = tap.onset(clip, launch)
                    if onset is None:
                        raise RuntimeError("the voice played into the microphone is not in its capture")
                    latencies.append(aborted - onset)
                    launched.append(aborted - launch)
                    await asyncio.sleep(6)  # let the barge-in turn's reply finish
            finally:
                await daemon.stop()
                await tap.stop()
    ms, from_launch = np.array(latencies) * 1000, np.array(launched) * 1000
    return {
        "barge_in_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "barge_in_max_ms": round(float(ms.max()), 1),
        "barge_in_from_player_launch_p50_ms": round(float(np.percentile(from_launch, 50)), 1),
        "barge_in_from_player_launch_max_ms": round(float(from_launch.max()), 1),
    }


def measure(tries: int = 5) -> dict[str, Any]:
    """Start a private PulseAudio and measure `tries` barge-ins."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment() as server:
        return asyncio.run(_measure(server, tries))


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
