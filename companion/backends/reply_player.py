"""One reply's speech as numbered sentences (MP3 files or streams): fetched ahead, decoded while they
arrive, and handed out in z_index order as SpeechAudio, for the backends whose servers speak that way
(chat_bot_v3's TTS URLs, ESP-AI's MP3 frames)."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from ..audio.mp3 import Mp3Error
from ..events import EventSink, SpeechAudio, SpeechEnded, SpeechStarted, TurnEnded
from ..net.urls import display_url
from .playout import Finished, Play, Sequencer, Skip
from .reconnect import ReconnectOptions

log = logging.getLogger(__name__)

MAX_URLS_PER_REPLY = 256  # more sentences than this in one reply are dropped (and counted)
MAX_AUDIO_EVENT_BYTES = 48_000  # buffered audio is handed out in pieces of at most ~1 s at 24 kHz


class FetchFailed(Exception):
    """A TTS file could not be downloaded (HTTP status, network)."""


PcmSink = Callable[[bytes], None]
Fetcher = Callable[[str, PcmSink], Awaitable[float]]


class PlayerBackendOptions(ReconnectOptions, total=False):
    """What the runtime (or a test) gives a backend whose replies a ReplyPlayer plays, besides its
    settings and event sink."""

    playback_rate: int  # the speaker's rate, the one replies are decoded to (24000 when not given)


@dataclass
class _Item:
    url: str
    blocks: list[bytes] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class ReplyPlayer:
    """One reply's speech: fetches TTS URLs ahead and hands their audio out in z_index order.

    Events go to `emit`: SpeechStarted before the first audio, SpeechAudio pieces in play order, then
    SpeechEnded once the server ended the turn and the last index was handed out, or TurnEnded when the
    reply had no speech at all. `cancel()` (barge-in) stops everything and emits nothing more.
    """

    def __init__(
        self,
        emit: EventSink,
        fetch: Fetcher,
        *,
        rate: int,
        concurrency: int = 3,
        max_wait_s: float = 1.0,
        idle_s: float = 20.0,
        turn: int = 0,
    ) -> None:
        self._emit = emit
        self._fetch = fetch
        self.rate = rate
        self.concurrency = concurrency
        self.idle_s = idle_s
        self.turn = turn
        self.seq = Sequencer(max_wait_s=max_wait_s)
        self.items: dict[int, _Item] = {}
        self.stats: Counter[str] = Counter()
        self.speaking = False
        self.done = False
        self.uploading = False  # a voice turn's upload: the server cannot have gone quiet on us yet
        self._outcome = "completed"
        self._queue: list[int] = []  # indices waiting for a download slot, lowest first
        self._running = 0
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.touch()

    # ------------------------------------------------------------------ inputs
    def touch(self) -> None:
        """The server sent something for this turn: restart the silence timer."""
        if self.done:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self.idle_s, self._went_quiet)

    def announce(self, index: int | None, url: str) -> None:
        """A TTS URL for `index` (None: next in arrival order)."""
        if self.done:
            self.stats["late_urls"] += 1
            return
        if len(self.items) >= MAX_URLS_PER_REPLY:
            self.stats["urls_over_limit"] += 1
            log.warning("more than %d TTS items in one reply; z_index %s dropped", MAX_URLS_PER_REPLY, index)
            return
        accepted = self.seq.announce(index, self._loop.time())
        if accepted is None:
            self.stats["ignored_urls"] += 1
            log.info("TTS item z_index %s ignored (duplicate, or its turn to play has passed)", index)
            return
        self.items[accepted] = _Item(url)
        heapq.heappush(self._queue, accepted)
        self._start_fetches()
        self._drive()

    def end_of_turn(self, outcome: str = "completed") -> None:
        """The server ended the turn: once every announced index is played or skipped, the reply ends.

        `outcome` is the TurnEnded reason when the reply had no speech at all.
        """
        if self.done:
            return
        self._outcome = outcome
        self.seq.end_of_turn()
        self._drive()

    def cancel(self) -> None:
        """Barge-in: stop downloads and decoding; nothing more is emitted."""
        self._finish()
        self.seq.flush()

    # ------------------------------------------------------------------ downloads
    def _start_fetches(self) -> None:
        while self._queue and self._running < self.concurrency and not self.done:
            index = heapq.heappop(self._queue)
            item = self.items.get(index)
            if item is None:
                continue
            self._running += 1
            item.task = self._loop.create_task(self._download(index, item), name=f"tts-{index}")

    async def _download(self, index: int, item: _Item) -> None:
        try:
            await self._fetch(item.url, lambda pcm: self._on_pcm(index, pcm))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._failed(index, "download timed out", item.url)
        except (FetchFailed, Mp3Error) as exc:
            self._failed(index, str(exc), item.url)
        except httpx.HTTPError as exc:
            self._failed(index, f"download failed ({type(exc).__name__}: {exc})", item.url)
        except Exception as exc:  # a bug must not stall the reply: skip the sentence, keep the order
            log.exception("TTS item z_index %d failed", index)
            self._failed(index, f"{type(exc).__name__}: {exc}", item.url)
        else:
            if not self.done:
                self.seq.complete(index)
                self.stats["fetched"] += 1
        finally:
            self._running -= 1
        if not self.done:
            self._start_fetches()
            self._drive()

    def _failed(self, index: int, reason: str, url: str) -> None:
        if self.done:
            return
        self.stats["fetch_failed"] += 1
        self.seq.fail(index, f"{reason} ({display_url(url)})")

    def _on_pcm(self, index: int, pcm: bytes) -> None:
        if self.done:
            return
        if index == self.seq.current:
            self._hand_out(index, pcm)
            return
        item = self.items.get(index)
        if item is None:
            return
        item.blocks.append(pcm)
        if len(item.blocks) == 1:
            self.seq.ready(index)
            self._drive()

    # ------------------------------------------------------------------ decisions
    def _drive(self) -> None:
        if self.done:
            return
        for decision in self.seq.poll(self._loop.time()):
            if isinstance(decision, Play):
                self._play(decision.index)
            elif isinstance(decision, Skip):
                self._skip(decision)
            elif isinstance(decision, Finished):
                self._finished(decision)
                return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        when = self.seq.next_deadline()
        if when is not None:
            self._deadline = self._loop.call_at(when, self._drive)

    def _play(self, index: int) -> None:
        for old in [i for i in self.items if i < index]:
            del self.items[old]
        item = self.items.get(index)
        if item is None:
            return
        blocks, item.blocks = item.blocks, []
        piece = bytearray()
        for block in blocks:
            piece += block
            if len(piece) >= MAX_AUDIO_EVENT_BYTES:
                self._hand_out(index, bytes(piece))
                piece.clear()
        if piece:
            self._hand_out(index, bytes(piece))

    def _hand_out(self, index: int, pcm: bytes) -> None:
        if not self.speaking:
            self.speaking = True
            self._emit(SpeechStarted())
        self.stats["audio_bytes"] += len(pcm)
        self._emit(SpeechAudio(pcm, codec="pcm", sample_rate=self.rate, index=index))

    def _skip(self, skip: Skip) -> None:
        which = f"z_index {skip.index}" if skip.count == 1 else f"z_index {skip.index}..{skip.last}"
        log.warning("sentence %s skipped: %s", which, skip.reason)
        for index in [i for i in self.items if skip.index <= i <= skip.last]:
            item = self.items.pop(index)
            if item.task is not None and not item.task.done():
                item.task.cancel()

    def _finished(self, decision: Finished) -> None:
        speaking = self.speaking
        self._finish()
        log.debug(
            "reply of turn %d done: %d played, %d skipped", self.turn, decision.played, decision.skipped
        )
        if speaking:
            self._emit(SpeechEnded())
        else:
            self._emit(TurnEnded(self._outcome))

    def _went_quiet(self) -> None:
        self._idle = None
        if self.done or self.seq.finished:
            return
        if self._running or self._queue or self.uploading:
            self.touch()  # still uploading, or downloads under way (each has its own time limit)
            return
        log.warning(
            "the server sent nothing for %.0f s and never ended the turn (1006); ending it", self.idle_s
        )
        self.seq.end_of_turn()
        self._drive()

    def _finish(self) -> None:
        self.done = True
        for timer in (self._deadline, self._idle):
            if timer is not None:
                timer.cancel()
        self._deadline = self._idle = None
        for item in self.items.values():
            if item.task is not None and not item.task.done():
                item.task.cancel()
        self.items.clear()
        self._queue.clear()
