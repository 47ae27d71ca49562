"""The wake word: detection rate, false accepts per hour, latency to `listen detect`, and idle CPU.

All speech is made here with espeak-ng (tests/wake_corpus.py): the clean set is each wake phrase in 8
voices at 3 speeds; the noisy set mixes pink or white noise under it at 10 dB SNR; the false-accept set is
30 minutes of other sentences in the same voices plus 5 minutes of noise, all models listening at once.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from companion.audio.wakeword import WakeWordDetector, build_detector, detect_all
from companion.config import WakeWordSettings

# the phrases each engine's shipped models hear in espeak-ng's voices (the others are reported apart)
CLEAN = {
    "microwakeword": {"alexa": "alexa", "okay nabu": "okay_nabu", "hey mycroft": "hey_mycroft"},
    "openwakeword": {"alexa": "alexa", "hey jarvis": "hey_jarvis", "okay nabu": "okay_nabu"},
}
FALSE_ACCEPT_SPEECH_S = 30 * 60
FALSE_ACCEPT_NOISE_S = 5 * 60
LATENCY_TRIALS = 12
IDLE_SECONDS = 10.0


def _rate(detector: WakeWordDetector, phrase: str, snr_db: float | None) -> tuple[int, int]:
    from tests.wake_corpus import wake_set

    hits = total = 0
    for _, clip in wake_set(phrase, snr_db=snr_db):
        detector.reset()
        total += 1
        hits += any(d.phrase.lower() == phrase for d in detect_all(detector, clip.tobytes()))
    return hits, total


def detection(engine: str) -> dict[str, Any]:
    """Detection rates on the clean and noisy sets, with every model of the engine listening."""
    models = {"microwakeword": ["alexa", "okay_nabu", "hey_mycroft", "hey_jarvis"],
              "openwakeword": ["alexa", "hey_jarvis", "okay_nabu", "hey_mycroft"]}[engine]  # fmt: skip
    detector = build_detector(WakeWordSettings(engine=engine, models=models))
    figures: dict[str, Any] = {}
    clean, noisy = [0, 0], [0, 0]
    for phrase in ("alexa", "okay nabu", "hey mycroft", "hey jarvis"):
        key = phrase.replace(" ", "_")
        hits, total = _rate(detector, phrase, None)
        figures[f"wake_detect_rate_{engine}_{key}"] = round(hits / total, 3)
        n_hits, n_total = _rate(detector, phrase, 10.0)
        figures[f"wake_detect_rate_{engine}_{key}_10db"] = round(n_hits / n_total, 3)
        if phrase in CLEAN[engine]:
            clean = [clean[0] + hits, clean[1] + total]
            noisy = [noisy[0] + n_hits, noisy[1] + n_total]
    suffix = "" if engine == "microwakeword" else f"_{engine}"
    figures[f"wake_detect_rate{suffix}"] = round(clean[0] / clean[1], 3)
    figures[f"wake_detect_rate_10db{suffix}"] = round(noisy[0] / noisy[1], 3)
    return figures


def false_accepts(engine: str, speech: np.ndarray, noise: np.ndarray) -> dict[str, Any]:
    """False accepts per hour over the non-wake speech and noise, and the engine's CPU per audio second."""
    models = ["alexa", "okay_nabu", "hey_mycroft", "hey_jarvis"]
    detector = build_detector(WakeWordSettings(engine=engine, models=models))
    stream = np.concatenate([speech, noise])
    cpu0 = time.process_time()
    found = detect_all(detector, stream.tobytes())
    cpu = time.process_time() - cpu0
    hours = len(stream) / 16000 / 3600
    suffix = "" if engine == "microwakeword" else f"_{engine}"
    return {
        f"wake_false_accepts_per_hour{suffix}": round(len(found) / hours, 2),
        f"wake_false_accepts{suffix}": [f"{d.phrase}@{d.end_sample / 16000:.1f}s" for d in found],
        f"wake_engine_cpu_percent{suffix}": round(100 * cpu / (len(stream) / 16000), 3),
        "wake_false_accept_audio_min": round(len(stream) / 16000 / 60, 1),
    }


def _phrase_end(clip: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(clip.astype(np.int32)) > 0.02 * np.abs(clip).max())
    return int(loud[-1]) + 1


def _latency_clips(every_voice: bool) -> list[np.ndarray]:
    """The word "alexa" as the latency trials say it: 4 voices at espeak's default speed, each three
    times (the figure kept since the first measurement), or once in every voice at every speed."""
    from tests.wake_corpus import SPEEDS, VOICES, speak

    if every_voice:
        return [speak("alexa", voice, speed) for voice in VOICES for speed in SPEEDS]
    return [speak("alexa", VOICES[trial % 4]) for trial in range(LATENCY_TRIALS)]


