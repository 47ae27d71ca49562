"""The conversation: the one state machine of the device, its turns, listening modes and barge-in.

It knows events and the Backend interface, never a concrete backend. Sending (`UplinkStreamer`) and
playing (`PlaybackWriter`) are done by their own objects; time comes from an injected `Clock`. LEDs,
earcons, telemetry and logs subscribe to its state and emotion; none of them decides state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import assert_never

from ..audio.endpointer import Endpointer, SpeechBegan
from ..audio.playback import PlaybackWriter
from ..audio.speaker import AudioSink
from ..config import AudioSettings
from ..events import (
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
    RestartRequested,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    ToolRequest,
    Transcript,
    TurnEnded,
)
from ..protocols.oncelog import shorten
from .clock import Alarm, Clock, LoopClock
from .listeners import Listeners
from .reply_watchdog import ReplyWatchdog
from .transitions import TRANSITIONS
from .turn import MAX_TURN_TEXT, Turn, TurnBook
from .uplink_streamer import Control, UplinkStreamer
from .utterance import Utterance

__all__ = ["MAX_TURN_TEXT", "TRANSITIONS", "Conversation", "Turn"]

log = logging.getLogger(__name__)

S = DeviceState

REPLY_TIMEOUT_S = 15.0
FOLLOW_UP_S = 8.0
TOOL_CALL_DISPLAY = "%"  # an stt starting with this is the server showing a tool call
LOG_TEXT_CHARS = 200  # a server's text in the log is cut to this


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
        clock: Clock | None = None,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        follow_up_s: float = FOLLOW_UP_S,
    ) -> None:
        self.backend = backend
        self.speaker = speaker
        self.endpointer = endpointer
        self.listen_mode = listen_mode
        self.trigger = trigger
        self.clock: Clock = clock or LoopClock()
        self.reply_timeout_s = reply_timeout_s
        self.follow_up_s = follow_up_s
        self.barge_in_by_voice = audio.echo in ("headset", "aec") or listen_mode is ListenMode.REALTIME
        self.uplink = UplinkStreamer(backend, audio)
        self.utterance = Utterance(endpointer, self.uplink, self.clock)
        self.playback = PlaybackWriter(speaker, self._reply_drained)
        self.turns = TurnBook()
        self.state = DeviceState.CONNECTING
        self.voice_active = False
        self.emotion = "neutral"  # the one emotion shown: LEDs and the status tool read it from here
        # Who hears of changes (LEDs, cues, telemetry, the service manager); none of them decides state.
        self.state_listeners: Listeners[[DeviceState, DeviceState]] = Listeners("state")
        self.emotion_listeners: Listeners[[str]] = Listeners("emotion")
        self.voice_listeners: Listeners[[bool]] = Listeners("voice")  # voice detected while listening
        self._armed = False  # `listen start` sent; audio flows once speech begins
        self._alarm = Alarm(self.clock)  # the reply timeout or the follow-up window
        self._state_changed = asyncio.Event()
        self._wake_ack = False  # `listen detect` sent: the stt + tts stop answering it ends no turn
        self._cause = "start-up"  # the input being handled, for the log of a refused transition
        self._watchdog = ReplyWatchdog(
            self._alarm,
            self.clock,
            speaking=lambda: self.state is S.SPEAKING,
            still_playing=lambda: self.speaker.buffer.buffered() > 0,
        )

    @property
    def turn(self) -> Turn | None:
        """The turn in progress, if any."""
        return self.turns.current

    # ------------------------------------------------------------------ state and emotion
    def set_state(self, new: DeviceState) -> None:
        """Move to `new` if the table allows it; listeners hear every change."""
        old = self.state
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            log.warning("state %s → %s refused (asked by %s); staying %s", old.value, new.value,
                        self._cause, old.value)  # fmt: skip
            return
        self.state = new
        self.playback.speaking = new is S.SPEAKING
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        log.info("state: %s → %s", old.value, new.value)
        if new in (S.IDLE, S.LISTENING, S.CONNECTING):
            self.set_emotion("neutral")
        self.state_listeners(old, new)

    @property
    def busy(self) -> bool:
        """True mid-turn (listening, thinking, or a reply still playing): not a moment to reconnect."""
        return self.state in (S.LISTENING, S.THINKING, S.SPEAKING)

    def part_down(self, part: str, reason: str) -> None:
        """A part the device cannot work without (the microphone) failed: the turn ends, the state
        says error (LEDs and cue) until `part_up`."""
        self._cause = f"{part} failed"
        self._end_turn("error")
        self.set_state(S.ERROR)

    def part_up(self, part: str) -> None:
        """The failed part works again: back to idle (or to connecting, if the server is away)."""
        self._cause = f"{part} works again"
        if self.state is S.ERROR:
            self.set_state(S.IDLE if self.backend.connected else S.CONNECTING)

    async def wait_for_state(self, *states: DeviceState) -> DeviceState:
        """Return once the state is one of `states` (callers bound the wait with a timeout)."""
        while self.state not in states:
            await self._state_changed.wait()
        return self.state

    def set_emotion(self, name: str) -> None:
        """Show one of EMOTIONS (the agent's, or an MCP tool's); listeners such as the LEDs follow."""
        if name not in EMOTIONS:
            raise ValueError(f"unknown emotion {name!r}")
        if name != self.emotion:
            self.emotion = name
            self.emotion_listeners(name)

    async def run(self) -> None:
        """The uplink sender and the playback writer; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.uplink.run(), name="uplink")
            group.create_task(self.playback.run(), name="playback")

    # ------------------------------------------------------------------ inputs: microphone
    def on_audio(self, block: bytes) -> None:
        """A block of 16 kHz mono s16le from the microphone."""
        mic_open = self.state is not S.SPEAKING or self.barge_in_by_voice
        if not mic_open or self.state in (S.CONNECTING, S.OFFLINE, S.ERROR, S.ACTIVATING):
            return
        self._cause = "microphone"
        for event in self.utterance.hear(block):
            if isinstance(event, SpeechBegan):
                self._speech_began(event)
            else:
                self._speech_finished(event.reason)
        if self.endpointer.voice_active != self.voice_active:
            self.voice_active = self.endpointer.voice_active
            if self.state is S.LISTENING:
                self.voice_listeners(self.voice_active)

    def _speech_began(self, event: SpeechBegan) -> None:
        now = self.clock.now()
        barged = self.state is S.SPEAKING and self.trigger != "wake_word"  # then only the wake word barges in
        if barged:
            log.info("voice barge-in: stopping the reply")
            self.barge_in("voice")
        if self.state is S.IDLE:
            if self.trigger != "vad" and not barged:
                return
            self.start_turn("vad", now)
        if self.state is S.LISTENING and self.turn is not None:
            self.turn.mark("speech_start", now)
            self._alarm.cancel()
            self.utterance.begin(event)

    def _stop_streaming(self) -> None:
        sent = self.utterance.stop()
        if self.turn is not None:
            self.turn.bytes_up += sent

    def _speech_finished(self, reason: str) -> None:
        if self.turn is None or self.state is not S.LISTENING or not self.utterance.streaming:
            return
        now = self.clock.now()
        self.turn.mark_speech_end(self.utterance.last_voice)
        log.info("end of speech (%s) after %.1f s", reason, now - self.turn.marks.get("speech_start", now))
        if self.listen_mode is ListenMode.MANUAL or reason == "max_length":
            self._stop_listening()
        self._alarm.set(self.reply_timeout_s, self._reply_timed_out)

    def _stop_listening(self) -> None:
        """The user is done: the last audio and `listen stop` go up, and the device waits for the reply."""
        self._stop_streaming()
        self.uplink.control(self.backend.stop_listening)
        self.set_state(S.THINKING)

    # ------------------------------------------------------------------ inputs: button, wake word, text
    def on_button(self, kind: str = "press") -> None:
        """A button press (the bridge's, or Enter on the console): start a turn or stop the reply."""
        log.info("button: %s", kind)
        self._cause = f"button {kind}"
        if self.state is S.SPEAKING:
            self.barge_in("button")
            self.start_turn("button", self.clock.now(), stream_now=True)
        elif self.state in (S.IDLE, S.THINKING):
            if self.state is S.THINKING:
                self._interrupt_thinking("")
            self.start_turn("button", self.clock.now(), stream_now=True)
        elif self.state is S.LISTENING and self.utterance.streaming:
            self._speech_finished("button")
            if self.listen_mode is not ListenMode.MANUAL:
                self._stop_listening()

    def on_wake_word(self, phrase: str, audio: bytes, announce: Control | None = None) -> None:
        """The wake word was heard (daemon/wake.py): stop a reply or a pending answer, open a turn, then
        stream `audio` (what was said since just before the detection) and the microphone after it."""
        self._cause = f"wake word {phrase!r}"
        if self.state is S.LISTENING and self.utterance.streaming:
            return  # said inside an utterance already going up: the server hears it
        from_idle = self.state is S.IDLE  # as the firmware: `detect` only from idle, else abort + listen
        if self.state is S.SPEAKING:
            log.info("wake word barge-in: stopping the reply")
            self.barge_in("wake word", reason="wake_word_detected")
        elif self.state is S.THINKING:
            self._interrupt_thinking("wake_word_detected")
        if self.state not in (S.IDLE, S.LISTENING) or not self.backend.connected:
            log.warning("wake word %r ignored while %s", phrase, self.state.value)
            return
        if announce is not None and from_idle:
            self.uplink.control(announce)
            self._wake_ack = True
        self.start_turn("wake_word", self.clock.now(), stream_now=True)
        if self.turn is not None:
            self.turn.wake_word = phrase
        self.utterance.send(audio)

    def _interrupt_thinking(self, reason: str) -> None:
        self.uplink.control(lambda: self.backend.abort(reason))
        self._end_turn("interrupted")

    async def say(self, text: str) -> None:
        """A text turn: the backend handles the text as if the user had said it."""
        if not self.backend.supports_text:
            raise RuntimeError(f"the {self.backend.name} backend has no text turns")
        self._cause = "text turn"
        turn = self._new_turn("text")
        turn.transcript = text
        self.set_state(S.THINKING)
        await self.backend.send_text(text)
        turn.mark("listen_sent", self.clock.now())
        self._alarm.set(self.reply_timeout_s, self._reply_timed_out)

    # ------------------------------------------------------------------ turns
    def _new_turn(self, trigger: str, now: float | None = None) -> Turn:
        return self.turns.open(trigger, self.clock.now() if now is None else now, self.clock.wall())

    def start_turn(self, trigger: str, now: float, stream_now: bool = False) -> None:
        """Open a turn: `listen start` goes out, the state becomes listening."""
        if not self.backend.connected:
            log.warning("cannot start a turn: not connected to the %s server", self.backend.name)
            return
        turn = self.turn if (self.turn is not None and self._armed) else self._new_turn(trigger, now)
        self._arm()
        self.set_state(S.LISTENING)
        if stream_now:
            self.utterance.start_now()
            turn.mark("speech_start", now)

    def _arm(self) -> None:
        """`listen start` goes up (once per turn): the server listens from here."""
        if not self._armed:
            self.uplink.control(self._send_listen_start)
        self._armed = True

    async def _send_listen_start(self) -> None:
        await self.backend.start_listening(self.listen_mode)
        if self.turn is not None:
            self.turn.mark("listen_sent", self.clock.now())

    def barge_in(self, why: str, reason: str = "", outcome: str = "barged_in") -> None:
        """Stop the reply now: abort upstream, flush the speaker, drop late audio of this reply."""
        self.uplink.control(lambda: self.backend.abort(reason))  # a reason only for a wake word
        self.playback.stop()
        self._end_turn(outcome)
        self.set_state(S.IDLE)

    def _end_turn(self, outcome: str) -> None:
        self._alarm.cancel()
        if self.utterance.streaming:
            self._stop_streaming()
        self._armed = self._wake_ack = False
        if self.turns.close(outcome, self.clock.now(), self.speaker.buffer.first_sample_time) and (
            self.uplink.dropped or self.playback.dropped
        ):
            log.debug("audio dropped so far: %d uplink packets (queue full), %d downlink (outside a reply)",
                      self.uplink.dropped, self.playback.dropped)  # fmt: skip

    def _note_error(self, what: str) -> None:
        if self.turn is not None:
            self.turn.errors.append(what)

    def _reply_timed_out(self) -> None:
        self._cause = "reply timeout"
        if self.state in (S.LISTENING, S.THINKING) and self.turn is not None:
            log.warning(
                "no reply from the server %.0f s after the end of speech; turn dropped", self.reply_timeout_s
            )
            self.turn.errors.append("reply timeout")
            if self.listen_mode is not ListenMode.MANUAL and self.utterance.streaming:
                self.uplink.control(self.backend.stop_listening)
            self._end_turn("timeout")
            self.set_state(S.IDLE)

    def _follow_up_expired(self) -> None:
        self._cause = "follow-up window"
        if self.state is S.LISTENING and not self.utterance.streaming:
            log.debug("no follow-up speech; idle")
            self._armed = False
            self.turns.current = None
            self.set_state(S.IDLE)

    def _reply_drained(self) -> None:
        """The playback writer's callback: the reply has played out, so the turn is complete."""
        self._cause = "playback drained"
        self._end_turn("completed")
        if self.listen_mode is ListenMode.AUTO and self.backend.connected:
            # As the firmware does: listen again only once playback has drained, for a follow-up window.
            self._new_turn("follow_up")
            self._arm()
            self.endpointer.reset()
            self.set_state(S.LISTENING)
            self._alarm.set(self.follow_up_s, self._follow_up_expired)
        elif self.listen_mode is ListenMode.REALTIME and self.backend.connected:
            # The server's listening never stopped: the next utterance is a new turn, with no new
            # `listen start` and no follow-up window.
            self._new_turn("realtime")
            self._armed = True
            self.endpointer.reset()
            self.set_state(S.LISTENING)
        else:
            self.set_state(S.IDLE)

    # ------------------------------------------------------------------ inputs: backend
    def on_backend_event(self, event: BackendEvent) -> None:
        """The event sink given to the backend."""
        self._cause = type(event).__name__
        match event:
            case Connected():
                log.info("connected to the %s server%s", self.backend.name,
                         f" (session {event.session_id})" if event.session_id else "")  # fmt: skip
                self.set_state(S.IDLE)
            case Disconnected():
                self._on_disconnected(event)
            case Transcript():
                self._on_transcript(event)
            case ReplyText():
                if self.turn is not None:
                    self.turn.add_reply(event.text)
                log.info("reply: %s", shorten(event.text, LOG_TEXT_CHARS))
            case Emotion():
                self._on_emotion(event)
            case SpeechStarted():
                self._on_speech_started()
            case SpeechAudio():
                self._on_speech_audio(event)
            case SpeechEnded():
                if self.state is S.SPEAKING:  # else a late or duplicate `tts stop`
                    self.playback.end_reply(event.aborted)
            case TurnEnded():
                if self._wake_ack and self.turn is not None and "stt" not in self.turn.marks:
                    self._wake_ack = False  # the server's answer to `listen detect`: the question follows
                elif self.state in (S.LISTENING, S.THINKING):
                    log.info("turn ended by the server%s", f": {event.reason}" if event.reason else "")
                    self._end_turn(event.reason or "ended")
                    self.set_state(S.IDLE)
            case Alert():
                self._on_alert(event)
            case ListenRequested():
                if self.state is S.IDLE:
                    self.start_turn("server", self.clock.now())
            case ToolRequest() | RestartRequested():
                pass  # the runtime's: tools and restarts are not the conversation's business
            case _:
                assert_never(event)

    def _on_disconnected(self, event: Disconnected) -> None:
        self._note_error(f"disconnected: {event.reason}")
        if self.state is S.SPEAKING:
            self.playback.stop()
        self._end_turn("disconnected")
        self.endpointer.reset()
        self.set_state(S.ERROR if not event.retry else S.OFFLINE)

    def _on_transcript(self, event: Transcript) -> None:
        if self.turn is None:
            return
        heard = event.text.strip(" .,!?。，！").casefold()
        if self.turn.wake_word and heard == self.turn.wake_word.casefold():
            log.info("server heard the wake word %r; listening on", event.text)  # its answer to `detect`
            return
        if event.text.startswith(TOOL_CALL_DISPLAY):
            # xiaozhi-esp32-server shows a tool call it runs as an stt ("% self_audio_speaker_set_volume"):
            # not the user's words, so it neither replaces the transcript nor times the turn.
            log.info("server runs a tool: %s", shorten(event.text[1:].strip(), LOG_TEXT_CHARS))
            return
        self.turn.heard(event.text, self.clock.now(), self.utterance.last_voice)
        log.info("heard: %s", shorten(event.text, LOG_TEXT_CHARS))
        if self.state is S.LISTENING and self.listen_mode is not ListenMode.REALTIME:
            self._stop_streaming()
            self.set_state(S.THINKING)

    def _on_emotion(self, event: Emotion) -> None:
        if self.turn is not None:
            self.turn.mark("emotion", self.clock.now())
            self.turn.emotion = event.name
        if event.name in EMOTIONS:
            self.set_emotion(event.name)
        else:
            log.debug("unknown emotion %r ignored", event.name)

    def _on_speech_started(self) -> None:
        if self.state not in (S.LISTENING, S.THINKING, S.IDLE):
            return
        if self.turn is None:
            self._new_turn("server", self.clock.now())
        if self.listen_mode is not ListenMode.REALTIME and self.utterance.streaming:
            self._stop_streaming()
        self.playback.begin_reply()
        self.set_state(S.SPEAKING)
        self._watchdog.start(self._cut_reply)

    def _on_speech_audio(self, event: SpeechAudio) -> None:
        if self.state is not S.SPEAKING or self.turn is None:
            self.playback.discard()
            return
        self._watchdog.heard()
        self.turn.mark("first_reply_audio", self.clock.now())
        self.turn.bytes_down += len(event.payload)
        self.playback.play(event)

    def _cut_reply(self, why: str) -> None:
        """The watchdog's verdict: the server kept the device speaking; the reply ends now."""
        self._cause = "reply watchdog"
        log.warning("reply ended: %s (the server kept the device speaking)", why)
        self._note_error(f"reply cut: {why}")
        self.barge_in("reply watchdog", outcome="reply_cut")

    def _on_alert(self, event: Alert) -> None:
        if event.status == "activation":
            self.set_state(S.ACTIVATING)
            return
        level = logging.ERROR if event.fatal else logging.WARNING
        log.log(level, "server alert %s: %s", event.status, event.message)
        self._note_error(f"{event.status}: {event.message}")
        if event.fatal:
            self._end_turn("error")
            self.set_state(S.ERROR)

    async def close(self) -> None:
        """Abort the turn in progress and stop playback."""
        self._cause = "shutdown"
        self._alarm.cancel()
        if self.state is S.SPEAKING:
            self.speaker.flush()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.abort(""), 0.3)
        self._end_turn("shutdown")
