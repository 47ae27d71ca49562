"""The ESP-AI device protocol, sans-I/O: server frames in → events out, commands in → frames out.

A device connects with its identity in the query string (wire.connect_url), says
`play_audio_ws_conntceed`, and is ready once the server's clock probe `stc_time` arrives (the server
sends it only after it built the device's configuration). A turn is `start`; the server answers
`session_start{session_id}` and, once its speech recognition is connected, `session_status: iat_start`;
only then does it take microphone audio (raw PCM, 16 kHz mono s16le, as binary frames), so audio that
comes earlier is held here and sent on `iat_start`. `iat_end` ends the upload early. The reply arrives
as binary frames: 4 ASCII digits of session id, 2 of status, then MP3 bytes. Each sentence is its own
MP3 stream, closed by a frame with status 01; status 02 or 03 closes the last sentence and the reply
(02: listen again, 03: the session is over). Frames of any other session are stale and dropped, except
`0010` (speech the server starts by itself); the cache ids (1000-1002), the tone (0000) and the
connection greeting (0001) are for the firmware's own prompts and are dropped too.

No sockets, no clock: the driver feeds frames in and writes what comes out (`Send`). Malformed and
unknown messages are logged once per kind and skipped.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from typing import Any

from ...events import Alert, BackendEvent, Connected, Emotion, ReplyText, Transcript
from ..oncelog import OnceLog, shorten
from .wire import (
    ACCOUNT_ERRORS,
    ASR_ERRORS,
    ASR_LOG_PREFIX,
    CACHE_SIDS,
    ERROR_MEANINGS,
    SID_CONNECTED,
    SID_TONE,
    SID_TTS_FN,
    STATUS_CHUNK_END,
    FrameError,
    message,
    parse_audio_frame,
)

log = logging.getLogger(__name__)

MAX_BACKLOG_BYTES = 16000 * 2 * 5  # 5 s of 16 kHz speech held while the server connects its ASR

# ESP-AI emotion words (the hosted emotion service answers in Chinese) → the 21 canonical names.
EMOTION_ALIASES = {
    "开心": "happy",
    "高兴": "happy",
    "快乐": "happy",
    "大笑": "laughing",
    "搞笑": "funny",
    "伤心": "sad",
    "难过": "sad",
    "悲伤": "sad",
    "生气": "angry",
    "愤怒": "angry",
    "哭泣": "crying",
    "喜爱": "loving",
    "爱": "loving",
    "尴尬": "embarrassed",
    "害羞": "embarrassed",
    "惊讶": "surprised",
    "震惊": "shocked",
    "害怕": "shocked",
    "思考": "thinking",
    "自信": "confident",
    "困惑": "confused",
    "酷": "cool",
    "放松": "relaxed",
    "平静": "relaxed",
    "困": "sleepy",
    "中性": "neutral",
    "无": "neutral",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprise": "surprised",
    "fear": "shocked",
    "calm": "relaxed",
}


# ---------------------------------------------------------------------------- outputs besides events


@dataclass(frozen=True)
class Send:
    """A frame the driver must write now (text: JSON message; bytes: microphone audio)."""

    data: str | bytes


@dataclass(frozen=True)
class Mp3Piece:
    """Part of one sentence's MP3 stream. `sentence` counts from 0 within the reply of `session_id`;
    `ends_sentence` closes that stream, `ends_reply` closes the reply (`status` 02 or 03)."""

    session_id: str
    sentence: int
    mp3: bytes
    status: str

    @property
    def ends_sentence(self) -> bool:
        return self.status != "00"

    @property
    def ends_reply(self) -> bool:
        return self.status in ("02", "03")


@dataclass(frozen=True)
class SessionEnded:
    """The server ended the session without (more) reply: nothing heard (`session_end`), or an ASR
    error that resets it."""

    reason: str


@dataclass(frozen=True)
class SessionStopped:
    """`session_stop`: the server stopped a session; `stop_playback` ("1") asks to cut what is playing."""

    session_id: str
    stop_playback: bool


@dataclass(frozen=True)
class Refused:
    """`auth_fail`, or an account error (4000-4004): retrying at once will not help."""

    code: str
    message: str


@dataclass(frozen=True)
class ServerClosing:
    """The server asked the device to reconnect (`sever-close`) or restart (`restart`)."""

    reason: str


Output = BackendEvent | Send | Mp3Piece | SessionEnded | SessionStopped | Refused | ServerClosing


class Phase(enum.Enum):
    """Where the current turn is."""

    IDLE = "idle"  # no turn open
    STARTING = "starting"  # `start` sent; audio is held until `iat_start`
    STREAMING = "streaming"  # the server takes audio
    WAITING = "waiting"  # the upload is over (or a text turn): the reply is due


def describe_error(code: str, text: str) -> str:
    """The server's message with what its code means."""
    meaning = ERROR_MEANINGS.get(code, "")
    if meaning and text and text != "-":
        return f"{meaning}: {text}"
    return meaning or text or "no message"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


