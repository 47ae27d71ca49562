"""Mindcraft chat_bot_v3 socket protocol, sans-I/O: server text in → events out, requests in → text out.

See ../shared/spec/chatbot-v3.md. The client authenticates three ways at once with its API key or device
token (the seed's `Authorization: Bearer` header on the upgrade, the `token` query parameter and an
`auth_token` event) and waits for status 1008. A turn is an `agent_action` with the
agent's parameters; a voice turn then streams raw PCM as binary frames and ends the upload with
`stream_asr`; `stream_output` cancels the reply. The server answers with JSON events in one of two
envelopes (1003 with a top-level `agent_output`, 1007 with `socket_data.agent_output`), ASR text (1004)
and the end of the turn (1006 `agent_stop`).

Events of a cancelled turn keep arriving after `stream_output`; they are dropped until the next
`agent_action` (and the driver waits a moment for the cancelled turn's stop before starting a text turn:
`settled`). Every turn carries a `socket_id`; a server that echoes it lets late events be dropped
exactly. Otherwise, while a voice turn is still uploading, any reply is an older turn's (the server
cannot answer audio it has not heard yet), and a stop that arrives right after a new turn starts,
before any of its output, is taken to be the cancelled turn's. Malformed messages and unknown statuses
are logged once each and skipped. No sockets, no clock reads: time comes in as `now`.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...events import Emotion, ReplyText, Transcript
from ..numbers import whole_number
from ..oncelog import OnceLog

log = logging.getLogger(__name__)

AGENT_NAME = "chat_bot_v3"
STALE_STOP_S = 2.0  # a stop this soon after a new turn, before its first output, is the old turn's

# socket_status values (spec A.5)
OUTPUT = 1003
ASR = 1004
AGENT_STOP = 1006
OUTPUT_V3 = 1007
READY = 1008
BAD_API_KEY = 2003
BAD_TOKEN = 2004
NOTHING_RECOGNISED = 3001
OUT_OF_CREDIT = 3002
SERVER_ERROR = 4006
TURN_STATUSES = frozenset({OUTPUT, ASR, AGENT_STOP, OUTPUT_V3, NOTHING_RECOGNISED})

# chat_bot_v3 emotion words that are not among the 21 canonical names
EMOTION_ALIASES = {
    "joy": "happy",
    "happiness": "happy",
    "excited": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprise": "surprised",
    "fear": "shocked",
    "scared": "shocked",
    "disgust": "angry",
    "calm": "relaxed",
    "love": "loving",
    "shy": "embarrassed",
    "tired": "sleepy",
}


def canonical_emotion(name: str) -> str:
    """The project's name for a chat_bot_v3 emotion word (lower case; aliases mapped)."""
    word = name.strip().lower()
    return EMOTION_ALIASES.get(word, word)


@dataclass(frozen=True)
class AgentParams:
    """The `agent_action` parameters of the seed; empty optional strings are not sent."""

    mode: str = "pro"
    character_uuid: str = ""
    profile_uuid: str = ""
    emotion_output: bool = True
    upload_format: str = "pcm"
    upload_sample_rate: int = 16000
    voice_id: str = "female-tianmei"
    speed: float = 0.0
    user_name: str = ""
    user_age: int = 5
    bot_name: str = ""
    bot_character_description: str = ""
    bot_personality: str = ""
    bot_tone: str = ""
    llm_model: str = "abab6.5s-chat"
    max_tokens: int = 100
    tts_model: str = "TX_TTSP_realtime"
    session_token: str = ""
    language: str = "auto"

    def as_params(self) -> dict[str, Any]:
        """The `event_params` of a turn, starting with `agent_name`."""
        params: dict[str, Any] = {"agent_name": AGENT_NAME}
        for key, value in asdict(self).items():
            if isinstance(value, str) and not value and key not in ("mode", "voice_id"):
                continue  # the server's default applies
            params[key] = value
        return params


# ---------------------------------------------------------------------------- events out


@dataclass(frozen=True)
class StatusNotice:
    """A status whose only content is the server's message text."""

    message: str = ""


