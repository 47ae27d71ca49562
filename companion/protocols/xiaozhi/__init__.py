"""The xiaozhi device protocol without I/O: JSON messages, binary framing v1/v2/v3, the client session.

Used by the websocket backend and by the MQTT+UDP backend alike (see session.py for the driver loop).
"""

from .framing import AudioFrame, FrameError
from .messages import AudioParams, MessageError
from .session import (
    ChannelDead,
    ChannelNotOpen,
    ClientSession,
    GoodbyeReceived,
    HelloReceived,
    ServerText,
    SessionConfig,
    SessionEvent,
    SessionState,
)

__all__ = [
    "AudioFrame",
    "AudioParams",
    "ChannelDead",
    "ChannelNotOpen",
    "ClientSession",
    "FrameError",
    "GoodbyeReceived",
    "HelloReceived",
    "MessageError",
    "ServerText",
    "SessionConfig",
    "SessionEvent",
    "SessionState",
]
