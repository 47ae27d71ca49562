"""Echo cancellation on a speaker build (audio.echo = "aec"), on the test PulseAudio with an echo path:
the speaker's output comes back into the microphone 100 ms later, 6 dB quieter.

- `aec_erle_db`: echo return loss enhancement on echo-only audio, in-process (speaker, microphone and
  canceller as the daemon wires them): energy of the raw microphone over the energy of what the voice
  detector is given, over the 10 ms frames that carry echo, for 4 replies with the speaker reopened
  for each. `aec_erle_aec3_db` is the canceller alone, before echo residue is silenced. Once nearly
  every echo frame is silenced the ERLE only says how few were left: `aec_echo_frames_passed_percent`
  is the share of echo-carrying frames the voice detector is given not silenced.
- `aec_self_triggers`: replies (of `replies`, mic open) that started a barge-in or a turn by themselves.
- `aec_barge_in_rate` / `aec_barge_in_latency_ms`: the user's voice (espeak-ng) mixed in 0.6 s into a
  reply: how many of `tries` interrupted it, and the voice's onset → `abort` at the server (p50 / p95 /
  max). The onset is where the voice really begins in the microphone's capture (tests/echo_rig.py
  `MicTap`: the test's own capture of the same source, correlated with the clip), not when paplay was
  launched: `aec_barge_in_latency_from_player_launch_ms` is the older measure, ~60 ms more (paplay's
  start-up and the 55 ms of silence espeak-ng puts before the voice). `aec_barge_in_stages_ms_p50`: the
  launch → the onset, the onset → the daemon's decision (its log line: AEC3's double-talk onset and the
  voice detector's start trigger), the decision → the server.
- `aec_replies_interrupting_themselves_in_the_barge_in_tries`: voice barge-ins no voice caused during the
  barge-in tries (mostly the barge-in turn's own reply, which plays right after an interrupted one).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
DELAY_MS = 100
GAIN_DB = -6.0
ECHO_FRAME_RMS = 100.0  # a 10 ms frame of the raw microphone louder than this carries echo


def _echo_frames(raw: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 10 ms frames of `raw` that carry echo, and the same frames of `out`."""
    frames = len(raw) // 160
    r = raw[: frames * 160].astype(np.float64).reshape(-1, 160)
    o = out[: frames * 160].astype(np.float64).reshape(-1, 160)
    echo = np.sqrt(np.mean(r**2, axis=1)) > ECHO_FRAME_RMS
    return r[echo], o[echo]


def _energy_db(raw: np.ndarray, out: np.ndarray) -> float:
    r, o = _echo_frames(raw, out)
    return round(float(10 * np.log10(np.sum(r**2) / max(1.0, np.sum(o**2)))), 1)


def _passed_percent(raw: np.ndarray, out: np.ndarray) -> float:
    """Of the frames that carry echo, the share the voice detector is given not silenced."""
    r, o = _echo_frames(raw, out)
    return round(100 * float(np.mean(np.any(o != 0, axis=1))), 2) if len(r) else 0.0


