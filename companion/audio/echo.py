"""Echo cancellation on a speaker build: the microphone hears the user, not the device's own voice.

`FarEnd` keeps what the speaker played and when (the output callback hands it every block with its
converter time); `EchoCanceller` pairs each microphone block with the far-end samples played at the
moment it was captured and runs WebRTC's AEC3 (pywebrtc-audio) over both. AEC3 finds the remaining
acoustic delay itself. Frames the canceller reduced to a residue of the reply are then silenced, so
the voice detector never starts on the device's own voice. `echo_path` decides the mode the device
runs in (and says why), for the runtime and for `companion doctor`. docs/echo.md has the reasons.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import time
from typing import Any

import numpy as np

from ..config import Settings
from .resample import MonoResampler
from .stream_clock import StreamClock

log = logging.getLogger(__name__)

RATE = 16000
FRAME = RATE // 100  # AEC3 works on 10 ms frames
FAR_SECONDS = 2.0  # speaker output kept for the canceller (the loop reads it every capture block)
FAR_AUDIBLE = 30.0  # RMS (of 32768) above which a far-end frame counts as the device speaking
ECHO_HOLD_S = 0.5  # echo keeps arriving this long after the speaker fell silent (delay + room)
IDLE_S = 2.0  # far end silent this long: the canceller rests and the microphone passes as it is
# A frame the canceller took this much out of is what is left of the reply's echo, not the user:
# the user's voice passes the canceller nearly whole (a few dB in double talk).
RESIDUE_DROP_DB = 10.0
RESIDUE_FLOOR_DBFS = -45.0  # while the device speaks, quieter frames than this are silenced as well
# What the microphone hears of the speaker, learnt from frames the canceller clearly took echo out of
# (by CLEAR_ECHO_DB or more): the microphone's level over the loudest far-end frame of the last
# ECHO_SPAN_FRAMES. A frame no louder than that coupling (its median) + ECHO_MARGIN_DB predicts is the
# reply's echo even when the canceller let it through; the user's voice over a reply is louder.
CLEAR_ECHO_DB = 20.0
ECHO_SPAN_FRAMES = 30  # 300 ms of far end: the delay from the speaker to the microphone, and the room
ECHO_MARGIN_DB = 3.0
COUPLING_FRAMES = 300  # clear-echo frames kept for the coupling's median
COUPLING_MIN = 20  # frames learnt before the level check is used
ENGINE_MODULE = "pywebrtc_audio"
REOPEN_S = 0.3  # the speaker's timeline jumped ahead this far: it was closed and opened again
# The microphone's timeline is followed by reading the far end a few samples ahead or behind per
# block (inaudible to AEC3); a jump larger than RESYNC is taken at once.
SLEW = 4
RESYNC = RATE // 20


class FarEnd:
    """What the speaker played, with the time each sample reached the converter.

    `played` runs on the output callback's thread and only copies; the loop resamples to 16 kHz when
    the canceller asks for a stretch (`take`).
    """

    def __init__(self, rate: int, seconds: float = FAR_SECONDS) -> None:
        self.rate = rate
        self._ring = np.zeros(int(rate * seconds), dtype=np.int16)
        self._written = 0  # callback thread
        self._read = 0  # loop
        self._clock = StreamClock(rate)
        # (position, time, reopened) where the speaker's timeline jumped: the output was opened again
        # for a reply (reopened), or it ran dry for a moment under load
        self._anchors: collections.deque[tuple[int, float, bool]] = collections.deque(maxlen=256)
        self._segment: tuple[int, float, bool] | None = None
        self._next: int | None = None  # 16 kHz index of the next resampled sample
        self._resampler = MonoResampler(rate, RATE)
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.lost = 0  # times the loop fell a whole ring behind
        self.segments = 0  # jumps of the speaker's timeline: opened for a reply or a cue, or ran dry

    # ------------------------------------------------------------------ the output callback's side
    def played(self, samples: np.ndarray, dac_time: float) -> None:
        """The speaker is about to play `samples` (mono int16 at `rate`); the first reaches the DAC
        at `dac_time` (time.monotonic)."""
        ring, n = self._ring, len(samples)
        start = self._written % len(ring)
        first = min(n, len(ring) - start)
        ring[start : start + first] = samples[:first]
        if n > first:
            ring[: n - first] = samples[first:]
        before = self._clock.time_of(self._written)
        moved = self._clock.mark(self._written, dac_time)
        if moved is not None:
            position, when = moved
            expected = None if before is None else before - (self._written - position) / self.rate
            reopened = expected is None or when - expected > REOPEN_S
            self._anchors.append((position, when, reopened))
        self._written += n

    # ------------------------------------------------------------------ the loop's side
    def take(self, start: int, n: int) -> np.ndarray:
        """The 16 kHz far-end samples with indexes start … start+n-1 (index = time × 16000); zeros
        where the speaker played nothing."""
        self._collect()
        out = np.zeros(n, dtype=np.int16)
        end = start + n
        chunks = self._chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) <= start:
            chunks.popleft()
        for index, samples in chunks:
            if index >= end:
                break
            lo, hi = max(index, start), min(index + len(samples), end)
            if lo < hi:
                out[lo - start : hi - start] = samples[lo - index : hi - index]
        return out

    def _collect(self) -> None:
        written = self._written
        ring = self._ring
        if written - self._read > len(ring):
            self.lost += 1
            self._read = written - len(ring)
            self._next = None
        while self._read < written:
            while self._anchors and self._anchors[0][0] <= self._read:
                self._start_segment(self._anchors.popleft())
            end = written
            if self._anchors and self._anchors[0][0] < end:
                end = self._anchors[0][0]
            if self._next is None and self._segment is not None:
                position, when, _ = self._segment
                self._next = round((when + (self._read - position) / self.rate) * RATE)
            lo = self._read % len(ring)
            count = end - self._read
            piece = ring[lo : lo + count]
            if len(piece) < count:
                piece = np.concatenate([piece, ring[: count - len(piece)]])
            self._read = end
            self._append(self._resampler.process(piece))

    def _start_segment(self, anchor: tuple[int, float, bool]) -> None:
        self._append(self._resampler.process(np.zeros(0, dtype=np.int16), last=True))
        self._resampler.clear()
        self._segment = anchor
        self._next = None
        self.segments += 1
        if not anchor[2]:
            log.debug("echo: the speaker's timeline jumped (it ran dry)")

    def _append(self, samples: np.ndarray) -> None:
        if self._next is None or not len(samples):
            return
        self._chunks.append((self._next, samples.copy()))
        self._next += len(samples)


def _rms(frames: np.ndarray) -> np.ndarray:
    """RMS of each row of a (frames, samples) int16 array."""
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


class EchoCanceller:
    """Removes the speaker's sound from microphone blocks (16 kHz mono s16le), block by block."""

    def __init__(self, far: FarEnd, silence_residue: bool = True) -> None:
        """`silence_residue=False` gives AEC3's output as it is (to measure the canceller alone)."""
        engine = importlib.import_module(ENGINE_MODULE)
        self.silence_residue = silence_residue
        self._aec: Any = engine.EchoCanceller(sample_rate=RATE, num_channels=1)
        self.far = far
        self._pending = np.zeros(0, dtype=np.int16)
        self._segments = 0
        self._far_next: int | None = None  # 16 kHz index of the far-end sample paired with the next frame
        self._far_heard = -1e9  # monotonic time of the last audible far-end frame
        self._floor = 32768 * 10 ** (RESIDUE_FLOOR_DBFS / 20)
        self._drop = 10 ** (-RESIDUE_DROP_DB / 20)
        self._clear = 10 ** (-CLEAR_ECHO_DB / 20)
        self._margin = 10 ** (ECHO_MARGIN_DB / 20)
        self._recent_far: collections.deque[float] = collections.deque(maxlen=ECHO_SPAN_FRAMES)
        self._coupling: collections.deque[float] = collections.deque(maxlen=COUPLING_FRAMES)
        self.frames = 0  # 10 ms frames cancelled
        self.silenced = 0  # of those, frames silenced as echo residue
        self.at_echo_level = 0  # of those, frames silenced by the level check alone
        self.resets = 0

    def process(self, block: bytes, captured_at: float | None = None) -> bytes:
        """The block with the echo removed; `captured_at` is when its first sample met the ADC
        (time.monotonic; None: it has just arrived). Keeps up to 10 ms back until a frame is whole."""
        fresh = np.frombuffer(block, dtype=np.int16)
        if captured_at is None:
            captured_at = time.monotonic() - len(fresh) / RATE
        first_at = captured_at - len(self._pending) / RATE
        near = np.concatenate([self._pending, fresh]) if len(self._pending) else fresh
        whole = len(near) // FRAME * FRAME
        self._pending = near[whole:].copy()
        if not whole:
            return b""
        near = near[:whole]
        wanted = round(first_at * RATE)
        if self._far_next is None or abs(wanted - self._far_next) > RESYNC:
            if self._far_next is not None:
                log.debug("echo: the microphone's timeline jumped %+.0f ms", (wanted - self._far_next) / 16)
            self._far_next = wanted
        else:
            self._far_next += max(-SLEW, min(SLEW, wanted - self._far_next))
        far = self.far.take(self._far_next, whole)
        self._far_next += whole
        if self.far.segments != self._segments:
            # The speaker was opened anew (or ran dry), so the delay from it to the microphone changed;
            # AEC3 holds on to the delay it found and follows a shorter one slowly, but finds one at once.
            self._segments = self.far.segments
            self._aec.reset()
            self.resets += 1
            log.debug("echo: the speaker's timeline jumped; canceller reset")
        far_rms = _rms(far.reshape(-1, FRAME))
        now = first_at + whole / RATE
        audible = np.nonzero(far_rms > FAR_AUDIBLE)[0]
        if len(audible):
            self._far_heard = first_at + (audible[-1] + 1) * FRAME / RATE
        if now - self._far_heard > IDLE_S:
            # Nothing played for a while: nothing to cancel. AEC3 keeps what it learnt (a reset here
            # made it leak the start of every reply played on the same open output).
            return near.tobytes()
        out = self._aec.process(near, far)
        self.frames += len(far_rms)
        if self.silence_residue and now - self._far_heard <= ECHO_HOLD_S:
            out = self._silence_residue(near, out, far_rms)
        else:
            self._recent_far.extend(far_rms)
        return np.asarray(out, dtype=np.int16).tobytes()

    def _silence_residue(self, near: np.ndarray, out: np.ndarray, far_rms: np.ndarray) -> np.ndarray:
        frames_in = near.reshape(-1, FRAME)
        frames_out = np.array(out, dtype=np.int16).reshape(-1, FRAME)
        level_in, level_out = _rms(frames_in), _rms(frames_out)
        residue = (level_out < level_in * self._drop) | (level_out < self._floor)
        at_echo = self._at_echo_level(level_in, level_out, far_rms) & ~residue
        silence = residue | at_echo
        frames_out[silence] = 0
        self.silenced += int(silence.sum())
        self.at_echo_level += int(at_echo.sum())
        return frames_out.reshape(-1)

    def _at_echo_level(self, level_in: np.ndarray, level_out: np.ndarray, far_rms: np.ndarray) -> np.ndarray:
        """Frames no louder than the speaker's echo is here. AEC3 now and then lets a stretch of a reply
        through nearly whole (seen 0.5-1.4 s into the reply that follows a barge-in, 3-8 dB taken out):
        enough for the voice detector to start on the device's own voice."""
        echo_like = np.zeros(len(level_in), dtype=bool)
        coupling = float(np.median(self._coupling)) if len(self._coupling) >= COUPLING_MIN else None
        for k, (heard, left, played) in enumerate(zip(level_in, level_out, far_rms, strict=True)):
            self._recent_far.append(float(played))
            loudest = max(self._recent_far)
            if loudest <= FAR_AUDIBLE or heard <= self._floor:
                continue
            if left < heard * self._clear:
                self._coupling.append(heard / loudest)
            if coupling is not None and heard < coupling * loudest * self._margin:
                echo_like[k] = True
        return echo_like


