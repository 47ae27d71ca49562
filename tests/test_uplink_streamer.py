"""The uplink streamer: frames in order with the controls, a bounded queue that drops the oldest audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from companion.audio.opus import OpusDecoder
from companion.config import AudioSettings
from companion.daemon.uplink_streamer import UPLINK_QUEUE, UplinkStreamer
from companion.events import ListenMode
from tests.conversation_edges import RecordingBackend

FRAME = 16000 * 60 // 1000 * 2  # one 60 ms frame of 16 kHz s16le


def frame(value: int) -> bytes:
    return bytes([value]) * FRAME


@asynccontextmanager
async def running(streamer: UplinkStreamer) -> AsyncIterator[None]:
    task = asyncio.create_task(streamer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_beyond_the_capacity_the_oldest_audio_is_dropped_and_counted_never_a_control() -> None:
    backend = RecordingBackend(codec="pcm")
    streamer = UplinkStreamer(backend, AudioSettings(), capacity=3)
    streamer.control(lambda: backend.start_listening(ListenMode.AUTO))
    for value in range(1, 6):
        assert streamer.feed(frame(value)) == FRAME
    streamer.control(backend.stop_listening)
    assert (streamer.dropped, streamer.pending()) == (2, 5)
    async with running(streamer):
        await backend.wait_for(lambda names: "stop_listening" in names)
    assert [name for name, _ in backend.calls] == ["start_listening", *["send_audio"] * 3, "stop_listening"]
    assert backend.audio() == [frame(3), frame(4), frame(5)]


async def test_the_default_capacity_is_the_firmware_s_2_4_seconds() -> None:
    streamer = UplinkStreamer(RecordingBackend(codec="pcm"), AudioSettings())
    streamer.feed(bytes(FRAME * (UPLINK_QUEUE + 10)))
    assert (UPLINK_QUEUE * 60, streamer.pending(), streamer.dropped) == (2400, UPLINK_QUEUE, 10)


async def test_finish_pads_the_last_partial_frame_and_drops_the_encoder() -> None:
    backend = RecordingBackend(codec="pcm")
    streamer = UplinkStreamer(backend, AudioSettings())
    assert not streamer.encoding
    assert streamer.feed(b"\x01\x00" * 100) == 0  # less than a frame: nothing to send yet
    assert streamer.encoding
    assert streamer.finish() == FRAME
    assert not streamer.encoding and streamer.finish() == 0
    async with running(streamer):
        await backend.wait_for(lambda _names: streamer.pending() == 0 and len(backend.audio()) == 1)
    (packet,) = backend.audio()
    assert packet == b"\x01\x00" * 100 + bytes(FRAME - 200)


async def test_opus_uplink_sends_packets_that_decode_to_frames() -> None:
    backend = RecordingBackend(codec="opus")
    streamer = UplinkStreamer(backend, AudioSettings())
    streamer.feed(bytes(FRAME * 2))
    async with running(streamer):
        await backend.wait_for(lambda _names: len(backend.audio()) == 2)
    decoder = OpusDecoder(16000)
    assert [len(decoder.decode(p)) for p in backend.audio()] == [FRAME, FRAME]


async def test_a_failed_send_does_not_stop_the_ones_after_it() -> None:
    backend = RecordingBackend(codec="pcm")
    streamer = UplinkStreamer(backend, AudioSettings())

    async def broken() -> None:
        raise ConnectionError("link went away")

    streamer.control(broken)
    streamer.control(backend.stop_listening)
    async with running(streamer):
        assert await backend.wait_for(lambda names: "stop_listening" in names) == ["stop_listening"]