async def _latency(clips: list[np.ndarray]) -> list[dict[str, float]]:
    """Per trial, in ms: `total`, the end of the wake phrase (as captured) → `listen detect` received by
    the echo server; `detector`, that end → the end of the capture block in which the detector fired
    (audio time: the model's own delay and the wait for the block); `to_server`, that block handed over
    → `listen detect` received (the trigger, the conversation, the websocket)."""
    from companion.audio.endpointer import Endpointer
    from companion.audio.speaker import WavSpeaker
    from companion.config import Settings, XiaozhiSettings
    from companion.daemon.conversation import Conversation
    from companion.daemon.runtime import build_backend, listen_mode_for
    from companion.daemon.wake import WakeTrigger
    from companion.events import DeviceState, TurnEnded
    from tests.peers.xiaozhi_echo import EchoPeer
    from tests.wake_corpus import silence

    async with EchoPeer(port=0) as server:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                xiaozhi=XiaozhiSettings(websocket_url=server.websocket_url, ota_url="", settle_ms=200),
                wake_word=WakeWordSettings(models=["alexa"]),
            )
            settings = replace(settings, backend=replace(settings.backend, trigger="wake_word"))
            conv: Conversation | None = None

            def sink(event: Any) -> None:
                assert conv is not None
                conv.on_backend_event(event)

            backend = build_backend(settings, sink)
            speaker = WavSpeaker(Path(tmp) / "out.wav", 24000, 120)
            conv = Conversation(backend, speaker, Endpointer(settings.vad, emit_quiet=True), settings.audio,
                                listen_mode=listen_mode_for(settings), trigger="wake_word")  # fmt: skip
            trigger = WakeTrigger(build_detector(settings.wake_word), conv, settings.wake_word)
            tasks = [asyncio.create_task(backend.run()), asyncio.create_task(conv.run()),
                     asyncio.create_task(trigger.run())]  # fmt: skip
            trials: list[dict[str, float]] = []
            try:
                await asyncio.wait_for(conv.wait_for_state(DeviceState.IDLE), 10)
                loop = asyncio.get_running_loop()
                for wake in clips:
                    clip = np.concatenate([silence(1.0), wake, silence(1.5)]).tobytes()
                    end_sample = 16000 + _phrase_end(wake)
                    seen = sum(len(r.received) for r in server.records)
                    t_end = fired = None
                    due = loop.time()
                    for start in range(0, len(clip), 1920):
                        block = clip[start : start + 1920]
                        captured = time.monotonic()  # the block is handed over as the capture yields it
                        detections = trigger.detections
                        trigger.feed(block)
                        conv.on_audio(block)
                        block_end = (start + len(block)) // 2
                        if t_end is None and block_end >= end_sample:
                            t_end = captured - (block_end - end_sample) / 16000
                        if fired is None and trigger.detections > detections:
                            fired = (captured, 1000 * (block_end - end_sample) / 16000)
                        due += 0.06
                        await asyncio.sleep(max(0.0, due - loop.time()))
                    received = [item for r in server.records for item in r.received][seen:]
                    detects = [t for t, text in received if '"detect"' in text]
                    if detects and t_end is not None and fired is not None:
                        trials.append({"total": 1000 * (detects[0] - t_end), "detector": fired[1],
                                       "to_server": 1000 * (detects[0] - fired[0])})  # fmt: skip
                    conv.on_backend_event(TurnEnded("bench"))  # back to idle for the next trial
                    await asyncio.wait_for(conv.wait_for_state(DeviceState.IDLE), 5)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await backend.close()
                await speaker.shutdown()
            return trials


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)


def latency_figures() -> dict[str, Any]:
    """The wake-word latency over the usual trials (the target's figure, with where its time goes), and
    over every voice and speed."""
    figures: dict[str, Any] = {}
    trials = asyncio.run(_latency(_latency_clips(every_voice=False)))
    figures["wake_latency_trials"] = f"{len(trials)} of {LATENCY_TRIALS}"
    if trials:
        total = [t["total"] for t in trials]
        figures["wake_latency_ms_p50"] = round(statistics.median(total), 1)
        figures["wake_latency_ms_p95"] = _p95(total)
        stages = {stage: [t[stage] for t in trials] for stage in ("detector", "to_server")}
        figures["wake_latency_stages_ms_p50"] = {k: round(statistics.median(v), 1) for k, v in stages.items()}
    clips = _latency_clips(every_voice=True)
    every = [t["total"] for t in asyncio.run(_latency(clips))]
    figures["wake_latency_every_voice_trials"] = f"{len(every)} of {len(clips)}"
    if every:
        figures["wake_latency_every_voice_ms_p50"] = round(statistics.median(every), 1)
        figures["wake_latency_every_voice_ms_p95"] = _p95(every)
    return figures


