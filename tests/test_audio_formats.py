"""Sound devices that refuse our pipeline's format (mono 16 kHz): a JACK server at 48 kHz only, through
PortAudio's JACK host API. PortAudio enumerates devices once per process, so each check runs in a
fresh interpreter started after the server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.peers.jack import JackServer

pytestmark = pytest.mark.skipif(
    not JackServer.available(), reason="jackd2 is not installed (scripts/test.sh)"
)


def run_python(jack: JackServer, code: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=jack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_a_microphone_that_refuses_16_khz_is_opened_at_its_rate_and_heard_at_16_khz() -> None:
    with JackServer() as jack:
        clicks = jack.metronome()
        found = run_python(
            jack,
            f"""
            import asyncio, json, subprocess
            import numpy as np
            from companion.audio.capture import DeviceCapture

            async def main():
                capture = DeviceCapture("system", input_channel=0)
                capture.start()
                subprocess.run(["jack_connect", {clicks!r}, "PortAudio:in_0"], check=True)
                got = b""
                async for block in capture.blocks():
                    got += block
                    if len(got) >= 16000 * 2 * 2:  # two seconds at 16 kHz
                        break
                await capture.close()
                audio = np.frombuffer(got, dtype=np.int16)
                print(json.dumps({{"rate": capture.rate, "channels": capture.channels,
                                   "samples": len(audio), "peak": int(np.abs(audio).max())}}))

            asyncio.run(asyncio.wait_for(main(), 20))
            """,
        )
    assert (found["rate"], found["channels"]) == (48000, 1)  # 16 kHz was refused; no error, no silence
    assert found["samples"] >= 32000
    assert int(found["peak"]) > 5000  # the clicks, at half scale, came through the resampler


def test_a_speaker_that_refuses_24_khz_plays_at_its_rate() -> None:
    with JackServer() as jack:
        found = run_python(
            jack,
            """
            import asyncio, json
            import numpy as np
            from companion.audio.speaker import DeviceSpeaker

            async def main():
                speaker = DeviceSpeaker("system", 24000, 120)
                speaker.begin()
                tone = (np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000) * 8000).astype(np.int16)
                await speaker.write(tone.tobytes())
                speaker.end()
                drained = await speaker.wait_drained(5)
                played = speaker.buffer.played_samples
                await speaker.close()
                print(json.dumps({"out_rate": speaker.out_rate, "drained": drained, "played": played}))

            asyncio.run(main())
            """,
        )
    assert found["out_rate"] == 48000 and found["drained"]
    assert int(found["played"]) >= 48000  # one second of 24 kHz audio, played as 48 kHz


def test_devices_lists_channels_the_rates_each_device_takes_and_the_defaults() -> None:
    with JackServer() as jack:
        result = subprocess.run(
            [sys.executable, "-m", "companion", "devices"],
            env=jack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    (line,) = [row for row in result.stdout.splitlines() if row.endswith("  system")]
    _index, inputs, outputs, *rest = line.split()
    assert (inputs, outputs) == ("2", "2")
    assert "48" in rest and "16" not in rest and "44.1" not in rest  # only the server's own rate
    header = result.stdout.splitlines()[0]
    assert "default" in header and "rates" in header
