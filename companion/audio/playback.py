"""The playback writer: the agent's reply decoded (Opus or PCM at any rate) and written to the speaker
in order, prompts and earcons in between replies, and the moment a reply has drained.

It knows the speaker and nothing of the network or of turns. The conversation tells it when a reply
begins, ends or is cut off, and whether the device is speaking; it calls back once a reply has played
out. Each reply has an epoch: audio queued for a reply that was cut off is dropped, never played late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..events import SpeechAudio
from .opus import OpusDecoder, OpusError
from .resample import MonoResampler
from .speaker import AudioSink

log = logging.getLogger(__name__)

DOWNLINK_QUEUE = 2000  # decoded pieces waiting for the speaker
DRAIN_SLACK_S = 5.0  # beyond what is buffered, before a reply that will not drain is given up
CUE_SLACK_S = 2.0


class PlaybackWriter:
    """Decodes reply audio, queues it with cues, and writes both to the speaker; `run()` writes."""

    def __init__(
        self, speaker: AudioSink, on_reply_drained: Callable[[], None], capacity: int = DOWNLINK_QUEUE
    ) -> None:
        self.speaker = speaker
        self.speaking = False  # the conversation's state is `speaking`: no cue may start
        self.dropped = 0  # reply audio lost: outside a reply, or the queue was full
        self._on_reply_drained = on_reply_drained
        self._epoch = 0
        self._decoder: OpusDecoder | None = None
        self._resamplers: dict[int, MonoResampler] = {}
        self._queue: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue(capacity)
        self._cue_playing = False

    # ------------------------------------------------------------------ replies
    def begin_reply(self) -> None:
        """A reply starts: a new epoch, a fresh decoder, the speaker opened (a cue is cut short)."""
        self._epoch += 1
        self._decoder = None
        if self._cue_playing:
            self.speaker.flush()
        self.speaker.begin()

    def play(self, event: SpeechAudio) -> None:
        """Decode one piece of the reply and queue it (the oldest piece goes when the queue is full)."""
        pcm = self._decode(event)
        if pcm is None:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(("audio", self._epoch, pcm))

    def discard(self) -> None:
        """Count reply audio that arrived outside a reply."""
        self.dropped += 1

    def end_reply(self, aborted: bool = False) -> None:
        """No more audio for this reply: it drains (or, if aborted, stops now), then the callback runs."""
        if aborted:
            self.stop()
            self.speaker.end()
        self._queue.put_nowait(("end", self._epoch, b""))

    def stop(self) -> None:
        """Cut the reply off: queued audio is dropped and the speaker flushed."""
        self._epoch += 1
        while not self._queue.empty():
            self._queue.get_nowait()
        self.speaker.flush()

    # ------------------------------------------------------------------ cues
    def play_cue(self, pcm: bytes, rate: int) -> None:
        """Queue a prompt or earcon unless a reply is playing; a reply that starts cuts it off."""
        if self.speaking:
            return
        if rate != self.speaker.rate:
            pcm = MonoResampler(rate, self.speaker.rate).process_bytes(pcm, last=True)
        if self._queue.full():
            self.dropped += 1
            return
        self._queue.put_nowait(("cue", self._epoch, pcm))

    # ------------------------------------------------------------------ the writer task
    async def run(self) -> None:
        """Write queued audio to the speaker until cancelled."""
        while True:
            kind, epoch, pcm = await self._queue.get()
            if epoch != self._epoch:
                continue  # queued for a reply that was cut off
            if kind == "cue":
                await self._play_cue(pcm)
            elif kind == "audio":
                await self.speaker.write(pcm)
            else:
                self.speaker.end()
                await self._finish_reply(epoch)

    async def _play_cue(self, pcm: bytes) -> None:
        if self.speaking:
            return
        self._cue_playing = True
        try:
            self.speaker.begin()
            await self.speaker.write(pcm)
            self.speaker.end()
            await self.speaker.wait_drained(len(pcm) / 2 / self.speaker.rate + CUE_SLACK_S)
            if not self.speaking:
                await self.speaker.close()
        finally:
            self._cue_playing = False

    async def _finish_reply(self, epoch: int) -> None:
        buffered_s = self.speaker.buffer.buffered() / max(1, self.speaker.rate)
        if not await self.speaker.wait_drained(buffered_s + DRAIN_SLACK_S):
            log.warning("playback did not drain in time; closing the output")
        if epoch != self._epoch or not self.speaking:
            return
        await self.speaker.close()
        self._on_reply_drained()

    # ------------------------------------------------------------------ decoding
    def _decode(self, event: SpeechAudio) -> bytes | None:
        rate = self.speaker.rate
        if event.codec == "opus":
            if self._decoder is None:
                self._decoder = OpusDecoder(rate)
            try:
                return self._decoder.decode(event.payload)
            except OpusError as exc:
                log.debug("bad Opus packet skipped: %s", exc)
                return None
        if event.codec == "pcm":
            if event.sample_rate == rate:
                return event.payload
            resampler = self._resamplers.get(event.sample_rate)
            if resampler is None:
                resampler = self._resamplers[event.sample_rate] = MonoResampler(event.sample_rate, rate)
            return resampler.process_bytes(event.payload)
        log.debug("audio codec %r not playable; skipped", event.codec)
        return None
