"""The sans-I/O xiaozhi client session: server text and audio in → events out; calls in → text/bytes out.

One `ClientSession` per channel (a websocket connection, or one MQTT hello … goodbye). It holds what the
conversation on the wire has established: whether the server hello arrived, the session id, the downlink
audio parameters, and whether the server is speaking (downlink audio is accepted only between `tts start`
and `tts stop`). It reads no clock: every input takes `now` (monotonic seconds) so that liveness (no hello
within 10 s; nothing received for 120 s) is decided by `check(now)` and tested with plain numbers.

Drivers (websocket here, MQTT+UDP elsewhere) do the I/O:

    session = ClientSession(SessionConfig(transport="websocket", version=1))
    await ws.send(session.hello(now))
    for event in session.receive_text(text, now):   # or receive_binary(data, now) / receive_audio(opus, now)
        ...                                          # companion.events objects plus the events below
    await ws.send(session.listen_start("auto"))      # methods return the text to send
    frame = session.audio_frame(opus)                # bytes for the websocket, or None if gated
    events = session.check(now)                      # ChannelDead when a deadline passed
    timeout = session.next_deadline(now) - now

Bad input never raises: it is logged once (the first of each kind at WARNING, repeats at DEBUG) and
counted in `stats`, and the session goes on.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...events import (
    Alert,
    BackendEvent,
    Emotion,
    ReplyText,
    RestartRequested,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    ToolRequest,
    Transcript,
    TurnEnded,
)
from ..oncelog import OnceLog
from . import framing, messages
from .messages import AudioParams, MessageError

log = logging.getLogger(__name__)

AUTH_FAILED_TEXT = "认证失败"  # what xiaozhi-esp32-server sends as plain text before closing
HELLO_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0


class SessionState(enum.Enum):
    """Where the channel is: nothing sent yet, hello sent, hello answered, or closed."""

    NEW = "new"
    WAITING_HELLO = "waiting_hello"
    OPEN = "open"
    CLOSED = "closed"


class ChannelNotOpen(RuntimeError):
    """A message that needs the server hello (listen, audio, abort …) was asked for too early."""


# ---------------------------------------------------------------- protocol-level events


@dataclass(frozen=True)
class HelloReceived:
    """The server hello arrived with the right transport: the channel is open.

    `audio` is the downlink format (defaults 24000/60 when the hello has none; a hint only: an Opus
    decoder may decode at any rate). `udp` is the MQTT hello's `udp` object, untouched, else None.
    """

    session_id: str
    audio: AudioParams
    udp: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerText:
    """A text frame that is not JSON; xiaozhi-esp32-server uses these for auth errors (`auth_failed`)."""

    text: str

    @property
    def auth_failed(self) -> bool:
        """True for the server's authentication failure line."""
        return AUTH_FAILED_TEXT in self.text


@dataclass(frozen=True)
class ChannelDead:
    """A deadline passed (no server hello in time, or nothing received for too long): close the channel."""

    reason: str


@dataclass(frozen=True)
class GoodbyeReceived:
    """The server closed the MQTT session (its `goodbye` carried our session id, or none)."""

    session_id: str


SessionEvent = BackendEvent | HelloReceived | ServerText | ChannelDead | GoodbyeReceived


@dataclass(frozen=True)
class SessionConfig:
    """What the client announces in its hello and how long it waits.

    transport: "websocket" (hello transport and framing version 1/2/3) or "udp" (MQTT; version 3 and
    raw audio through `receive_audio`). features: the hello `features` object (None = the firmware's
    {"mcp":true,"glyph_push":false}). agent_params: Qiniu's extra hello object, sent only if not empty.
    """

    transport: str = "websocket"
    version: int = 1
    uplink: AudioParams = field(default_factory=AudioParams)
    features: dict[str, Any] | None = None
    agent_params: dict[str, Any] | None = None
    hello_timeout_s: float = HELLO_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S