class Ready(StatusNotice):
    """Status 1008: authenticated, turns may start."""


@dataclass(frozen=True)
class StatusError:
    """A refusing or failing status, with the server's message."""

    status: int
    message: str


class AuthRejected(StatusError):
    """Status 2003 (wrong API key) or 2004 (token invalid or expired)."""


@dataclass(frozen=True)
class TtsUrl:
    """One sentence of speech: an MP3 URL to fetch, with its z_index and length when given."""

    url: str
    index: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class TurnStopped:
    """The agent finished the turn (1006 `agent_stop`), or was forced to (`agent_stop_force`)."""

    forced: bool = False


class NothingRecognised(StatusNotice):
    """Status 3001: the server heard no words; the turn ends without a reply."""


class OutOfCredit(StatusNotice):
    """Status 3002: the account's points are used up (积分不足)."""


class ServerError(StatusError):
    """Status 4006 (or another error status): the server's message."""


@dataclass(frozen=True)
class InterfaceReply:
    """The answer to an `interface_call` (create_session, message_list …)."""

    name: str
    result: Any


ProtocolEvent = (
    Ready
    | AuthRejected
    | Transcript
    | Emotion
    | ReplyText
    | TtsUrl
    | TurnStopped
    | NothingRecognised
    | OutOfCredit
    | ServerError
    | InterfaceReply
)


class TurnState(enum.Enum):
    """Where the current turn is."""

    IDLE = "idle"  # no turn open
    UPLOADING = "uploading"  # voice turn: agent_action sent, audio flowing, stream_asr not yet sent
    WAITING = "waiting"  # the reply is due or arriving
    CANCELLED = "cancelled"  # stream_output sent: everything until the next agent_action is stale


class NotReady(RuntimeError):
    """A turn was started before the server said 1008."""


def connect_url(base: str, api_key: str) -> str:
    """`base` with `token=<api_key>` in its query (an existing token parameter is replaced); `api_key`
    is the API key or a device token, whichever authenticates the device."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", api_key))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), parts.fragment))


def upgrade_headers(token: str) -> dict[str, str]:
    """The headers of the websocket upgrade: the seed's `Authorization: Bearer <api_key or device token>`."""
    return {"Authorization": f"Bearer {token}"}


