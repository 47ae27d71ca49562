#!/usr/bin/env python3
"""Generate the bundled prompts and earcons in companion/assets/prompts/ (run once; the WAVs are committed).

Speech comes from espeak-ng (voices en-us and cmn-latn-pinyin), trimmed and levelled with sox; earcons
are short tones made with numpy. Every file is 16 kHz mono signed 16-bit PCM,
as companion.daemon.prompts expects.

    python scripts/make_prompts.py            # needs espeak-ng, sox and numpy
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16000
OUT = Path(__file__).resolve().parent.parent / "companion" / "assets" / "prompts"

# Chinese is given as pinyin to the cmn-latn-pinyin voice: Debian's espeak-ng (1.51) turns hanzi into
# pinyin and then reads the tone digits as English words ("ling two"), so hanzi cannot be fed directly.
VOICES = {"en": "en-us", "zh": "cmn-latn-pinyin"}
PHRASES = {
    "en": {
        "listening": "Listening.",
        "thinking": "Thinking.",
        "offline": "I'm offline.",
        "reconnected": "Back online.",
        "error": "Something went wrong.",
        "activation_code": "Activation code:",
        **{
            f"digit_{d}": w
            for d, w in enumerate(
                ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
            )
        },
    },
    "zh": {
        "listening": "wo3 zai4 ting1",  # 我在听
        "thinking": "wo3 xiang3 xiang",  # 我想想
        "offline": "wang3 luo4 duan4 kai1 le",  # 网络断开了
        "reconnected": "wang3 luo4 yi3 hui1 fu4",  # 网络已恢复
        "error": "chu1 cuo4 le",  # 出错了
        "activation_code": "ji1 huo2 ma3",  # 激活码
        **{
            f"digit_{d}": w  # 零一二三四五六七八九
            for d, w in enumerate(("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3"))
        },
    },
}
SPEED_WPM = {"en": 180, "zh": 180}  # zh: syllables per minute
DIGIT_SPEED_WPM = {"en": 200, "zh": 150}  # en digits alone are drawn out; zh ones are one syllable
TRAIL_S = {"digit": 0.1, "activation_code": 0.25}


def tone(freqs: list[tuple[float, float]], level_db: float = -9.0, harmonics: float = 0.0) -> np.ndarray:
    """Notes of (frequency Hz, seconds), each with a raised-cosine attack and decay."""
    pieces = []
    for freq, seconds in freqs:
        n = int(RATE * seconds)
        t = np.arange(n) / RATE
        wave_ = np.sin(2 * np.pi * freq * t)
        if harmonics:
            wave_ += harmonics * np.sin(2 * np.pi * 2 * freq * t)
        ramp = min(n // 4, int(RATE * 0.012))
        envelope = np.ones(n)
        envelope[:ramp] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        envelope[-ramp:] = envelope[:ramp][::-1]
        pieces.append(wave_ * envelope)
    signal = np.concatenate(pieces)
    signal /= np.max(np.abs(signal))
    return signal * 10 ** (level_db / 20)


EARCONS = {
    "listening": lambda: tone([(660, 0.07), (880, 0.09)]),
    "thinking": lambda: tone([(523.25, 0.06), (0.0001, 0.05), (523.25, 0.06)], level_db=-15),
    "offline": lambda: tone([(660, 0.09), (440, 0.14)]),
    "reconnected": lambda: tone([(523.25, 0.07), (659.25, 0.07), (783.99, 0.11)]),
    "error": lambda: tone([(330, 0.12), (0.0001, 0.05), (330, 0.12)], harmonics=0.5),
}


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(pcm.tobytes())


def speak(text: str, voice: str, wpm: int, out: Path, trail_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
        subprocess.run(
            [
                "sox",
                str(raw),
                "-r",
                str(RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(out),
                "silence",
                "1",
                "0.01",
                "0.5%",
                "reverse",
                "silence",
                "1",
                "0.01",
                "0.5%",
                "reverse",
                "gain",
                "-n",
                "-3",
                "pad",
                "0.02",
                str(trail_s),
            ],
            check=True,
        )


def main() -> int:
    (OUT / "earcon").mkdir(parents=True, exist_ok=True)
    for key, make in EARCONS.items():
        write_wav(OUT / "earcon" / f"{key}.wav", make())
    for language, phrases in PHRASES.items():
        folder = OUT / language
        folder.mkdir(parents=True, exist_ok=True)
        for key, text in phrases.items():
            trail = TRAIL_S["digit"] if key.startswith("digit_") else TRAIL_S.get(key, 0.05)
            wpm = (DIGIT_SPEED_WPM if key.startswith("digit_") else SPEED_WPM)[language]
            speak(text, VOICES[language], wpm, folder / f"{key}.wav", trail)
    total = sum(p.stat().st_size for p in OUT.rglob("*.wav"))
    print(f"wrote {len(list(OUT.rglob('*.wav')))} files, {total / 1024:.0f} KiB in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
