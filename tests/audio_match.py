"""Finding a reference sound inside a recording by normalized cross-correlation."""

from __future__ import annotations

import numpy as np


def to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    arr = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray) else pcm
    return arr.astype(np.float64)


def best_match(reference: bytes | np.ndarray, recording: bytes | np.ndarray) -> tuple[int, float]:
    """(offset of `reference` in `recording` in samples, correlation coefficient at that offset)."""
    ref = to_float(reference)
    rec = to_float(recording)
    # trailing zeros let a reference whose quiet tail was cut off still be found at the very end
    rec = np.concatenate([rec, np.zeros(len(ref))])
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(rec) - len(ref) + 1]
    # normalise by the energy of each window of the recording
    sq = np.concatenate([[0.0], np.cumsum(rec**2)])
    window_energy = sq[len(ref) :] - sq[: len(sq) - len(ref)]
    ref_energy = np.sum(ref**2)
    # a floor on the window energy: near-silent stretches must not score by dividing by almost nothing
    denom = np.sqrt(np.maximum(window_energy, 0.01 * ref_energy) * ref_energy) + 1e-9
    score = corr / denom
    lag = int(np.argmax(score))
    return lag, float(score[lag])


def envelope_match(
    reference: bytes | np.ndarray, recording: bytes | np.ndarray, rate: int
) -> tuple[int, float]:
    """Like best_match on 10 ms RMS envelopes: robust to codec phase changes (Opus round trips)."""
    hop = rate // 100

    def env(x: np.ndarray) -> np.ndarray:
        frames = x[: len(x) // hop * hop].reshape(-1, hop)
        e = np.sqrt((frames**2).mean(axis=1))
        return e - e.mean()

    lag, score = best_match(env(to_float(reference)), env(to_float(recording)))
    return lag * hop, score
