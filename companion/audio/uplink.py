"""The uplink encoder: cuts 16 kHz mono PCM into the backend's frames and encodes them (Opus or PCM)."""

from __future__ import annotations

from ..config import AudioSettings
from ..events import UplinkFormat
from .opus import OpusEncoder
from .resample import MonoResampler


class UplinkEncoder:
    """Frames and encodes; built only when a turn streams, so an idle daemon never encodes."""

    def __init__(self, uplink: UplinkFormat, audio: AudioSettings, in_rate: int = 16000) -> None:
        self.format = uplink
        self._resampler = MonoResampler(in_rate, uplink.sample_rate)
        self._frame_bytes = uplink.sample_rate * uplink.frame_ms // 1000 * 2
        self._pending = b""
        self._opus = (
            OpusEncoder(
                uplink.sample_rate, uplink.frame_ms, audio.opus_bitrate, audio.opus_complexity, dtx=True
            )
            if uplink.codec == "opus"
            else None
        )

    def feed(self, pcm: bytes) -> list[bytes]:
        """Packets for every whole frame now available."""
        data = self._pending + self._resampler.process_bytes(pcm)
        step = self._frame_bytes
        usable = len(data) - len(data) % step
        self._pending = data[usable:]
        frames = [data[i : i + step] for i in range(0, usable, step)]
        if self._opus is None:
            return frames
        return [self._opus.encode(f) for f in frames]

    def finish(self) -> list[bytes]:
        """The last partial frame, padded with silence, so the end of speech is not cut."""
        if not self._pending:
            return []
        frame = self._pending.ljust(self._frame_bytes, b"\0")
        self._pending = b""
        return [frame if self._opus is None else self._opus.encode(frame)]
