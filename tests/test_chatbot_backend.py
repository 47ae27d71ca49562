"""The chat_bot_v3 backend end to end: a real websockets server and a real HTTP server on 127.0.0.1
(tests/peers/chatbot_server.py), real MP3 files decoded by miniaudio, the speech written to a WAV.

Each reply scenario checks the WAV two ways: cross-correlation finds every expected sentence (decoded
independently, as a whole file) at increasing offsets, and the samples equal the expected sentences
joined back to back, which proves nothing was inserted, repeated or lost between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import miniaudio
import numpy as np
import pytest

from companion.audio.mp3 import stream_decode
from companion.backends.chatbot_v3.backend import ChatbotV3Backend
from companion.backends.chatbot_v3.sessions import SESSION_FILE
from companion.config import ChatbotV3Settings
from companion.errors import ConfigError
from companion.events import (
    Alert,
    BackendEvent,
    Connected,
    Disconnected,
    Emotion,
    ListenMode,
    ReplyText,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    Transcript,
    TurnEnded,
)
from companion.net.backoff import Backoff
from tests.peers.chatbot_server import (
    API_KEY,
    DEVICE_TOKEN,
    Behaviour,
    ChatbotServer,
    Step,
    agent_stop,
    emotion,
    llm,
    status,
    tts,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chatbot_v3"
NAMES = ("s0", "s1", "s2", "s3")
TEXTS = ("Hello there, nice to meet you.", "Today the weather is sunny and warm.",
         "Would you like to hear a story?", "Goodbye, see you tomorrow.")  # fmt: skip
RATE = 24000
WAIT = 0.3  # missing_index_wait_s in these tests


# ---------------------------------------------------------------------------- references and helpers


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {name: (FIXTURES / f"{name}.mp3").read_bytes() for name in NAMES}


@pytest.fixture(scope="module")
def whole(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Each sentence decoded as a whole file by miniaudio: the independent reference."""
    return {
        name: np.frombuffer(miniaudio.decode(data, nchannels=1, sample_rate=RATE).samples, dtype=np.int16)
        for name, data in files.items()
    }


