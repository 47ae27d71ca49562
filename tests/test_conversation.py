"""The state machine on scripted events: a recording backend and speaker at the edges, a hand-moved
clock for the reply timeout and the follow-up window, real speech through the real endpointer."""

from __future__ import annotations

import asyncio
import logging
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from companion.audio.endpointer import Endpointer
from companion.config import AudioSettings, VadSettings
from companion.daemon.clock import ManualClock
from companion.daemon.conversation import (
    FOLLOW_UP_S,
    MAX_TURN_TEXT,
    REPLY_TIMEOUT_S,
    TRANSITIONS,
    Conversation,
    Turn,
)
from companion.daemon.reply_watchdog import MAX_REPLY_S, REPLY_STALL_S
from companion.events import (
    Alert,
    Connected,
    DeviceState,
    Disconnected,
    Emotion,
    ListenMode,
    ListenRequested,
    ReplyText,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    Transcript,
    TurnEnded,
)
from tests.conversation_edges import WAIT_S, RecordingBackend, RecordingSink

S = DeviceState
SPEECH = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
BLOCK_MS = 20
REPLY = SpeechAudio(bytes(4800), codec="pcm", sample_rate=24000)  # 100 ms of silence at the speaker rate


def speech_pcm() -> bytes:
    with wave.open(str(SPEECH), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


SPEECH_PCM = speech_pcm()


@dataclass
class Rig:
    """One conversation with its edges; `do()` plays a script step by step."""

    conv: Conversation
    backend: RecordingBackend
    sink: RecordingSink
    clock: ManualClock
    states: list[S] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def feed(self, pcm: bytes) -> None:
        """Microphone audio in 20 ms blocks, the clock moving with it as a sound card's would."""
        step = 16000 * 2 * BLOCK_MS // 1000
        for pos in range(0, len(pcm), step):
            self.conv.on_audio(pcm[pos : pos + step])
            self.clock.advance(BLOCK_MS / 1000)

    def speak(self) -> None:
        """The bundled sentence, then 1 s of silence (the endpointer's hangover ends it)."""
        self.feed(SPEECH_PCM + bytes(32000))

    async def do(self, step: object) -> None:
        match step:
            case "speak":
                self.speak()
            case "button":
                self.conv.on_button()
            case ("advance", float(seconds)):
                self.clock.advance(seconds)
            case ("await", S() as state):
                await asyncio.wait_for(self.conv.wait_for_state(state), WAIT_S)
            case "hold drain":
                self.sink.hold_drain = True
            case "release drain":
                self.sink.release()
            case "settle":  # the uplink has sent everything queued so far
                await self.backend.wait_for(lambda _names: self.conv.uplink.pending() == 0)
            case _:
                assert not isinstance(step, str | tuple), f"unknown step {step!r}"
                self.conv.on_backend_event(step)  # type: ignore[arg-type]


@asynccontextmanager
async def rig(
    mode: ListenMode = ListenMode.AUTO, trigger: str = "vad", echo: str = "none"
) -> AsyncIterator[Rig]:
    clock = ManualClock()
    backend = RecordingBackend()
    sink = RecordingSink()
    conv = Conversation(
        backend,
        sink,
        Endpointer(VadSettings().effective(echo), emit_quiet=True),
        AudioSettings(echo=echo, codec="pcm"),
        listen_mode=mode,
        trigger=trigger,
        clock=clock,
    )
    r = Rig(conv, backend, sink, clock)
    conv.state_listeners.add(lambda old, new: r.states.append(new))
    conv.turns.listeners.add(r.turns.append)
    task = asyncio.create_task(conv.run())
    try:
        yield r
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------- the transition table


ALL_PAIRS = [(old, new) for old in S for new in S if old is not new]


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{o.value}->{n.value}" for o, n in ALL_PAIRS])
async def test_each_transition_is_taken_or_refused_as_the_table_says(
    old: S, new: S, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig() as r:
        r.conv.state = old
        with caplog.at_level(logging.WARNING, logger="companion.daemon.conversation"):
            r.conv.set_state(new)
        refusals = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
        if new in TRANSITIONS[old]:
            assert (r.conv.state, r.states, refusals) == (new, [new], [])
        else:
            assert (r.conv.state, r.states) == (old, [])
            assert refusals == [
                f"state {old.value} → {new.value} refused (asked by start-up); staying {old.value}"
            ]


def test_every_state_has_a_row_and_no_state_moves_to_itself() -> None:
    assert set(TRANSITIONS) == set(S)
    assert all(state not in targets for state, targets in TRANSITIONS.items())


async def test_a_refused_transition_names_the_event_that_asked(caplog: pytest.LogCaptureFixture) -> None:
    async with rig() as r:
        await r.do(Connected())
        with caplog.at_level(logging.WARNING, logger="companion.daemon.conversation"):
            await r.do(Alert("activation", "enter the code"))
        assert r.conv.state is S.IDLE
        assert "state idle → activating refused (asked by Alert); staying idle" in caplog.text


# ---------------------------------------------------------------- scripted turns


@dataclass(frozen=True)
class Script:
    name: str
    steps: Sequence[object]
    states: list[S]  # every state entered, in order
    outcomes: list[str]  # every reported turn, in order
    calls: list[str]  # backend calls after the script (audio left out)
    mode: ListenMode = ListenMode.AUTO
    trigger: str = "vad"


SCRIPTS = [
    Script(
        "server VAD turn, reply drains, follow-up window expires",
        ["speak", Transcript("hello"), SpeechStarted(), REPLY, REPLY, SpeechEnded(), ("await", S.LISTENING),
         ("advance", FOLLOW_UP_S - 0.1), ("await", S.LISTENING), ("advance", 0.2), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING, S.LISTENING, S.IDLE],
        ["completed"],
        ["start_listening", "start_listening"],
    ),
    Script(
        "follow-up speech within the window continues without a trigger",
        ["speak", Transcript("hello"), SpeechStarted(), REPLY, SpeechEnded(), ("await", S.LISTENING),
         ("advance", FOLLOW_UP_S / 2), "speak", ("advance", FOLLOW_UP_S), Transcript("and more"), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING, S.LISTENING, S.THINKING],
        ["completed"],
        ["start_listening", "start_listening"],
    ),
    Script(
        "no reply: the turn ends after the reply timeout",
        ["speak", ("advance", REPLY_TIMEOUT_S - 1.5), ("await", S.LISTENING), ("advance", 1.0), "settle"],
        [S.IDLE, S.LISTENING, S.IDLE],
        ["timeout"],
        ["start_listening", "stop_listening"],
    ),
    Script(
        "manual: the endpointer ends the utterance, then the reply timeout",
        ["speak", ("await", S.THINKING), ("advance", REPLY_TIMEOUT_S), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.IDLE],
        ["timeout"],
        ["start_listening", "stop_listening"],
        mode=ListenMode.MANUAL,
    ),
    Script(
        "button while thinking: abort, and a new turn listens at once",
        ["button", "speak", ("await", S.THINKING), "button", "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.LISTENING],
        ["interrupted"],
        ["start_listening", "stop_listening", "abort", "start_listening"],
        mode=ListenMode.MANUAL,
        trigger="button",
    ),
    Script(
        "button while speaking: barge-in, the reply's late audio is dropped, a new turn listens",
        ["button", "speak", SpeechStarted(), REPLY, "button", REPLY, SpeechEnded(), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING, S.IDLE, S.LISTENING],
        ["barged_in"],
        ["start_listening", "stop_listening", "abort", "start_listening"],
        mode=ListenMode.MANUAL,
        trigger="button",
    ),
    Script(
        "aborted tts stop: the speaker is flushed and the turn completes",
        ["speak", Transcript("hi"), SpeechStarted(), REPLY, SpeechEnded(aborted=True), ("await", S.LISTENING),
         "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING, S.LISTENING],
        ["completed"],
        ["start_listening", "start_listening"],
    ),
    Script(
        "duplicate tts stop: one completed turn, one listen start after the drain",
        ["speak", Transcript("hi"), SpeechStarted(), REPLY, "hold drain", SpeechEnded(), SpeechEnded(),
         "release drain", ("await", S.LISTENING), SpeechEnded(), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING, S.LISTENING],
        ["completed"],
        ["start_listening", "start_listening"],
    ),
    Script(
        "server ends the turn without speech",
        ["speak", Transcript(""), TurnEnded("nothing heard"), "settle"],
        [S.IDLE, S.LISTENING, S.THINKING, S.IDLE],
        ["nothing heard"],
        ["start_listening"],
    ),
    Script(
        "server asks to listen; a disconnect ends the turn and goes offline",
        [ListenRequested(), "speak", Disconnected("gone"), "settle"],
        [S.IDLE, S.LISTENING, S.OFFLINE],
        ["disconnected"],
        ["start_listening"],
        trigger="button",
    ),
]  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
async def test_scripted_turns(script: Script) -> None:
    async with rig(script.mode, script.trigger) as r:
        await r.do(Connected())
        for step in script.steps:
            await r.do(step)
        assert r.states == script.states
        assert [t.outcome for t in r.turns] == script.outcomes
        assert r.backend.names() == script.calls


async def test_button_while_speaking_flushes_the_speaker_and_drops_late_reply_audio() -> None:
    async with rig(ListenMode.MANUAL, "button") as r:
        for step in [Connected(), "button", "speak", SpeechStarted(), REPLY, "settle"]:
            await r.do(step)
        dropped = r.conv.playback.dropped
        await r.do("button")
        await r.do(REPLY)
        assert "flush" in r.sink.events and r.sink.written == []
        assert r.conv.playback.dropped == dropped + 1
        assert r.conv.turn is not None and r.conv.turn.trigger == "button"


async def test_audio_outside_a_reply_is_counted_and_never_played() -> None:
    async with rig() as r:
        await r.do(Connected())
        await r.do(REPLY)
        await r.do(SpeechEnded())
        await r.do("settle")
        assert (r.conv.state, r.conv.turn, r.sink.written, r.sink.events) == (S.IDLE, None, [], [])
        assert r.conv.playback.dropped == 1


async def test_a_reply_plays_in_order_and_the_turn_marks_come_from_the_clock() -> None:
    async with rig() as r:
        await r.do(Connected())
        r.speak()
        heard_at = r.clock.now()
        await r.do(Transcript("hello"))
        r.clock.advance(0.25)
        await r.do(SpeechStarted())
        pieces = [SpeechAudio(bytes([i]) * 480, codec="pcm", sample_rate=24000) for i in range(5)]
        for piece in pieces:
            await r.do(piece)
        await r.do(SpeechEnded())
        await r.do(("await", S.LISTENING))
        assert r.sink.written == [p.payload for p in pieces]
        (turn,) = r.turns
        assert turn.wall_start - turn.started == r.clock.wall() - r.clock.now()
        assert turn.marks["speech_start"] < turn.marks["speech_end"] < turn.marks["stt"] == heard_at
        assert turn.marks["first_reply_audio"] == heard_at + 0.25
        assert turn.offsets_ms()["first_reply_audio"] - turn.offsets_ms()["stt"] == 250.0
        assert turn.transcript == "hello" and turn.bytes_up > 0 and turn.bytes_down == 5 * 480


async def test_the_agent_emotion_shows_while_speaking_and_resets_on_listening() -> None:
    async with rig() as r:
        shown: list[str] = []
        r.conv.emotion_listeners.add(shown.append)
        for step in [
            Connected(),
            "speak",
            Transcript("hi"),
            Emotion("happy"),
            Emotion("grumpy"),
            SpeechStarted(),
        ]:
            await r.do(step)
        assert r.conv.emotion == "happy"
        await r.do(SpeechEnded())
        await r.do(("await", S.LISTENING))
        assert shown == ["happy", "neutral"] and r.conv.emotion == "neutral"
        assert r.turns[0].emotion == "grumpy"  # the record keeps what the server said


async def test_a_text_turn_times_out_like_a_spoken_one() -> None:
    async with rig() as r:
        await r.do(Connected())
        await r.conv.say("what time is it")
        assert r.conv.state is S.THINKING
        r.clock.advance(REPLY_TIMEOUT_S)
        assert r.conv.state is S.IDLE
        assert [(t.trigger, t.outcome, t.transcript) for t in r.turns] == [
            ("text", "timeout", "what time is it")
        ]
        assert r.backend.names() == ["send_text"]


async def test_a_tts_stop_after_the_reply_has_drained_never_reaches_the_speaker() -> None:
    async with rig() as r:
        steps = [
            "speak",
            Transcript("hi"),
            SpeechStarted(),
            REPLY,
            "hold drain",
            SpeechEnded(),
            SpeechEnded(),
        ]
        for step in [Connected(), *steps, "release drain", ("await", S.LISTENING), SpeechEnded(), "settle"]:
            await r.do(step)
        # The duplicate that came while the reply drained only ends the closed stream again (harmless);
        # the late one, after the turn moved on, is ignored.
        assert r.sink.events == ["begin", "end", "close", "end"]


# ---------------------------------------------------------------- seen against real servers


async def test_realtime_mode_hears_the_next_utterance_after_a_reply_played_to_the_end() -> None:
    async with rig(ListenMode.REALTIME) as r:
        for step in [Connected(), "speak", Transcript("first"), SpeechStarted(), REPLY, SpeechEnded(),
                     ("await", S.LISTENING), "settle"]:  # fmt: skip
            await r.do(step)
        sent_before = len(r.backend.audio())
        for step in ["speak", Transcript("second"), SpeechStarted(), REPLY, SpeechEnded(),
                     ("await", S.LISTENING), "settle"]:  # fmt: skip
            await r.do(step)
        assert [(t.transcript, t.outcome) for t in r.turns] == [
            ("first", "completed"),
            ("second", "completed"),
        ]
        assert len(r.backend.audio()) > sent_before  # the second utterance was streamed
        assert r.backend.names().count("start_listening") == 1  # realtime listens once, for good


async def test_a_tool_call_shown_as_stt_does_not_replace_what_the_user_said() -> None:
    async with rig() as r:
        for step in [Connected(), "speak", Transcript("turn it up")]:
            await r.do(step)
        heard_at = r.conv.turn.marks["stt"] if r.conv.turn else None
        r.clock.advance(0.5)
        for step in [Transcript("% self_audio_speaker_set_volume"), SpeechStarted(), REPLY, SpeechEnded(),
                     ("await", S.LISTENING)]:  # fmt: skip
            await r.do(step)
        (turn,) = r.turns
        assert turn.transcript == "turn it up" and turn.marks["stt"] == heard_at


async def test_a_server_that_keeps_the_device_speaking_without_audio_is_cut_off() -> None:
    async with rig() as r:
        for step in [Connected(), "speak", Transcript("hi"), SpeechStarted(), REPLY, "settle"]:
            await r.do(step)
        await asyncio.wait_for(r.sink.wait_for(lambda: r.sink.buffer.buffered() == 0), WAIT_S)
        r.clock.advance(REPLY_STALL_S - 1)
        assert r.conv.state is S.SPEAKING  # a pause in a reply is not yet a stall
        r.conv.on_backend_event(Emotion("happy"))  # anything but audio keeps nothing alive
        r.clock.advance(2)
        await r.do("settle")
        assert r.conv.state is S.IDLE
        assert [t.outcome for t in r.turns] == ["reply_cut"] and "abort" in r.backend.names()


async def test_no_reply_holds_the_device_speaking_past_the_maximum_length() -> None:
    async with rig() as r:
        for step in [Connected(), "speak", Transcript("hi"), SpeechStarted()]:
            await r.do(step)
        elapsed = 0.0
        while elapsed < MAX_REPLY_S + 60 and r.conv.state is S.SPEAKING:
            await r.do(REPLY)  # audio keeps coming, forever
            r.clock.advance(10.0)
            elapsed += 10.0
        assert r.conv.state is S.IDLE and MAX_REPLY_S <= elapsed <= MAX_REPLY_S + 20
        assert r.turns[0].outcome == "reply_cut"


async def test_server_text_kept_in_a_turn_is_bounded() -> None:
    async with rig() as r:
        for step in [Connected(), "speak", Transcript("x" * 100_000), SpeechStarted()]:
            await r.do(step)
        for _ in range(100):
            await r.do(ReplyText("y" * 10_000, 0))
        await r.do(SpeechEnded())
        await r.do(("await", S.LISTENING))
        (turn,) = r.turns
        assert len(turn.transcript) <= MAX_TURN_TEXT and sum(map(len, turn.reply)) <= MAX_TURN_TEXT


async def test_the_device_is_busy_from_listening_until_the_reply_has_played() -> None:
    async with rig() as r:
        await r.do(Connected())
        assert not r.conv.busy
        r.speak()
        assert r.conv.busy  # listening
        for step in [Transcript("hi"), SpeechStarted(), REPLY, "hold drain", SpeechEnded()]:
            await r.do(step)
        assert r.conv.busy  # the server is done, the speaker is not
        await r.do("release drain")
        await r.do(("await", S.LISTENING))
        r.clock.advance(FOLLOW_UP_S + 0.1)
        assert r.conv.state is S.IDLE and not r.conv.busy
