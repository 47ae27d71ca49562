"""Bundled prompts and earcons: every clip exists in both languages as 16 kHz mono s16, is audible and
short, the set stays small, and an activation code becomes the right sequence of clips."""

from __future__ import annotations

import wave
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.config import AudioSettings
from companion.daemon.prompts import (
    EARCONS,
    LANGUAGES,
    RATE,
    SPOKEN,
    PromptError,
    digits_sequence,
    duration_s,
    earcon,
    load_prompt,
    spoken,
)

PROMPTS = Path(str(resources.files("companion") / "assets" / "prompts"))


def level_dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return 20 * np.log10(np.sqrt(np.mean(samples**2)) + 1e-12)


def test_languages_match_the_config_choices() -> None:
    field = AudioSettings.__dataclass_fields__["prompts_language"]
    assert set(field.metadata["choices"]) == set(LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("key", SPOKEN)
def test_every_spoken_prompt_is_audible_and_short(language: str, key: str) -> None:
    pcm = spoken(key, language)
    assert len(pcm) % 2 == 0
    assert 0.2 < duration_s(pcm) < 2.5
    assert level_dbfs(pcm) > -30
    assert max(abs(int(v)) for v in np.frombuffer(pcm, dtype="<i2")) < 32767  # not clipped


@pytest.mark.parametrize("key", EARCONS)
def test_every_earcon_is_a_short_tone_that_starts_and_ends_quietly(key: str) -> None:
    samples = np.frombuffer(earcon(key), dtype="<i2").astype(np.int32)
    assert 0.1 < len(samples) / RATE < 0.5
    assert level_dbfs(earcon(key)) > -30
    assert abs(samples[0]) < 500 and abs(samples[-1]) < 500  # faded: no click


def test_files_are_16k_mono_s16_and_the_set_stays_small() -> None:
    files = sorted(PROMPTS.rglob("*.wav"))
    assert len(files) == len(SPOKEN) * len(LANGUAGES) + len(EARCONS)
    for path in files:
        with wave.open(str(path)) as handle:
            assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (RATE, 1, 2), path
    assert sum(p.stat().st_size for p in files) < 800_000


def test_languages_really_differ() -> None:
    assert spoken("offline", "en") != spoken("offline", "zh")
    assert spoken("digit_7", "en") != spoken("digit_7", "zh")


def test_an_activation_code_is_spoken_after_its_lead_in() -> None:
    clips = digits_sequence("804 152", "zh")
    assert clips[0] == spoken("activation_code", "zh")
    assert clips[1:] == [spoken(f"digit_{d}", "zh") for d in "804152"]
    assert digits_sequence("12", lead_in=False) == [spoken("digit_1"), spoken("digit_2")]


@given(
    st.text(alphabet="0123456789 -", min_size=1, max_size=12).filter(lambda s: any(c.isdigit() for c in s))
)
def test_any_digit_code_maps_one_clip_per_digit(code: str) -> None:
    clips = digits_sequence(code, "en", lead_in=False)
    assert clips == [spoken(f"digit_{c}", "en") for c in code if c.isdigit()]


@pytest.mark.parametrize("code", ["", "  ", "12a4", "１２３"])
def test_codes_that_are_not_digits_are_refused(code: str) -> None:
    with pytest.raises(PromptError, match="expected digits"):
        digits_sequence(code)


def test_lookup_by_key_covers_earcons_and_refuses_unknowns() -> None:
    assert load_prompt("earcon.listening") == earcon("listening")
    assert load_prompt("error", "zh") == spoken("error", "zh")
    with pytest.raises(PromptError, match="unknown prompt"):
        load_prompt("goodbye")
    with pytest.raises(PromptError, match="no prompts in 'fr'"):
        spoken("error", "fr")
    with pytest.raises(PromptError, match="unknown earcon"):
        earcon("digit_1")
