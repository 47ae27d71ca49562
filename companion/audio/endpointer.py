"""The endpointer: finds where speech starts and ends in 16 kHz mono s16 audio, on webrtcvad.

Time is measured in samples fed, not wall-clock, so the same audio always gives the same decisions
(and a test can feed a file faster than real time).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import webrtcvad

from ..config import VadSettings

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeechBegan:
    """Speech started; `audio` is the pre-roll plus the frames that triggered the start.

    `fresh` is the part of `audio` not already emitted as Quiet frames (all of it without emit_quiet).
    """

    audio: bytes
    fresh: bytes = b""


@dataclass(frozen=True)
class AudioFrame:
    """One frame fed, passed on as it came: a SpeechContinued inside speech, a Quiet outside it."""

    audio: bytes


class SpeechContinued(AudioFrame):
    """One more frame of an utterance in progress."""


class Quiet(AudioFrame):
    """A frame outside speech (only emitted when the endpointer is built with emit_quiet=True)."""


@dataclass(frozen=True)
class SpeechFinished:
    """The utterance ended: `reason` is "silence" (hangover elapsed) or "max_length"."""

    reason: str


EndpointEvent = SpeechBegan | SpeechContinued | Quiet | SpeechFinished


class Endpointer:
    """Start trigger (N voiced of the last M frames), hangover, pre-roll and a maximum length.

    With emit_quiet, every frame fed comes out exactly once as a Quiet, a SpeechContinued, or the
    `fresh` part of a SpeechBegan; so a caller already streaming everything never sends a frame twice,
    and one that starts streaming at SpeechBegan sends the whole pre-roll.
    """

    def __init__(
        self, settings: VadSettings, sample_rate: int = SAMPLE_RATE, emit_quiet: bool = False
    ) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8/16/32/48 kHz, not {sample_rate}")
        self.settings = settings
        self._vad = webrtcvad.Vad(settings.aggressiveness)
        self._rate = sample_rate
        self._frame_bytes = sample_rate * settings.frame_ms // 1000 * 2
        self._silent = bytes(self._frame_bytes)
        frame_ms = settings.frame_ms
        self._window: collections.deque[bool] = collections.deque(maxlen=settings.start_window)
        keep = max(settings.preroll_ms // frame_ms, settings.start_window)
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=max(keep, 1))
        self._hangover_frames = max(1, settings.hangover_ms // frame_ms)
        self._max_frames = int(settings.max_utterance_s * 1000 // frame_ms)
        self._pending = b""
        self._emit_quiet = emit_quiet
        self.in_speech = False
        self.voice_active = False
        self._silent_run = 0
        self._speech_frames = 0

    @property
    def frame_bytes(self) -> int:
        """Bytes per VAD frame."""
        return self._frame_bytes

    def reset(self) -> None:
        """Forget everything (e.g. when the microphone is closed while the agent speaks)."""
        self._pending = b""
        self._window.clear()
        self._preroll.clear()
        self.in_speech = False
        self.voice_active = False
        self._silent_run = 0
        self._speech_frames = 0

    def feed(self, pcm: bytes) -> list[EndpointEvent]:
        """Events for this much more audio (any length)."""
        data = self._pending + pcm if self._pending else pcm
        step = self._frame_bytes
        usable = len(data) - len(data) % step
        events: list[EndpointEvent] = []
        for offset in range(0, usable, step):
            self._frame(data[offset : offset + step], events)
        self._pending = data[usable:]
        return events

    def _frame(self, frame: bytes, events: list[EndpointEvent]) -> None:
        # An all-zero frame is silence (the echo canceller zeroes what is left of the reply's echo), though
        # webrtcvad's own hangover calls the two frames after a voiced one voiced: two leaked frames made 4.
        voiced = self._vad.is_speech(frame, self._rate) and frame != self._silent
        self.voice_active = voiced
        if not self.in_speech:
            self._window.append(voiced)
            self._preroll.append(frame)
            if sum(self._window) >= self.settings.start_voiced:
                self.in_speech = True
                self._silent_run = 0
                self._speech_frames = len(self._preroll)
                fresh = frame if self._emit_quiet else b"".join(self._preroll)
                events.append(SpeechBegan(b"".join(self._preroll), fresh))
                self._preroll.clear()
                self._window.clear()
            elif self._emit_quiet:
                events.append(Quiet(frame))
            return
        self._speech_frames += 1
        events.append(SpeechContinued(frame))
        self._silent_run = 0 if voiced else self._silent_run + 1
        if self._silent_run >= self._hangover_frames:
            self._finish("silence", events)
        elif self._speech_frames >= self._max_frames:
            self._finish("max_length", events)

    def _finish(self, reason: str, events: list[EndpointEvent]) -> None:
        self.in_speech = False
        self._silent_run = 0
        self._speech_frames = 0
        events.append(SpeechFinished(reason))
