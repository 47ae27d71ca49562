"""Bundled spoken prompts and earcons, as 16 kHz mono s16le PCM ready for the speaker path.

Spoken prompts exist in English and Chinese (`audio.prompts_language`); earcons are short tones that
need no language. The files are made by scripts/make_prompts.py and live in companion/assets/prompts/.
Clips are read on first use and cached (the whole set of one language is about 300 kB).
"""

from __future__ import annotations

import functools
import io
import wave
from importlib import resources

RATE = 16000
LANGUAGES = ("en", "zh")
EVENTS = ("listening", "thinking", "offline", "reconnected", "error")
SPOKEN = (*EVENTS, "activation_code", *(f"digit_{d}" for d in range(10)))
EARCONS = EVENTS
CODE_SEPARATORS = frozenset(" -_.")


class PromptError(ValueError):
    """An unknown prompt, language or an activation code that cannot be spoken."""


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise PromptError(f"no prompts in {language!r} (available: {', '.join(LANGUAGES)})")


@functools.lru_cache(maxsize=64)
def _load(folder: str, key: str) -> bytes:
    resource = resources.files("companion") / "assets" / "prompts" / folder / f"{key}.wav"
    try:
        data = resource.read_bytes()
    except FileNotFoundError:
        raise PromptError(f"prompt file {folder}/{key}.wav is missing from the package") from None
    with wave.open(io.BytesIO(data), "rb") as handle:
        if (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) != (RATE, 1, 2):
            raise PromptError(f"prompt {folder}/{key}.wav is not 16 kHz mono 16-bit")
        return handle.readframes(handle.getnframes())


def spoken(key: str, language: str = "en") -> bytes:
    """The spoken prompt `key` (one of SPOKEN) in `language`, as 16 kHz mono s16le."""
    _check_language(language)
    if key not in SPOKEN:
        raise PromptError(f"unknown prompt {key!r} (known: {', '.join(SPOKEN)})")
    return _load(language, key)


def earcon(key: str) -> bytes:
    """The earcon `key` (one of EARCONS), as 16 kHz mono s16le."""
    if key not in EARCONS:
        raise PromptError(f"unknown earcon {key!r} (known: {', '.join(EARCONS)})")
    return _load("earcon", key)


def load_prompt(key: str, language: str = "en") -> bytes:
    """A clip by key: "earcon.<event>" for a tone, else a spoken prompt in `language`."""
    if key.startswith("earcon."):
        return earcon(key.removeprefix("earcon."))
    return spoken(key, language)


def digits_sequence(code: str, language: str = "en", *, lead_in: bool = True) -> list[bytes]:
    """The clips that speak an activation code: the lead-in, then one clip per digit.

    Spaces, dashes, dots and underscores are allowed as separators and are skipped (each digit clip
    already ends with a short pause). Anything else raises PromptError.
    """
    _check_language(language)
    digits = [c for c in code if c not in CODE_SEPARATORS]
    if not digits or not all(c in "0123456789" for c in digits):
        raise PromptError(f"activation code {code!r}: expected digits")
    clips = [spoken("activation_code", language)] if lead_in else []
    clips += [spoken(f"digit_{c}", language) for c in digits]
    return clips


def duration_s(pcm: bytes) -> float:
    """How long a clip plays."""
    return len(pcm) / (2 * RATE)