@pytest.fixture(scope="module")
def streamed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Each sentence as the stream decoder hands it out (gapless-trimmed) when given in one piece."""

    async def one(data: bytes) -> bytes:
        async def source() -> AsyncIterator[bytes]:
            yield data

        out: list[bytes] = []
        await stream_decode(source(), RATE, out.append)
        return b"".join(out)

    return {name: asyncio.run(one(data)) for name, data in files.items()}


def locate(reference: np.ndarray, recording: np.ndarray) -> tuple[int, float]:
    """(offset, normalised correlation) of the best match of `reference` inside `recording`."""
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    if len(rec) < len(ref):
        rec = np.concatenate([rec, np.zeros(len(ref) - len(rec))])
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(rec) - len(ref) + 1]
    energy = np.concatenate([[0.0], np.cumsum(rec**2)])
    window = energy[len(ref) :] - energy[: len(energy) - len(ref)]
    ref_energy = float(np.sum(ref**2))
    score = corr / np.sqrt(np.maximum(window, 1e-3 * ref_energy) * ref_energy)  # silence cannot score high
    best = int(np.argmax(score))
    return best, float(score[best])


class Recorder:
    """The event sink: keeps every event and writes the speech to a WAV file, as a speaker would."""

    def __init__(self, wav_path: Path) -> None:
        self.events: list[BackendEvent] = []
        self.changed = asyncio.Condition()
        self.path = wav_path
        self._wav = wave.open(str(wav_path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(RATE)
        self._loop = asyncio.get_running_loop()

    def __call__(self, event: BackendEvent) -> None:
        self.events.append(event)
        if isinstance(event, SpeechAudio):
            assert event.codec == "pcm" and event.sample_rate == RATE
            self._wav.writeframes(event.payload)
        self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[BackendEvent], bool], timeout: float = 10.0
    ) -> BackendEvent:
        """The first event (from the start) for which `predicate` holds."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: any(predicate(e) for e in self.events))
        return next(e for e in self.events if predicate(e))

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    def audio(self) -> np.ndarray:
        self._wav.close()
        with wave.open(str(self.path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels()) == (RATE, 1)
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def settings_for(server: ChatbotServer, **overrides: Any) -> ChatbotV3Settings:
    values: dict[str, Any] = {
        "url": server.ws_url,
        "api_key": API_KEY,
        "rest_url": server.rest_url,
        "missing_index_wait_s": WAIT,
    }
    values.update(overrides)
    return ChatbotV3Settings(**values)


@contextlib.asynccontextmanager
async def running(backend: ChatbotV3Backend) -> AsyncIterator[ChatbotV3Backend]:
    task = asyncio.create_task(backend.run())
    try:
        yield backend
    finally:
        await backend.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reply(server: ChatbotServer, order: list[int], envelope: int = 1003, stop: bool = True) -> list[Step]:
    """A reply as the seed shows it: emotion, llm sentences, TTS URLs (in `order`), agent_stop."""
    steps = [Step(emotion("happy", envelope))]
    steps += [Step(llm(TEXTS[i], i, envelope, asr="hello")) for i in sorted(set(order))]
    steps += [Step(tts(server.file_url(NAMES[i]), i, envelope)) for i in order]
    if stop:
        steps.append(Step(agent_stop()))
    return steps


@pytest.fixture
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(path))
    monkeypatch.delenv("COMPANION_MINDCRAFT_KEY", raising=False)
    monkeypatch.delenv("COMPANION_MINDCRAFT_DEVICE_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return path


@pytest.fixture
async def server(files: dict[str, bytes], state_directory: Path) -> AsyncIterator[ChatbotServer]:
    async with ChatbotServer(files) as peer:
        yield peer


async def text_turn_audio(
    server: ChatbotServer, tmp_path: Path, steps: list[Step], **overrides: Any
) -> tuple[Recorder, np.ndarray]:
    """Run one text turn with the scripted reply; the recorder and the speech it wrote."""
    server.script = lambda turn: steps
    recorder = Recorder(tmp_path / "out.wav")
    async with running(
        ChatbotV3Backend(settings_for(server, **overrides), recorder, playback_rate=RATE)
    ) as b:
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await b.send_text("hello")
        await recorder.wait_for(lambda e: isinstance(e, SpeechEnded | TurnEnded))
    return recorder, recorder.audio()


def assert_sentences(
    audio: np.ndarray, names: list[str], whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    offsets = []
    for name in names:
        offset, score = locate(whole[name], audio)
        assert score > 0.95, f"{name} not found (best correlation {score:.2f})"
        offsets.append(offset)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), offsets
    expected = b"".join(streamed[name] for name in names)
    assert len(audio) * 2 == len(expected), "speech was added or lost between the sentences"
    assert audio.tobytes() == expected


def assert_speech_events_well_formed(recorder: Recorder) -> None:
    kinds = [type(e) for e in recorder.events if isinstance(e, SpeechStarted | SpeechAudio | SpeechEnded)]
    assert kinds[0] is SpeechStarted and kinds[-1] is SpeechEnded
    assert kinds.count(SpeechStarted) == 1 and kinds.count(SpeechEnded) == 1
    indices = [e.index for e in recorder.events if isinstance(e, SpeechAudio)]
    assert indices == sorted(indices), "audio handed out in z_index order"


# ---------------------------------------------------------------------------- reply scenarios


async def test_in_order_reply_plays_every_sentence_in_z_index_order(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    recorder, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 2, 3]))
    assert_sentences(audio, list(NAMES), whole, streamed)
    assert_speech_events_well_formed(recorder)
    assert Emotion("happy") in recorder.events
    assert Transcript("hello") in recorder.events
    assert [e.text for e in recorder.events if isinstance(e, ReplyText)] == list(TEXTS)
    first_audio = next(i for i, e in enumerate(recorder.events) if isinstance(e, SpeechAudio))
    assert isinstance(recorder.events[first_audio - 1], SpeechStarted)


