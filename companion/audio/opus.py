"""Opus encode/decode over libopus (opuslib-next), with the errors a user can act on.

The decoder decodes at the rate *we* choose: an Opus stream can be decoded at 8/12/16/24/48 kHz whatever
rate it was encoded at, so the rate a server claims in its hello is only a hint.
"""

from __future__ import annotations

from typing import Any

from ..errors import AudioDeviceError

_opus: Any = None
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_PACKET_MS = 120


def _lib() -> Any:
    """Import opuslib lazily so that commands which never touch audio work without libopus."""
    global _opus
    if _opus is None:
        try:
            import opuslib_next
        except Exception as exc:  # the binding raises a bare Exception when libopus0 is missing
            raise AudioDeviceError(
                f"libopus is not available ({exc}); install it with: sudo apt-get install libopus0"
            ) from None
        _opus = opuslib_next
    return _opus


class OpusError(Exception):
    """A packet could not be decoded (corrupt or not Opus)."""


class OpusEncoder:
    """Encodes fixed-length frames of s16le mono PCM into Opus packets (one packet per frame)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: int = 60,
        bitrate: int = 24000,
        complexity: int = 0,
        dtx: bool = True,
    ) -> None:
        lib = _lib()
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_bytes = self.frame_samples * 2
        self._encoder = lib.Encoder(sample_rate, 1, lib.APPLICATION_AUDIO)
        # The getter's default is misleading: always set the bitrate explicitly.
        self._encoder.bitrate = bitrate
        self._encoder.complexity = complexity
        self._encoder.dtx = 1 if dtx else 0

    def encode(self, pcm: bytes) -> bytes:
        """One Opus packet for exactly one frame of PCM."""
        if len(pcm) != self.frame_bytes:
            raise ValueError(f"Opus frame must be {self.frame_bytes} bytes, got {len(pcm)}")
        packet: bytes = self._encoder.encode(pcm, self.frame_samples)
        return packet


class OpusDecoder:
    """Decodes Opus packets to s16le mono PCM at `output_rate`."""

    def __init__(self, output_rate: int = 24000) -> None:
        if output_rate not in OPUS_RATES:
            raise ValueError(f"Opus can decode at {OPUS_RATES}, not {output_rate}")
        lib = _lib()
        self._lib = lib
        self.output_rate = output_rate
        self._max_samples = output_rate * MAX_PACKET_MS // 1000
        self._decoder = lib.Decoder(output_rate, 1)

    def decode(self, packet: bytes) -> bytes:
        """PCM for one packet; raises OpusError for a packet libopus rejects."""
        try:
            pcm: bytes = self._decoder.decode(packet, self._max_samples)
        except self._lib.OpusError as exc:
            raise OpusError(str(exc)) from None
        return pcm

    def reset(self) -> None:
        """Forget the previous stream (on every `tts start`)."""
        self._decoder.reset_state()
