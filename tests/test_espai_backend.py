"""The ESP-AI backend against a local server that writes the esp-ai wire format byte for byte
(tests/peers/espai_server.py): identity in the query, a spoken turn with held audio, the reply's MP3
sentences decoded in order, stale and malformed frames skipped, refusals, stops and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.audio.mp3 import stream_decode
from companion.backends.espai import EspaiBackend
from companion.config import settings_from_mapping
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
from tests.audio_match import best_match
from tests.peers.espai_server import EspaiServer, Reply, Sentence

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chatbot_v3"
NAMES = ("s0", "s1", "s2")
TEXTS = ("Hello there, nice to meet you.", "Today the weather is sunny and warm.",
         "Would you like to hear a story?")  # fmt: skip
RATE = 24000
DEVICE = "aa:bb:cc:00:11:22"
PCM_FRAME = bytes(1920)  # 60 ms of 16 kHz silence


@pytest.fixture(scope="module")
def mp3s() -> list[bytes]:
    return [(FIXTURES / f"{name}.mp3").read_bytes() for name in NAMES]


@pytest.fixture(scope="module")
def refs(mp3s: list[bytes]) -> dict[bytes, bytes]:
    """Each sentence as the stream decoder hands it out when given in one piece."""

    async def one(data: bytes) -> bytes:
        async def source() -> AsyncIterator[bytes]:
            yield data

        out: list[bytes] = []
        await stream_decode(source(), RATE, out.append)
        return b"".join(out)

    return {data: asyncio.run(one(data)) for data in mp3s}


class Events:
    """The event sink, waitable."""

    def __init__(self) -> None:
        self.events: list[BackendEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: BackendEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(
        self, predicate: Callable[[BackendEvent], bool], timeout: float = 10.0
    ) -> BackendEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def audio(self) -> bytes:
        return b"".join(e.payload for e in self.of(SpeechAudio))


def backend_for(server: EspaiServer, sink: Events, **espai: Any) -> EspaiBackend:
    values: dict[str, Any] = {"url": server.url, "device_id": DEVICE}
    values.update(espai)
    settings = settings_from_mapping({"backend": {"kind": "espai"}, "espai_device": values})
    return EspaiBackend(settings, sink, playback_rate=RATE, backoff=Backoff(initial=0.05, cap=0.2))


@contextlib.asynccontextmanager
async def running(backend: EspaiBackend) -> AsyncIterator[EspaiBackend]:
    task = asyncio.create_task(backend.run())
    try:
        yield backend
    finally:
        await backend.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def spoken_turn(backend: EspaiBackend, frames: int = 10) -> None:
    """Start, some audio (the first frames before iat_start), end of speech."""
    await backend.start_listening(ListenMode.MANUAL)
    for _ in range(frames):
        await backend.send_audio(PCM_FRAME)
    await backend.stop_listening()


def reply_of(mp3s: list[bytes], **kwargs: Any) -> Reply:
    sentences = [
        Sentence(TEXTS[0], mp3s[0], "开心"),
        *(Sentence(t, m) for t, m in zip(TEXTS[1:], mp3s[1:], strict=False)),
    ]
    return Reply(transcript="你好", sentences=sentences, **kwargs)


# ---------------------------------------------------------------------------- connection


async def test_the_device_connects_with_the_firmwares_query_and_hello() -> None:
    sink = Events()
    async with EspaiServer() as server:
        backend = backend_for(server, sink, api_key="K-123", ext={"ext2": "kitchen"})
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            assert backend.connected
            await server.wait_for_text("cts_time")
    conn = server.connections[0]
    assert conn.query == {
        "v": "2.87.50", "device_id": DEVICE, "api_key": "K-123", "ext1": "K-123", "ext2": "kitchen",
        "AUDIO_BUFFER_SIZE": "20480", "LITTLE_ROM": "1",
    }  # fmt: skip
    assert conn.texts[0] == {"type": "play_audio_ws_conntceed"}
    clock = conn.texts[1]
    assert isinstance(clock, dict) and clock["type"] == "cts_time" and clock["stc_time"].isdigit()


async def test_a_missing_url_is_a_config_error() -> None:
    settings = settings_from_mapping({})
    with pytest.raises(ConfigError, match=r"espai_device\.url"):
        EspaiBackend(settings, Events())


# ---------------------------------------------------------------------------- a spoken turn


@pytest.mark.parametrize("end_on_last_chunk", [False, True], ids=["bare-end-frame", "end-on-last-chunk"])
async def test_a_spoken_turn_plays_every_sentence_in_order(
    mp3s: list[bytes], refs: dict[bytes, bytes], end_on_last_chunk: bool
) -> None:
    sink = Events()
    async with EspaiServer(lambda turn: reply_of(mp3s, end_on_last_chunk=end_on_last_chunk)) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            await sink.wait_for(lambda e: isinstance(e, SpeechEnded))
            over = await server.wait_for_text("client_out_audio_over")
    conn = server.connections[0]
    sid = next(t["session_id"] for t in server.texts_of("client_available_audio"))
    task = over[0].pop("tts_task_id")
    assert over == [{"type": "client_out_audio_over", "session_id": sid, "session_status": "02"}]
    # the firmware forgets the TTS task at a sentence end (01), so only an end on the last chunk names it
    assert task.startswith("task-") if end_on_last_chunk else task == ""
    assert len(conn.pcm) == 10 * len(PCM_FRAME) and conn.pcm_before_iat_start == 0  # held, then all sent
    kinds = [t["type"] for t in conn.texts if isinstance(t, dict)]
    assert kinds.index("start") < kinds.index("iat_end") < kinds.index("client_out_audio_ing")
    assert sink.of(Transcript) == [Transcript("你好")]
    assert sink.of(Emotion) == [Emotion("happy")]
    assert [e.text for e in sink.of(ReplyText)] == list(TEXTS)
    assert len(sink.of(SpeechStarted)) == 1 and sink.of(SpeechEnded) == [SpeechEnded()]
    played = np.frombuffer(sink.audio(), dtype=np.int16)
    offsets = []
    for data in mp3s:
        offset, score = best_match(refs[data], played)
        assert score > 0.95
        offsets.append(offset)
    assert offsets == sorted(offsets)
    assert abs(len(played) - sum(len(refs[m]) // 2 for m in mp3s)) < RATE // 50  # nothing lost or added


async def test_frames_of_an_old_session_and_malformed_frames_are_skipped(
    mp3s: list[bytes], refs: dict[bytes, bytes]
) -> None:
    sink = Events()
    garbage: list[bytes | str] = [b"12", b"abcd00\xff\xfb", "{not json", '{"type":"weather"}']
    script = reply_of(mp3s[:1], stale_before=b"777700" + mp3s[1], garbage_before=garbage)
    async with EspaiServer(lambda turn: script) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            await sink.wait_for(lambda e: isinstance(e, SpeechEnded))
            assert backend.connected
    played = np.frombuffer(sink.audio(), dtype=np.int16)
    assert best_match(refs[mp3s[0]], played)[1] > 0.95
    assert abs(len(played) - len(refs[mp3s[0]]) // 2) < RATE // 50  # the stale sentence was not played


async def test_nothing_heard_ends_the_turn_without_speech() -> None:
    sink = Events()
    async with EspaiServer(lambda turn: Reply(transcript="")) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            ended = await sink.wait_for(lambda e: isinstance(e, TurnEnded))
    assert ended == TurnEnded("nothing_recognised") and not sink.of(SpeechStarted)


async def test_the_servers_own_speech_after_the_turn_is_played(
    mp3s: list[bytes], refs: dict[bytes, bytes]
) -> None:
    sink = Events()
    async with EspaiServer(lambda turn: Reply(transcript="", sleep_reply=mp3s[2])) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            await sink.wait_for(lambda e: isinstance(e, SpeechEnded))
            over = await server.wait_for_text("client_out_audio_over")
    kinds = [type(e) for e in sink.events if not isinstance(e, SpeechAudio)]
    assert kinds.index(TurnEnded) < kinds.index(SpeechStarted) < kinds.index(SpeechEnded)
    assert best_match(refs[mp3s[2]], np.frombuffer(sink.audio(), dtype=np.int16))[1] > 0.95
    assert over[0]["session_id"] == "0010" and over[0]["session_status"] == "03"


async def test_an_asr_error_is_an_alert_and_ends_the_turn() -> None:
    sink = Events()
    error = {"type": "error", "at": "IAT", "code": "101", "message": "asr offline"}
    async with EspaiServer(lambda turn: Reply(error=error)) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            await sink.wait_for(lambda e: isinstance(e, TurnEnded))
    (alert,) = sink.of(Alert)
    assert alert.status == "IAT 101" and "asr offline" in alert.message and not alert.fatal


async def test_a_new_turn_acknowledges_the_servers_session_stop_and_drops_the_old_reply(
    mp3s: list[bytes],
) -> None:
    sink = Events()
    async with EspaiServer(lambda turn: reply_of(mp3s), chunk_bytes=512) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await spoken_turn(backend)
            await sink.wait_for(lambda e: isinstance(e, SpeechStarted))
            await backend.abort("barge-in")
            cut = len(sink.events)
            await spoken_turn(backend)  # the server is still busy: it stops the session and waits for our ack
            await server.wait_for_text("session_stop_ack")
            await sink.wait_for(lambda e: isinstance(e, SpeechEnded))
    assert server.turns == 2
    starts = [i for i, e in enumerate(sink.events) if isinstance(e, SpeechStarted)]
    assert len(starts) == 2
    between = sink.events[cut : starts[1]]
    assert not [e for e in between if isinstance(e, SpeechAudio)]  # nothing of the stopped reply played
    assert server.texts_of("session_stop_ack")[0]["session_id"] != ""


async def test_a_text_turn_is_answered_in_a_new_session(mp3s: list[bytes], refs: dict[bytes, bytes]) -> None:
    sink = Events()
    async with EspaiServer(lambda turn: reply_of(mp3s[:1])) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await backend.send_text("tell me a story")
            await sink.wait_for(lambda e: isinstance(e, SpeechEnded))
    assert server.texts_of("char_txt") == [{"type": "char_txt", "text": "tell me a story"}]
    assert best_match(refs[mp3s[0]], np.frombuffer(sink.audio(), dtype=np.int16))[1] > 0.95


async def test_the_connection_greeting_is_not_played(mp3s: list[bytes]) -> None:
    sink = Events()
    async with EspaiServer(greeting=mp3s[2]) as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            await server.wait_for_text("cts_time")
            await asyncio.sleep(0)
    assert not sink.of(SpeechStarted) and backend._proto.prompt_frames >= 1


# ---------------------------------------------------------------------------- refusals and reconnects


async def test_auth_fail_is_fatal_and_not_retried_at_once() -> None:
    sink = Events()
    async with EspaiServer(api_key="right-key") as server:
        backend = backend_for(server, sink, api_key="wrong-key")
        async with running(backend):
            down = await sink.wait_for(lambda e: isinstance(e, Disconnected))
            await asyncio.sleep(0.5)  # several backoffs' worth: no second attempt may come
    assert isinstance(down, Disconnected) and down.auth_failed and not down.retry
    (alert,) = sink.of(Alert)
    assert alert.fatal and "4003" in alert.message and "wrong-key" not in alert.message
    assert len(server.connections) == 1 and not sink.of(Connected)


async def test_a_dropped_connection_is_reported_and_reconnected() -> None:
    sink = Events()
    async with EspaiServer() as server:
        backend = backend_for(server, sink)
        async with running(backend):
            await sink.wait_for(lambda e: isinstance(e, Connected))
            ws = server._devices[DEVICE]
            await ws.close()
            await sink.wait_for(lambda e: isinstance(e, Disconnected))
            sink.events.clear()
            await sink.wait_for(lambda e: isinstance(e, Connected))
    assert len(server.connections) == 2


async def test_a_server_without_a_device_id_answers_004() -> None:
    sink = Events()
    async with EspaiServer() as server:
        backend = backend_for(server, sink, ready_timeout_s=1.0)
        backend.device_id = ""  # a device without an id: the server answers 004 after a while
        async with running(backend):
            down = await sink.wait_for(lambda e: isinstance(e, Disconnected), timeout=10)
    assert isinstance(down, Disconnected) and "004" in down.reason
