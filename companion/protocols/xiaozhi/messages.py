"""The xiaozhi JSON messages, both directions, as the firmware writes them (spec §2, §8).

Device messages are serialized compactly with keys in the firmware's order and UTF-8 left unescaped,
so they match the firmware byte for byte. Server messages are parsed with a real JSON parser (servers
escape non-ASCII as \\u escapes) into a dict whose `type` is known to be a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LISTEN_MODES = ("auto", "manual", "realtime")
DEFAULT_DOWNLINK_RATE = 24000
DEFAULT_FRAME_MS = 60
AUDIO_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
MAX_CHANNELS = 2
MIN_FRAME_MS, MAX_FRAME_MS = 5, 120


class MessageError(ValueError):
    """A text frame is not a usable message (not JSON, not an object, no string `type`)."""


@dataclass(frozen=True)
class AudioParams:
    """An `audio_params` object: codec, rate, channels and frame length (ms)."""

    format: str = "opus"
    sample_rate: int = 16000
    channels: int = 1
    frame_duration: int = 60
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. Qiniu's PCM fields, play_buffer_duration

    def to_json(self) -> dict[str, Any]:
        """The object as the firmware orders it; extras after the four standard keys."""
        out: dict[str, Any] = {
            "format": self.format,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_duration": self.frame_duration,
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(
        cls, value: Any, default_rate: int = DEFAULT_DOWNLINK_RATE, problems: list[str] | None = None
    ) -> AudioParams:
        """Parse leniently: missing, mistyped or out-of-range fields take the firmware's defaults
        (24000/60). A server's numbers size our decoder and resampler, so only real audio rates, 1-2
        channels and 5-120 ms frames are taken; what was refused is added to `problems`."""
        if not isinstance(value, dict):
            return cls("opus", default_rate, 1, DEFAULT_FRAME_MS)
        fmt = value.get("format")
        rate = _positive_int(value.get("sample_rate"), default_rate)
        channels = _positive_int(value.get("channels"), 1)
        frame = _positive_int(value.get("frame_duration"), DEFAULT_FRAME_MS)
        refused = []
        if rate not in AUDIO_RATES:
            refused.append(f"sample_rate {str(value.get('sample_rate'))[:20]}")
            rate = default_rate
        if channels > MAX_CHANNELS:
            refused.append(f"channels {channels}")
            channels = 1
        if not MIN_FRAME_MS <= frame <= MAX_FRAME_MS:
            refused.append(f"frame_duration {frame}")
            frame = DEFAULT_FRAME_MS
        if problems is not None:
            problems.extend(refused)
        return cls(fmt if isinstance(fmt, str) and fmt else "opus", rate, channels, frame)


def _positive_int(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON with UTF-8 kept as is, as cJSON_PrintUnformatted writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- device → server


def client_hello(
    *,
    version: int = 1,
    transport: str = "websocket",
    audio_params: AudioParams | None = None,
    features: dict[str, Any] | None = None,
    agent_params: dict[str, Any] | None = None,
) -> str:
    """The device hello. `features` defaults to the firmware's {"mcp":true,"glyph_push":false}.

    The firmware's websocket hello orders keys type, version, features, transport, audio_params; its
    MQTT hello orders them type, version, transport, features, audio_params. Both are reproduced.
    """
    feats = {"mcp": True, "glyph_push": False} if features is None else features
    params = (audio_params or AudioParams()).to_json()
    msg: dict[str, Any] = {"type": "hello", "version": version}
    if transport == "udp":
        msg["transport"] = transport
        msg["features"] = feats
    else:
        msg["features"] = feats
        msg["transport"] = transport
    msg["audio_params"] = params
    if agent_params:
        msg["agent_params"] = agent_params
    return dumps(msg)


def listen_start(session_id: str, mode: str) -> str:
    """`listen start` in `mode` (auto, manual or realtime)."""
    if mode not in LISTEN_MODES:
        raise ValueError(f"listen mode must be one of {LISTEN_MODES}, not {mode!r}")
    return dumps({"session_id": session_id, "type": "listen", "state": "start", "mode": mode})


def listen_stop(session_id: str) -> str:
    """`listen stop`: the end of a manual-mode utterance."""
    return dumps({"session_id": session_id, "type": "listen", "state": "stop"})


def listen_detect(session_id: str, text: str) -> str:
    """`listen detect`: a wake word fired, or (for servers that allow it) a typed utterance."""
    return dumps({"session_id": session_id, "type": "listen", "state": "detect", "text": text})


def abort(session_id: str, reason: str = "") -> str:
    """`abort`, with `reason` only when given (the firmware sends only wake_word_detected)."""
    msg: dict[str, Any] = {"session_id": session_id, "type": "abort"}
    if reason:
        msg["reason"] = reason
    return dumps(msg)


def mcp(session_id: str, payload: dict[str, Any]) -> str:
    """An MCP JSON-RPC payload in its xiaozhi envelope."""
    return dumps({"session_id": session_id, "type": "mcp", "payload": payload})


def goodbye(session_id: str) -> str:
    """`goodbye` (MQTT only: the websocket just closes)."""
    return dumps({"session_id": session_id, "type": "goodbye"})


# ---------------------------------------------------------------- server → device


def parse(text: str) -> dict[str, Any]:
    """A server message as a dict with a string `type`; raises MessageError saying what is wrong."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise MessageError("not JSON") from None
    if not isinstance(obj, dict):
        raise MessageError(f"a JSON {type(obj).__name__}, not an object")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise MessageError("no string 'type'")
    return obj


def server_hello(
    session_id: str | None,
    audio_params: AudioParams | None = None,
    *,
    transport: str = "websocket",
    version: int | None = 1,
) -> str:
    """A server hello (used by the echo server): the order xiaozhi-esp32-server writes."""
    msg: dict[str, Any] = {"type": "hello"}
    if version is not None:
        msg["version"] = version
    msg["transport"] = transport
    if audio_params is not None:
        msg["audio_params"] = audio_params.to_json()
    if session_id is not None:
        msg["session_id"] = session_id
    return dumps(msg)


def server_message(kind: str, session_id: str | None, **fields: Any) -> str:
    """Any other server message: {"type":kind, **fields, "session_id":…} (session_id omitted if None)."""
    msg: dict[str, Any] = {"type": kind}
    msg.update(fields)
    if session_id is not None:
        msg["session_id"] = session_id
    return json.dumps(msg, separators=(",", ":"))