async def test_shuffled_reply_is_put_back_in_order(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    recorder, audio = await text_turn_audio(server, tmp_path, reply(server, [2, 0, 3, 1]))
    assert_sentences(audio, list(NAMES), whole, streamed)
    assert_speech_events_well_formed(recorder)


async def test_1007_envelope_is_played_like_1003(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    recorder, audio = await text_turn_audio(server, tmp_path, reply(server, [1, 0, 2, 3], envelope=1007))
    assert_sentences(audio, list(NAMES), whole, streamed)
    assert Emotion("happy") in recorder.events


async def test_missing_z_index_is_skipped_after_the_wait(
    server: ChatbotServer,
    tmp_path: Path,
    whole: dict[str, np.ndarray],
    streamed: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="companion.backends.chatbot_v3.backend"):
        recorder, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 3]))
    assert_sentences(audio, ["s0", "s1", "s3"], whole, streamed)
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skips == [f"sentence z_index 2 skipped: never sent (waited {WAIT:g} s)"]
    assert_speech_events_well_formed(recorder)


async def test_duplicate_z_index_plays_once(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    _, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 1, 2, 0, 3, 2]))
    assert_sentences(audio, list(NAMES), whole, streamed)


async def test_slow_url_keeps_its_place(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    server.behaviour["s1"] = Behaviour(delay=0.4, chunk=700, chunk_delay=0.02)
    recorder, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 2, 3]))
    assert_sentences(audio, list(NAMES), whole, streamed)
    assert_speech_events_well_formed(recorder)


async def test_404_url_is_skipped_and_the_rest_stays_in_order(
    server: ChatbotServer,
    tmp_path: Path,
    whole: dict[str, np.ndarray],
    streamed: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.behaviour["s2"] = Behaviour(status=404)
    with caplog.at_level(logging.WARNING, logger="companion.backends.chatbot_v3.backend"):
        _, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 2, 3]))
    assert_sentences(audio, ["s0", "s1", "s3"], whole, streamed)
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skips) == 1 and skips[0].startswith("sentence z_index 2 skipped: HTTP 404")
    assert "sig=secret" not in skips[0]  # URLs are logged without their query string