class ClientSession:
    """The client side of one xiaozhi channel (spec §2, §3.1, §7)."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        if self.config.transport == "websocket" and self.config.version not in framing.VERSIONS:
            raise ValueError(f"websocket protocol version must be 1, 2 or 3, not {self.config.version}")
        self.state = SessionState.NEW
        self.session_id = ""
        self.downlink = AudioParams("opus", messages.DEFAULT_DOWNLINK_RATE, 1, messages.DEFAULT_FRAME_MS)
        self.speaking = False
        self.listen_mode = ""  # mode of the last `listen start`; "" when not listening
        self.stats: Counter[str] = Counter()
        self._hello_sent_at = 0.0
        self._last_received = 0.0
        self._sentence = 0
        self._heard = False  # an `stt` arrived and no `tts start`/`tts stop` answered it yet
        self._aborted_while_speaking = False
        self._reconnect_wanted = False
        self._oddities = OnceLog(log)
        # Message type → handler, spelled out: the server names the type, so it must not pick a method.
        self._handlers: dict[str, Callable[[dict[str, Any]], list[SessionEvent]]] = {
            "hello": self._on_hello,
            "stt": self._on_stt,
            "llm": self._on_llm,
            "tts": self._on_tts,
            "mcp": self._on_mcp,
            "system": self._on_system,
            "alert": self._on_alert,
            "notify": self._on_notify,
            "goodbye": self._on_goodbye,
            "pong": self._on_pong,
            "server": self._on_server,
            "error": self._on_error,
        }

    # ------------------------------------------------------------------ properties
    @property
    def is_open(self) -> bool:
        """True once the server hello arrived (until `close()`)."""
        return self.state is SessionState.OPEN

    @property
    def reconnect_wanted(self) -> bool:
        """True after a Qiniu `notify config_updated`: reconnect once the current turn is over."""
        return self._reconnect_wanted

    @property
    def awaiting_reply(self) -> bool:
        """True after an `stt` until the reply starts (`tts start`) or is refused (`tts stop`)."""
        return self._heard

    @property
    def in_turn(self) -> bool:
        """True while listening, waiting for the reply, or speaking (a reconnect should wait)."""
        return bool(self.listen_mode) or self.speaking or self._heard

    # ------------------------------------------------------------------ outgoing
    def hello(self, now: float) -> str:
        """The client hello; starts the hello timeout."""
        cfg = self.config
        self.state = SessionState.WAITING_HELLO
        self._hello_sent_at = now
        self._last_received = now
        return messages.client_hello(
            version=cfg.version,
            transport=cfg.transport,
            audio_params=cfg.uplink,
            features=cfg.features,
            agent_params=cfg.agent_params,
        )

    def listen_start(self, mode: str) -> str:
        """`listen start` in `mode`; uplink audio is allowed from now on."""
        self._require_open("listen start")
        text = messages.listen_start(self.session_id, mode)
        self.listen_mode = mode
        return text

    def listen_stop(self) -> str:
        """`listen stop` (ends a manual-mode utterance)."""
        self._require_open("listen stop")
        self.listen_mode = ""
        return messages.listen_stop(self.session_id)

    def listen_detect(self, text: str) -> str:
        """`listen detect` with a wake word or a typed utterance."""
        self._require_open("listen detect")
        return messages.listen_detect(self.session_id, text)

    def abort(self, reason: str = "") -> str:
        """`abort`; closes the downlink gate at once (late audio of the reply is dropped)."""
        self._require_open("abort")
        if self.speaking:
            self._aborted_while_speaking = True
            self.speaking = False
        return messages.abort(self.session_id, reason)

    def mcp(self, payload: dict[str, Any]) -> str:
        """An MCP reply or notification in its envelope (allowed before the hello too: it is harmless)."""
        return messages.mcp(self.session_id, payload)

    def goodbye(self) -> str:
        """MQTT `goodbye`; the session is closed afterwards."""
        text = messages.goodbye(self.session_id)
        self.close()
        return text

    def audio_frame(self, payload: bytes, timestamp: int = 0) -> bytes | None:
        """The websocket binary message for one uplink packet, or None when uplink is not allowed now.

        Uplink is dropped before the hello and (except in realtime mode) while the server speaks, as the
        firmware closes the microphone then.
        """
        if not self.uplink_allowed():
            self.stats["uplink_dropped"] += 1
            return None
        return framing.encode(self.config.version, payload, timestamp)

    def uplink_allowed(self) -> bool:
        """True when an uplink packet may be sent now (MQTT+UDP drivers ask this before sending)."""
        if not self.is_open:
            return False
        return not self.speaking or self.listen_mode == "realtime"

    def close(self) -> None:
        """The channel is gone; nothing more is sent or accepted."""
        self.state = SessionState.CLOSED
        self.speaking = False
        self.listen_mode = ""

    # ------------------------------------------------------------------ liveness
    def check(self, now: float) -> list[SessionEvent]:
        """ChannelDead when the hello did not come in time or nothing was received for too long."""
        if self.state is SessionState.WAITING_HELLO:
            if now - self._hello_sent_at >= self.config.hello_timeout_s:
                self.close()
                return [ChannelDead(f"no server hello within {self.config.hello_timeout_s:g} s")]
        elif self.state is SessionState.OPEN and now - self._last_received >= self.config.idle_timeout_s:
            self.close()
            return [ChannelDead(f"nothing received for {self.config.idle_timeout_s:g} s")]
        return []

    def alive(self, now: float) -> None:
        """The transport proved the server alive without a message (a websocket pong): an idle
        channel whose server simply has nothing to say is not dead."""
        if self.state is SessionState.OPEN:
            self._last_received = max(self._last_received, now)

    def next_deadline(self, now: float) -> float:
        """The monotonic time at which `check` may next report something (inf when none)."""
        if self.state is SessionState.WAITING_HELLO:
            return self._hello_sent_at + self.config.hello_timeout_s
        if self.state is SessionState.OPEN:
            return self._last_received + self.config.idle_timeout_s
        return float("inf")

    # ------------------------------------------------------------------ incoming
    def receive_binary(self, data: bytes, now: float) -> list[SessionEvent]:
        """Events for one websocket binary message (framed per the configured version)."""
        if self.state is SessionState.CLOSED:
            return []
        self._last_received = now
        try:
            frame = framing.decode(self.config.version, data)
        except framing.FrameError as exc:
            self._skip("bad_frame", f"binary frame skipped: {exc}")
            return []
        if frame.kind == framing.TYPE_JSON:
            try:
                text = frame.payload.decode("utf-8")
            except UnicodeDecodeError:
                self._skip("bad_frame", "binary JSON frame skipped: not UTF-8")
                return []
            return self.receive_text(text, now)
        return self.receive_audio(frame.payload, now)

    def receive_audio(self, payload: bytes, now: float) -> list[SessionEvent]:
        """Events for one downlink audio payload (an Opus packet, or PCM when the server said so)."""
        if self.state is SessionState.CLOSED:
            return []
        self._last_received = now
        if not self.speaking:
            self.stats["downlink_dropped"] += 1
            self._note("audio_outside_tts", "downlink audio outside tts start…stop dropped", logging.DEBUG)
            return []
        codec = "pcm" if self.downlink.format == "pcm" else "opus"
        return [SpeechAudio(payload, codec, self.downlink.sample_rate)]

    def receive_text(self, text: str, now: float) -> list[SessionEvent]:
        """Events for one text frame (or MQTT publish)."""
        if self.state is SessionState.CLOSED:
            return []
        self._last_received = now
        try:
            msg = messages.parse(text)
        except MessageError as exc:
            if str(exc) == "not JSON":
                self._skip("non_json", f"non-JSON text from the server: {text[:200]!r}")
                return [ServerText(text)]
            self._skip("bad_message", f"server message skipped ({exc}): {text[:200]!r}")
            return []
        kind = msg["type"]
        if self.state is not SessionState.OPEN and kind not in ("hello", "mcp", "alert", "goodbye"):
            self._skip("before_hello", f"{kind!r} message before the server hello skipped")
            return []
        handler = self._handlers.get(kind)
        if handler is None:
            self._skip(f"unknown:{kind[:40]}", f"server message of unknown type {kind!r} ignored")
            return []
        return handler(msg)

    # ------------------------------------------------------------------ message handlers
    def _on_hello(self, msg: dict[str, Any]) -> list[SessionEvent]:
        transport = msg.get("transport")
        if transport != self.config.transport:
            self._skip(
                "wrong_transport",
                f"server hello with transport {transport!r} ignored (we speak {self.config.transport!r})",
            )
            return []
        sid = msg.get("session_id")
        self.session_id = sid if isinstance(sid, str) else ""
        refused: list[str] = []
        self.downlink = AudioParams.from_json(msg.get("audio_params"), problems=refused)
        if refused:
            self._skip(
                "audio_params", f"server audio_params {', '.join(refused)} refused; using {self.downlink}"
            )
        udp = msg.get("udp")
        reopened = self.state is SessionState.OPEN
        self.state = SessionState.OPEN
        if reopened:
            log.debug("second server hello: session %r", self.session_id)
        return [HelloReceived(self.session_id, self.downlink, udp if isinstance(udp, dict) else None, msg)]

    def _on_stt(self, msg: dict[str, Any]) -> list[SessionEvent]:
        text = _text(msg, "text")
        self._heard = True
        return [Transcript(text)]

    def _on_llm(self, msg: dict[str, Any]) -> list[SessionEvent]:
        emotion = _text(msg, "emotion")
        action = _text(msg, "action")
        if not emotion and not action:
            return []
        return [Emotion(emotion, action)]

    def _on_tts(self, msg: dict[str, Any]) -> list[SessionEvent]:
        state = msg.get("state")
        if state == "start":
            self._heard = False
            self._aborted_while_speaking = False
            if self.speaking:
                log.debug("tts start while already speaking ignored")
                return []
            self.speaking = True
            self._sentence = 0
            if self.listen_mode != "realtime":
                self.listen_mode = ""
            return [SpeechStarted()]
        if state == "sentence_start":
            index = self._sentence
            self._sentence += 1
            return [ReplyText(_text(msg, "text"), index)]
        if state == "stop":
            aborted = msg.get("is_aborted") is True
            if self.speaking:
                self.speaking = False
                return [SpeechEnded(aborted=aborted)]
            if self._aborted_while_speaking:  # the acknowledgement of our abort
                self._aborted_while_speaking = False
                return [SpeechEnded(aborted=True)]
            if self._heard:  # stt then stop with no speech: nothing to say (e.g. a bare wake word)
                self._heard = False
                return [TurnEnded("no reply")]
            log.debug("duplicate tts stop ignored")
            return []
        self._skip(f"tts:{state}", f"tts message with unknown state {state!r} ignored")
        return []

    def _on_mcp(self, msg: dict[str, Any]) -> list[SessionEvent]:
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            self._skip("bad_mcp", "mcp message without an object payload skipped")
            return []
        return [ToolRequest(payload)]

    def _on_system(self, msg: dict[str, Any]) -> list[SessionEvent]:
        command = msg.get("command")
        if command == "reboot":
            return [RestartRequested("server asked for a reboot")]
        self._skip(f"system:{command}", f"system command {command!r} ignored")
        return []

    def _on_alert(self, msg: dict[str, Any]) -> list[SessionEvent]:
        return [Alert(_text(msg, "status"), _text(msg, "message"), _text(msg, "emotion"))]

    def _on_notify(self, msg: dict[str, Any]) -> list[SessionEvent]:
        event = msg.get("event")
        if event == "config_updated":
            self._reconnect_wanted = True
            return [RestartRequested("agent configuration updated", reconnect_only=True)]
        self._skip(f"notify:{event}", f"notify event {event!r} ignored")
        return []

    def _on_goodbye(self, msg: dict[str, Any]) -> list[SessionEvent]:
        if self.config.transport != "udp":
            self._skip("goodbye_ws", "goodbye over websocket ignored (only MQTT has it)")
            return []
        sid = msg.get("session_id")
        if isinstance(sid, str) and sid and self.session_id and sid != self.session_id:
            self._skip("goodbye_other", f"goodbye for another session {sid!r} ignored")
            return []
        self.close()
        return [GoodbyeReceived(sid if isinstance(sid, str) else "")]

    def _on_pong(self, msg: dict[str, Any]) -> list[SessionEvent]:
        return []

    def _on_server(self, msg: dict[str, Any]) -> list[SessionEvent]:
        return []

    def _on_error(self, msg: dict[str, Any]) -> list[SessionEvent]:
        self._skip("error", f"server error message: {_text(msg, 'message')!r}")
        return []

    # ------------------------------------------------------------------ helpers
    def _require_open(self, what: str) -> None:
        if not self.is_open:
            raise ChannelNotOpen(f"cannot send {what}: the channel is not open (state {self.state.value})")

    def _skip(self, kind: str, message: str) -> None:
        self.stats[kind.split(":")[0]] += 1
        self._note(kind, message, logging.WARNING)

    def _note(self, kind: str, message: str, level: int) -> None:
        self._oddities.note(kind, message, level)


def _text(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    return value if isinstance(value, str) else ""
