"""Speech for the wake-word tests and benchmarks, made at run time with espeak-ng (nothing large is kept
in the repository): wake phrases in several voices and speeds, other speech, and noise mixed at a given SNR.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
import wave
from collections.abc import Iterator

import numpy as np
import soxr

RATE = 16000
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en+f3", "en-us+m3", "en-029", "en-gb-scotland", "en-us-nyc")
SPEEDS = (140, 175, 210)  # words per minute: slow, espeak's default, fast

# Varied sentences of other speech: what a room hears besides the wake word (none of the wake phrases).
SENTENCES = (
    "The weather today is cloudy with a chance of rain in the afternoon.",
    "Please remember to buy milk, bread and a dozen eggs on the way home.",
    "My favourite book was written by a lighthouse keeper on a small island.",
    "Turn left at the second traffic light and park behind the old library.",
    "The children built a castle of sand and watched the tide wash it away.",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "We should leave at seven o'clock if we want to catch the early train.",
    "Her grandmother grew tomatoes, beans and sunflowers in the garden.",
    "The meeting moved to Thursday because the projector was broken.",
    "Mix the flour with butter, add a pinch of salt, and bake for twenty minutes.",
    "Electric cars are getting cheaper, but charging stations are still rare.",
    "Alexander the Great led his army across the mountains in winter.",
    "Could you lexically analyse this sentence and then tell me what you see.",
    "The nabob of the county owned a yacht and a jar of marmalade.",
    "Jarvis Street is closed for repairs until the end of next month.",
    "Say hey to Micro and Croft when you see them at the concert.",
    "Okay, now pass me the salt and the pepper, and a napkin please.",
    "Numbers like forty two, seventeen and ninety nine are easy to remember.",
    "The museum opens at ten and the guided tour starts at half past eleven.",
    "Honey bees dance to tell each other where the best flowers are.",
)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz mono int16."""
    raw = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return np.asarray(soxr.resample(data.astype(np.float32), rate, RATE), dtype=np.float32).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def noise(seconds: float, seed: int, kind: str = "pink") -> np.ndarray:
    """Steady noise (white or pink, from numpy), at about -30 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    white = rng.standard_normal(n)
    if kind == "pink":  # 1/f: shape the spectrum
        spectrum = np.fft.rfft(white)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        white = np.fft.irfft(spectrum, n)
    white *= 1000 / (np.sqrt(np.mean(white**2)) + 1e-9)
    return np.clip(white, -32768, 32767).astype(np.int16)


def mix_at_snr(speech: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` with `background` under it, scaled so speech power / noise power is `snr_db`."""
    s = speech.astype(np.float64)
    voiced = s[np.abs(s) > 0.05 * np.abs(s).max()] if s.any() else s
    p_speech = np.mean(voiced**2)
    b = np.resize(background.astype(np.float64), len(s))
    p_noise = np.mean(b**2) + 1e-9
    b *= np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return np.clip(s + b, -32768, 32767).astype(np.int16)


def padded(pcm: np.ndarray, lead: float = 0.5, tail: float = 0.8) -> np.ndarray:
    return np.concatenate([silence(lead), pcm, silence(tail)])


def wake_set(phrase: str, voices: tuple[str, ...] = VOICES, speeds: tuple[int, ...] = SPEEDS,
             snr_db: float | None = None) -> Iterator[tuple[str, np.ndarray]]:  # fmt: skip
    """(label, clip) for `phrase` in every voice and speed, each clip with silence around it."""
    for i, (voice, speed) in enumerate(itertools.product(voices, speeds)):
        clip = padded(speak(phrase, voice, speed))
        if snr_db is not None:
            clip = mix_at_snr(clip, noise(len(clip) / RATE, seed=i, kind=("pink", "white")[i % 2]), snr_db)
        yield f"{voice}@{speed}{'' if snr_db is None else f'+{snr_db:g}dB'}", clip


def other_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """At least `seconds` of non-wake speech: the sentences in turn, in every voice and speed, with pauses."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * RATE:
        sentence = SENTENCES[rng.integers(len(SENTENCES))]
        voice, speed = VOICES[rng.integers(len(VOICES))], int(rng.choice(SPEEDS))
        clip = speak(sentence, voice, speed)
        pause = silence(float(rng.uniform(0.2, 1.5)))
        parts += [clip, pause]
        total += len(clip) + len(pause)
    return np.concatenate(parts)
