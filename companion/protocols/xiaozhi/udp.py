"""The xiaozhi MQTT+UDP audio packet without I/O: AES-128-CTR sealing, header checks, sequence rules (§4.5).

Every datagram, both ways, is a 16-byte header followed by the encrypted payload:

    off 0 u8 type = 0x01 · off 1 u8 flags = 0 · off 2 u16 payload_len · off 4 u32 ssrc
    off 8 u32 timestamp · off 12 u32 sequence            (all big-endian)

The whole header is the AES-128-CTR initial counter block, so the ciphertext is as long as the payload
and a datagram carries its own IV. The server's hello gives the key and a nonce whose bytes 4–7 (the ssrc
that routes our datagrams at the gateway) we copy into every header we send.

One `UdpAudioChannel` lives for one hello: the firmware resets both sequence counters on each hello, so
the driver makes a new channel (or calls `reset`) whenever a server hello arrives.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..oncelog import OnceLog

log = logging.getLogger(__name__)

HEADER = struct.Struct(">BBHIII")  # type, flags, payload_len, ssrc, timestamp, sequence
HEADER_SIZE = HEADER.size
PACKET_TYPE_AUDIO = 0x01
MAX_PAYLOAD = 0xFFFF
KEY_SIZE = 16
ENCRYPTION = "aes-128-ctr"
_U32 = 0xFFFFFFFF


class UdpConfigError(ValueError):
    """The server hello's `udp` block is unusable; the message says which field and why."""


@dataclass(frozen=True)
class UdpParams:
    """Where to send audio and how to encrypt it, from the MQTT server hello's `udp` block."""

    server: str
    port: int
    key: bytes = field(repr=False)
    nonce: bytes
    encryption: str = ENCRYPTION

    @property
    def ssrc(self) -> int:
        """The gateway's connection id (nonce bytes 4–7), which it routes our datagrams by."""
        return int.from_bytes(self.nonce[4:8], "big")

    @classmethod
    def from_hello(cls, udp: Any) -> UdpParams:
        """Parse and check a hello's `udp` object as the firmware does; raises UdpConfigError.

        The firmware needs a string server, a port in 1..65535, and a key and a nonce that are hex strings
        of 16 bytes each. It does not read `encryption`; we refuse a value other than aes-128-ctr, since
        anything else would turn the audio into noise without an error.
        """
        if not isinstance(udp, dict):
            raise UdpConfigError("the server hello has no udp object")
        server = udp.get("server")
        if not isinstance(server, str) or not server:
            raise UdpConfigError("udp.server is missing or not a string")
        port = udp.get("port")
        if isinstance(port, float) and port.is_integer():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
            raise UdpConfigError(f"udp.port must be an integer in 1..65535, got {port!r}")
        encryption = udp.get("encryption", ENCRYPTION)
        if encryption != ENCRYPTION:
            raise UdpConfigError(f"udp.encryption {encryption!r} is not supported (only {ENCRYPTION})")
        key = _hex16(udp.get("key"), "key")
        nonce = _hex16(udp.get("nonce"), "nonce")
        return cls(server, port, key, nonce, ENCRYPTION)