async def _erle(pulse: Any, replies: int = 4) -> dict[str, Any]:
    from companion.audio import echo
    from companion.audio.capture import DeviceCapture
    from companion.audio.resample import MonoResampler
    from companion.audio.speaker import DeviceSpeaker

    with wave.open(str(ASSET)) as wav:
        speech = wav.readframes(wav.getnframes())
    sink = DeviceSpeaker("default", 24000, 120)
    capture = DeviceCapture("default", block_ms=20)
    canceller = echo.attach_canceller(echo.EchoPath("aec", "aec", ""), sink)
    assert canceller is not None
    alone = echo.EchoCanceller(canceller.far, silence_residue=False)  # the same reference, read twice
    raw, out, linear = bytearray(), bytearray(), bytearray()
    cpu = [0.0, 0]  # seconds of CPU in the canceller, blocks

    async def listen() -> None:
        async for block in capture.blocks():
            raw.extend(block)
            started = time.thread_time()
            out.extend(canceller.process(block, capture.block_time))
            cpu[0] += time.thread_time() - started
            cpu[1] += 1
            linear.extend(alone.process(block, capture.block_time))

    task = asyncio.create_task(listen())
    reply = MonoResampler(16000, 24000).process_bytes(speech, last=True)
    try:
        with pulse.speaker_heard_by_mic(DELAY_MS, GAIN_DB):
            await asyncio.sleep(1.0)
            for _ in range(replies):
                sink.begin()
                await sink.write(reply)
                sink.end()
                await sink.wait_drained(10)
                await sink.close()
                await asyncio.sleep(2.0)
    finally:
        task.cancel()
        await capture.close()
        await sink.shutdown()
    n = min(len(raw), len(out), len(linear)) // 2
    r = np.frombuffer(bytes(raw), dtype=np.int16)[:n]
    return {
        "aec_erle_db": _energy_db(r, np.frombuffer(bytes(out), dtype=np.int16)[:n]),
        "aec_erle_aec3_db": _energy_db(r, np.frombuffer(bytes(linear), dtype=np.int16)[:n]),
        "aec_echo_frames_passed_percent": _passed_percent(r, np.frombuffer(bytes(out), dtype=np.int16)[:n]),
        "aec_cpu_us_per_20ms_block": round(cpu[0] / max(1, cpu[1]) * 1e6, 1),
    }


def _voice(folder: Path) -> Path:
    """The user's interruption, in another voice than the reply's."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is needed (apt-get install espeak-ng)")
    said, out = folder / "said.wav", folder / "voice.wav"
    text = "Please stop now"
    subprocess.run([espeak, "-v", "en+f3", "-s", "160", "-w", str(said), text], check=True)
    subprocess.run(["sox", str(said), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


def _ms(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {
        "p50": round(float(np.percentile(ms, 50)), 1),
        "p95": round(float(np.percentile(ms, 95)), 1),
        "max": round(float(ms.max()), 1),
    }


async def _daemon(pulse: Any, replies: int, tries: int) -> dict[str, Any]:
    from tests.echo_rig import speaker_build

    with tempfile.TemporaryDirectory() as folder:
        voice = _voice(Path(folder))
        async with speaker_build(pulse, Path(folder) / "state", "aec", DELAY_MS, GAIN_DB) as rig:
            clean = [await rig.reply_heard_only_by_the_user(ASSET) for _ in range(replies)]
            results = [await rig.barge_in(ASSET, voice) for _ in range(tries)]
            after_barge_in = rig.barge_ins_not_by_the_user()
    latencies = [r.latency_s for r in results if r.latency_s is not None]
    figures: dict[str, Any] = {
        "aec_self_triggers": clean.count(False),
        "aec_self_trigger_replies": replies,
        "aec_barge_in_rate": f"{len(latencies)}/{tries}",
        # a try's reply that had stopped (on its own echo) before the voice began counts as missed above
        "aec_barge_in_replies_stopped_before_the_voice": sum(not r.playing for r in results),
        "aec_replies_interrupting_themselves_in_the_barge_in_tries": after_barge_in,
    }
    if latencies:
        figures["aec_barge_in_latency_ms"] = _ms(latencies)
        # the same from when paplay was launched, as measured before
        launched = [r.lead_s + r.latency_s for r in results if r.latency_s is not None]
        figures["aec_barge_in_latency_from_player_launch_ms"] = _ms(launched)
        stages = [(r.decided_s, r.latency_s) for r in results if r.decided_s is not None and r.latency_s]
        figures["aec_barge_in_stages_ms_p50"] = {
            "launch_to_onset": round(1000 * float(np.median([r.lead_s for r in results])), 1),
            "onset_to_decision": round(1000 * float(np.median([d for d, _ in stages])), 1),
            "decision_to_server": round(1000 * float(np.median([lat - d for d, lat in stages])), 1),
        }
    return figures


def measure(replies: int = 20, tries: int = 10) -> dict[str, Any]:
    """Start a private PulseAudio with an echo path and measure all four figures."""
    from tests.peers.pulse import pulse_environment

    with pulse_environment() as server:
        figures = asyncio.run(_erle(server))
        figures.update(asyncio.run(_daemon(server, replies, tries)))
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
