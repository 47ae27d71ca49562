"""The ESP-AI device ↔ server protocol without I/O: the wire format and the device's side of a
connection (see device.py for how a turn runs)."""

from .device import (
    DeviceProtocol,
    Mp3Piece,
    Output,
    Phase,
    Refused,
    Send,
    ServerClosing,
    SessionEnded,
    SessionStopped,
)
from .wire import AudioFrame, FrameError, audio_frame, connect_url, parse_audio_frame

__all__ = [
    "AudioFrame",
    "DeviceProtocol",
    "FrameError",
    "Mp3Piece",
    "Output",
    "Phase",
    "Refused",
    "Send",
    "ServerClosing",
    "SessionEnded",
    "SessionStopped",
    "audio_frame",
    "connect_url",
    "parse_audio_frame",
]
