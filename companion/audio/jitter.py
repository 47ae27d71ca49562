"""A single-producer single-consumer sample ring with a pre-buffer: the speaker's jitter buffer.

The event loop pushes decoded audio; the PortAudio callback (or a paced file writer) pulls fixed blocks.
Neither side blocks or allocates per call: positions are plain integers that only their owner writes,
and a flush is a request that the reader applies at its next pull. The latency marks are a deque the
producer only appends to and the reader only pops from (both atomic in CPython).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import numpy as np


class JitterBuffer:
    """Plays pushed samples back to back; starts after `prebuffer` samples (or at end of stream)."""

    def __init__(
        self,
        capacity: int,
        prebuffer: int,
        clock: Callable[[], float] = time.monotonic,
        latency_slots: int = 4096,
    ) -> None:
        self._ring = np.zeros(capacity, dtype=np.int16)
        self.capacity = capacity
        self.prebuffer = prebuffer
        self._clock = clock
        self._written = 0  # owned by the producer
        self._read = 0  # owned by the consumer
        self._flush_to = 0  # producer's request, applied by the consumer
        self._eos_at = -1  # producer: stream ends when the reader reaches this position
        self._playing = False  # consumer
        # An underrun is a gap inside a reply: the reader ran dry (`_dry_runs`, reader-owned) and audio
        # came again after it. The last packet of a reply always runs the buffer dry before the server's
        # `tts stop` arrives; that is the end, not a gap, so it is counted only when more audio follows.
        self._dry_runs = 0
        self._dry_seen = 0  # producer: dry runs already judged
        self.underruns = 0  # producer
        self.played_samples = 0
        self.first_sample_time: float | None = None
        self.on_drained: Callable[[], None] | None = None
        # (position of the first sample of a push, arrival time, samples queued ahead of it): latency to
        # hand-off is measured per push, in total and beyond the audio that had to play before it
        self._marks: collections.deque[tuple[int, float, int]] = collections.deque(maxlen=latency_slots)
        self.rate = 0  # set by the owner to report `excess` latencies in seconds
        self.latencies = np.zeros(latency_slots, dtype=np.float64)
        self.excess_latencies = np.zeros(latency_slots, dtype=np.float64)
        self.latency_count = 0

    # ------------------------------------------------------------------ producer (event loop)
    def free(self) -> int:
        """Samples that can be pushed now without overwriting unplayed audio."""
        return self.capacity - (self._written - max(self._read, self._flush_to))

    def push(self, samples: np.ndarray, arrival: float | None = None) -> int:
        """Append samples; returns how many were taken (fewer when the ring is full)."""
        n = min(len(samples), self.free())
        if n <= 0:
            return 0
        dry_runs = self._dry_runs
        if dry_runs != self._dry_seen:  # the reader ran dry and audio follows: a real gap
            self.underruns += 1
            self._dry_seen = dry_runs
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._ring[start : start + first] = samples[:first]
        if n > first:
            self._ring[: n - first] = samples[first:n]
        ahead = self._written - max(self._read, self._flush_to)
        self._marks.append((self._written, self._clock() if arrival is None else arrival, ahead))
        self._written += n
        self._eos_at = -1
        return n

    def end_of_stream(self) -> None:
        """No more audio for this reply: play what is buffered even if below the pre-buffer, then drain."""
        self._eos_at = self._written
        self._dry_seen = self._dry_runs  # running dry before the end was announced was the end

    def flush(self) -> None:
        """Drop everything not yet played (barge-in); takes effect at the reader's next pull."""
        self._flush_to = self._written
        self._eos_at = self._written
        # The marks are not cleared here: the audio thread is reading them. Marks of flushed audio lie
        # before the reader's next position, and `_note_latency` discards those without measuring.

    def buffered(self) -> int:
        """Samples waiting to be played."""
        return self._written - max(self._read, self._flush_to)

    def reset_stream(self) -> None:
        """Start a new reply: the first-sample time and the pre-buffer apply again."""
        self.first_sample_time = None

    # ------------------------------------------------------------------ consumer (audio thread)
    def pull(self, out: np.ndarray) -> int:
        """Fill `out` with the next samples (zeros where there are none); returns samples of audio."""
        if self._flush_to > self._read:
            self._read = self._flush_to
            self._playing = False
        written = self._written
        avail = written - self._read
        eos = self._eos_at >= 0 and self._eos_at <= written
        if not self._playing:
            if avail > 0 and (avail >= self.prebuffer or eos):
                self._playing = True
            else:
                out[:] = 0
                if eos and avail == 0:
                    self._drained()
                return 0
        n = min(len(out), avail)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._ring[start : start + first]
        if n > first:
            out[first:n] = self._ring[: n - first]
        out[n:] = 0
        if n and self.first_sample_time is None:
            self.first_sample_time = self._clock()
        self._note_latency(self._read, self._read + n)
        self._read += n
        self.played_samples += n
        if n < len(out):
            self._playing = False
            if eos:
                self._drained()
            else:
                self._dry_runs += 1
        return n

    def _note_latency(self, begin: int, end: int) -> None:
        marks = self._marks
        if not marks:
            return
        now = self._clock()
        while marks and marks[0][0] < end:
            pos, arrival, ahead = marks.popleft()
            if pos >= begin:
                slot = self.latency_count % len(self.latencies)
                self.latencies[slot] = now - arrival
                self.excess_latencies[slot] = now - arrival - (ahead / self.rate if self.rate else 0.0)
                self.latency_count += 1

    def _drained(self) -> None:
        self._eos_at = -1
        callback = self.on_drained
        if callback is not None:
            callback()