async def test_timed_out_download_is_skipped(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    server.behaviour["s1"] = Behaviour(delay=3.0)
    _, audio = await text_turn_audio(server, tmp_path, reply(server, [0, 1, 2]), tts_timeout_s=1.0)
    assert_sentences(audio, ["s0", "s2"], whole, streamed)


async def test_reply_without_speech_ends_the_turn(server: ChatbotServer, tmp_path: Path) -> None:
    recorder, audio = await text_turn_audio(server, tmp_path, [Step(llm("ok", 0)), Step(agent_stop())])
    assert recorder.events[-1] == TurnEnded("completed")
    assert recorder.count(SpeechStarted) == 0 and len(audio) == 0


async def test_a_reply_the_server_never_ends_is_ended_after_the_idle_time(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    recorder, audio = await text_turn_audio(
        server, tmp_path, reply(server, [0], stop=False), reply_idle_s=2.0
    )
    assert_sentences(audio, ["s0"], whole, streamed)
    assert isinstance(recorder.events[-1], SpeechEnded)


async def test_garbage_from_the_server_is_skipped_and_the_reply_goes_on(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    steps = [Step("{not json"), Step(status(1005)), Step("[1, 2]"), *reply(server, [0, 1])]
    _, audio = await text_turn_audio(server, tmp_path, steps)
    assert_sentences(audio, ["s0", "s1"], whole, streamed)


# ---------------------------------------------------------------------------- voice turns and barge-in


async def voice_turn(backend: ChatbotV3Backend, frames: int = 10) -> None:
    await backend.start_listening(ListenMode.MANUAL)
    for _ in range(frames):
        await backend.send_audio(b"\x10\x00" * 960)  # 60 ms of 16 kHz s16 PCM
    await backend.stop_listening()


async def test_voice_turn_uploads_pcm_between_agent_action_and_stream_asr(
    server: ChatbotServer, tmp_path: Path
) -> None:
    server.script = lambda turn: reply(server, [0])
    recorder = Recorder(tmp_path / "out.wav")
    backend = ChatbotV3Backend(settings_for(server, session_token="0886a1f1"), recorder, playback_rate=RATE)
    assert backend.uplink.codec == "pcm" and backend.uplink.sample_rate == 16000
    async with running(backend):
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await voice_turn(backend)
        await recorder.wait_for(lambda e: isinstance(e, SpeechEnded))
    (turn,) = server.state.turns
    assert turn.audio_bytes == 10 * 1920 and turn.frames == 10 and turn.stream_asr
    assert turn.params["session_token"] == "0886a1f1"
    assert turn.params["upload_sample_rate"] == 16000 and turn.params["upload_format"] == "pcm"
    names = [m["event_name"] for m in server.state.messages]
    assert names == ["auth_token", "agent_action", "stream_asr"]
    assert Transcript("hello") in recorder.events


async def test_a_long_upload_is_not_mistaken_for_a_silent_server(
    server: ChatbotServer, tmp_path: Path
) -> None:
    server.script = lambda turn: reply(server, [0])
    recorder = Recorder(tmp_path / "out.wav")
    settings = settings_for(server, reply_idle_s=2.0)
    async with running(ChatbotV3Backend(settings, recorder, playback_rate=RATE)) as backend:
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await backend.start_listening(ListenMode.MANUAL)
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.5  # the user talks for longer than reply_idle_s
        while loop.time() < end:
            await backend.send_audio(b"\x10\x00" * 960)
            await asyncio.sleep(0.06)  # real-time pacing of 60 ms frames, as the microphone does
        assert recorder.count(TurnEnded) == 0 and recorder.count(SpeechEnded) == 0
        await backend.stop_listening()
        await recorder.wait_for(lambda e: isinstance(e, SpeechEnded))
    assert recorder.count(TurnEnded) == 0


async def test_3001_ends_the_turn_quietly(server: ChatbotServer, tmp_path: Path) -> None:
    server.asr_text = ""
    server.script = lambda turn: [Step(status(3001, error="未识别到文字"))]
    recorder = Recorder(tmp_path / "out.wav")
    async with running(ChatbotV3Backend(settings_for(server), recorder, playback_rate=RATE)) as backend:
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await voice_turn(backend)
        event = await recorder.wait_for(lambda e: isinstance(e, TurnEnded))
    assert event == TurnEnded("nothing_recognised")
    assert recorder.count(Alert) == 0 and recorder.count(SpeechStarted) == 0


async def test_abort_mid_reply_stops_the_speech_and_drops_late_events(
    server: ChatbotServer, tmp_path: Path, whole: dict[str, np.ndarray], streamed: dict[str, bytes]
) -> None:
    first = [
        *reply(server, [0, 1])[:-1],
        Step(tts(server.file_url("s2"), 2), delay=1.0),  # still to come when the user barges in
        Step(tts(server.file_url("s3"), 3)),
        Step(agent_stop()),
    ]
    second = [Step(tts(server.file_url("s3"), 0)), Step(agent_stop())]
    scripts = iter([first, second])
    server.script = lambda turn: next(scripts)
    recorder = Recorder(tmp_path / "out.wav")
    async with running(ChatbotV3Backend(settings_for(server), recorder, playback_rate=RATE)) as backend:
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await backend.send_text("tell me a story")
        await recorder.wait_for(lambda e: isinstance(e, SpeechAudio))
        await backend.abort("barge-in")
        cut = len(recorder.events)
        await server.wait_for(lambda s: s.turns[0].cancelled)
        # the server still sends two items of the cancelled reply and a forced stop; then a new turn
        await backend.send_text("again")
        await recorder.wait_for(lambda e: isinstance(e, SpeechEnded))
    after = recorder.events[cut:]
    assert [type(e) for e in after if isinstance(e, SpeechStarted | SpeechEnded)] == [
        SpeechStarted,
        SpeechEnded,
    ]
    audio_after = b"".join(e.payload for e in after if isinstance(e, SpeechAudio))
    assert audio_after == streamed["s3"], "only the new turn's speech plays after the barge-in"
    assert recorder.count(SpeechEnded) == 1  # the cancelled reply never reports an end
    assert [m["event_name"] for m in server.state.messages if m["event_name"] != "auth_token"] == [
        "agent_action",
        "stream_output",
        "agent_action",
    ]
    audio = recorder.audio()
    _, score = locate(whole["s2"], audio)
    assert score < 0.6, "the cancelled reply's later sentence never plays"


# ---------------------------------------------------------------------------- connection and auth


@pytest.mark.parametrize(
    ("header", "refusal"), [("require", "HTTP 401"), ("ignore", "2003")], ids=["at-upgrade", "in-band"]
)
async def test_auth_failure_is_reported_once_and_not_retried_in_a_storm(
    files: dict[str, bytes], state_directory: Path, tmp_path: Path, header: str, refusal: str
) -> None:
    recorder = Recorder(tmp_path / "out.wav")
    quick = Backoff(initial=0.01, cap=0.02)  # an ordinary failure would reconnect within 20 ms
    async with ChatbotServer(files, header=header) as server:
        settings = settings_for(server, api_key="MC-" + "F" * 32, auth_retry_s=60.0)
        async with running(ChatbotV3Backend(settings, recorder, playback_rate=RATE, backoff=quick)):
            disconnected = await recorder.wait_for(lambda e: isinstance(e, Disconnected))
            await asyncio.sleep(0.5)  # a window in which a storm would show
        attempts = len(server.state.header_tokens)
    assert isinstance(disconnected, Disconnected)
    assert disconnected == Disconnected(disconnected.reason, auth_failed=True, retry=False)
    assert refusal in disconnected.reason
    alerts = [e for e in recorder.events if isinstance(e, Alert)]
    assert len(alerts) == 1 and alerts[0].fatal and "api_key" in alerts[0].message
    assert attempts == 1
    assert recorder.count(Connected) == 0


@pytest.mark.parametrize("where", ["query", "event"])
async def test_the_key_works_in_the_query_or_in_the_auth_event(
    files: dict[str, bytes], state_directory: Path, tmp_path: Path, where: str
) -> None:
    async with ChatbotServer(files, auth=where) as peer:
        recorder = Recorder(tmp_path / "out.wav")
        async with running(ChatbotV3Backend(settings_for(peer), recorder, playback_rate=RATE)):
            await recorder.wait_for(lambda e: isinstance(e, Connected))
        assert peer.state.query_tokens == [API_KEY] and peer.state.auth_events == [API_KEY]
        assert peer.state.header_tokens == [API_KEY]  # the seed's Authorization: Bearer, on the upgrade


async def test_nothing_is_sent_before_1008(
    files: dict[str, bytes], state_directory: Path, tmp_path: Path
) -> None:
    async with ChatbotServer(files, auth="event") as peer:
        recorder = Recorder(tmp_path / "out.wav")
        backend = ChatbotV3Backend(settings_for(peer), recorder, playback_rate=RATE)
        await backend.send_text("too early")  # not connected: refused, nothing sent
        async with running(backend):
            await recorder.wait_for(lambda e: isinstance(e, Connected))
        assert [m["event_name"] for m in peer.state.messages] == ["auth_token"]


async def test_reconnect_authenticates_again(server: ChatbotServer, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "out.wav")
    quick = Backoff(initial=0.01, cap=0.02)
    async with running(ChatbotV3Backend(settings_for(server), recorder, playback_rate=RATE, backoff=quick)):
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await server.drop_connections()
        await recorder.wait_for(lambda e: isinstance(e, Disconnected))
        await server.wait_for(lambda s: s.authenticated == 2)
        async with asyncio.timeout(5), recorder.changed:
            await recorder.changed.wait_for(lambda: recorder.count(Connected) == 2)
    assert server.state.auth_events == [API_KEY, API_KEY]
    assert server.state.query_tokens == [API_KEY, API_KEY]


async def test_4006_alerts_and_the_session_goes_on(server: ChatbotServer, tmp_path: Path) -> None:
    recorder, _ = await text_turn_audio(server, tmp_path, [Step(status(4006, message="model busy"))])
    assert Alert("4006", "model busy") in recorder.events
    assert recorder.events[-1] == TurnEnded("server_error")


async def test_3002_out_of_credit_is_a_fatal_alert(server: ChatbotServer, tmp_path: Path) -> None:
    server.script = lambda turn: [Step(status(3002, message="积分不足"))]
    recorder = Recorder(tmp_path / "out.wav")
    async with running(ChatbotV3Backend(settings_for(server), recorder, playback_rate=RATE)) as backend:
        await recorder.wait_for(lambda e: isinstance(e, Connected))
        await backend.send_text("hello")
        alert = await recorder.wait_for(lambda e: isinstance(e, Alert))
    assert isinstance(alert, Alert) and alert.fatal and "out of credit" in alert.message
    assert server.state.connections == 1  # no reconnect


# ---------------------------------------------------------------------------- sessions and config


async def test_session_token_is_created_once_and_remembered(
    server: ChatbotServer, tmp_path: Path, state_directory: Path
) -> None:
    server.script = lambda turn: [Step(agent_stop())]
    for _ in range(2):
        recorder = Recorder(tmp_path / "out.wav")
        async with running(ChatbotV3Backend(settings_for(server), recorder, playback_rate=RATE)) as backend:
            await recorder.wait_for(lambda e: isinstance(e, Connected))
            await backend.send_text("hi")
            await recorder.wait_for(lambda e: isinstance(e, TurnEnded))
    (created,) = server.state.sessions  # the second start reused it
    assert created["model"] == "abab6.5s-chat"
    assert [t.params["session_token"] for t in server.state.turns] == [created["session_token"]] * 2
    path = state_directory / SESSION_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert API_KEY not in path.read_text()


async def test_a_refused_session_create_still_lets_the_agent_talk(
    server: ChatbotServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = lambda turn: [Step(agent_stop())]
    recorder = Recorder(tmp_path / "out.wav")
    settings = settings_for(server, rest_url=server.http_url + "/nowhere/")
    with caplog.at_level(logging.WARNING):
        async with running(ChatbotV3Backend(settings, recorder, playback_rate=RATE)) as backend:
            await recorder.wait_for(lambda e: isinstance(e, Connected))
            await backend.send_text("hi")
            await recorder.wait_for(lambda e: isinstance(e, TurnEnded))
    assert "session_token" not in server.state.turns[0].params
    assert any("could not create a Mindcraft session" in r.getMessage() for r in caplog.records)


def test_a_missing_api_key_is_a_config_error(state_directory: Path) -> None:
    with pytest.raises(ConfigError, match="COMPANION_MINDCRAFT_KEY"):
        ChatbotV3Backend(ChatbotV3Settings(), lambda event: None)


def test_the_key_comes_from_the_environment(state_directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_MINDCRAFT_KEY", API_KEY)
    assert ChatbotV3Backend(ChatbotV3Settings(), lambda event: None).api_key == API_KEY


def test_an_unsupported_upload_format_is_a_config_error(state_directory: Path) -> None:
    with pytest.raises(ConfigError, match="only 'pcm'"):
        ChatbotV3Backend(ChatbotV3Settings(api_key=API_KEY, upload_format="opus"), lambda event: None)


# ---------------------------------------------------------------------------- device tokens and models


def device_settings(server: ChatbotServer, **overrides: Any) -> ChatbotV3Settings:
    return settings_for(server, auth="device_token", api_key="", device_token=DEVICE_TOKEN, **overrides)


def secrets_sent(server: ChatbotServer) -> set[str]:
    """Every secret the client presented: upgrade header, query, auth_token event, REST bearer."""
    rest = {h.get("authorization", "").removeprefix("Bearer ") for _, _, h, _ in server.state.http_requests}
    sent = {t for t in server.state.header_tokens if t is not None}
    return sent | set(server.state.query_tokens) | set(server.state.auth_events) | (rest - {""})


async def test_a_device_token_authenticates_every_way_and_a_turn_plays(
    server: ChatbotServer, tmp_path: Path, state_directory: Path
) -> None:
    recorder, audio = await text_turn_audio(
        server, tmp_path, reply(server, [0, 1]), auth="device_token", api_key="", device_token=DEVICE_TOKEN
    )
    assert recorder.events[-1] == SpeechEnded() and len(audio) > RATE // 2
    assert server.state.header_tokens == [DEVICE_TOKEN]
    assert server.state.query_tokens == [DEVICE_TOKEN] and server.state.auth_events == [DEVICE_TOKEN]
    assert secrets_sent(server) == {DEVICE_TOKEN}  # the REST session create too
    assert DEVICE_TOKEN not in (state_directory / SESSION_FILE).read_text()


async def test_the_device_token_comes_from_the_environment_and_the_account_key_is_not_used(
    server: ChatbotServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("COMPANION_MINDCRAFT_DEVICE_TOKEN", DEVICE_TOKEN)
    monkeypatch.setenv("COMPANION_MINDCRAFT_KEY", API_KEY)
    with caplog.at_level(logging.DEBUG):
        recorder, _ = await text_turn_audio(
            server, tmp_path, [Step(agent_stop())], auth="device_token", api_key=""
        )
    assert recorder.events[-1] == TurnEnded("completed")
    assert secrets_sent(server) == {DEVICE_TOKEN}
    warnings = [r.getMessage() for r in caplog.records if "is not used" in r.getMessage()]
    assert len(warnings) == 1 and "COMPANION_MINDCRAFT_KEY" in warnings[0]
    assert API_KEY not in caplog.text  # not even read into a request (the daemon test checks redaction)


def test_a_missing_device_token_is_a_config_error(state_directory: Path) -> None:
    with pytest.raises(ConfigError, match="COMPANION_MINDCRAFT_DEVICE_TOKEN"):
        ChatbotV3Backend(ChatbotV3Settings(auth="device_token", api_key=API_KEY), lambda event: None)


async def test_an_expired_device_token_is_a_fatal_alert_naming_the_token_not_a_storm(
    files: dict[str, bytes], state_directory: Path, tmp_path: Path
) -> None:
    recorder = Recorder(tmp_path / "out.wav")
    quick = Backoff(initial=0.01, cap=0.02)
    async with ChatbotServer(files, device_tokens=(), expired_tokens=(DEVICE_TOKEN,)) as server:
        settings = device_settings(server, auth_retry_s=60.0, create_session=False)
        async with running(ChatbotV3Backend(settings, recorder, playback_rate=RATE, backoff=quick)):
            disconnected = await recorder.wait_for(lambda e: isinstance(e, Disconnected))
            await asyncio.sleep(0.5)
        attempts = len(server.state.header_tokens)
    assert isinstance(disconnected, Disconnected) and disconnected.auth_failed and not disconnected.retry
    assert "device token (invalid or expired) (2004" in disconnected.reason
    (alert,) = [e for e in recorder.events if isinstance(e, Alert)]
    assert alert.fatal and "COMPANION_MINDCRAFT_DEVICE_TOKEN" in alert.message and "7 days" in alert.message
    assert attempts == 1


async def test_a_model_id_the_seed_does_not_list_is_sent_with_one_warning(
    server: ChatbotServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await text_turn_audio(
            server, tmp_path, [Step(agent_stop())], llm_model="GLM-4.5-Flash", tts_model="MM_TTSL_speech-02"
        )
    params = server.state.turns[0].params
    assert (params["llm_model"], params["tts_model"]) == ("GLM-4.5-Flash", "MM_TTSL_speech-02")
    unknown = [r.getMessage() for r in caplog.records if "not a model this version knows" in r.getMessage()]
    assert len(unknown) == 2
    assert "'GLM-4.5-Flash'" in unknown[0] and "GLM-4-Air, Doubao-1.5-lite-32k, abab6.5s-chat" in unknown[0]
    assert "'MM_TTSL_speech-02'" in unknown[1] and "TX_TTSP_realtime" in unknown[1]


async def test_a_listed_model_gives_no_warning(
    server: ChatbotServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await text_turn_audio(server, tmp_path, [Step(agent_stop())], llm_model="GLM-4-Air")
    assert "not a model this version knows" not in caplog.text
