"""The wake word as a trigger: captured blocks go to the detector; a detection opens a turn (or barges
in on a reply) and streams what was said since just before it.

The detector sleeps through silence: it runs while the endpointer's VAD hears voice (any voiced 30 ms
frame), from GATE_LEAD_S before the onset (kept in a ring) until GATE_TAIL_S after the last voiced
frame. An idle device in a quiet room then costs what it did without a wake word.
A light engine (microWakeWord, a fraction of a millisecond per 60 ms block) runs right on the loop, as
the endpointer does; a heavy one (openWakeWord) on one worker thread, so that the loop never waits.

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
GATE_LEAD_S = 1.0  # when voice begins, the detector first hears this much from before it
GATE_TAIL_S = 1.5  # and runs on this long after the last voiced frame (a model fires ~0.3 s after the word)
# The lead-in is cut so that the models score this many samples before the end of a block: a score is
# then acted on when it is made rather than up to a block later (a resampled device's blocks vary by a
# sample or two).
ALIGN_MARGIN = 32
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
        self._skipped = 0  # samples not given to it (mic closed, or silence), so positions stay comparable
        self._recent: collections.deque[tuple[int, bytes]] = collections.deque()  # (first sample, block)
        self._backlog: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._gap = False
        self._lead_room = 0  # samples skipped for silence since the mic was last closed or heard
        self._awake_until = 0  # the detector runs until this sample (voice was heard shortly before)

    def hears(self) -> bool:
        """Whether the detector hears the microphone now: the same rule as the conversation's."""
        conv = self.conversation
        if conv.state in MIC_CLOSED:
            return False
        return conv.state is not DeviceState.SPEAKING or conv.barge_in_by_voice

    def _voice_near(self) -> bool:
        """Voice in the last GATE_TAIL_S (the endpointer's VAD, per 30 ms frame): the detector sleeps
        through silence, which is most of an idle device's day."""
        if self.conversation.endpointer.voice_active:
            self._awake_until = self._fed + int(GATE_TAIL_S * RATE)
        return self._fed < self._awake_until

    def feed(self, block: bytes) -> None:
        """A captured block (16 kHz mono s16le), on the loop, before the conversation sees it."""
        n = len(block) // 2
        self._recent.append((self._fed, block))
        self._fed += n
        while self._recent and self._recent[0][0] < self._fed - KEPT_S * RATE:
            self._recent.popleft()
        if not self.hears():  # the mic is closed: nothing from here may reach the detector later
            self._skipped += n
            self._gap, self._lead_room = True, 0
            return
        if not self._voice_near():
            self._skipped += n
            self._gap = True
            self._lead_room += n
            return
        pcm, reset = block, self._gap
        if self._gap:  # waking: first the lead-in before the voice onset, kept while the detector slept
            lead = self._aligned(min(self._lead_room, int(GATE_LEAD_S * RATE)), n)
            pcm = b"".join(self._between(self._fed - n - lead, self._fed - n)) + block
            self._skipped -= lead
            self._gap, self._lead_room = False, 0
        if self.detector.light:  # well under a millisecond a block: a thread hop would cost more than it
            if reset:
                self.detector.reset()
            for detection in self.detector.feed(pcm):
                self._fire(detection, self._skipped)
            return
        if reset:  # the stream had a hole: the detector must not join its two sides into one word
            self._backlog.put_nowait(None)
        if self._backlog.qsize() >= BACKLOG_BLOCKS:
            self._backlog.get_nowait()
            self.dropped += 1
        self._backlog.put_nowait((pcm, self._skipped))

    def _aligned(self, lead: int, block: int) -> int:
        """The lead-in, shortened by less than one scoring step so that the detector (reset before it)
        scores just before the end of this block, and of every later block of the same length when that
        is a whole number of steps (60 ms blocks, 30 ms steps): a wake word is seen when it is scored.
        With 60 ms blocks and no alignment a score waits 0-60 ms for its block to end, 30 on average;
        aligned, 0 or 30 ms."""
        first, step = self.detector.first_step, self.detector.step
        if not step:
            return lead
        surplus = (lead + block - first - ALIGN_MARGIN) % step
        return lead - surplus if surplus <= lead else lead

    async def run(self) -> None:
        """Run a heavy detector over the blocks in order, on one worker thread; until cancelled."""
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
        audio = b"".join(self._between(start, self._fed))
        backend = self.conversation.backend
        announce = None
        if self.settings.send_detect and isinstance(backend, AnnouncesWakeWord):
            phrase = detection.phrase

            async def announce_it() -> None:
                await backend.announce_wake_word(phrase)

            announce = announce_it
        self.conversation.on_wake_word(detection.phrase, audio, announce)

    def _between(self, start: int, stop: int) -> list[bytes]:
        """The kept audio from sample `start` up to sample `stop`."""
        parts = []
        for first, block in self._recent:
            last = first + len(block) // 2
            if last <= start or first >= stop:
                continue
            parts.append(block[max(0, start - first) * 2 : (min(last, stop) - first) * 2])
        return parts
