"""The ESP-AI backend: the device side of an ESP-AI server's socket (driver in backend.py, the reply's
MP3 sentence streams in sentences.py; the wire rules live in companion/protocols/espai/)."""

from .backend import EspaiBackend

__all__ = ["EspaiBackend"]
