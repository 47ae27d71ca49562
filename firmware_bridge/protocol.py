"""The framed serial protocol between a host and an LED/button/microphone board.

Runs unchanged under CPython and MicroPython: no dataclasses, no typing at run time, only simple
f-strings (MicroPython >= 1.17), no `from __future__`, and annotations only with built-in types or in
quotes (MicroPython ignores them, CPython 3.11 evaluates them).
Sans-I/O: bytes in, messages out; messages in, bytes out. docs/bridge-protocol.md is the byte-level
description, with examples the tests check against this module.

Wire format: COBS(type u8, seq u8, length u16le, payload, crc16le) followed by one 0x00 delimiter.
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) covers type, seq, length and payload.
"""

import struct

try:  # CPython: C speed for the CRC that every frame pays (MicroPython's binascii lacks crc_hqx)
    from binascii import crc_hqx as _crc_hqx

    _FAST_CRC = True
except ImportError:
    _FAST_CRC = False

VERSION = 1
"""Protocol version carried in HELLO; a peer with another version is refused with a clear message."""

DELIMITER = b"\x00"
HEADER_SIZE = 4
CRC_SIZE = 2
MAX_PAYLOAD = 1024
"""Largest payload; 20 ms of 16 kHz mono PCM is 640 bytes, 340 RGB pixels fit one LED_FRAME."""
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1
"""Largest COBS-encoded frame, delimiter not counted (1035 bytes)."""
MAX_FRAME = MAX_ENCODED + 1
"""Largest frame on the wire, delimiter included (1036 bytes)."""

# Message types. 0x0_ link control (both ways), 0x1_ host -> board, 0x2_ board -> host.
HELLO = 0x01
PING = 0x02
PONG = 0x03
ERROR = 0x04
LOG = 0x05
STATE = 0x10
EMOTION = 0x11
VOLUME = 0x12
BRIGHTNESS = 0x13
COLOR = 0x14
LED_FRAME = 0x15
REPL = 0x16
BUTTON = 0x20
MIC_AUDIO = 0x21

STATES = ("idle", "connecting", "listening", "thinking", "speaking", "offline", "error", "activating")
"""Device states by wire index (the host's state machine states)."""

EMOTIONS = (
    "neutral", "happy", "laughing", "funny", "sad", "angry", "crying",
    "loving", "embarrassed", "surprised", "shocked", "thinking", "confident", "confused",
    "winking", "cool", "relaxed", "delicious", "kissy", "sleepy", "silly",
)  # fmt: skip
"""The 21 canonical xiaozhi emotion names by wire index."""
NO_EMOTION = 0xFF

BUTTON_PRESS = 1
BUTTON_DOUBLE = 2
BUTTON_LONG = 3
BUTTONS = {BUTTON_PRESS: "press", BUTTON_DOUBLE: "double", BUTTON_LONG: "long"}

LED_NONE = 0
LED_WS2812 = 1
LED_RGB = 2
LED_MONO = 3
LED_TYPES = {LED_NONE: "none", LED_WS2812: "ws2812", LED_RGB: "rgb", LED_MONO: "mono"}

ERR_VERSION = 1
ERR_BAD_MESSAGE = 2
ERR_HARDWARE = 3
ERR_OVERFLOW = 4

MIC_RATE = 16000
"""MIC_AUDIO is always 16 kHz signed 16-bit little-endian mono."""

_FLAG_BUTTON = 0x01
_FLAG_MIC = 0x02
_FLAG_REQUEST = 0x04
_FLAG_VOICE = 0x01


# ---------------------------------------------------------------- checksums and byte stuffing


def _make_crc_table() -> list:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()


