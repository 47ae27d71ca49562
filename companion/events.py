"""The vocabulary between layers: device states, normalized backend events, and the Backend interface.

Backends turn their cloud protocol into these events; the Conversation turns them into device state,
playback and telemetry. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class DeviceState(enum.StrEnum):
    """The states of the one state machine; LEDs, earcons and telemetry follow these."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OFFLINE = "offline"
    ERROR = "error"
    ACTIVATING = "activating"


class ListenMode(enum.StrEnum):
    """xiaozhi listening modes: who decides that the user stopped talking."""

    AUTO = "auto"
    MANUAL = "manual"
    REALTIME = "realtime"


# The 21 canonical emotion names shared by the xiaozhi firmware fonts, servers and Qiniu docs.
EMOTIONS: tuple[str, ...] = (
    "neutral", "happy", "laughing", "funny", "sad", "angry", "crying",
    "loving", "embarrassed", "surprised", "shocked", "thinking", "confident", "confused",
    "winking", "cool", "relaxed", "delicious", "kissy", "sleepy", "silly",
)  # fmt: skip


@dataclass(frozen=True)
class UplinkFormat:
    """What a backend wants from the microphone path: codec, rate and frame length."""

    codec: str = "opus"  # "opus" or "pcm" (s16le mono)
    sample_rate: int = 16000
    frame_ms: int = 60


# ---------------------------------------------------------------- backend → conversation


@dataclass(frozen=True)
class Connected:
    """The channel is open and the backend is ready for a turn."""

    session_id: str = ""


@dataclass(frozen=True)
class Disconnected:
    """The channel closed; the backend retries by itself unless `retry` is False."""

    reason: str
    auth_failed: bool = False
    retry: bool = True


@dataclass(frozen=True)
class Transcript:
    """What the agent heard the user say."""

    text: str
    final: bool = True


@dataclass(frozen=True)
class ReplyText:
    """Text of the agent's reply (a sentence or an LLM chunk); for logs and the turn record."""

    text: str
    index: int = -1


@dataclass(frozen=True)
class Emotion:
    """The agent's emotion for this reply (one of EMOTIONS, or a platform-specific name)."""

    name: str
    action: str = ""


@dataclass(frozen=True)
class SpeechStarted:
    """The agent starts speaking: playback opens, the microphone closes (unless echo is handled)."""


@dataclass(frozen=True)
class SpeechAudio:
    """A piece of the spoken reply.

    `codec` is "opus" (one packet), "pcm" (s16le mono at `sample_rate`). `index` orders sentences
    when the backend knows it (chat_bot_v3 `z_index`), else -1.
    """

    payload: bytes
    codec: str = "opus"
    sample_rate: int = 24000
    index: int = -1


@dataclass(frozen=True)
class SpeechEnded:
    """The agent finished (or was stopped from) speaking; playback drains unless `aborted`."""

    aborted: bool = False


@dataclass(frozen=True)
class ToolRequest:
    """The agent asks the device to run a tool (MCP JSON-RPC payload)."""

    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """A server-side alert or error to show and log."""

    status: str
    message: str
    emotion: str = ""
    fatal: bool = False


@dataclass(frozen=True)
class TurnEnded:
    """The agent ended the turn without more speech (nothing recognised, or end of the reply)."""

    reason: str = ""


@dataclass(frozen=True)
class ListenRequested:
    """The server asks the device to start listening (e.g. after a greeting); mode may be empty."""

    mode: str = ""


@dataclass(frozen=True)
class RestartRequested:
    """The server asks the device to reboot (xiaozhi `system` command) or reconnect (`notify`)."""

    reason: str
    reconnect_only: bool = False


BackendEvent = (
    Connected
    | Disconnected
    | Transcript
    | ReplyText
    | Emotion
    | SpeechStarted
    | SpeechAudio
    | SpeechEnded
    | ToolRequest
    | Alert
    | TurnEnded
    | ListenRequested
    | RestartRequested
)

EventSink = Callable[[BackendEvent], None]


class Backend(Protocol):
    """One cloud voice agent joined to its transport.

    `run()` is the long-running task: connect, work, on error log once, wait the backoff, retry;
    it delivers events to the sink given at construction, always on the event loop.
    """

    name: str
    supports_text: bool

    @property
    def uplink(self) -> UplinkFormat: ...

    async def run(self) -> None: ...

    async def start_listening(self, mode: ListenMode) -> None: ...

    async def stop_listening(self) -> None: ...

    async def send_audio(self, frame: bytes) -> None: ...

    async def abort(self, reason: str = "") -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def send_tool_result(self, payload: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...
