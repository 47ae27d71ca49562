"""The conversation: the one state machine of the device, its turns, listening modes and barge-in.

It knows events and the Backend interface, never a concrete backend. LEDs, earcons, telemetry and logs
subscribe to its state changes; none of them decides state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .audio.endpointer import Endpointer, Quiet, SpeechBegan, SpeechContinued, SpeechFinished
from .audio.opus import OpusDecoder, OpusError
from .audio.resample import MonoResampler
from .audio.speaker import AudioSink
from .audio.uplink import UplinkEncoder
from .config import AudioSettings
from .events import (
    EMOTIONS,
    Alert,
    Backend,
    BackendEvent,
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

log = logging.getLogger(__name__)

S = DeviceState
TRANSITIONS: dict[DeviceState, frozenset[DeviceState]] = {
    S.CONNECTING: frozenset({S.IDLE, S.OFFLINE, S.ERROR, S.ACTIVATING}),
    S.ACTIVATING: frozenset({S.CONNECTING, S.IDLE, S.OFFLINE, S.ERROR}),
    S.IDLE: frozenset({S.LISTENING, S.SPEAKING, S.THINKING, S.CONNECTING, S.OFFLINE, S.ERROR}),
    S.LISTENING: frozenset({S.THINKING, S.SPEAKING, S.IDLE, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.THINKING: frozenset({S.SPEAKING, S.IDLE, S.LISTENING, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.SPEAKING: frozenset({S.IDLE, S.LISTENING, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.OFFLINE: frozenset({S.CONNECTING, S.IDLE, S.ERROR, S.ACTIVATING}),
    S.ERROR: frozenset({S.CONNECTING, S.IDLE, S.OFFLINE, S.ACTIVATING}),
}

UPLINK_QUEUE = 40  # packets (2.4 s at 60 ms), as the firmware; the oldest audio is dropped beyond it
DOWNLINK_QUEUE = 2000
ABORT_ACK_S = 1.5
REPLY_TIMEOUT_S = 15.0
FOLLOW_UP_S = 8.0


@dataclass
class Turn:
    """One exchange, with the moments that matter for latency (monotonic seconds)."""

    number: int
    trigger: str
    started: float
    wall_start: float
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    reply: list[str] = field(default_factory=list)
    emotion: str = ""
    outcome: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    errors: list[str] = field(default_factory=list)

    def mark(self, name: str, when: float) -> None:
        """Record a moment once (the first occurrence counts)."""
        self.marks.setdefault(name, when)

    def offsets_ms(self) -> dict[str, float]:
        """Each mark in milliseconds since the turn started."""
        return {k: round((v - self.started) * 1000, 1) for k, v in self.marks.items()}


StateListener = Callable[[DeviceState, DeviceState], None]


class Conversation:
    """Drives turns between the microphone, the backend and the speaker."""

    def __init__(
        self,
        backend: Backend,
        speaker: AudioSink,
        endpointer: Endpointer,
        audio: AudioSettings,
        *,
        listen_mode: ListenMode = ListenMode.AUTO,
        trigger: str = "vad",
        clock: Callable[[], float] = time.monotonic,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        follow_up_s: float = FOLLOW_UP_S,
    ) -> None:
        self.backend = backend
        self.speaker = speaker
        self.endpointer = endpointer
        self.audio = audio
        self.listen_mode = listen_mode
        self.trigger = trigger
        self.clock = clock
        self.reply_timeout_s = reply_timeout_s
        self.follow_up_s = follow_up_s
        self.barge_in_by_voice = audio.echo in ("headset", "aec") or listen_mode is ListenMode.REALTIME
        self.state = DeviceState.CONNECTING
        self.voice_active = False
        self.turn: Turn | None = None
        self.turns_completed = 0
        self.emotion = "neutral"
        self._turn_numbers = itertools.count(1)
        self._listeners: list[StateListener] = []
        self._emotion_listeners: list[Callable[[str], None]] = []
        self._voice_listeners: list[Callable[[bool], None]] = []
        self._turn_listeners: list[Callable[[Turn], None]] = []
        self._streaming = False
        self._armed = False  # `listen start` sent; audio flows once speech begins
        self._encoder: UplinkEncoder | None = None
        self._decoder: OpusDecoder | None = None
        self._resamplers: dict[int, MonoResampler] = {}
        self._uplink: collections.deque[tuple[str, Any]] = collections.deque()
        self._uplink_audio = 0
        self._uplink_wake = asyncio.Event()
        self._downlink: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(DOWNLINK_QUEUE)
        self._timer: asyncio.TimerHandle | None = None
        self._speaking_epoch = 0
        self.uplink_dropped = 0
        self.downlink_dropped = 0
        self.turn_finished = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._last_voice = 0.0
        self._cue_playing = False

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, listener: StateListener) -> None:
        """Call `listener(old, new)` on every state change."""
        self._listeners.append(listener)

    def on_emotion(self, listener: Callable[[str], None]) -> None:
        """Call `listener(name)` when the shown emotion changes."""
        self._emotion_listeners.append(listener)

    def on_voice(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(active)` when voice starts or stops being detected while listening."""
        self._voice_listeners.append(listener)

    def on_turn(self, listener: Callable[[Turn], None]) -> None:
        """Call `listener(turn)` when a turn finishes."""
        self._turn_listeners.append(listener)

    # ------------------------------------------------------------------ state
    def set_state(self, new: DeviceState) -> None:
        """Move to `new` if the table allows it; listeners hear every change."""
        old = self.state
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            log.debug("state %s → %s is not allowed; staying %s", old, new, old)
            return
        self.state = new
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        log.info("state: %s → %s", old.value, new.value)
        if new in (S.IDLE, S.LISTENING, S.CONNECTING):
            self._set_emotion("neutral")
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("state listener failed")

    async def wait_for_state(self, *states: DeviceState) -> DeviceState:
        """Return once the state is one of `states` (callers bound the wait with a timeout)."""
        while self.state not in states:
            await self._state_changed.wait()
        return self.state

    def _set_emotion(self, name: str) -> None:
        if name == self.emotion:
            return
        self.emotion = name
        for listener in list(self._emotion_listeners):
            try:
                listener(name)
            except Exception:
                log.exception("emotion listener failed")

    # ------------------------------------------------------------------ tasks
    async def run(self) -> None:
        """The uplink sender and the playback writer; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send_uplink(), name="uplink")
            group.create_task(self._play_downlink(), name="playback")

    async def _send_uplink(self) -> None:
        while True:
            while not self._uplink:
                self._uplink_wake.clear()
                await self._uplink_wake.wait()
            kind, item = self._uplink.popleft()
            try:
                if kind == "audio":
                    self._uplink_audio -= 1
                    await self.backend.send_audio(item)
                else:
                    await item()
            except Exception as exc:  # a send on a dying link: the backend reports the disconnect
                log.debug("uplink send failed: %s", exc)

    def _queue_control(self, action: Callable[[], Any]) -> None:
        self._uplink.append(("control", action))
        self._uplink_wake.set()

    def _queue_audio(self, packet: bytes) -> None:
        if self._uplink_audio >= UPLINK_QUEUE:
            for i, (kind, _) in enumerate(self._uplink):
                if kind == "audio":
                    del self._uplink[i]
                    self._uplink_audio -= 1
                    self.uplink_dropped += 1
                    break
        self._uplink.append(("audio", packet))
        self._uplink_audio += 1
        if self.turn is not None:
            self.turn.bytes_up += len(packet)
        self._uplink_wake.set()

    def play_cue(self, pcm: bytes, rate: int) -> None:
        """Play a prompt or earcon now unless the agent is speaking; a reply that starts cuts it off."""
        if self.state is S.SPEAKING:
            return
        if rate != self.speaker.rate:
            pcm = MonoResampler(rate, self.speaker.rate).process_bytes(pcm, last=True)
        if self._downlink.full():
            self.downlink_dropped += 1
            return
        self._downlink.put_nowait(("cue", (self._speaking_epoch, pcm)))

    def _resampler(self, rate: int) -> MonoResampler:
        resampler = self._resamplers.get(rate)
        if resampler is None:
            resampler = self._resamplers[rate] = MonoResampler(rate, self.speaker.rate)
        return resampler

    async def _play_cue(self, epoch: int, pcm: bytes) -> None:
        if epoch != self._speaking_epoch or self.state is S.SPEAKING:
            return
        self._cue_playing = True
        try:
            self.speaker.begin()
            await self.speaker.write(pcm)
            self.speaker.end()
            await self.speaker.wait_drained(len(pcm) / 2 / self.speaker.rate + 2.0)
            if self.state is not S.SPEAKING:
                await self.speaker.close()
        finally:
            self._cue_playing = False

    async def _play_downlink(self) -> None:
        while True:
            kind, item = await self._downlink.get()
            if kind == "cue":
                await self._play_cue(*item)
            elif kind == "audio":
                epoch, pcm = item
                if epoch == self._speaking_epoch:
                    await self.speaker.write(pcm)
            elif kind == "end":
                epoch = item
                if epoch == self._speaking_epoch:
                    self.speaker.end()
                    await self._finish_speaking(epoch)

    # ------------------------------------------------------------------ inputs: microphone
    def on_audio(self, block: bytes) -> None:
        """A block of 16 kHz mono s16le from the microphone."""
        mic_open = self.state is not S.SPEAKING or self.barge_in_by_voice
        if not mic_open or self.state in (S.CONNECTING, S.OFFLINE, S.ERROR, S.ACTIVATING):
            return
        for event in self.endpointer.feed(block):
            if isinstance(event, SpeechBegan):
                self._speech_began(event)
            elif isinstance(event, SpeechContinued | Quiet):
                if self._streaming:
                    self._stream(event.audio)
            elif isinstance(event, SpeechFinished):
                self._speech_finished(event.reason)
        if self.endpointer.voice_active:
            self._last_voice = self.clock()
        if self.endpointer.voice_active != self.voice_active:
            self.voice_active = self.endpointer.voice_active
            if self.state is S.LISTENING:
                for listener in list(self._voice_listeners):
                    listener(self.voice_active)

    def _speech_began(self, event: SpeechBegan) -> None:
        now = self.clock()
        barged = self.state is S.SPEAKING
        if barged:
            log.info("voice barge-in: stopping the reply")
            self.barge_in("voice")
        if self.state is S.IDLE:
            if self.trigger != "vad" and not barged:
                return
            self.start_turn("vad", now)
        if self.state is not S.LISTENING or self.turn is None:
            return
        self.turn.mark("speech_start", now)
        self._cancel_timer()
        if self._streaming:
            self._stream(event.fresh)
        else:
            self._streaming = True
            self._stream(event.audio)

    def _stream(self, pcm: bytes) -> None:
        if self._encoder is None:
            self._encoder = UplinkEncoder(self.backend.uplink, self.audio)
        for packet in self._encoder.feed(pcm):
            self._queue_audio(packet)

    def _stop_streaming(self) -> None:
        if self._encoder is not None:
            for packet in self._encoder.finish():
                self._queue_audio(packet)
        self._encoder = None
        self._streaming = False

    def _speech_finished(self, reason: str) -> None:
        if self.turn is None or self.state is not S.LISTENING or not self._streaming:
            return
        now = self.clock()
        self._mark_speech_end()
        log.info("end of speech (%s) after %.1f s", reason, now - self.turn.marks.get("speech_start", now))
        if self.listen_mode is ListenMode.MANUAL or reason == "max_length":
            self._stop_streaming()
            self._queue_control(self.backend.stop_listening)
            self.set_state(S.THINKING)
        self._arm_timer(self.reply_timeout_s, self._reply_timed_out)

    # ------------------------------------------------------------------ inputs: button and text
    def on_button(self, kind: str = "press") -> None:
        """A button press (the bridge's, or Enter on the console): start a turn or stop the reply."""
        log.info("button: %s", kind)
        if self.state is S.SPEAKING:
            self.barge_in("button")
            self.start_turn("button", self.clock(), stream_now=True)
        elif self.state in (S.IDLE, S.THINKING):
            if self.state is S.THINKING:
                self._queue_control(lambda: self.backend.abort(""))
                self._end_turn("interrupted")
            self.start_turn("button", self.clock(), stream_now=True)
        elif self.state is S.LISTENING and self._streaming:
            self._speech_finished("button")
            if self.listen_mode is not ListenMode.MANUAL:
                self._stop_streaming()
                self._queue_control(self.backend.stop_listening)
                self.set_state(S.THINKING)

    async def say(self, text: str) -> None:
        """A text turn: the backend handles the text as if the user had said it."""
        if not self.backend.supports_text:
            raise RuntimeError(f"the {self.backend.name} backend has no text turns")
        turn = self._new_turn("text", self.clock())
        turn.transcript = text
        self.set_state(S.THINKING)
        await self.backend.send_text(text)
        turn.mark("listen_sent", self.clock())
        self._arm_timer(self.reply_timeout_s, self._reply_timed_out)

    # ------------------------------------------------------------------ turns
    def _new_turn(self, trigger: str, now: float) -> Turn:
        self.turn = Turn(next(self._turn_numbers), trigger, now, time.time())
        self.turn_finished.clear()
        return self.turn

    def start_turn(self, trigger: str, now: float, stream_now: bool = False) -> None:
        """Open a turn: `listen start` goes out, the state becomes listening."""
        if not self.backend.connected:
            log.warning("cannot start a turn: not connected to the %s server", self.backend.name)
            return
        turn = self.turn if (self.turn is not None and self._armed) else self._new_turn(trigger, now)
        if not self._armed:
            self._queue_control(self._send_listen_start)
        self._armed = True
        self.set_state(S.LISTENING)
        if stream_now:
            self.endpointer.reset()
            self._streaming = True
            turn.mark("speech_start", now)

    async def _send_listen_start(self) -> None:
        await self.backend.start_listening(self.listen_mode)
        if self.turn is not None:
            self.turn.mark("listen_sent", self.clock())

    def barge_in(self, why: str) -> None:
        """Stop the reply now: abort upstream, flush the speaker, drop late audio of this reply."""
        self._queue_control(lambda: self.backend.abort(""))  # no reason: only a wake word sends one
        self._speaking_epoch += 1
        self._drain_downlink_queue()
        self.speaker.flush()
        self._end_turn("barged_in")
        self.set_state(S.IDLE)

    def _drain_downlink_queue(self) -> None:
        while not self._downlink.empty():
            self._downlink.get_nowait()

    def _end_turn(self, outcome: str) -> None:
        self._cancel_timer()
        if self._streaming:
            self._stop_streaming()
        self._armed = False
        turn, self.turn = self.turn, None
        if turn is None:
            return
        turn.outcome = outcome
        if not {"speech_start", "stt", "first_reply_audio"} & turn.marks.keys() and turn.trigger != "text":
            return  # a follow-up window nobody used, or a turn that never began: nothing to report
        first_sample = self.speaker.buffer.first_sample_time
        if first_sample is not None and "first_reply_audio" in turn.marks:
            turn.mark("first_sample_played", first_sample)
        turn.mark("turn_end", self.clock())
        if outcome == "completed":
            self.turns_completed += 1
        log.info("turn %d %s: %s", turn.number, outcome, turn.offsets_ms())
        if self.uplink_dropped or self.downlink_dropped:
            log.debug("audio dropped so far: %d uplink packets (queue full), %d downlink (outside a reply)",
                      self.uplink_dropped, self.downlink_dropped)  # fmt: skip
        for listener in list(self._turn_listeners):
            try:
                listener(turn)
            except Exception:
                log.exception("turn listener failed")
        self.turn_finished.set()

    def _mark_speech_end(self) -> None:
        """The user stopped talking at the last voiced frame (not when the hangover or server noticed)."""
        turn = self.turn
        if turn is not None and "speech_start" in turn.marks:
            turn.mark("speech_end", max(self._last_voice, turn.marks["speech_start"]))

    def _arm_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _reply_timed_out(self) -> None:
        self._timer = None
        if self.state in (S.LISTENING, S.THINKING) and self.turn is not None:
            log.warning(
                "no reply from the server %.0f s after the end of speech; turn dropped", self.reply_timeout_s
            )
            self.turn.errors.append("reply timeout")
            if self.listen_mode is not ListenMode.MANUAL and self._streaming:
                self._queue_control(self.backend.stop_listening)
            self._end_turn("timeout")
            self.set_state(S.IDLE)

    def _follow_up_expired(self) -> None:
        self._timer = None
        if self.state is S.LISTENING and not self._streaming:
            log.debug("no follow-up speech; idle")
            self._armed = False
            self.turn = None
            self.set_state(S.IDLE)

    # ------------------------------------------------------------------ inputs: backend
    def on_backend_event(self, event: BackendEvent) -> None:
        """The event sink given to the backend."""
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_Connected(self, event: Connected) -> None:
        log.info(
            "connected to the %s server%s",
            self.backend.name,
            f" (session {event.session_id})" if event.session_id else "",
        )
        self.set_state(S.IDLE)

    def _on_Disconnected(self, event: Disconnected) -> None:
        if self.turn is not None:
            self.turn.errors.append(f"disconnected: {event.reason}")
        if self.state is S.SPEAKING:
            self._speaking_epoch += 1
            self._drain_downlink_queue()
            self.speaker.flush()
        self._end_turn("disconnected")
        self.endpointer.reset()
        self.set_state(S.ERROR if not event.retry else S.OFFLINE)

    def _on_Transcript(self, event: Transcript) -> None:
        if self.turn is None:
            return
        self.turn.mark("stt", self.clock())
        self._mark_speech_end()
        self.turn.transcript = event.text
        log.info("heard: %s", event.text)
        if self.state is S.LISTENING and self.listen_mode is not ListenMode.REALTIME:
            self._stop_streaming()
            self.set_state(S.THINKING)

    def _on_ReplyText(self, event: ReplyText) -> None:
        if self.turn is not None and event.text:
            self.turn.reply.append(event.text)
        log.info("reply: %s", event.text)

    def _on_Emotion(self, event: Emotion) -> None:
        if self.turn is not None:
            self.turn.mark("emotion", self.clock())
            self.turn.emotion = event.name
        if event.name in EMOTIONS:
            self._set_emotion(event.name)
        else:
            log.debug("unknown emotion %r ignored", event.name)

    def _on_SpeechStarted(self, event: SpeechStarted) -> None:
        if self.state not in (S.LISTENING, S.THINKING, S.IDLE):
            return
        if self.turn is None:
            self._new_turn("server", self.clock())
        if self.listen_mode is not ListenMode.REALTIME and self._streaming:
            self._stop_streaming()
        self._cancel_timer()
        self._speaking_epoch += 1
        self._decoder = None
        if self._cue_playing:
            self.speaker.flush()  # the reply cuts a prompt short
        self.speaker.begin()
        self.set_state(S.SPEAKING)

    def _on_SpeechAudio(self, event: SpeechAudio) -> None:
        if self.state is not S.SPEAKING or self.turn is None:
            self.downlink_dropped += 1
            return
        self.turn.mark("first_reply_audio", self.clock())
        self.turn.bytes_down += len(event.payload)
        pcm = self._decode(event)
        if pcm is None:
            return
        if self._downlink.full():
            self._downlink.get_nowait()
            self.downlink_dropped += 1
        self._downlink.put_nowait(("audio", (self._speaking_epoch, pcm)))

    def _decode(self, event: SpeechAudio) -> bytes | None:
        rate = self.speaker.rate
        if event.codec == "opus":
            if self._decoder is None:
                self._decoder = OpusDecoder(rate)
            try:
                return self._decoder.decode(event.payload)
            except OpusError as exc:
                log.debug("bad Opus packet skipped: %s", exc)
                return None
        if event.codec == "pcm":
            if event.sample_rate == rate:
                return event.payload
            return self._resampler(event.sample_rate).process_bytes(event.payload)
        log.debug("audio codec %r not playable; skipped", event.codec)
        return None

    def _on_SpeechEnded(self, event: SpeechEnded) -> None:
        if self.state is not S.SPEAKING:
            return  # a late or duplicate `tts stop`
        if event.aborted:
            self._speaking_epoch += 1
            self._drain_downlink_queue()
            self.speaker.flush()
            self.speaker.end()
        self._downlink.put_nowait(("end", self._speaking_epoch))

    async def _finish_speaking(self, epoch: int) -> None:
        buffered_s = self.speaker.buffer.buffered() / max(1, self.speaker.rate)
        if not await self.speaker.wait_drained(buffered_s + 5.0):
            log.warning("playback did not drain in time; closing the output")
        if epoch != self._speaking_epoch or self.state is not S.SPEAKING:
            return
        await self.speaker.close()
        self._end_turn("completed")
        self._after_reply()

    def _after_reply(self) -> None:
        if self.listen_mode is ListenMode.AUTO and self.backend.connected:
            # As the firmware does: listen again only once playback has drained.
            self._new_turn("follow_up", self.clock())
            self._armed = True
            self._queue_control(self._send_listen_start)
            self.endpointer.reset()
            self.set_state(S.LISTENING)
            self._arm_timer(self.follow_up_s, self._follow_up_expired)
        elif self.listen_mode is ListenMode.REALTIME:
            self.set_state(S.LISTENING)
        else:
            self.set_state(S.IDLE)

    def _on_TurnEnded(self, event: TurnEnded) -> None:
        if self.state in (S.LISTENING, S.THINKING):
            log.info("turn ended by the server%s", f": {event.reason}" if event.reason else "")
            self._end_turn(event.reason or "ended")
            self.set_state(S.IDLE)

    def _on_Alert(self, event: Alert) -> None:
        if event.status == "activation":
            self.set_state(S.ACTIVATING)
            return
        level = logging.ERROR if event.fatal else logging.WARNING
        log.log(level, "server alert %s: %s", event.status, event.message)
        if self.turn is not None:
            self.turn.errors.append(f"{event.status}: {event.message}")
        if event.fatal:
            self._end_turn("error")
            self.set_state(S.ERROR)

    def _on_ListenRequested(self, event: ListenRequested) -> None:
        if self.state is S.IDLE:
            self.start_turn("server", self.clock())

    async def close(self) -> None:
        """Abort the turn in progress and stop playback."""
        self._cancel_timer()
        if self.state is S.SPEAKING:
            self.speaker.flush()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.abort(""), 0.3)
        self._end_turn("shutdown")
