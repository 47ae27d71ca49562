"""The sans-I/O UDP audio packet: spec §8 vectors 7–9 byte for byte, the hello's udp block, properties."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.protocols.xiaozhi.udp import (
    HEADER_SIZE,
    UdpAudioChannel,
    UdpConfigError,
    UdpParams,
)
from tests.peers.mqtt_gateway import aes_ctr, udp_header

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
NONCE = bytes.fromhex("01000000123456780000000000000000")


def channel() -> UdpAudioChannel:
    return UdpAudioChannel(KEY, NONCE)


def downlink(sequence: int, payload: bytes = b"\x01\x02\x03", timestamp: int = 0) -> bytes:
    """A server datagram made with the test peer's own AES-CTR code."""
    header = udp_header(len(payload), 0x12345678, timestamp, sequence)
    return header + aes_ctr(KEY, header, payload)


# ---------------------------------------------------------------- vectors 7 and 8


def test_vector_7_first_uplink_datagram_is_byte_exact() -> None:
    datagram = channel().seal(bytes.fromhex("780102"), 0)
    assert datagram.hex() == "01000003123456780000000000000001f100bc"


def test_vector_8_second_uplink_crosses_a_block_boundary_byte_exact() -> None:
    ch = channel()
    ch.seal(bytes.fromhex("780102"), 0)
    datagram = ch.seal(bytes(range(20)), 60)
    assert datagram[:HEADER_SIZE].hex() == "01000014123456780000003c00000002"
    assert datagram[HEADER_SIZE:].hex() == "7bf486d4d3a314719696df8dfa5466dfb82b3f87"


def test_uplink_sequence_counts_from_one_and_restarts_after_reset() -> None:
    ch = channel()
    assert [struct.unpack_from(">I", ch.seal(b"x"), 12)[0] for _ in range(3)] == [1, 2, 3]
    ch.reset()
    assert struct.unpack_from(">I", ch.seal(b"x"), 12)[0] == 1


def test_uplink_keeps_the_nonce_ssrc_and_writes_length_and_timestamp() -> None:
    datagram = channel().seal(b"\xaa" * 300, 0x1_0000_0005)  # timestamps wrap at 2**32
    kind, flags, length, ssrc, timestamp, _ = struct.unpack_from(">BBHIII", datagram)
    assert (kind, flags, length, ssrc, timestamp) == (1, 0, 300, 0x12345678, 5)
    assert len(datagram) == HEADER_SIZE + 300


def test_payload_over_64k_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        channel().seal(bytes(65536))


# ---------------------------------------------------------------- vector 9: receive rules


def test_vector_9_sequence_zero_is_dropped_right_after_hello() -> None:
    ch = channel()
    assert ch.open(downlink(0)) is None
    assert ch.stats["dropped_old"] == 1
    assert ch.open(downlink(1)) is not None


def test_vector_9_old_and_repeated_sequences_are_dropped_and_a_gap_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ch = channel()
    with caplog.at_level(logging.DEBUG, logger="companion.protocols.xiaozhi.udp"):
        assert ch.open(downlink(5)) is not None
        assert ch.open(downlink(5)) is None
        assert ch.open(downlink(3)) is None
        packet = ch.open(downlink(7, b"late"))
    assert packet is not None and packet.payload == b"late" and packet.missing == 1
    # the first gap is a warning; later ones are logged at debug so a lossy Wi-Fi does not flood the log
    gaps = [(r.levelno, r.getMessage()) for r in caplog.records if "jumped" in r.getMessage()]
    assert gaps == [
        (logging.WARNING, "UDP sequence jumped from 0 to 5: 4 packet(s) lost"),
        (logging.DEBUG, "UDP sequence jumped from 5 to 7: 1 packet(s) lost"),
    ]
    assert ch.stats["dropped_old"] == 2 and ch.stats["missing"] == 5  # 1–4 before 5, then 6


def test_vector_9_short_wrong_type_and_wrong_length_datagrams_are_dropped() -> None:
    ch = channel()
    good = downlink(1, b"abc")
    assert ch.open(good[:-1]) is None  # 16 + len − 1 bytes
    assert ch.open(good + b"\x00") is None  # one byte too many
    assert ch.open(b"\x02" + good[1:]) is None  # byte0 = 0x02
    assert ch.open(good[:15]) is None  # shorter than a header
    assert (ch.stats["dropped_length"], ch.stats["dropped_type"], ch.stats["dropped_short"]) == (2, 1, 1)
    packet = ch.open(good)
    assert packet is not None and packet.payload == b"abc" and packet.sequence == 1


def test_dropped_datagrams_do_not_advance_the_sequence() -> None:
    ch = channel()
    assert ch.open(b"\x02" + downlink(9)[1:]) is None
    assert ch.open(downlink(2)) is not None


def test_a_new_hello_resets_the_receive_sequence() -> None:
    ch = channel()
    assert ch.open(downlink(40)) is not None
    ch.reset()
    assert ch.open(downlink(1)) is not None


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_sealed_packets_open_to_the_same_payloads_in_order(payloads: list[bytes], start_ts: int) -> None:
    sender, receiver = channel(), channel()
    for i, payload in enumerate(payloads):
        packet = receiver.open(sender.seal(payload, start_ts + 60 * i))
        assert packet is not None
        assert (packet.payload, packet.sequence, packet.missing) == (payload, i + 1, 0)
        assert packet.timestamp == (start_ts + 60 * i) % 2**32


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_garbage_datagrams_never_raise(datagrams: list[bytes]) -> None:
    ch = channel()
    for data in datagrams:
        ch.open(data)
    assert ch.remote_sequence >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=30))
def test_accepted_sequences_are_strictly_increasing(sequences: list[int]) -> None:
    ch = channel()
    accepted = [s for s in sequences if ch.open(downlink(s)) is not None]
    assert accepted == sorted(set(accepted))
    assert all(s > 0 for s in accepted)


# ---------------------------------------------------------------- the hello's udp block


GW_UDP = {
    "server": "127.0.0.1",
    "port": 8884,
    "encryption": "aes-128-ctr",
    "key": KEY.hex(),
    "nonce": NONCE.hex(),
}


def test_gateway_udp_block_parses_with_the_ssrc_from_the_nonce() -> None:
    params = UdpParams.from_hello(GW_UDP)
    assert (params.server, params.port, params.key, params.ssrc) == ("127.0.0.1", 8884, KEY, 0x12345678)
    assert "key=" not in repr(params)  # the key never reaches a log line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": KEY.hex()[:-2]}, "udp.key must be 16 bytes"),
        ({"nonce": "zz" * 16}, "udp.nonce is not a hex string"),
        ({"port": 0}, "udp.port must be an integer"),
        ({"port": "8884"}, "udp.port must be an integer"),
        ({"server": ""}, "udp.server is missing"),
        ({"encryption": "aes-256-gcm"}, "not supported"),
        ({"key": None}, "udp.key is missing"),
    ],
)
def test_unusable_udp_blocks_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(UdpConfigError, match=message):
        UdpParams.from_hello({**GW_UDP, **change})


def test_a_hello_without_udp_is_refused() -> None:
    with pytest.raises(UdpConfigError, match="no udp object"):
        UdpParams.from_hello(None)
