"""The user's side of a turn: the endpointer's verdicts on the microphone, and the audio that goes up
while an utterance streams. The conversation decides when streaming starts and stops; this object does
the sending and remembers when the user last made a sound."""

from __future__ import annotations

from collections.abc import Iterator

from ..audio.endpointer import AudioFrame, Endpointer, SpeechBegan, SpeechFinished
from .clock import Clock
from .uplink_streamer import UplinkStreamer


class Utterance:
    """Streams microphone audio to the uplink between `begin`/`start_now` and `stop`."""

    def __init__(self, endpointer: Endpointer, uplink: UplinkStreamer, clock: Clock) -> None:
        self.endpointer = endpointer
        self.uplink = uplink
        self.clock = clock
        self.streaming = False
        self.sent = 0  # bytes queued for the uplink since `begin`/`start_now`
        self.last_voice = 0.0  # the clock's time of the block with the last voiced frame

    def hear(self, block: bytes) -> Iterator[SpeechBegan | SpeechFinished]:
        """Feed a captured block: the frames of a streaming utterance go up, and each onset and end is
        yielded, in order, so that the caller can start or stop streaming before the next frame."""
        for event in self.endpointer.feed(block):
            if isinstance(event, AudioFrame):
                if self.streaming:
                    self.send(event.audio)
            else:
                yield event
        if self.endpointer.voice_active:
            self.last_voice = self.clock.now()

    def begin(self, onset: SpeechBegan) -> None:
        """Stream from a detected onset: its pre-roll, or only its new frames if already streaming."""
        if not self.streaming:
            self.streaming, self.sent = True, 0
            self.send(onset.audio)
        else:
            self.send(onset.fresh)

    def start_now(self) -> None:
        """Stream from this moment, whatever the endpointer heard before (a button, a wake word)."""
        self.endpointer.reset()
        self.streaming, self.sent = True, 0

    def send(self, pcm: bytes) -> None:
        """Encode and queue `pcm` for the uplink."""
        self.sent += self.uplink.feed(pcm)

    def stop(self) -> int:
        """Send the last partial frame and stop streaming; the bytes sent for this utterance (0 when none
        was streaming, so that a stop with nothing going up credits no turn with the last one's bytes)."""
        if not self.streaming:
            return self.uplink.finish()
        self.sent += self.uplink.finish()
        self.streaming = False
        return self.sent