# ---------------------------------------------------------------- which mode the device runs in


@dataclasses.dataclass(frozen=True)
class EchoPath:
    """How the device deals with hearing itself: `mode` is what runs ('none', 'headset', 'aec'),
    `configured` what audio.echo asked for, `reason` one line for the log and `companion doctor`."""

    configured: str
    mode: str
    reason: str

    @property
    def fell_back(self) -> bool:
        """aec was asked for but cannot run: the microphone is closed while speaking instead."""
        return self.mode != self.configured


CLOSED_MIC = "the microphone is closed while the device speaks: interrupt the reply with the button"


def engine_problem() -> str | None:
    """Why the canceller's library cannot load, or None when it can."""
    try:
        importlib.import_module(ENGINE_MODULE)
    except Exception as exc:  # ImportError, or a wheel that does not load on this machine
        return f"{ENGINE_MODULE} does not load ({exc}): pip install pywebrtc-audio"
    return None


def echo_path(settings: Settings) -> EchoPath:
    """The echo mode for these settings, and why."""
    audio = settings.audio
    if audio.echo == "headset":
        return EchoPath("headset", "headset", "headset: no echo path, talking over the reply interrupts it")
    if audio.echo == "none":
        return EchoPath("none", "none", f"speaker build without echo cancellation: {CLOSED_MIC}")
    devices = [
        what
        for what, spec in (("audio.input", audio.input), ("audio.output", audio.output))
        if spec == "bridge" or spec.lower().endswith(".wav")
    ]
    if devices:
        why = f"{' and '.join(devices)} not a sound device, so there is no echo to cancel in-process"
        reason = f"aec needs a sound-device microphone and speaker ({why}); {CLOSED_MIC}"
        return EchoPath("aec", "none", reason)
    problem = engine_problem()
    if problem is not None:
        return EchoPath("aec", "none", f"aec is off: {problem}; {CLOSED_MIC}")
    return EchoPath(
        "aec",
        "aec",
        "aec: WebRTC AEC3 in-process, with the speaker's output as reference; "
        "talking over the reply interrupts it",
    )


def attach_canceller(path: EchoPath, sink: Any) -> EchoCanceller | None:
    """The canceller for `path` (None unless aec runs), fed by the speaker `sink`'s output callback."""
    if path.mode != "aec" or not hasattr(sink, "echo_tap"):
        return None
    far = FarEnd(sink.out_rate)
    sink.echo_tap = far.played
    return EchoCanceller(far)