class DeviceProtocol:
    """One connection's state as an ESP-AI device sees it: ready, the session, the turn, the reply."""

    def __init__(self, max_backlog_bytes: int = MAX_BACKLOG_BYTES) -> None:
        self.max_backlog_bytes = max_backlog_bytes
        self.ready = False
        self.session_id = ""
        self.phase = Phase.IDLE
        self.task_id = ""
        self.dropped_uplink = 0
        self.stale_frames = 0
        self.prompt_frames = 0  # cache, tone and greeting frames, which the firmware plays itself
        self._backlog: list[bytes] = []
        self._backlog_bytes = 0
        self._end_pending = False
        self._sentences: dict[str, int] = {}  # next sentence index per reply session
        self._last_transcript = ""
        self._oddities = OnceLog(log)

    # ------------------------------------------------------------------ commands
    def hello(self) -> str:
        """The first message after the upgrade (the firmware's spelling)."""
        return message("play_audio_ws_conntceed")

    @property
    def uploading(self) -> bool:
        """True while microphone audio is wanted (held or sent)."""
        return self.phase in (Phase.STARTING, Phase.STREAMING)

    @property
    def in_turn(self) -> bool:
        return self.phase is not Phase.IDLE

    def start(self) -> str:
        """`start`: a new session; whatever the old one still sends is stale from now on."""
        self._forget_session()
        self.phase = Phase.STARTING
        return message("start")

    def text_turn(self, text: str) -> str:
        """`char_txt`: the server runs its LLM on `text` in a new session and speaks the reply."""
        self._forget_session()
        self.phase = Phase.WAITING
        return message("char_txt", text=text)

    def audio(self, frame: bytes) -> list[bytes]:
        """The binary frames to send for a piece of microphone PCM (held before `iat_start`)."""
        if not frame:
            return []
        if self.phase is Phase.STREAMING:
            return [frame]
        if self.phase is Phase.STARTING:
            self._backlog.append(frame)
            self._backlog_bytes += len(frame)
            while self._backlog_bytes > self.max_backlog_bytes:
                self._backlog_bytes -= len(self._backlog.pop(0))
                self.dropped_uplink += 1
            return []
        self.dropped_uplink += 1
        return []

    def end_of_speech(self) -> list[str]:
        """`iat_end` (recognise now); before `iat_start` it is sent right after the held audio."""
        if self.phase is Phase.STREAMING:
            self.phase = Phase.WAITING
            return [message("iat_end")]
        if self.phase is Phase.STARTING:
            self._end_pending = True
        return []

    def cancel(self) -> list[str]:
        """Stop the turn: its later frames are stale; `iat_end` makes the server drop its queued sentences
        (the device has no other stop request; the next `start` stops the session on the server)."""
        was_open = self.in_turn or bool(self.session_id)
        self._forget_session()
        self.phase = Phase.IDLE
        return [message("iat_end")] if was_open else []

    def playback_over(self, session_id: str, status: str) -> str:
        """`client_out_audio_over`: the reply of `session_id` finished playing."""
        return message(
            "client_out_audio_over", session_id=session_id, session_status=status, tts_task_id=self.task_id
        )

    def playing(self) -> str:
        """`client_out_audio_ing`: the device is playing the server's audio."""
        return message("client_out_audio_ing")

    def buffer_report(self, pending_bytes: int) -> str:
        """`client_available_audio`: MP3 bytes received and not yet played (the server pauses at its
        AUDIO_BUFFER_SIZE). The firmware sends the number as a string."""
        return message("client_available_audio", session_id=self.session_id, value=str(max(0, pending_bytes)))

    def connection_lost(self) -> None:
        """The socket closed: nothing of this connection carries over."""
        self.ready = False
        self._forget_session()
        self.phase = Phase.IDLE
        self._sentences.clear()

    def _forget_session(self) -> None:
        self.session_id = ""
        self._backlog.clear()
        self._backlog_bytes = 0
        self._end_pending = False
        self._last_transcript = ""
        self._sentences = {sid: n for sid, n in self._sentences.items() if sid == SID_TTS_FN}

    # ------------------------------------------------------------------ binary frames
    def receive_binary(self, data: bytes) -> list[Output]:
        """A downlink audio frame: an Mp3Piece for the current reply, or nothing (stale, prompt, bad)."""
        try:
            frame = parse_audio_frame(data)
        except FrameError as exc:
            self._note("bad_frame", f"ESP-AI: {exc}; skipped")
            return []
        sid = frame.session_id
        if sid in CACHE_SIDS or sid in (SID_TONE, SID_CONNECTED):
            self.prompt_frames += 1
            return []
        if sid != SID_TTS_FN and (not self.session_id or sid != self.session_id):
            self.stale_frames += 1
            log.debug("audio frame of session %s dropped (current: %s)", sid, self.session_id or "none")
            return []
        sentence = self._sentences.setdefault(sid, 0)
        if frame.ends_reply:
            del self._sentences[sid]
            if sid == self.session_id:
                self.phase = Phase.IDLE
        elif frame.status == STATUS_CHUNK_END:
            self._sentences[sid] = sentence + 1
            self.task_id = ""  # the firmware forgets the task at each sentence end
        return [Mp3Piece(sid, sentence, frame.mp3, frame.status)]

    # ------------------------------------------------------------------ text frames
    def receive_text(self, text: str) -> list[Output]:
        """Events and replies for one server text frame (possibly none)."""
        if text == "session_end":  # the one message that is not JSON
            return self._session_end("session_end")
        if text == "iat_end":  # sent bare after an LLM error
            return self._iat_end()
        try:
            msg = json.loads(text)
        except ValueError:
            self._note("not_json", f"ESP-AI message that is not JSON skipped: {shorten(text, 80)!r}")
            return []
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._note("no_type", f"ESP-AI message without a type skipped: {shorten(text, 120)!r}")
            return []
        kind: str = msg["type"]
        handler = getattr(self, f"_on_{kind.replace('-', '_')}", None)
        if handler is None:
            self._note(f"type_{kind}", f"ESP-AI message type {kind!r} ignored")
            return []
        result: list[Output] = handler(msg)
        return result

    def _on_stc_time(self, msg: dict[str, Any]) -> list[Output]:
        out: list[Output] = [Send(message("cts_time", stc_time=_as_text(msg.get("stc_time"))))]
        if not self.ready:
            self.ready = True
            out.append(Connected())
        return out

    def _on_net_delay(self, msg: dict[str, Any]) -> list[Output]:
        log.debug("ESP-AI server measured a network delay of %s ms", _as_text(msg.get("net_delay")) or "?")
        return []

    def _on_session_start(self, msg: dict[str, Any]) -> list[Output]:
        sid = _as_text(msg.get("session_id"))
        if not (len(sid) == 4 and sid.isdigit()):
            self._note("session_id", f"session_start with session id {sid!r} (not 4 digits) skipped")
            return []
        self.session_id = sid
        self._sentences.pop(sid, None)
        return []

    def _on_session_status(self, msg: dict[str, Any]) -> list[Output]:
        status = _as_text(msg.get("status"))
        if status == "iat_start":
            if self.phase is not Phase.STARTING:
                log.debug("iat_start outside a starting turn ignored")
                return []
            self.phase = Phase.STREAMING
            out: list[Output] = [Send(frame) for frame in self._backlog]
            self._backlog.clear()
            self._backlog_bytes = 0
            if self._end_pending:
                self._end_pending = False
                out += [Send(m) for m in self.end_of_speech()]
            return out
        if status == "iat_end":
            return self._iat_end()
        log.debug("ESP-AI session status %s", status or "(none)")
        return []

    def _iat_end(self) -> list[Output]:
        if self.phase in (Phase.STARTING, Phase.STREAMING):
            self.phase = Phase.WAITING  # the server stopped listening (its own VAD, or a timeout)
            self._backlog.clear()
            self._backlog_bytes = 0
            self._end_pending = False
        return []

    def _session_end(self, reason: str) -> list[Output]:
        self.session_id = ""
        self.phase = Phase.IDLE
        return [SessionEnded(reason)]

    def _on_play_audio(self, msg: dict[str, Any]) -> list[Output]:
        self.task_id = _as_text(msg.get("tts_task_id"))
        return []

    def _on_log(self, msg: dict[str, Any]) -> list[Output]:
        data = _as_text(msg.get("data"))
        if data.startswith(ASR_LOG_PREFIX):
            return self._transcript(data[len(ASR_LOG_PREFIX) :])
        log.debug("ESP-AI server log: %s", shorten(data, 120))
        return []

    def _transcript(self, text: str) -> list[Output]:
        text = text.strip()
        if not text or text == self._last_transcript:
            return []
        self._last_transcript = text
        return [Transcript(text)]

    def _on_instruct(self, msg: dict[str, Any]) -> list[Output]:
        out: list[Output] = [Send(message("instruct_ack"))]
        command = _as_text(msg.get("command_id"))
        data = msg.get("data")
        if command == "on_iat_cb" and isinstance(data, str):
            out += self._transcript(data)
        elif command == "on_llm_cb" and isinstance(data, str):
            if data.strip():
                out.append(ReplyText(data))
        elif command in ("on_tts_cb", "on_tts", "on_llm"):
            log.debug("ESP-AI %s notice", command)
        else:
            log.info("ESP-AI server command %r (data %s) not handled", command, shorten(str(data), 80))
        return out

    def _on_emotion(self, msg: dict[str, Any]) -> list[Output]:
        name = _as_text(msg.get("data")).strip()
        if not name:
            self._note("emotion", "emotion message without data skipped")
            return []
        return [Emotion(EMOTION_ALIASES.get(name, EMOTION_ALIASES.get(name.lower(), name.lower())))]

    def _on_session_stop(self, msg: dict[str, Any]) -> list[Output]:
        sid = _as_text(msg.get("session_id"))
        out: list[Output] = [Send(message("session_stop_ack", session_id=sid))]
        if self.phase is Phase.STREAMING:
            return out  # the firmware keeps its session while it uploads
        stop_playback = _as_text(msg.get("data")) == "1"
        if sid and sid == self.session_id:
            self.session_id = ""
            if self.phase is Phase.WAITING:
                self.phase = Phase.IDLE
            out.append(SessionStopped(sid, stop_playback))
        elif stop_playback:
            out.append(SessionStopped(sid, True))
        return out

    def _on_auth_fail(self, msg: dict[str, Any]) -> list[Output]:
        code = _as_text(msg.get("code")) or "002"
        return [Refused(code, describe_error(code, _as_text(msg.get("message"))))]

    def _on_error(self, msg: dict[str, Any]) -> list[Output]:
        code = _as_text(msg.get("code")) or "000"
        where = _as_text(msg.get("at"))
        text = describe_error(code, _as_text(msg.get("message")))
        if code in ACCOUNT_ERRORS:
            return [Refused(code, text)]
        status = f"{where} {code}".strip()
        if code in ASR_ERRORS:
            return [Alert(status, text), *self._session_end("asr_error")]
        return [Alert(status, text)]

    def _on_set_wifi_config(self, msg: dict[str, Any]) -> list[Output]:
        del msg
        log.info("the ESP-AI server sent Wi-Fi settings; this device does not manage Wi-Fi (refused)")
        return [Send(message("set_wifi_config_res", success=False))]

    def _on_clear_cache(self, msg: dict[str, Any]) -> list[Output]:
        del msg
        return [Send(message("clear_cache_ack"))]

    def _on_restart(self, msg: dict[str, Any]) -> list[Output]:
        del msg
        return [ServerClosing("the server asked the device to restart")]

    def _on_sever_close(self, msg: dict[str, Any]) -> list[Output]:
        del msg
        return [ServerClosing("the server asked the device to reconnect (sever-close)")]

    def _on_set_local_data(self, msg: dict[str, Any]) -> list[Output]:
        field = _as_text(msg.get("field"))
        log.info("ESP-AI set_local_data %r ignored (no local store on this device)", field)
        return []

    def _on_hardware_fns(self, msg: dict[str, Any]) -> list[Output]:
        log.debug("ESP-AI hardware function %r ignored (no GPIO here)", _as_text(msg.get("fn_name")))
        return []

    def _note(self, kind: str, text: str) -> None:
        self._oddities.note(kind, text)
