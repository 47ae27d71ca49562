"""The bridge protocol: the documented hex examples, round trips, and damage that is always caught."""

from __future__ import annotations

import ast
import binascii
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.events import EMOTIONS, DeviceState
from firmware_bridge import protocol as p

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "bridge-protocol.md"

NAMED_FIELDS = {
    "state": p.state_index,
    "emotion": p.emotion_index,
    "kind": lambda name: {v: k for k, v in p.BUTTONS.items()}[name],
    "led_type": lambda name: {v: k for k, v in p.LED_TYPES.items()}[name],
}
CLASSES = {cls.NAME: cls for cls in p.MESSAGE_TYPES.values()}


def parse_value(field: str, text: str) -> object:
    if text.startswith('"'):
        return ast.literal_eval(text)
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    if re.fullmatch(r"0x[0-9a-fA-F]+|-?\d+", text):
        return int(text, 0)
    return NAMED_FIELDS[field](text)


def parse_message(line: str) -> p.Message:
    """`STATE state=listening voice=true` → State(2, True)."""
    name, _, rest = line.strip().partition(" ")
    fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', rest))
    cls = CLASSES[name]
    message = cls()
    for field, text in fields.items():
        assert field in cls.FIELDS, f"{name} has no field {field}"
        setattr(message, field, parse_value(field, text))
    return message


def doc_blocks(kind: str) -> list[dict[str, str]]:
    blocks = re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    parsed = []
    for block in blocks:
        entry = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        parsed.append(entry)
    return parsed


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


FRAMES = doc_blocks("frame")


def test_the_document_has_an_example_of_every_message_type() -> None:
    documented = {parse_message(block["message"]).TYPE for block in FRAMES}
    assert documented == set(p.MESSAGE_TYPES)


@pytest.mark.parametrize("block", FRAMES, ids=[b["message"].split()[0] for b in FRAMES])
def test_documented_example_encodes_to_its_bytes(block: dict[str, str]) -> None:
    message = parse_message(block["message"])
    seq = int(block["seq"])
    assert message.payload() == hexbytes(block["payload"])
    encoder = p.Encoder()
    encoder.seq = seq
    wire = encoder.encode(message)
    assert wire == hexbytes(block["wire"])
    assert p.cobs_decode(wire[:-1]) == hexbytes(block["raw"])


@pytest.mark.parametrize("block", FRAMES, ids=[b["message"].split()[0] for b in FRAMES])
def test_documented_example_decodes_to_its_message(block: dict[str, str]) -> None:
    decoder = p.Decoder()
    (message,) = decoder.feed(hexbytes(block["wire"]))
    assert message == parse_message(block["message"])
    assert message.seq == int(block["seq"])


def test_documented_damaged_stream_delivers_only_the_good_frame() -> None:
    (block,) = doc_blocks("frame-stream")
    decoder = p.Decoder()
    assert decoder.feed(hexbytes(block["wire"])) == [parse_message(block["delivers"])]
    for pair in block["counts"].split():
        name, value = pair.split("=")
        assert getattr(decoder, name) == int(value)


def test_crc_is_ccitt_false_with_the_documented_check_value() -> None:
    assert p.crc16(b"123456789") == 0x29B1
    assert p.crc16_pure(b"123456789") == 0x29B1


@given(st.binary(max_size=600))
def test_pure_python_crc_matches_the_c_one(data: bytes) -> None:
    assert p.crc16_pure(data) == binascii.crc_hqx(data, 0xFFFF) == p.crc16(data)


@given(st.binary(max_size=1200))
def test_cobs_round_trips_and_never_emits_a_zero(data: bytes) -> None:
    encoded = p.cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert p.cobs_decode(encoded) == data


def test_largest_payload_fits_the_stated_maximum_frame() -> None:
    wire = p.encode_frame(p.LED_FRAME, 0, b"\x01" * p.MAX_PAYLOAD)
    assert len(wire) == p.MAX_FRAME == 1036
    with pytest.raises(ValueError):
        p.encode_frame(p.LED_FRAME, 0, b"\x01" * (p.MAX_PAYLOAD + 1))


