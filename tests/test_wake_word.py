"""Wake-word detection on speech made at test time by espeak-ng, the [wake_word] settings, and the
one-breath turn and wake-word barge-in through the daemon against the echo server."""

from __future__ import annotations

import asyncio
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from companion.audio.endpointer import Endpointer
from companion.audio.wakeword import Detection, WakeWordDetector, build_detector, detect_all
from companion.config import AudioSettings, VadSettings, WakeWordSettings, settings_from_mapping
from companion.daemon.clock import ManualClock
from companion.daemon.conversation import Conversation
from companion.daemon.wake import WakeTrigger
from companion.errors import ConfigError
from companion.events import Connected, SpeechStarted
from companion.events import DeviceState as S
from tests.audio_match import best_match
from tests.conversation_edges import RecordingBackend, RecordingSink
from tests.daemon_process import DaemonProcess
from tests.peers.xiaozhi_echo import EchoPeer
from tests.wake_corpus import RATE, other_speech, padded, silence, speak

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

MICRO = WakeWordSettings(engine="microwakeword", models=["alexa", "okay_nabu", "hey_mycroft"])


def heard(settings: WakeWordSettings, pcm: np.ndarray) -> list[str]:
    return [d.phrase.lower() for d in detect_all(build_detector(settings), pcm.tobytes())]


@pytest.mark.parametrize("voice", ["en-us", "en-gb", "en-gb-x-rp", "en+f3"])
def test_microwakeword_hears_alexa_in_four_espeak_voices(voice: str) -> None:
    assert heard(MICRO, padded(speak("alexa", voice))) == ["alexa"]


def test_microwakeword_tells_its_models_apart_in_one_stream() -> None:
    stream = np.concatenate(
        [padded(speak("okay nabu")), padded(speak("alexa")), padded(speak("hey mycroft"))]
    )
    assert heard(MICRO, stream) == ["okay nabu", "alexa", "hey mycroft"]


@pytest.mark.parametrize(("model", "phrase"), [("alexa", "alexa"), ("hey_jarvis", "hey jarvis"),
                                               ("okay_nabu", "okay nabu")])  # fmt: skip
def test_openwakeword_hears_its_phrases(model: str, phrase: str) -> None:
    settings = WakeWordSettings(engine="openwakeword", models=[model])
    assert heard(settings, padded(speak(phrase, "en-us"))) == [phrase]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["microwakeword", "openwakeword"])
def test_other_speech_and_noise_trigger_no_model(engine: str) -> None:
    models = ["alexa", "okay_nabu", "hey_mycroft", "hey_jarvis"]
    speech = other_speech(90, seed=7)
    from tests.wake_corpus import noise

    stream = np.concatenate([speech, noise(20, seed=1), noise(10, seed=2, kind="white")])
    assert heard(WakeWordSettings(engine=engine, models=models), stream) == []


def test_the_refractory_time_holds_a_repeated_wake_word_to_one_detection() -> None:
    twice = np.concatenate([padded(speak("alexa"), tail=0.3), speak("alexa"), silence(0.8)])
    assert heard(WakeWordSettings(models=["alexa"], refractory_s=5.0), twice) == ["alexa"]
    assert heard(WakeWordSettings(models=["alexa"], refractory_s=0.2), twice) == ["alexa", "alexa"]


def fired_at(settings: WakeWordSettings, pcm: np.ndarray) -> int:
    """The sample at which the detector fired, fed 10 ms at a time."""
    found = detect_all(build_detector(settings), pcm.tobytes(), block_bytes=320)
    assert len(found) == 1
    return found[0].end_sample


def test_the_built_in_models_average_3_scores_and_fire_60_ms_sooner_than_their_manifests_5() -> None:
    clip = padded(speak("alexa"))
    own = fired_at(WakeWordSettings(models=["alexa"]), clip)
    manifest = fired_at(WakeWordSettings(models=["alexa"], sliding_window=5), clip)
    assert manifest - own == 2 * 480  # two 30 ms scores fewer to average


