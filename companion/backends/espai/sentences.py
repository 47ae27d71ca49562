"""The MP3 streams of one reply's sentences, as they arrive in binary frames, handed to the decoder.

The ESP-AI server sends each sentence as its own MP3 stream over the socket (no URLs). This feed keeps
one byte queue per sentence and is the `fetch` of the shared ReplyPlayer (backends/reply_player.py): the
player "fetches" a sentence by its key, which here means decoding the queue's bytes while they arrive,
so ordering, the first-audio path and the end-of-reply bookkeeping are the chat_bot_v3 backend's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from ...audio.mp3 import Mp3Limits, stream_decode

PcmSink = Callable[[bytes], None]


def sentence_key(session_id: str, sentence: int) -> str:
    """The key a sentence is announced to the player with (shown in its logs like a URL)."""
    return f"espai://{session_id}/{sentence}"


class SentenceFeed:
    """Byte queues per sentence; calling it with a key decodes that sentence (ReplyPlayer's Fetcher)."""

    def __init__(self, rate: int, limits: Mp3Limits, workers: int = 2) -> None:
        self.rate = rate
        self.limits = limits
        self.pending = 0  # MP3 bytes received and not yet taken by a decoder (the buffer report)
        self._queues: dict[str, asyncio.Queue[bytes | None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="espai-mp3")

    def __contains__(self, key: str) -> bool:
        return key in self._queues

    def open(self, key: str) -> None:
        """A new sentence: its bytes are queued until its decoder takes them."""
        self._queues.setdefault(key, asyncio.Queue())

    def put(self, key: str, data: bytes) -> None:
        queue = self._queues.get(key)
        if queue is not None and data:
            self.pending += len(data)
            queue.put_nowait(data)

    def end(self, key: str) -> None:
        """The sentence's stream is complete."""
        queue = self._queues.get(key)
        if queue is not None:
            queue.put_nowait(None)

    def clear(self) -> None:
        """Forget every sentence (barge-in, a lost connection); waiting decoders end."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        self._queues.clear()
        self.pending = 0

    async def __call__(self, key: str, on_pcm: PcmSink) -> float:
        """Seconds of audio decoded from the sentence `key`; raises Mp3Error (bad data, a limit)."""
        queue = self._queues.get(key)
        if queue is None:
            return 0.0

        async def body() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                self.pending = max(0, self.pending - len(chunk))
                yield chunk

        try:
            return await stream_decode(body(), self.rate, on_pcm, limits=self.limits, executor=self._executor)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    def close(self) -> None:
        """Stop the decoder threads."""
        self.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