def crc16_pure(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE in plain Python (what MicroPython runs)."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection; b"123456789" gives 0x29B1."""
    if _FAST_CRC:
        return _crc_hqx(data, crc)
    return crc16_pure(data, crc)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result holds no 0x00."""
    out = bytearray()
    for part in bytes(data).split(b"\x00"):
        while len(part) >= 254:
            out.append(255)
            out.extend(part[:254])
            part = part[254:]
        out.append(len(part) + 1)
        out.extend(part)
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Undo cobs_encode; raises ValueError on a zero byte or a block that runs past the end."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end")
        out.extend(data[i + 1 : end])
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- text helpers


def _text(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeError:  # MicroPython has no errors="replace"
        return "".join(chr(b) if b < 128 else "?" for b in data)


def _utf8(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return raw
    end = limit
    while end > 0 and (raw[end] & 0xC0) == 0x80:  # cutting inside a character: drop all of it
        end -= 1
    return raw[:end]


def _byte(value: int, what: str) -> int:
    value = int(value)
    if value < 0 or value > 255:
        raise ValueError(f"{what} must be 0..255, got {value}")
    return value


def _percent(value: int) -> int:
    value = int(value)
    return 0 if value < 0 else 100 if value > 100 else value


def state_index(name: str) -> int:
    """Wire index of a state name; ValueError for an unknown one."""
    for i, known in enumerate(STATES):
        if known == name:
            return i
    raise ValueError(f"unknown state {name!r}")


def emotion_index(name: str) -> int:
    """Wire index of an emotion name; NO_EMOTION for a name outside the canonical 21."""
    for i, known in enumerate(EMOTIONS):
        if known == name:
            return i
    return NO_EMOTION


def state_name(index: int) -> str:
    """Name of a wire state index ("state-9" for one this side does not know)."""
    return STATES[index] if 0 <= index < len(STATES) else f"state-{index}"


def emotion_name(index: int) -> str:
    """Name of a wire emotion index ("" for none or unknown)."""
    return EMOTIONS[index] if 0 <= index < len(EMOTIONS) else ""


# ---------------------------------------------------------------- messages


class Message:
    """A decoded message; subclasses hold its fields. `seq` is the frame's sequence number."""

    TYPE = 0
    NAME = "?"
    FIELDS: tuple = ()
    seq = 0

    def payload(self) -> bytes:
        """The payload bytes of this message."""
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> "Message":
        """The message for `payload`; ValueError when it is malformed."""
        return cls()

    def values(self) -> tuple:
        """The field values, in FIELDS order."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(self) is type(other) and self.values() == other.values()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        parts = []
        for name in self.FIELDS:
            value = getattr(self, name)
            if isinstance(value, bytes) and len(value) > 8:
                parts.append(f"{name}=<{len(value)} bytes>")
            else:
                parts.append(f"{name}={value!r}")
        return self.NAME + "(" + ", ".join(parts) + ")"


class Hello(Message):
    """Both ways: who I am. From a board: its capabilities; from a host: `mic` = send me MIC_AUDIO.

    `request` asks the peer to answer with its own HELLO (set on connect and by a board at boot; an
    answer never sets it, so two peers cannot ping-pong HELLOs).
    """

    TYPE = HELLO
    NAME = "HELLO"
    FIELDS = ("version", "name", "led_count", "led_type", "button", "mic", "mic_rate", "request")

    def __init__(
        self,
        name: str = "",
        led_count: int = 0,
        led_type: int = LED_NONE,
        button: bool = False,
        mic: bool = False,
        mic_rate: int = 0,
        version: int = VERSION,
        request: bool = False,
    ) -> None:
        self.version = version
        self.request = bool(request)
        self.name = name
        self.led_count = led_count
        self.led_type = led_type
        self.button = bool(button)
        self.mic = bool(mic)
        self.mic_rate = mic_rate

    def payload(self) -> bytes:
        flags = (
            (_FLAG_BUTTON if self.button else 0)
            | (_FLAG_MIC if self.mic else 0)
            | (_FLAG_REQUEST if self.request else 0)
        )
        name = _utf8(self.name, 32)
        head = struct.pack(
            "<BBHBHB", self.version, flags, self.led_count, self.led_type, self.mic_rate, len(name)
        )
        return head + name

    @classmethod
    def from_payload(cls, payload: bytes) -> "Hello":
        if len(payload) < 8:
            raise ValueError("HELLO shorter than 8 bytes")
        version, flags, led_count, led_type, mic_rate, name_len = struct.unpack_from("<BBHBHB", payload, 0)
        if len(payload) < 8 + name_len:
            raise ValueError("HELLO name runs past the end")
        name = _text(payload[8 : 8 + name_len])
        # Bytes after the name are fields of a later minor revision: ignored.
        return cls(
            name,
            led_count,
            led_type,
            flags & _FLAG_BUTTON,
            flags & _FLAG_MIC,
            mic_rate,
            version,
            flags & _FLAG_REQUEST,
        )

    def describe(self) -> str:
        """One line for logs: name, protocol, LEDs, button, microphone."""
        parts = [f"protocol {self.version}"]
        if self.led_count:
            plural = "" if self.led_count == 1 else "s"
            led_type = LED_TYPES.get(self.led_type, f"type-{self.led_type}")
            parts.append(f"{self.led_count} LED{plural} {led_type}")
        if self.button:
            parts.append("button")
        if self.mic:
            parts.append(f"mic {self.mic_rate} Hz")
        return (self.name or "unnamed board") + " (" + ", ".join(parts) + ")"

    def __str__(self) -> str:
        return self.describe()


class _Token(Message):
    FIELDS = ("token",)

    def __init__(self, token: int = 0) -> None:
        self.token = token & 0xFFFFFFFF

    def payload(self) -> bytes:
        return struct.pack("<I", self.token)

    @classmethod
    def from_payload(cls, payload: bytes) -> "_Token":
        if len(payload) < 4:
            raise ValueError(cls.NAME + " shorter than 4 bytes")
        return cls(struct.unpack_from("<I", payload, 0)[0])


class Ping(_Token):
    """Both ways: are you there? The peer answers PONG with the same token."""

    TYPE = PING
    NAME = "PING"


class Pong(_Token):
    """The answer to PING."""

    TYPE = PONG
    NAME = "PONG"


class _Text(Message):
    FIELDS = ("code", "text")

    def __init__(self, code: int = 0, text: str = "") -> None:
        self.code = code
        self.text = text

    def payload(self) -> bytes:
        return bytes([_byte(self.code, "code")]) + _utf8(self.text, MAX_PAYLOAD - 1)

    @classmethod
    def from_payload(cls, payload: bytes) -> "_Text":
        if len(payload) < 1:
            raise ValueError(cls.NAME + " without its code byte")
        return cls(payload[0], _text(payload[1:]))


class Error(_Text):
    """Both ways: something the peer should know went wrong (code ERR_*, then UTF-8 text)."""

    TYPE = ERROR
    NAME = "ERROR"


class Log(_Text):
    """Board -> host: a log line (code = Python logging level: 10 debug ... 40 error)."""

    TYPE = LOG
    NAME = "LOG"


class State(Message):
    """Host -> board: the device state (STATES index) and whether voice is detected right now."""

    TYPE = STATE
    NAME = "STATE"
    FIELDS = ("state", "voice")

    def __init__(self, state: int = 0, voice: bool = False) -> None:
        self.state = state
        self.voice = bool(voice)

    def payload(self) -> bytes:
        return bytes([_byte(self.state, "state"), _FLAG_VOICE if self.voice else 0])

    @classmethod
    def from_payload(cls, payload: bytes) -> "State":
        if len(payload) < 2:
            raise ValueError("STATE shorter than 2 bytes")
        return cls(payload[0], bool(payload[1] & _FLAG_VOICE))


class Emotion(Message):
    """Host -> board: the reply's emotion (EMOTIONS index or NO_EMOTION) and its intensity 0..100."""

    TYPE = EMOTION
    NAME = "EMOTION"
    FIELDS = ("emotion", "intensity")

    def __init__(self, emotion: int = 0, intensity: int = 100) -> None:
        self.emotion = emotion
        self.intensity = _percent(intensity)

    def payload(self) -> bytes:
        return bytes([_byte(self.emotion, "emotion"), self.intensity])

    @classmethod
    def from_payload(cls, payload: bytes) -> "Emotion":
        if len(payload) < 2:
            raise ValueError("EMOTION shorter than 2 bytes")
        return cls(payload[0], payload[1])


class _Percent(Message):
    FIELDS = ("percent",)

    def __init__(self, percent: int = 0) -> None:
        self.percent = _percent(percent)

    def payload(self) -> bytes:
        return bytes([self.percent])

    @classmethod
    def from_payload(cls, payload: bytes) -> "_Percent":
        if len(payload) < 1:
            raise ValueError(cls.NAME + " without its value")
        return cls(payload[0])


class Volume(_Percent):
    """Host -> board: speaker volume 0..100 (the board shows it briefly as a bar)."""

    TYPE = VOLUME
    NAME = "VOLUME"


class Brightness(_Percent):
    """Host -> board: LED brightness 0..100."""

    TYPE = BRIGHTNESS
    NAME = "BRIGHTNESS"


class Color(Message):
    """Host -> board: the lamp colour shown while idle; 0,0,0 = off."""

    TYPE = COLOR
    NAME = "COLOR"
    FIELDS = ("r", "g", "b")

    def __init__(self, r: int = 0, g: int = 0, b: int = 0) -> None:
        self.r = r
        self.g = g
        self.b = b

    def payload(self) -> bytes:
        return bytes([_byte(self.r, "r"), _byte(self.g, "g"), _byte(self.b, "b")])

    @classmethod
    def from_payload(cls, payload: bytes) -> "Color":
        if len(payload) < 3:
            raise ValueError("COLOR shorter than 3 bytes")
        return cls(payload[0], payload[1], payload[2])


class LedFrame(Message):
    """Host -> board: raw RGB for pixels start.. (custom layouts); the board shows raw pixels until the
    next STATE."""

    TYPE = LED_FRAME
    NAME = "LED_FRAME"
    FIELDS = ("start", "rgb")

    def __init__(self, start: int = 0, rgb: bytes = b"") -> None:
        self.start = start
        self.rgb = bytes(rgb)

    def payload(self) -> bytes:
        if len(self.rgb) % 3:
            raise ValueError("LED_FRAME rgb length must be a multiple of 3")
        return struct.pack("<H", self.start) + self.rgb

    @classmethod
    def from_payload(cls, payload: bytes) -> "LedFrame":
        if len(payload) < 2 or (len(payload) - 2) % 3:
            raise ValueError("LED_FRAME must be 2 + 3*n bytes")
        return cls(struct.unpack_from("<H", payload, 0)[0], payload[2:])


class Repl(Message):
    """Host -> board: stop the firmware and return to the MicroPython REPL (sent before flashing)."""

    TYPE = REPL
    NAME = "REPL"


class Button(Message):
    """Board -> host: BUTTON_PRESS, BUTTON_DOUBLE or BUTTON_LONG."""

    TYPE = BUTTON
    NAME = "BUTTON"
    FIELDS = ("kind",)

    def __init__(self, kind: int = BUTTON_PRESS) -> None:
        self.kind = kind

    def payload(self) -> bytes:
        return bytes([_byte(self.kind, "kind")])

    @classmethod
    def from_payload(cls, payload: bytes) -> "Button":
        if len(payload) < 1:
            raise ValueError("BUTTON without its kind")
        return cls(payload[0])

    def kind_name(self) -> str:
        """ "press", "double", "long", or "button-N" for a kind this side does not know."""
        return BUTTONS.get(self.kind, f"button-{self.kind}")


class MicAudio(Message):
    """Board -> host: audio block number (u16, wraps) and 16 kHz s16le mono PCM."""

    TYPE = MIC_AUDIO
    NAME = "MIC_AUDIO"
    FIELDS = ("block", "pcm")

    def __init__(self, block: int = 0, pcm: bytes = b"") -> None:
        self.block = block & 0xFFFF
        self.pcm = bytes(pcm)

    def payload(self) -> bytes:
        if len(self.pcm) % 2:
            raise ValueError("MIC_AUDIO pcm must be whole 16-bit samples")
        return struct.pack("<H", self.block) + self.pcm

    @classmethod
    def from_payload(cls, payload: bytes) -> "MicAudio":
        if len(payload) < 2 or len(payload) % 2:
            raise ValueError("MIC_AUDIO must be 2 + 2*n bytes")
        return cls(struct.unpack_from("<H", payload, 0)[0], payload[2:])


MESSAGE_TYPES = {
    cls.TYPE: cls
    for cls in (
        Hello, Ping, Pong, Error, Log, State, Emotion, Volume, Brightness, Color, LedFrame, Repl, Button,
        MicAudio,
    )
}  # fmt: skip


def parse(type_: int, payload: bytes) -> Message:
    """The message for a frame's type and payload; ValueError when the payload is malformed."""
    return MESSAGE_TYPES[type_].from_payload(payload)


# ---------------------------------------------------------------- framing


def encode_frame(type_: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame on the wire: COBS(header, payload, CRC) + delimiter."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    raw = struct.pack("<BBH", type_ & 0xFF, seq & 0xFF, len(payload)) + bytes(payload)
    raw += struct.pack("<H", crc16(raw))
    return cobs_encode(raw) + DELIMITER


class Encoder:
    """Turns messages into frames, numbering them 0..255 (wrapping)."""

    def __init__(self) -> None:
        self.seq = 0

    def encode(self, message: Message) -> bytes:
        """The frame for `message`, with the next sequence number."""
        frame = encode_frame(message.TYPE, self.seq, message.payload())
        message.seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        return frame


class Decoder:
    """Turns received bytes into messages; bad frames are dropped and counted, never misread.

    Counters: `frames` (good), `bad_crc`, `bad_cobs`, `bad_length`, `oversize`, `malformed` (known type,
    bad payload), `unknown` (type this side does not know: ignored), `lost` (gaps in sequence numbers).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self._last_seq = -1
        self.frames = 0
        self.bad_crc = 0
        self.bad_cobs = 0
        self.bad_length = 0
        self.oversize = 0
        self.malformed = 0
        self.unknown = 0
        self.lost = 0

    @property
    def dropped(self) -> int:
        """Frames thrown away because they were damaged, too long or malformed."""
        return self.bad_crc + self.bad_cobs + self.bad_length + self.oversize + self.malformed

    def counters(self) -> dict:
        """All counters by name."""
        return {
            "frames": self.frames,
            "bad_crc": self.bad_crc,
            "bad_cobs": self.bad_cobs,
            "bad_length": self.bad_length,
            "oversize": self.oversize,
            "malformed": self.malformed,
            "unknown": self.unknown,
            "lost": self.lost,
        }

    def reset(self) -> None:
        """Forget a partial frame and the sequence history (after a reconnect)."""
        self._buf = bytearray()
        self._skipping = False
        self._last_seq = -1

    def feed(self, data: bytes) -> list:
        """Messages completed by `data`, in order."""
        out: list = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                break
            self._append(data[start:end])
            if self._skipping:
                self._skipping = False
            elif self._buf:
                message = self._frame(bytes(self._buf))
                if message is not None:
                    out.append(message)
            self._buf = bytearray()
            start = end + 1
        return out

    def _append(self, chunk: bytes) -> None:
        if self._skipping or not chunk:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED:
            self.oversize += 1
            self._skipping = True
            self._buf = bytearray()
            return
        self._buf.extend(chunk)

    def _frame(self, encoded: bytes) -> "Message | None":
        try:
            raw = cobs_decode(encoded)
        except ValueError:
            self.bad_cobs += 1
            return None
        if len(raw) < HEADER_SIZE + CRC_SIZE:
            self.bad_length += 1
            return None
        type_, seq, length = struct.unpack_from("<BBH", raw, 0)
        if len(raw) != HEADER_SIZE + length + CRC_SIZE:
            self.bad_length += 1
            return None
        body_end = HEADER_SIZE + length
        if crc16(raw[:body_end]) != struct.unpack_from("<H", raw, body_end)[0]:
            self.bad_crc += 1
            return None
        self.frames += 1
        if self._last_seq >= 0:
            self.lost += (seq - self._last_seq - 1) & 0xFF
        self._last_seq = seq
        if type_ not in MESSAGE_TYPES:
            self.unknown += 1
            return None
        try:
            message = parse(type_, raw[HEADER_SIZE:body_end])
        except ValueError:
            self.malformed += 1
            return None
        message.seq = seq
        return message
