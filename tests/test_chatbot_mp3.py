"""MP3 stream decoding for chat_bot_v3 TTS: real files, real miniaudio, fed piece by piece."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import miniaudio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.audio.mp3 import FADE_MS, Mp3Error, Mp3Limits, parse_stream_start, stream_decode

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chatbot_v3"
TAGGED = ("s0", "s1", "s3")  # files with a LAME Info/Xing tag (s2 has none, like a streamed file)


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.mp3").read_bytes()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def decode(data: bytes, rate: int, size: int = 997, limits: Mp3Limits | None = None) -> np.ndarray:
    out: list[bytes] = []
    await stream_decode(pieces(data, size), rate, out.append, limits=limits)
    return np.frombuffer(b"".join(out), dtype=np.int16)


def whole_file(data: bytes, rate: int) -> np.ndarray:
    decoded = miniaudio.decode(data, nchannels=1, sample_rate=rate)
    return np.frombuffer(decoded.samples, dtype=np.int16)


@pytest.mark.parametrize("name", TAGGED)
async def test_stream_decode_is_sample_exact_with_the_whole_file_gapless_decode(name: str) -> None:
    data = fixture(name)
    start = parse_stream_start(data)
    assert start is not None
    streamed = await decode(data, start.sample_rate)
    reference = whole_file(data, start.sample_rate)
    assert len(streamed) == len(reference)
    fade = int(start.sample_rate * FADE_MS / 1000) + 1
    assert np.array_equal(streamed[fade:-fade], reference[fade:-fade])


async def test_a_file_without_a_tag_loses_only_the_decoder_delay() -> None:
    data = fixture("s2")
    streamed = await decode(data, 16000)
    reference = whole_file(data, 16000)
    assert len(streamed) == len(reference) - 529
    assert np.array_equal(streamed[100:-100], reference[529 + 100 : -100])


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
async def test_output_is_at_the_requested_rate(rate: int) -> None:
    data = fixture("s1")  # 32 kHz inside
    streamed = await decode(data, rate)
    native = whole_file(data, 32000)
    assert abs(len(streamed) - len(native) * rate / 32000) <= 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["s0", "s1", "s2", "s3"]), size=st.integers(1, 4096))
def test_any_download_chunking_gives_the_same_audio(name: str, size: int) -> None:
    data = fixture(name)
    one_piece = asyncio.run(decode(data, 24000, size=len(data)))
    chunked = asyncio.run(decode(data, 24000, size=size))
    assert np.array_equal(one_piece, chunked)


@pytest.mark.parametrize("name", ["s0", "s2", "s3"])
async def test_a_trickling_download_loses_nothing(name: str) -> None:
    """The decoder often waits for bytes here; it must neither end early nor drop a partial frame."""
    data = fixture(name)

    async def trickle() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 150):
            await asyncio.sleep(0.001)
            yield data[i : i + 150]

    out: list[bytes] = []
    await stream_decode(trickle(), 24000, out.append)
    assert b"".join(out) == (await decode(data, 24000, size=len(data))).tobytes()


async def test_first_audio_comes_out_before_the_download_ends() -> None:
    data = fixture("s1")
    first_audio = asyncio.Event()

    async def slow_source() -> AsyncIterator[bytes]:
        yield data[:6000]
        await asyncio.wait_for(first_audio.wait(), 5)  # raises if decoding waited for the whole file
        yield data[6000:]

    out: list[bytes] = []

    def on_pcm(pcm: bytes) -> None:
        out.append(pcm)
        first_audio.set()

    seconds = await stream_decode(slow_source(), 24000, on_pcm)
    assert 1.5 < seconds < 3.0


async def test_an_html_error_page_is_refused_with_a_clear_message() -> None:
    page = b"<html><body><h1>403 Forbidden</h1></body></html>" * 20
    with pytest.raises(Mp3Error, match="HTML"):
        await decode(page, 24000)


async def test_an_empty_body_is_refused() -> None:
    with pytest.raises(Mp3Error, match="empty"):
        await decode(b"", 24000)


async def test_size_limit_stops_the_download() -> None:
    with pytest.raises(Mp3Error, match="larger than 4000 bytes"):
        await decode(fixture("s1"), 24000, limits=Mp3Limits(max_bytes=4000))


async def test_audio_length_limit_stops_the_decoder() -> None:
    with pytest.raises(Mp3Error, match=r"longer than 0\.5 s"):
        await decode(fixture("s1"), 24000, limits=Mp3Limits(max_audio_s=0.5))


async def test_time_limit_stops_a_stalled_download() -> None:
    data = fixture("s0")

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:3000]
        await asyncio.Event().wait()  # the server stops sending
        yield data[3000:]

    out: list[bytes] = []
    with pytest.raises(Mp3Error, match=r"took longer than 0\.2 s"):
        await stream_decode(stalled(), 24000, out.append, limits=Mp3Limits(timeout_s=0.2))
    assert out, "what arrived in time was handed out"


async def test_a_truncated_download_plays_what_arrived() -> None:
    data = fixture("s0")
    full = await decode(data, 24000)
    half = await decode(data[: len(data) // 2], 24000)
    assert 0.3 * len(full) < len(half) < 0.7 * len(full)


async def test_cancelling_hands_out_nothing_more() -> None:
    data = fixture("s3")
    gate = asyncio.Event()
    out: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        yield data[:3000]
        await gate.wait()
        yield data[3000:]

    def on_pcm(pcm: bytes) -> None:
        out.append(pcm)
        gate.set()

    task = asyncio.create_task(stream_decode(source(), 24000, on_pcm))
    await asyncio.wait_for(gate.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(out)
    await asyncio.sleep(0.05)  # give a still-running worker the chance to (wrongly) hand out more
    assert len(out) == count


def test_parse_needs_more_bytes_then_answers() -> None:
    data = fixture("s0")
    assert parse_stream_start(data[:3]) is None
    start = parse_stream_start(data)
    assert start is not None
    assert (start.sample_rate, start.channels) == (24000, 1)
    assert start.skip_start == 576 + 529  # LAME's encoder delay + the decoder's


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.booleans())
def test_parsing_any_bytes_answers_or_raises_mp3error(data: bytes, final: bool) -> None:
    try:
        start = parse_stream_start(data, final=final)
    except Mp3Error:
        return
    assert start is None or 0 <= start.audio_offset <= len(data)
    assert not (final and start is None), "a whole file gets an answer"


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(["s0", "s1", "s2", "s3"]), cut=st.integers(0, 3000))
def test_a_prefix_of_a_file_parses_to_nothing_yet_or_to_the_right_answer(name: str, cut: int) -> None:
    data = fixture(name)
    answer = parse_stream_start(data[:cut])
    assert answer is None or answer == parse_stream_start(data)