# ---------------------------------------------------------------- round trips

names = st.text(max_size=40)
u8 = st.integers(0, 255)
percent = st.integers(0, 100)
messages = st.one_of(
    st.builds(p.Hello, names, st.integers(0, 0xFFFF), u8, st.booleans(), st.booleans(),
              st.integers(0, 0xFFFF), u8, st.booleans()),
    st.builds(p.Ping, st.integers(0, 2**32 - 1)),
    st.builds(p.Pong, st.integers(0, 2**32 - 1)),
    st.builds(p.Error, u8, st.text(max_size=100)),
    st.builds(p.Log, u8, st.text(max_size=100)),
    st.builds(p.State, u8, st.booleans()),
    st.builds(p.Emotion, u8, percent),
    st.builds(p.Volume, percent),
    st.builds(p.Brightness, percent),
    st.builds(p.Color, u8, u8, u8),
    st.builds(p.LedFrame, st.integers(0, 0xFFFF), st.binary(max_size=300).map(lambda b: b[: len(b) // 3 * 3])),  # noqa: E501
    st.just(p.Repl()),
    st.builds(p.Button, u8),
    st.builds(p.MicAudio, st.integers(0, 0xFFFF), st.binary(max_size=1022).map(lambda b: b[: len(b) // 2 * 2])),  # noqa: E501
)  # fmt: skip


def expected_after_trip(message: p.Message) -> p.Message:
    """Names longer than 32 bytes are cut (whole characters) by design."""
    if isinstance(message, p.Hello):
        cut = message.name.encode()[:32]
        while cut:
            try:
                message.name = cut.decode()
                break
            except UnicodeDecodeError:
                cut = cut[:-1]
        else:
            message.name = ""
    return message


@given(st.lists(messages, max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=40))
@settings(max_examples=150)
def test_any_messages_survive_any_chunking(batch: list[p.Message], cuts: list[int]) -> None:
    encoder = p.Encoder()
    stream = b"".join(encoder.encode(m) for m in batch)
    decoder = p.Decoder()
    out: list[p.Message] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == [expected_after_trip(m) for m in batch]
    assert [m.seq for m in out] == list(range(len(batch)))
    assert decoder.dropped == 0 and decoder.lost == 0


def sample_frames() -> list[bytes]:
    encoder = p.Encoder()
    return [
        encoder.encode(p.State(2, True)),
        encoder.encode(p.Hello("esp32s3", 12, 1, True, True, 16000, request=True)),
        encoder.encode(p.MicAudio(7, bytes(range(256)) * 2 + b"\x00" * 300)),
        encoder.encode(p.LedFrame(3, b"\x00\xff\x00" * 90)),
    ]


@pytest.mark.parametrize("frame", sample_frames(), ids=["state", "hello", "mic", "led_frame"])
def test_corruption_at_every_byte_position_is_detected(frame: bytes) -> None:
    good = p.Decoder().feed(frame)[0]
    for position in range(len(frame) - 1):  # the delimiter itself is covered below
        for flip in (0x01, 0x80, 0xFF, 0x5A):
            damaged = bytearray(frame)
            damaged[position] ^= flip
            decoder = p.Decoder()
            out = decoder.feed(bytes(damaged)) + decoder.feed(frame)
            assert out == [good], f"byte {position} ^ {flip:#x} was misread"
            assert decoder.dropped >= 1, f"byte {position} ^ {flip:#x} was not counted"


@pytest.mark.parametrize("frame", sample_frames(), ids=["state", "hello", "mic", "led_frame"])
def test_a_frame_cut_anywhere_is_dropped_and_the_next_one_is_read(frame: bytes) -> None:
    """A replugged sender starts with a 0x00, which ends the half frame the receiver holds."""
    good = p.Decoder().feed(frame)[0]
    for cut in range(1, len(frame) - 1):
        decoder = p.Decoder()
        assert decoder.feed(frame[:cut] + p.DELIMITER + frame) == [good]
        assert decoder.dropped == 1
        merged = p.Decoder()  # without that 0x00 both are lost, but nothing is misread
        assert merged.feed(frame[:cut] + frame) == []
        assert merged.dropped == 1


def test_bytes_without_a_delimiter_beyond_the_maximum_are_dropped_then_reading_resumes() -> None:
    decoder = p.Decoder()
    assert decoder.feed(b"\x05" * (p.MAX_ENCODED + 10)) == []
    assert decoder.feed(b"\x07" * 100 + b"\x00") == []
    assert decoder.oversize == 1
    assert decoder.feed(p.encode_frame(p.VOLUME, 0, b"\x10")) == [p.Volume(16)]


def test_unknown_type_is_ignored_and_counted_without_disturbing_the_stream() -> None:
    decoder = p.Decoder()
    stream = p.encode_frame(0x7E, 0, b"future") + p.encode_frame(p.STATE, 1, b"\x04\x00")
    assert decoder.feed(stream) == [p.State(4, False)]
    assert decoder.unknown == 1 and decoder.dropped == 0


def test_short_payload_of_a_known_type_is_dropped_as_malformed() -> None:
    decoder = p.Decoder()
    assert decoder.feed(p.encode_frame(p.HELLO, 0, b"\x01\x00")) == []
    assert decoder.malformed == 1


def test_extra_payload_bytes_from_a_later_revision_are_ignored() -> None:
    payload = p.State(3, True).payload() + b"\x99\x98"
    assert p.Decoder().feed(p.encode_frame(p.STATE, 0, payload)) == [p.State(3, True)]


def test_gaps_in_sequence_numbers_are_counted_as_lost_frames() -> None:
    decoder = p.Decoder()
    decoder.feed(p.encode_frame(p.PING, 250, b"\0\0\0\0"))
    decoder.feed(p.encode_frame(p.PING, 3, b"\0\0\0\0"))  # 251..255, 0, 1, 2 missing
    assert decoder.lost == 8


def test_wire_names_match_the_daemons_states_and_emotions() -> None:
    assert p.EMOTIONS == EMOTIONS
    assert set(p.STATES) == {s.value for s in DeviceState}
    assert p.emotion_index("not-an-emotion") == p.NO_EMOTION


def test_firmware_bridge_never_imports_companion() -> None:
    for path in (REPO / "firmware_bridge").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m == "companion" or m.startswith("companion.") for m in modules), path
    script = (
        "import sys, firmware_bridge.link, firmware_bridge.emulator, firmware_bridge.monitor, "
        "firmware_bridge.flash; assert not [m for m in sys.modules if m.split('.')[0] == 'companion']"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


C_HARNESS = r"""
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
%s
int main(void) {
  const uint8_t raw[] = {0x10, 0x02, 0x02, 0x00, 0x02, 0x01};
  uint8_t framed[16], enc[32], dec[32];
  memcpy(framed, raw, sizeof raw);
  uint16_t crc = crc16(raw, sizeof raw);
  framed[6] = crc & 0xFF; framed[7] = crc >> 8;
  size_t n = cobs_encode(framed, 8, enc);
  for (size_t i = 0; i < n; i++) printf("%%02x ", enc[i]);
  int m = cobs_decode(enc, n, dec);
  printf("| %%d %%04x\n", m, crc16((const uint8_t *)"123456789", 9));
  return m == 8 && memcmp(dec, framed, 8) == 0 ? 0 : 1;
}
"""


def test_the_documented_c_code_produces_the_documented_bytes(tmp_path: Path) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    text = DOC.read_text(encoding="utf-8")
    c_code = re.search(r"```c\n(.*?)```", text, re.S)
    assert c_code is not None
    source = tmp_path / "bridge.c"
    source.write_text(C_HARNESS % textwrap.dedent(c_code.group(1)))
    binary = tmp_path / "bridge"
    subprocess.run([compiler, "-std=c99", "-Wall", "-Werror", "-o", str(binary), str(source)], check=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0
    state_example = next(b for b in FRAMES if b["message"] == "STATE state=listening voice=true")
    assert result.stdout.split("|")[0].split() == state_example["wire"].split()[:-1]
    assert result.stdout.split("|")[1].split() == ["8", "29b1"]