def test_a_custom_microwakeword_model_keeps_its_manifests_window(tmp_path: Path) -> None:
    import pymicro_wakeword

    models = Path(pymicro_wakeword.__file__).parent / "models"
    shutil.copy(models / "alexa.tflite", tmp_path / "mine.tflite")
    manifest = json.loads((models / "alexa.json").read_text())
    manifest.update(model="mine.tflite")
    (tmp_path / "mine.json").write_text(json.dumps(manifest))
    clip = padded(speak("alexa"))
    custom = fired_at(WakeWordSettings(models=[str(tmp_path / "mine.json")]), clip)
    assert custom == fired_at(WakeWordSettings(models=["alexa"], sliding_window=5), clip)


def test_a_custom_microwakeword_model_loads_by_path_and_names_its_phrase(tmp_path: Path) -> None:
    import pymicro_wakeword

    models = Path(pymicro_wakeword.__file__).parent / "models"
    shutil.copy(models / "alexa.tflite", tmp_path / "ni_hao.tflite")
    manifest = json.loads((models / "alexa.json").read_text())
    manifest.update(model="ni_hao.tflite", wake_word="你好小智")
    (tmp_path / "ni_hao.json").write_text(json.dumps(manifest, ensure_ascii=False))
    settings = WakeWordSettings(models=[str(tmp_path / "ni_hao.json")])
    assert heard(settings, padded(speak("alexa"))) == ["你好小智"]


def test_a_custom_openwakeword_model_takes_its_phrase_from_the_file_name(tmp_path: Path) -> None:
    import pyopen_wakeword

    shutil.copy(
        Path(pyopen_wakeword.__file__).parent / "models" / "hey_jarvis.tflite", tmp_path / "hey_jarvis.tflite"
    )
    settings = WakeWordSettings(engine="openwakeword", models=[str(tmp_path / "hey_jarvis.tflite")])
    assert heard(settings, padded(speak("hey jarvis"))) == ["hey jarvis"]


@pytest.mark.parametrize(
    ("wake", "message"),
    [
        ({"models": ["hey_siri"]}, "'hey_siri' is not a built-in microwakeword model"),
        ({"models": ["/nowhere/model.json"]}, "'/nowhere/model.json' does not exist"),
        ({"models": ["/nowhere/model.onnx"]}, "given as its .json file"),
        ({"engine": "openwakeword", "models": ["/nowhere/x.json"]}, "given as its .tflite file"),
        ({"models": []}, "wake_word.models is empty"),
        ({"models": [3]}, "expected model names or paths, got an integer 3"),
        ({"probability_cutoff": 1.5}, "wake_word.probability_cutoff: expected a value ≤ 1.0"),
    ],
)
def test_bad_wake_word_settings_name_file_key_and_fix(wake: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"backend": {"trigger": "wake_word"}, "wake_word": wake}, "my.toml")
    assert str(caught.value).startswith("my.toml: wake_word.")
    assert message in str(caught.value)


def test_a_missing_model_file_is_not_an_error_while_the_wake_word_is_off() -> None:
    settings = settings_from_mapping({"wake_word": {"models": ["/later/model.json"]}})
    assert settings.backend.trigger == "vad"


# ---------------------------------------------------------------------------- through the daemon


