"""The uplink: microphone PCM encoded into the backend's frames and sent in order with the control
messages (`listen start`/`stop`, `abort`), through one bounded queue.

The queue holds at most `capacity` audio packets (40 × 60 ms = 2.4 s, as the firmware); beyond that the
oldest audio is dropped and counted, never a control message. The encoder exists only while a turn
streams, so an idle daemon never encodes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from ..audio.uplink import UplinkEncoder
from ..config import AudioSettings
from ..events import Backend

log = logging.getLogger(__name__)

UPLINK_QUEUE = 40  # packets (2.4 s at 60 ms), as the firmware; the oldest audio is dropped beyond it

Control = Callable[[], Awaitable[object]]


class UplinkStreamer:
    """Encodes and queues audio and controls for the backend; `run()` sends them in order."""

    def __init__(self, backend: Backend, audio: AudioSettings, capacity: int = UPLINK_QUEUE) -> None:
        self.backend = backend
        self.audio = audio
        self.capacity = capacity
        self.dropped = 0  # audio packets lost to a full queue
        self._encoder: UplinkEncoder | None = None
        self._queue: collections.deque[bytes | Control] = collections.deque()
        self._audio_queued = 0
        self._wake = asyncio.Event()

    @property
    def encoding(self) -> bool:
        """True while an encoder exists (between the first `feed` and `finish`)."""
        return self._encoder is not None

    def feed(self, pcm: bytes) -> int:
        """Encode 16 kHz mono PCM and queue its packets; returns the bytes queued."""
        if self._encoder is None:
            # Built now, not at start-up: the backend's format is known only once it has connected.
            self._encoder = UplinkEncoder(self.backend.uplink, self.audio)
        return self._queue_packets(self._encoder.feed(pcm))

    def finish(self) -> int:
        """Queue the last partial frame (padded) and drop the encoder; returns the bytes queued."""
        encoder, self._encoder = self._encoder, None
        return self._queue_packets(encoder.finish()) if encoder is not None else 0

    def control(self, action: Control) -> None:
        """Queue a control call; it runs after the audio queued before it."""
        self._queue.append(action)
        self._wake.set()

    def pending(self) -> int:
        """Items waiting to be sent (audio and controls)."""
        return len(self._queue)

    def _queue_packets(self, packets: list[bytes]) -> int:
        size = 0
        for packet in packets:
            if self._audio_queued >= self.capacity:
                self._drop_oldest_audio()
            self._queue.append(packet)
            self._audio_queued += 1
            size += len(packet)
        if packets:
            self._wake.set()
        return size

    def _drop_oldest_audio(self) -> None:
        for i, item in enumerate(self._queue):
            if isinstance(item, bytes):
                del self._queue[i]
                self._audio_queued -= 1
                self.dropped += 1
                return

    async def run(self) -> None:
        """Send until cancelled; a failed send is logged and the next item goes on."""
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            item = self._queue.popleft()
            try:
                if isinstance(item, bytes):
                    self._audio_queued -= 1
                    await self.backend.send_audio(item)
                else:
                    await item()
            except Exception as exc:  # a send on a dying link: the backend reports the disconnect
                log.debug("uplink send failed: %s", exc)