def _hex16(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise UdpConfigError(f"udp.{name} is missing or not a string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise UdpConfigError(f"udp.{name} is not a hex string") from None
    if len(raw) != KEY_SIZE:
        raise UdpConfigError(f"udp.{name} must be {KEY_SIZE} bytes (32 hex digits), got {len(raw)}")
    return raw


@dataclass(frozen=True)
class UdpAudio:
    """One accepted downlink packet: the decrypted payload and its header fields.

    `missing` is how many sequence numbers were skipped before this one (0 when in order).
    """

    payload: bytes
    timestamp: int
    sequence: int
    missing: int = 0


class UdpAudioChannel:
    """Seals uplink payloads and opens downlink datagrams for one hello's key and nonce.

    Sending numbers packets 1, 2, 3 … Receiving drops a datagram that is shorter than a header, is not
    of type 0x01, whose length disagrees with its header, or whose sequence is not above the last one
    accepted (so sequence 0 is dropped right after a hello); a jump forward is accepted with a warning.
    Drops never raise: they are counted in `stats` by reason and the first of each kind is logged.
    """

    def __init__(self, key: bytes, nonce: bytes) -> None:
        if len(key) != KEY_SIZE or len(nonce) != HEADER_SIZE:
            raise ValueError("the key and the nonce must be 16 bytes each")
        self._nonce = bytes(nonce)
        self._cipher = algorithms.AES(key)
        self.local_sequence = 0
        self.remote_sequence = 0
        self.stats: Counter[str] = Counter()
        self._oddities = OnceLog(log)

    @classmethod
    def from_params(cls, params: UdpParams) -> UdpAudioChannel:
        """A channel for a parsed hello `udp` block."""
        return cls(params.key, params.nonce)

    def reset(self) -> None:
        """Start both sequences again from 0, as a new hello does."""
        self.local_sequence = 0
        self.remote_sequence = 0

    def header(self, payload_len: int, timestamp: int, sequence: int) -> bytes:
        """The nonce with the length, timestamp and sequence written in (the packet's header and IV)."""
        head = bytearray(self._nonce)
        struct.pack_into(">H", head, 2, payload_len)
        struct.pack_into(">II", head, 8, timestamp & _U32, sequence & _U32)
        return bytes(head)

    def seal(self, payload: bytes, timestamp: int = 0) -> bytes:
        """The datagram for one uplink payload: header ‖ ciphertext, with the next sequence number."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a UDP audio payload is at most {MAX_PAYLOAD} bytes, got {len(payload)}")
        self.local_sequence = (self.local_sequence + 1) & _U32
        head = self.header(len(payload), timestamp, self.local_sequence)
        encryptor = Cipher(self._cipher, modes.CTR(head)).encryptor()
        return head + encryptor.update(payload) + encryptor.finalize()

    def open(self, datagram: bytes) -> UdpAudio | None:
        """The decrypted packet, or None when the datagram is dropped (the reason is counted)."""
        if len(datagram) < HEADER_SIZE:
            self._drop("short", f"UDP datagram of {len(datagram)} bytes is shorter than a header")
            return None
        kind, _flags, length, _ssrc, timestamp, sequence = HEADER.unpack_from(datagram)
        if kind != PACKET_TYPE_AUDIO:
            self._drop("type", f"UDP datagram of type 0x{kind:02x} dropped (expected 0x01)")
            return None
        if len(datagram) != HEADER_SIZE + length:
            self._drop(
                "length",
                f"UDP datagram length {len(datagram)} disagrees with its header ({HEADER_SIZE} + {length})",
            )
            return None
        if sequence <= self.remote_sequence:
            last = self.remote_sequence
            self._drop("old", f"UDP sequence {sequence} dropped (last accepted {last})", logging.DEBUG)
            return None
        missing = sequence - self.remote_sequence - 1
        if missing:
            self.stats["gaps"] += 1
            self.stats["missing"] += missing
            self._note(
                "gap",
                f"UDP sequence jumped from {self.remote_sequence} to {sequence}: {missing} packet(s) lost",
                logging.WARNING,
            )
        self.remote_sequence = sequence
        head = datagram[:HEADER_SIZE]
        decryptor = Cipher(self._cipher, modes.CTR(head)).decryptor()
        payload = decryptor.update(datagram[HEADER_SIZE:]) + decryptor.finalize()
        self.stats["received"] += 1
        return UdpAudio(payload, timestamp, sequence, missing)

    def _drop(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        self.stats[f"dropped_{kind}"] += 1
        self._note(kind, message, level)

    def _note(self, kind: str, message: str, level: int) -> None:
        self._oddities.note(kind, message, level)
