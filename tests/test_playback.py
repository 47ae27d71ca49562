"""The playback writer: replies decoded and written in order, cut-off replies never played late, cues
between replies, and the callback once a reply has drained."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from companion.audio.opus import OpusEncoder
from companion.audio.playback import PlaybackWriter
from companion.events import SpeechAudio
from tests.conversation_edges import WAIT_S, RecordingSink


class Rig:
    def __init__(self, capacity: int = 2000) -> None:
        self.sink = RecordingSink(24000)
        self.drained = asyncio.Event()
        self.writer = PlaybackWriter(self.sink, self.drained.set, capacity)

    def reply(self) -> None:
        """As the conversation does on `tts start`."""
        self.writer.speaking = True
        self.writer.begin_reply()

    async def wait_drained(self) -> None:
        await asyncio.wait_for(self.drained.wait(), WAIT_S)


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Rig]:
    task = asyncio.create_task(rig.writer.run())
    try:
        yield rig
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def pcm24(value: int, ms: int = 20) -> SpeechAudio:
    return SpeechAudio(bytes([value]) * (24 * ms * 2), codec="pcm", sample_rate=24000)


async def test_a_reply_is_written_in_order_then_the_output_closes_and_the_callback_runs() -> None:
    async with running(Rig()) as rig:
        rig.reply()
        pieces = [pcm24(i) for i in range(1, 4)]
        for piece in pieces:
            rig.writer.play(piece)
        rig.writer.end_reply()
        await rig.wait_drained()
    assert rig.sink.written == [p.payload for p in pieces]
    assert rig.sink.events == ["begin", "end", "close"]


async def test_opus_is_decoded_at_the_speaker_rate_and_a_bad_packet_is_skipped() -> None:
    encoder = OpusEncoder(24000, 60)
    packets = [encoder.encode(bytes(24 * 60 * 2)) for _ in range(2)]
    async with running(Rig()) as rig:
        rig.reply()
        rig.writer.play(SpeechAudio(packets[0]))
        rig.writer.play(SpeechAudio(b"\xff\xff\xff"))
        rig.writer.play(SpeechAudio(b"\x00", codec="mp3"))  # not ours to decode
        rig.writer.play(SpeechAudio(packets[1]))
        rig.writer.end_reply()
        await rig.wait_drained()
    assert [len(pcm) for pcm in rig.sink.written] == [24 * 60 * 2, 24 * 60 * 2]


async def test_pcm_at_another_rate_is_resampled_to_the_speaker_rate() -> None:
    async with running(Rig()) as rig:
        rig.reply()
        for _ in range(10):
            rig.writer.play(SpeechAudio(bytes(16 * 100 * 2), codec="pcm", sample_rate=16000))  # 100 ms
        rig.writer.end_reply()
        await rig.wait_drained()
    samples = sum(len(pcm) for pcm in rig.sink.written) // 2
    assert 0.9 * 24000 <= samples <= 24000  # 1 s at 24 kHz, less the resampler's delay


async def test_audio_of_a_reply_that_was_cut_off_is_never_played_late() -> None:
    rig = Rig()
    rig.reply()
    rig.writer.play(pcm24(1))
    rig.writer.stop()  # barge-in, before the writer got to it
    rig.reply()
    rig.writer.play(pcm24(2))
    rig.writer.end_reply()
    async with running(rig):
        await rig.wait_drained()
    assert rig.sink.written == [pcm24(2).payload]
    assert rig.sink.events == ["begin", "flush", "begin", "end", "close"]


async def test_an_aborted_reply_stops_at_once_and_still_reports_drained() -> None:
    rig = Rig()
    rig.reply()
    rig.writer.play(pcm24(1))
    rig.writer.end_reply(aborted=True)
    async with running(rig):
        await rig.wait_drained()
    assert rig.sink.written == []
    assert rig.sink.events == ["begin", "flush", "end", "end", "close"]


async def test_beyond_the_capacity_the_oldest_reply_audio_is_dropped_and_counted() -> None:
    rig = Rig(capacity=2)
    rig.reply()
    for value in (1, 2, 3):
        rig.writer.play(pcm24(value))
    rig.writer.discard()  # and one that came outside a reply
    assert rig.writer.dropped == 2
    async with running(rig):
        await rig.sink.wait_for(lambda: len(rig.sink.written) == 2)
    assert rig.sink.written == [pcm24(2).payload, pcm24(3).payload]


async def test_a_cue_plays_between_replies_resampled_and_the_output_closes_after_it() -> None:
    async with running(Rig()) as rig:
        rig.writer.play_cue(bytes(16000 * 2 // 10), 16000)  # 100 ms at 16 kHz
        await rig.sink.wait_for(lambda: "close" in rig.sink.events)
    assert rig.sink.events == ["begin", "end", "close"]
    assert len(rig.sink.written[0]) == 24000 * 2 // 10


async def test_no_cue_starts_while_speaking_and_a_reply_cuts_a_playing_cue_short() -> None:
    async with running(Rig()) as rig:
        rig.writer.speaking = True
        rig.writer.play_cue(bytes(480), 24000)
        rig.writer.speaking = False
        rig.sink.hold_drain = True
        rig.writer.play_cue(bytes(480), 24000)
        await rig.sink.wait_for(lambda: rig.sink.events == ["begin", "end"])
        rig.reply()  # the cue is still draining
        assert rig.sink.events == ["begin", "end", "flush", "begin"]
        rig.writer.play(pcm24(7))
        rig.sink.hold_drain = False
        rig.writer.end_reply()
        await rig.wait_drained()
    assert rig.sink.written == [pcm24(7).payload]  # the cue's audio was flushed
    assert rig.sink.events.count("close") == 1  # the cut-off cue left the output open for the reply
