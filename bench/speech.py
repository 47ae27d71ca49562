"""Test speech for the benchmarks: the bundled sentence repeated with pauses to a given length."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from companion.audio.capture import read_wav_16k_mono

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"


def speech_16k(seconds: float) -> np.ndarray:
    """`seconds` of speech-and-pause at 16 kHz (int16)."""
    voice = np.frombuffer(read_wav_16k_mono(ASSET), dtype=np.int16)
    pause = np.zeros(8000, dtype=np.int16)
    unit = np.concatenate([voice, pause])
    reps = int(np.ceil(seconds * 16000 / len(unit)))
    return np.tile(unit, reps)[: int(seconds * 16000)]