def write_wav(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


def wake_daemon(server: EchoPeer, wav: Path, out: Path, *extra: str) -> DaemonProcess:
    return DaemonProcess(
        "run", "--input", str(wav), "--output", str(out), "--turns", "1",
        "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
        "--set", "telemetry.enabled=false", "--set", 'backend.trigger="wake_word"',
        "--set", 'wake_word.models=["alexa"]', *extra,
        state_dir=out.parent / "state",
    )  # fmt: skip


def listens(server: EchoPeer) -> list[dict[str, object]]:
    """The `listen` and `abort` messages the server received, in order."""
    out = []
    for record in server.records:
        for _, text in record.received:
            msg = json.loads(text)
            if msg.get("type") in ("listen", "abort"):
                out.append({k: v for k, v in msg.items() if k != "session_id"})
    return out


def reply_audio(path: Path) -> np.ndarray:
    from companion.audio.resample import MonoResampler

    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return MonoResampler(24000, RATE).process(pcm, last=True)


@pytest.mark.slow
async def test_alexa_then_the_question_in_one_breath_is_one_turn(tmp_path: Path) -> None:
    question = speak("what is the weather like today")
    wav = write_wav(
        tmp_path / "mic.wav", np.concatenate([silence(1.0), speak("alexa"), question, silence(3.0)])
    )
    async with EchoPeer(port=0) as server:
        daemon = await wake_daemon(server, wav, tmp_path / "reply.wav").start()
        try:
            code = await daemon.wait(timeout=40)
        finally:
            await daemon.stop()
        sent = listens(server)
    assert code == 0, daemon.output()
    assert sent[:2] == [{"type": "listen", "state": "detect", "text": "Alexa"},
                        {"type": "listen", "state": "start", "mode": "auto"}], sent  # fmt: skip
    # the echo server says back what it received: the question is in it
    _, score = best_match(question, reply_audio(tmp_path / "reply.wav"))
    assert score >= 0.8, f"correlation {score:.2f}\n{daemon.output()}"


@pytest.mark.slow
async def test_the_wake_word_during_a_reply_stops_it_and_opens_a_new_turn(tmp_path: Path) -> None:
    first = speak("tell me a long story about a lighthouse keeper and the sea", speed=150)
    # The echo server's reply (the first question said back) plays from about 1 s after it ends, for as
    # long as it: the second wake word falls in the middle of it.
    mic = np.concatenate([silence(1.0), speak("alexa"), first, silence(2.2), speak("alexa"),
                          speak("stop"), silence(4.0)])  # fmt: skip
    wav = write_wav(tmp_path / "mic.wav", mic)
    async with EchoPeer(port=0) as server:
        daemon = await wake_daemon(
            server, wav, tmp_path / "reply.wav", "--set", 'audio.echo="headset"'
        ).start()
        try:
            code = await daemon.wait(timeout=60)
        finally:
            await daemon.stop()
        sent = listens(server)
    assert code == 0, daemon.output()
    detect = {"type": "listen", "state": "detect", "text": "Alexa"}
    abort: dict[str, object] = {"type": "abort", "reason": "wake_word_detected"}
    assert abort in sent, sent
    after = sent[sent.index(abort) + 1 :]
    start = {"type": "listen", "state": "start", "mode": "auto"}
    assert sent[:2] == [detect, start], sent
    assert after[:1] == [start], sent  # as the firmware: abort, then listen start, no detect
    assert "turn 1 barged_in" in daemon.output()
    assert "turn 2 completed" in daemon.output()


# ---------------------------------------------------------------------------- the trigger, in process


async def wake_rig(echo: str) -> tuple[Conversation, WakeTrigger, RecordingBackend, list[asyncio.Task[None]]]:
    backend = RecordingBackend()
    endpointer = Endpointer(VadSettings().effective(echo), emit_quiet=True)
    conv = Conversation(backend, RecordingSink(), endpointer, AudioSettings(echo=echo, codec="pcm"),
                        trigger="wake_word", clock=ManualClock())  # fmt: skip
    settings = WakeWordSettings(models=["alexa"])
    trigger = WakeTrigger(build_detector(settings), conv, settings)
    tasks = [asyncio.create_task(conv.run()), asyncio.create_task(trigger.run())]
    conv.on_backend_event(Connected())
    return conv, trigger, backend, tasks


def capture(conv: Conversation, trigger: WakeTrigger, pcm: np.ndarray) -> None:
    """What the runtime's capture task does with each 60 ms block."""
    data = pcm.tobytes()
    for start in range(0, len(data), 1920):
        trigger.feed(data[start : start + 1920])
        conv.on_audio(data[start : start + 1920])


async def test_the_question_said_right_after_the_wake_word_is_what_goes_up() -> None:
    conv, trigger, backend, tasks = await wake_rig("none")
    try:
        question, wake = speak("what is the weather like today"), speak("alexa")
        capture(conv, trigger, np.concatenate([silence(0.6), wake, question]))
        await asyncio.wait_for(conv.wait_for_state(S.LISTENING), 5)
        capture(conv, trigger, silence(0.5))
        await backend.wait_for(lambda _names: conv.uplink.pending() == 0)
        sent = b"".join(backend.audio())
        assert conv.turn is not None and conv.turn.trigger == "wake_word"
        lag, score = best_match(question, sent)
        assert score >= 0.95
        # Before the question only the pre-roll went up: at most the end of the wake phrase, never all of it.
        loud = np.flatnonzero(np.abs(wake.astype(np.int32)) > 0.02 * np.abs(wake).max())
        sent_from = 0.6 * RATE + len(wake) - lag  # where the sent audio begins in what was captured
        assert sent_from > 0.6 * RATE + (loud[0] + loud[-1]) / 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize(("echo", "interrupts"), [("none", False), ("headset", True)])
async def test_the_wake_word_over_a_reply_interrupts_it_only_when_the_mic_is_open(
    echo: str, interrupts: bool
) -> None:
    conv, trigger, backend, tasks = await wake_rig(echo)
    try:
        conv.on_backend_event(SpeechStarted())
        assert conv.state is S.SPEAKING
        capture(conv, trigger, padded(speak("alexa")))
        if interrupts:
            await backend.wait_for(lambda names: "start_listening" in names)
            assert ("abort", "wake_word_detected") in backend.calls
            assert conv.state is S.LISTENING
        else:
            assert trigger.detections == 0 and conv.state is S.SPEAKING
            assert "abort" not in backend.names()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class CountingDetector:
    """A detector that counts the samples it is given, around a real one; `ends` holds, for every
    block, the samples given since the last reset once the block is in."""

    def __init__(self, inner: WakeWordDetector) -> None:
        self.inner = inner
        self.engine, self.phrases, self.light = inner.engine, inner.phrases, inner.light
        self.first_step, self.step = inner.first_step, inner.step
        self.samples = 0
        self.since_reset = 0
        self.ends: list[int] = []
        self.heard = bytearray()  # what it was given since the last reset
        self.fired: list[int] = []  # the samples given since the last reset when it fired

    def feed(self, pcm: bytes) -> list[Detection]:
        self.samples += len(pcm) // 2
        self.since_reset += len(pcm) // 2
        self.ends.append(self.since_reset)
        self.heard += pcm
        found = self.inner.feed(pcm)
        self.fired += [self.since_reset] * len(found)
        return found

    def reset(self) -> None:
        self.since_reset = 0
        self.heard.clear()
        self.inner.reset()


async def test_the_detector_sleeps_through_silence_and_still_hears_the_wake_word_after_it() -> None:
    backend = RecordingBackend()
    conv = Conversation(backend, RecordingSink(), Endpointer(VadSettings(), emit_quiet=True),
                        AudioSettings(codec="pcm"), trigger="wake_word", clock=ManualClock())  # fmt: skip
    settings = WakeWordSettings(models=["alexa"])
    detector = CountingDetector(build_detector(settings))
    trigger = WakeTrigger(detector, conv, settings)
    conv.on_backend_event(Connected())
    task = asyncio.create_task(conv.run())
    try:
        capture(conv, trigger, np.concatenate([silence(10.0), speak("alexa"), silence(1.0)]))
        assert trigger.detections == 1 and conv.state is S.LISTENING
        assert detector.samples < 4.0 * RATE  # of 11.8 s: the lead-in, the word and the tail after it
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_with_60_ms_blocks_the_models_score_just_before_each_block_ends() -> None:
    """The lead-in is cut so that a score falls at the end of a block: a wake word scored is acted on
    at once, not up to a block (60 ms) later."""
    from companion.daemon.wake import ALIGN_MARGIN

    conv = Conversation(RecordingBackend(), RecordingSink(), Endpointer(VadSettings(), emit_quiet=True),
                        AudioSettings(codec="pcm"), trigger="wake_word", clock=ManualClock())  # fmt: skip
    settings = WakeWordSettings(models=["alexa"])
    detector = CountingDetector(build_detector(settings))
    assert (detector.first_step, detector.step) == (800, 480)  # 30 ms window, then a score every 30 ms
    trigger = WakeTrigger(detector, conv, settings)
    conv.on_backend_event(Connected())
    task = asyncio.create_task(conv.run())
    try:
        mic = np.concatenate([silence(3.0), speak("alexa"), silence(0.5)])
        capture(conv, trigger, mic[: len(mic) // 960 * 960])  # whole 60 ms blocks
        assert trigger.detections == 1
        assert len(detector.ends) > 10
        for end in detector.ends:
            assert (end - detector.first_step - ALIGN_MARGIN) % detector.step == 0, detector.ends
        # The same audio fed 10 ms at a time fires at the very score: the trigger saw it at most one
        # score later (the first of a block's two), never a whole block later.
        scored = detect_all(build_detector(settings), bytes(detector.heard), block_bytes=320)
        assert len(scored) == 1
        assert detector.fired[0] - scored[0].end_sample in (ALIGN_MARGIN, detector.step + ALIGN_MARGIN)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
