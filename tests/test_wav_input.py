"""A .wav file as the microphone: once (a recording of someone talking), or again and again
(`audio.input_loop`, for soak runs)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from companion.config import load_settings
from companion.daemon.runtime import build_source


def one_word(path: Path) -> Path:
    """180 ms of loud noise: a word, as far as block levels go."""
    noise = np.random.default_rng(1).integers(-12000, 12000, 16000 * 180 // 1000, dtype=np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(noise.tobytes())
    return path


async def words_heard(path: Path, loop: bool, blocks: int) -> int:
    settings = load_settings(None, [f'audio.input="{path}"', f"audio.input_loop={str(loop).lower()}"])
    source = build_source(settings)
    loud: list[bool] = []
    async for block in source.blocks():
        loud.append(int(np.abs(np.frombuffer(block, dtype="<i2")).max()) > 1000)
        if len(loud) == blocks:
            break
    await source.close()
    return sum(now and not before for before, now in zip([False, *loud], loud, strict=False))


@pytest.mark.parametrize(("loop", "words"), [(False, 1), (True, 3)])
async def test_a_wav_input_says_its_words_once_or_again_and_again(
    tmp_path: Path, loop: bool, words: int
) -> None:
    # each pass is 300 ms of lead silence, the 180 ms word and one block of silence: 9 blocks of 60 ms
    assert await words_heard(one_word(tmp_path / "word.wav"), loop, blocks=27) == words
