"""The wake word as a trigger: every captured block goes to the detector on a worker thread; a detection
opens a turn (or barges in on a reply) and streams what was said since just before it.

The detector hears the microphone whenever the conversation does: in `speaking` only when the mic is
open then (audio.echo = 'headset' or 'aec', or realtime listening). With echo 'none' the speaker's own
sound would reach the mic, so the wake word cannot interrupt a reply there (the button still does).
Blocks come from any source (sound device, WAV file, the bridge's microphone), never from inside the
PortAudio callback: `feed` is called on the loop by the capture task.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from typing import Protocol, runtime_checkable

from ..audio.wakeword import Detection, WakeWordDetector
from ..config import WakeWordSettings
from ..events import DeviceState
from .conversation import Conversation

log = logging.getLogger(__name__)

RATE = 16000
KEPT_S = 3.0  # audio kept for the pre-roll and for blocks still on their way through the detector
BACKLOG_BLOCKS = 50  # blocks waiting for the detector (3 s at 60 ms); the oldest is dropped beyond it
MIC_CLOSED = (DeviceState.CONNECTING, DeviceState.OFFLINE, DeviceState.ERROR, DeviceState.ACTIVATING)


@runtime_checkable
class AnnouncesWakeWord(Protocol):
    """A backend whose protocol tells the server which wake word fired (xiaozhi's `listen detect`)."""

    async def announce_wake_word(self, phrase: str) -> None: ...


class WakeTrigger:
    """Feeds the detector and turns its detections into turns."""

    def __init__(
        self, detector: WakeWordDetector, conversation: Conversation, settings: WakeWordSettings
    ) -> None:
        self.detector = detector
        self.conversation = conversation
        self.settings = settings
        self.detections = 0
        self.dropped = 0  # blocks the detector fell too far behind to hear
        self._fed = 0  # samples captured so far (the detector counts the same samples it was given)
        self._skipped = 0  # samples not given to it (mic closed), so that positions stay comparable
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()  # (first sample, block)
        self._backlog: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._gap = False

    def hears(self) -> bool:
        """Whether the detector hears the microphone now: the same rule as the conversation's."""
        conv = self.conversation
        if conv.state in MIC_CLOSED:
            return False
        return conv.state is not DeviceState.SPEAKING or conv.barge_in_by_voice

    def feed(self, block: bytes) -> None:
        """A captured block (16 kHz mono s16le), on the loop, before the conversation sees it."""
        self._recent.append((self._fed, block))
        self._fed += len(block) // 2
        while self._recent and self._recent[0][0] < self._fed - KEPT_S * RATE:
            self._recent.popleft()
        if not self.hears():
            self._skipped += len(block) // 2
            self._gap = True
            return
        if self._gap:  # the stream had a hole: the detector must not join its two sides into one word
            self._gap = False
            self._backlog.put_nowait(None)
        if self._backlog.qsize() >= BACKLOG_BLOCKS:
            self._backlog.get_nowait()
            self.dropped += 1
        self._backlog.put_nowait((block, self._skipped))

    async def run(self) -> None:
        """Run the detector over the blocks in order, on one worker thread; until cancelled."""
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wake-word")
        try:
            while True:
                item = await self._backlog.get()
                if item is None:
                    await loop.run_in_executor(pool, self.detector.reset)
                    continue
                block, offset = item  # offset: the samples skipped before this block, to map positions back
                found = await loop.run_in_executor(pool, self.detector.feed, block)
                for detection in found:
                    self._fire(detection, offset)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fire(self, detection: Detection, offset: int) -> None:
        self.detections += 1
        end = detection.end_sample + offset
        log.info("wake word %r (%s, p=%.2f), %.0f ms behind the microphone", detection.phrase,
                 detection.model, detection.probability, 1000 * (self._fed - end) / RATE)  # fmt: skip
        start = end - self.settings.preroll_ms * RATE // 1000
        audio = b"".join(self._since(start))
        backend = self.conversation.backend
        announce = None
        if self.settings.send_detect and isinstance(backend, AnnouncesWakeWord):
            phrase = detection.phrase

            async def announce_it() -> None:
                await backend.announce_wake_word(phrase)

            announce = announce_it
        self.conversation.on_wake_word(detection.phrase, audio, announce)

    def _since(self, start: int) -> list[bytes]:
        """The kept audio from sample `start` to now."""
        parts = []
        for first, block in self._recent:
            end = first + len(block) // 2
            if end <= start:
                continue
            cut = max(0, start - first) * 2
            parts.append(block[cut:])
        return parts