async def _daemon_cpu(pulse: Any, trigger: str, speech_wav: Path | None) -> float:
    """CPU of the daemon on a sound device (private PulseAudio), idle in silence or while other speech
    (no wake word) plays into the microphone, over IDLE_SECONDS."""
    from bench.daemon import _cpu_seconds
    from tests.daemon_process import DaemonProcess
    from tests.peers.xiaozhi_echo import EchoPeer

    async with EchoPeer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            daemon = await DaemonProcess(
                "run", "--input", "default", "--output", "default",
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
                "--set", f'backend.trigger="{trigger}"', "--set", "telemetry.enabled=false",
                state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("→ idle", timeout=30)
                assert daemon.proc is not None
                player = pulse.play_into_mic(speech_wav) if speech_wav is not None else None
                await asyncio.sleep(2.0)
                cpu0, t0 = _cpu_seconds(daemon.proc.pid), time.monotonic()
                await asyncio.sleep(IDLE_SECONDS)
                percent = 100 * (_cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - t0)
                if player is not None:
                    player.terminate()
                    player.wait(5)
                return percent
            finally:
                await daemon.stop()


def _write_wav(path: Path, pcm: np.ndarray) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return path


def _gated_rate() -> tuple[int, int]:
    """The clean set through the daemon's trigger (the VAD gate, the ring) instead of the bare engine."""
    from companion.audio.endpointer import Endpointer
    from companion.config import AudioSettings, VadSettings
    from companion.daemon.clock import ManualClock
    from companion.daemon.conversation import Conversation
    from companion.daemon.wake import WakeTrigger
    from companion.events import Connected, TurnEnded
    from tests.conversation_edges import RecordingBackend, RecordingSink
    from tests.wake_corpus import silence, wake_set

    async def run() -> tuple[int, int]:
        settings = WakeWordSettings(models=list(CLEAN["microwakeword"].values()))
        conv = Conversation(RecordingBackend(), RecordingSink(), Endpointer(VadSettings(), emit_quiet=True),
                            AudioSettings(codec="pcm"), trigger="wake_word", clock=ManualClock())  # fmt: skip
        trigger = WakeTrigger(build_detector(settings), conv, settings)
        task = asyncio.create_task(conv.run())
        conv.on_backend_event(Connected())
        hits = total = 0
        try:
            for phrase in CLEAN["microwakeword"]:
                for _, clip in wake_set(phrase):
                    before = trigger.detections
                    data = np.concatenate([clip, silence(2.0)]).tobytes()  # past the refractory time
                    for start in range(0, len(data), 1920):
                        trigger.feed(data[start : start + 1920])
                        conv.on_audio(data[start : start + 1920])
                    total += 1
                    hits += trigger.detections > before
                    conv.on_backend_event(TurnEnded("bench"))
                    await asyncio.sleep(0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return hits, total

    return asyncio.run(run())


PARTS = ("detection", "latency", "cpu")


def measure(parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """The figures of `parts` (all by default; `python -m bench.bench_wake latency` runs one part)."""
    from tests.peers.pulse import pulse_environment
    from tests.wake_corpus import noise, other_speech

    figures: dict[str, Any] = {}
    if "detection" in parts:
        for engine in ("microwakeword", "openwakeword"):
            figures.update(detection(engine))
        speech = other_speech(FALSE_ACCEPT_SPEECH_S, seed=11)
        background = np.concatenate([noise(FALSE_ACCEPT_NOISE_S / 2, seed=3),
                                     noise(FALSE_ACCEPT_NOISE_S / 2, seed=4, kind="white")])  # fmt: skip
        for engine in ("microwakeword", "openwakeword"):
            figures.update(false_accepts(engine, speech, background))
        hits, total = _gated_rate()
        figures["wake_detect_rate_through_trigger"] = round(hits / total, 3)
    if "latency" in parts:
        figures.update(latency_figures())
    if "cpu" in parts:
        with pulse_environment() as server, tempfile.TemporaryDirectory() as tmp:
            talk = _write_wav(Path(tmp) / "talk.wav", other_speech(IDLE_SECONDS + 4, seed=5))
            for trigger in ("button", "wake_word"):
                name = "button_trigger" if trigger == "button" else "wake_word"
                idle = asyncio.run(_daemon_cpu(server, trigger, None))
                figures[f"idle_cpu_percent_{name}"] = round(idle, 2)
                speech_cpu = asyncio.run(_daemon_cpu(server, trigger, talk))
                figures[f"speech_cpu_percent_{name}"] = round(speech_cpu, 2)
    return figures


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(tuple(sys.argv[1:]) or PARTS), indent=2, ensure_ascii=False))
