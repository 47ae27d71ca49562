"""Streaming sample-rate and channel conversion to and from s16 mono, on soxr."""

from __future__ import annotations

import numpy as np
import soxr


class MonoResampler:
    """Converts blocks of int16 audio (any channel count) from one rate to mono at another rate.

    Keeps soxr's filter state across blocks, so a stream cut into blocks sounds the same as one piece.
    Passes audio through untouched when the rates match.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, "int16", quality)
        )

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Mono int16 samples at out_rate for a block of shape (n,) or (n, channels)."""
        if block.ndim == 2:
            block = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1).astype(np.int16)
        if self._stream is None:
            return block
        out: np.ndarray = self._stream.resample_chunk(block, last=last)
        return out

    def process_bytes(self, pcm: bytes, last: bool = False) -> bytes:
        """The same for s16le mono bytes."""
        if self._stream is None:
            return pcm
        return self.process(np.frombuffer(pcm, dtype=np.int16), last=last).tobytes()

    def clear(self) -> None:
        """Drop the filter state (after a flush, so old audio does not leak into new)."""
        if self._stream is not None:
            self._stream.clear()