def _message(event_type: str, name: str, params: dict[str, Any] | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"socket_type": event_type, "event_name": name}
    if params is not None:
        body["event_params"] = params
    body.update(extra)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _as_int(value: Any) -> int | None:
    """A whole number, also as a string ("3"): chat_bot_v3 sends z_index and statuses either way."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return whole_number(value)


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class ClientProtocol:
    """One chat_bot_v3 connection's state: authentication, the current turn, what is stale."""

    def __init__(self, params: AgentParams | None = None) -> None:
        self.params = params or AgentParams()
        self.authenticated = False
        self.state = TurnState.IDLE
        self.turn = 0
        self.dropped = 0
        self._socket_id = ""
        self._turn_started = 0.0
        self._turn_has_output = False
        self._stale_stop_expected = False
        self._cancel_acknowledged = True
        self._last_asr = ""
        self._oddities = OnceLog(log)

    # ------------------------------------------------------------------ requests
    @property
    def socket_id(self) -> str:
        """The id sent with the current turn's requests."""
        return self._socket_id

    @property
    def uploading(self) -> bool:
        """True while a voice turn's audio may be sent."""
        return self.state is TurnState.UPLOADING

    @property
    def settled(self) -> bool:
        """False from `stream_output` until the cancelled turn's stop arrives (its late events with it)."""
        return self.state is not TurnState.CANCELLED or self._cancel_acknowledged

    @property
    def in_turn(self) -> bool:
        """True while a turn is open (uploading or waiting for its reply)."""
        return self.state in (TurnState.UPLOADING, TurnState.WAITING)

    def auth(self, token: str) -> str:
        """The `auth_token` event: ApiKey认证 with the API key, DeviceToken认证 with the device token
        (the same event; the seed publishes no other shape for either)."""
        return _message("agent_event", "auth_token", {"token": token})

    def start_voice_turn(self, now: float) -> str:
        """`agent_action` for a voice turn; binary audio may follow until end_of_speech()."""
        return self._start_turn(now, TurnState.UPLOADING, None)

    def start_text_turn(self, text: str, now: float) -> str:
        """`agent_action` carrying typed text as `asr_text`."""
        return self._start_turn(now, TurnState.WAITING, text)

    def _start_turn(self, now: float, state: TurnState, text: str | None) -> str:
        if not self.authenticated:
            raise NotReady("the server has not confirmed authentication (status 1008) yet")
        self._stale_stop_expected = self.state is TurnState.CANCELLED
        self.turn += 1
        self._socket_id = f"companion-{self.turn}"
        self.state = state
        self._turn_started = now
        self._turn_has_output = False
        self._last_asr = ""
        params = self.params.as_params()
        if text is not None:
            params["asr_text"] = text
        return _message("agent_event", "agent_action", params, socket_id=self._socket_id)

    def audio(self, frame: bytes) -> bytes | None:
        """The binary frame to send for a piece of uplink audio, or None outside an upload."""
        return frame if self.state is TurnState.UPLOADING and frame else None

    def end_of_speech(self) -> str | None:
        """`stream_asr` (stop the upload, recognise now), or None when no upload is open."""
        if self.state is not TurnState.UPLOADING:
            return None
        self.state = TurnState.WAITING
        return _message("intervent_event", "stream_asr", socket_id=self._socket_id)

    def cancel(self) -> str | None:
        """`stream_output` (stop the reply), or None when no turn is open; later events are stale."""
        if not self.in_turn:
            return None
        self.state = TurnState.CANCELLED
        self._cancel_acknowledged = False
        return _message("intervent_event", "stream_output", socket_id=self._socket_id)

    def connection_lost(self) -> None:
        """The socket closed: a new connection must authenticate again; the turn is gone."""
        self.authenticated = False
        self.state = TurnState.IDLE
        self._stale_stop_expected = False

    # ------------------------------------------------------------------ server messages
    def receive_binary(self, data: bytes, now: float) -> list[ProtocolEvent]:
        """The server sends no binary frames; one is logged once and skipped."""
        del now
        self._note("binary", f"unexpected binary message of {len(data)} bytes skipped")
        return []

    def receive_text(self, text: str, now: float) -> list[ProtocolEvent]:
        """Events for one server text frame (possibly none)."""
        try:
            msg = json.loads(text)
        except ValueError:
            self._note("not_json", f"message that is not JSON skipped: {text[:80]!r}")
            return []
        if not isinstance(msg, dict):
            self._note("not_object", f"message that is not a JSON object skipped: {text[:80]!r}")
            return []
        data = msg.get("socket_data")
        data = data if isinstance(data, dict) else {}
        if msg.get("socket_type") == "interface_call":
            name = str(data.get("interface_name") or msg.get("event_name") or "")
            return [InterfaceReply(name, data.get("result", data))]
        status = _as_int(msg.get("socket_status"))
        message = str(msg.get("socket_message") or "")
        if status == READY:
            self.authenticated = True
            return [Ready(message)]
        if status in (BAD_API_KEY, BAD_TOKEN):
            self.authenticated = False
            return [AuthRejected(status, self._text_of(data, message))]
        if status == OUT_OF_CREDIT:
            return [OutOfCredit(self._text_of(data, message))]
        if status == SERVER_ERROR:
            return [ServerError(status, self._text_of(data, message))]
        stop = status == AGENT_STOP or message in ("agent_stop", "agent_stop_force")
        if status not in TURN_STATUSES and not stop:
            if message == "connection_established":
                log.debug("server: connection established")
            elif status is None:
                self._note("no_status", f"message without socket_status skipped: {text[:120]!r}")
            else:
                what = message or "no message"
                self._note(f"status_{status}", f"unknown socket_status {status} ({what}) ignored")
            return []
        if self._stale(msg, stop, now):
            self.dropped += 1
            return []
        if stop:
            self.state = TurnState.IDLE
            return [TurnStopped(forced=message == "agent_stop_force")]
        if status == NOTHING_RECOGNISED:
            self.state = TurnState.IDLE
            return [NothingRecognised(self._text_of(data, message, "error"))]
        self._turn_has_output = True
        if status == ASR:
            text_value = data.get("text", msg.get("text"))
            if not isinstance(text_value, str):
                self._note("asr_shape", f"ASR message without text skipped: {text[:120]!r}")
                return []
            return self._asr(text_value)
        if status == OUTPUT:
            output = msg.get("agent_output", data.get("agent_output"))
        else:
            output = data.get("agent_output", msg.get("agent_output"))
            if output is None:
                kind = data.get("agent_type")
                log.debug("server notice (1007) %s", kind if kind else "without output")
                return [] if not isinstance(data.get("text"), str) else self._asr(data["text"])
        if not isinstance(output, dict):
            self._note("output_shape", f"agent output that is not an object skipped: {text[:120]!r}")
            return []
        return self._output(output, text)

    def _stale(self, msg: dict[str, Any], stop: bool, now: float) -> bool:
        """True for an event that belongs to a cancelled or finished turn."""
        if self.state is TurnState.CANCELLED:
            if stop:
                self._cancel_acknowledged = True
                self._stale_stop_expected = False
            return True
        echoed = msg.get("socket_id")
        echoed_ours = isinstance(echoed, str) and echoed.startswith("companion-")
        if echoed_ours and echoed != self._socket_id:
            return True
        if self.state is TurnState.IDLE:
            if not stop:
                self._note("outside_turn", "server output outside a turn dropped")
            return True
        if self.state is TurnState.UPLOADING and not echoed_ours and msg.get("socket_status") != ASR:
            # The server cannot answer audio it has not finished receiving: this is an older turn's.
            if stop:
                self._stale_stop_expected = False
            return True
        if stop and self._stale_stop_expected and not echoed_ours:
            self._stale_stop_expected = False
            if not self._turn_has_output and now - self._turn_started < STALE_STOP_S:
                log.debug("a stop right after the new turn started: the cancelled turn's; dropped")
                return True
        return False

    def _asr(self, text: str) -> list[ProtocolEvent]:
        text = text.strip()
        if not text or text == self._last_asr:
            return []
        self._last_asr = text
        return [Transcript(text, final=self.state is not TurnState.UPLOADING)]

    def _output(self, output: dict[str, Any], raw: str) -> list[ProtocolEvent]:
        events: list[ProtocolEvent] = []
        asr = output.get("asr_content")
        if isinstance(asr, str):
            events += self._asr(asr)
        kind = output.get("output_type")
        index = _as_int(output.get("z_index"))
        if kind == "emotion":
            name = output.get("emotion_output", output.get("emotion_value"))
            if isinstance(name, str) and name:
                events.append(Emotion(canonical_emotion(name)))
            else:
                self._note("emotion_shape", f"emotion output without a name skipped: {raw[:120]!r}")
        elif kind == "llm":
            text = output.get("llm_response")
            if isinstance(text, str):
                events.append(ReplyText(text, -1 if index is None else index))
            else:
                self._note("llm_shape", f"llm output without llm_response skipped: {raw[:120]!r}")
        elif kind == "tts":
            url = output.get("tts_audio")
            seconds = _as_float(output.get("audio_seconds", output.get("to_sleep")))
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                events.append(TtsUrl(url, index, seconds))
            else:
                self._note("tts_shape", f"tts output without an http(s) tts_audio URL skipped: {raw[:120]!r}")
        else:
            self._note(f"output_{kind}", f"unknown output_type {kind!r} ignored")
        return events

    @staticmethod
    def _text_of(data: dict[str, Any], message: str, key: str = "message") -> str:
        for candidate in (data.get(key), data.get("message"), data.get("error"), message):
            if isinstance(candidate, str) and candidate:
                return candidate
        return ""

    def _note(self, kind: str, message: str) -> None:
        """Log a kind of oddity once at warning level, then at debug level."""
        self._oddities.note(kind, message)
