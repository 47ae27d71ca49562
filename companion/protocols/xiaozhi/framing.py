"""Binary audio framing of the xiaozhi websocket, versions 1, 2 and 3 (spec §3.1).

v1 is one raw Opus packet per binary message. v2 adds a 16-byte header (version, type, reserved,
timestamp, payload size); v3 a 4-byte header (type, reserved, payload size). All fields are big-endian.
The firmware trusts the sizes it receives; we check them, so a lying header is one clear error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TYPE_OPUS = 0
TYPE_JSON = 1
VERSIONS = (1, 2, 3)

_V2 = struct.Struct(">HHIII")  # version, type, reserved, timestamp, payload_size
_V3 = struct.Struct(">BBH")  # type, reserved, payload_size
V2_HEADER = _V2.size
V3_HEADER = _V3.size
V3_MAX_PAYLOAD = 0xFFFF


class FrameError(ValueError):
    """A binary message does not match its framing version; the message says what was wrong."""


@dataclass(frozen=True)
class AudioFrame:
    """One received binary message: its payload and (v2 only) timestamp in ms."""

    payload: bytes
    timestamp: int = 0
    kind: int = TYPE_OPUS


def encode(version: int, payload: bytes, timestamp: int = 0, kind: int = TYPE_OPUS) -> bytes:
    """The binary message carrying `payload` in framing `version`."""
    if version == 1:
        return bytes(payload)
    if version == 2:
        return _V2.pack(2, kind, 0, timestamp & 0xFFFFFFFF, len(payload)) + payload
    if version == 3:
        if len(payload) > V3_MAX_PAYLOAD:
            raise FrameError(f"v3 payload of {len(payload)} bytes exceeds {V3_MAX_PAYLOAD}")
        return _V3.pack(kind, 0, len(payload)) + payload
    raise FrameError(f"unknown binary protocol version {version} (expected 1, 2 or 3)")


def decode(version: int, data: bytes) -> AudioFrame:
    """The frame in one binary message; raises FrameError when sizes, version or type are wrong."""
    if version == 1:
        if not data:
            raise FrameError("empty binary message")
        return AudioFrame(bytes(data))
    if version == 2:
        if len(data) < V2_HEADER:
            raise FrameError(f"v2 message of {len(data)} bytes is shorter than its {V2_HEADER}-byte header")
        ver, kind, _reserved, timestamp, size = _V2.unpack_from(data)
        if ver != 2:
            raise FrameError(f"v2 header carries version {ver}")
        _check(kind, size, len(data) - V2_HEADER, "v2")
        return AudioFrame(bytes(data[V2_HEADER:]), timestamp, kind)
    if version == 3:
        if len(data) < V3_HEADER:
            raise FrameError(f"v3 message of {len(data)} bytes is shorter than its {V3_HEADER}-byte header")
        kind, _reserved, size = _V3.unpack_from(data)
        _check(kind, size, len(data) - V3_HEADER, "v3")
        return AudioFrame(bytes(data[V3_HEADER:]), 0, kind)
    raise FrameError(f"unknown binary protocol version {version} (expected 1, 2 or 3)")


def _check(kind: int, claimed: int, actual: int, name: str) -> None:
    if kind not in (TYPE_OPUS, TYPE_JSON):
        raise FrameError(f"{name} header has unknown type {kind}")
    if claimed != actual:
        raise FrameError(f"{name} header claims {claimed} payload bytes but {actual} arrived")
    if claimed == 0:
        raise FrameError(f"{name} frame has an empty payload")
