"""The ESP-AI device wire format: the connect URL's query, the text messages, and the 6-byte prefix of
every downlink audio frame. Pure functions and constants; no state, no I/O.

Checked against the open-source server (src/functions/init_server.js, utils/audio_sender.js) and the
device firmware (client/esp-ai/src/webSocketEvent/main.cpp); see docs/espai-device.md for where they
differ from ../shared/spec/platforms.md §D.2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The firmware version this client speaks. The server changes behaviour on it: from 2.86 on it waits for
# `session_stop_ack` before opening a new session, and above 2.86 it re-encodes the TTS through ffmpeg.
CLIENT_VERSION = "2.87.50"
EXT_KEYS = tuple(f"ext{i}" for i in range(1, 8))

# Session ids with a fixed meaning (the server's G_session_ids, the firmware's SID_* constants).
SID_TONE = "0000"  # a prompt tone
SID_CONNECTED = "0001"  # the "connected to the server" greeting
SID_TTS_FN = "0010"  # speech the server starts by itself (its tts() call, a `tts` request)
SID_CACHE_DU = "1000"  # the wake-up cue, for the device to cache
SID_CACHE_HELLO = "1001"  # the wake-up reply, for the device to cache
SID_CACHE_SLEEP = "1002"  # the sleep reply, for the device to cache
CACHE_SIDS = frozenset({SID_CACHE_DU, SID_CACHE_HELLO, SID_CACHE_SLEEP})

# The status bytes 4-5 of a downlink audio frame.
STATUS_IN_SESSION = "00"  # more of the same sentence follows
STATUS_CHUNK_END = "01"  # this sentence's MP3 stream is complete; another sentence follows
STATUS_END_CONTINUE = "02"  # the reply is complete; the device should listen again
STATUS_END = "03"  # the reply is complete; the session is over
END_STATUSES = frozenset({STATUS_END_CONTINUE, STATUS_END})
STATUSES = frozenset({STATUS_IN_SESSION, STATUS_CHUNK_END, *END_STATUSES})
PREFIX_BYTES = 6

# Error codes (src/functions/device_fns/error_catch.js and the firmware's auth_fail handling).
ASR_ERRORS = frozenset({"100", "101", "102"})  # the firmware resets its session on these
ACCOUNT_ERRORS = frozenset({"4000", "4001", "4002", "4003", "4004"})
ERROR_MEANINGS = {
    "000": "unknown server error",
    "001": "internal server error",
    "002": "server authentication error",
    "003": "could not get the server information (check the api_key)",
    "004": "the connection carried no device_id",
    "005": "the device_id was refused",
    "006": "the server could not build this device's configuration (gen_client_config)",
    "007": "network error or timeout on the server's side",
    "100": "speech recognition (IAT) error",
    "101": "could not connect to the speech recognition (IAT) service",
    "102": "speech recognition (IAT) call failed",
    "200": "language model (LLM) error",
    "201": "could not connect to the language model (LLM) service",
    "202": "language model (LLM) call failed",
    "300": "speech synthesis (TTS) error",
    "301": "could not connect to the speech synthesis (TTS) service",
    "302": "speech synthesis (TTS) call failed",
    "4000": "the ESP-AI agent (超体) is disabled or deleted",
    "4001": "the ESP-AI quota card does not exist",
    "4002": "the ESP-AI quota is used up",
    "4003": "authentication failed (the server refused this device)",
    "4004": "this device is not bound to an ESP-AI agent",
}

ASR_LOG_PREFIX = "ASR 识别结果："  # the server's `log` message that carries what it heard


class FrameError(ValueError):
    """A downlink binary frame that does not have the 4-digit session id and 2-digit status prefix."""


@dataclass(frozen=True)
class AudioFrame:
    """One downlink binary frame: session id, status, and the MP3 bytes that follow (may be none)."""

    session_id: str
    status: str
    mp3: bytes

    @property
    def ends_sentence(self) -> bool:
        """True when this frame completes one sentence's MP3 stream (status 01, 02 or 03)."""
        return self.status != STATUS_IN_SESSION

    @property
    def ends_reply(self) -> bool:
        """True for status 02 or 03: nothing more of this reply follows."""
        return self.status in END_STATUSES


def parse_audio_frame(data: bytes) -> AudioFrame:
    """The prefix and payload of a downlink frame; raises FrameError for anything the server never sends."""
    if len(data) < PREFIX_BYTES:
        raise FrameError(f"binary frame of {len(data)} bytes is shorter than the 6-byte prefix")
    head = bytes(data[:PREFIX_BYTES])
    if not head.isdigit():  # ASCII digits only: bytes.isdigit() is False for anything else
        raise FrameError(f"binary frame prefix {head!r} is not 4 session-id digits and 2 status digits")
    session_id, status = head[:4].decode("ascii"), head[4:].decode("ascii")
    if status not in STATUSES:
        raise FrameError(f"binary frame of session {session_id} has unknown status {status!r}")
    return AudioFrame(session_id, status, bytes(data[PREFIX_BYTES:]))


def audio_frame(session_id: str, status: str, mp3: bytes = b"") -> bytes:
    """A downlink frame as the server writes it (for test servers and benchmarks)."""
    return session_id.encode("ascii") + status.encode("ascii") + mp3


def connect_url(
    base: str,
    *,
    device_id: str,
    client_version: str = CLIENT_VERSION,
    api_key: str = "",
    ext: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """`base` with the firmware's query: v, device_id, api_key, ext1 (= api_key unless given), ext2..7,
    then `extra` (bitrate, AUDIO_BUFFER_SIZE, LITTLE_ROM …); parameters already in `base` stay first."""
    parts = urlsplit(base)
    ours = {"v", "device_id", "api_key", *EXT_KEYS, *(extra or {})}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query += [("v", client_version), ("device_id", device_id)]
    ext = dict(ext or {})
    if api_key:
        query.append(("api_key", api_key))
        ext.setdefault("ext1", api_key)
    query += [(key, ext[key]) for key in EXT_KEYS if ext.get(key)]
    query += list((extra or {}).items())
    path = parts.path.rstrip("/") + "/"  # the firmware always asks for <path>/?v=…
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), parts.fragment))


def message(kind: str, **fields: Any) -> str:
    """A client → server text message: `{"type": kind, …}`."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))
