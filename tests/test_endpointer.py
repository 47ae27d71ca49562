"""The endpointer on real speech (espeak-ng) with known silences."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from companion.audio.capture import read_wav_16k_mono
from companion.audio.endpointer import Endpointer, Quiet, SpeechBegan, SpeechContinued, SpeechFinished
from companion.config import VadSettings
from tests.conftest import make_speech

RATE = 16000


def silence(ms: int) -> bytes:
    return bytes(RATE * 2 * ms // 1000)


def feed_in_blocks(endpointer: Endpointer, audio: bytes, block_ms: int = 20) -> list[tuple[float, object]]:
    """(seconds into the audio, event) for every event, feeding like a sound card would."""
    step = RATE * 2 * block_ms // 1000
    out: list[tuple[float, object]] = []
    for pos in range(0, len(audio), step):
        for event in endpointer.feed(audio[pos : pos + step]):
            out.append(((pos + step) / (RATE * 2), event))
    return out


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory: pytest.TempPathFactory, espeak: str) -> tuple[bytes, float, float]:
    """1 s silence, sentence A, 2 s silence, sentence B, 2 s silence; with where A and B start."""
    tmp = tmp_path_factory.mktemp("speech")
    a = read_wav_16k_mono(make_speech(espeak, "turn on the kitchen light", tmp / "a.wav"))
    b = read_wav_16k_mono(make_speech(espeak, "what time is it", tmp / "b.wav"))
    audio = silence(1000) + a + silence(2000) + b + silence(2000)
    a_start = 1.0
    b_start = 1.0 + len(a) / (RATE * 2) + 2.0
    return audio, a_start, b_start


def test_two_utterances_separated_by_silence_give_two_turns(
    two_utterances: tuple[bytes, float, float],
) -> None:
    audio, a_start, b_start = two_utterances
    events = feed_in_blocks(Endpointer(VadSettings()), audio)
    began = [t for t, e in events if isinstance(e, SpeechBegan)]
    finished = [(t, e.reason) for t, e in events if isinstance(e, SpeechFinished)]
    assert len(began) == 2 and len(finished) == 2
    assert a_start < began[0] < a_start + 0.4
    assert b_start < began[1] < b_start + 0.4
    assert all(reason == "silence" for _, reason in finished)
    assert began[0] < finished[0][0] < began[1] < finished[1][0]


def test_hangover_decides_when_speech_ends(two_utterances: tuple[bytes, float, float]) -> None:
    audio, _, _ = two_utterances
    short = feed_in_blocks(Endpointer(VadSettings(hangover_ms=300)), audio)
    long = feed_in_blocks(Endpointer(VadSettings(hangover_ms=1200)), audio)
    end_short = next(t for t, e in short if isinstance(e, SpeechFinished))
    end_long = next(t for t, e in long if isinstance(e, SpeechFinished))
    assert 0.8 <= end_long - end_short <= 1.0


def test_preroll_keeps_the_first_syllable(two_utterances: tuple[bytes, float, float]) -> None:
    audio, a_start, _ = two_utterances
    events = feed_in_blocks(Endpointer(VadSettings(preroll_ms=300)), audio)
    t, began = next((t, e) for t, e in events if isinstance(e, SpeechBegan))
    assert isinstance(began, SpeechBegan)
    preroll_s = len(began.audio) / (RATE * 2)
    # the pre-roll reaches back before the trigger point, to before the speech itself began
    assert t - preroll_s <= a_start + 0.03


def test_every_frame_comes_out_exactly_once_with_emit_quiet(
    two_utterances: tuple[bytes, float, float],
) -> None:
    audio, _, _ = two_utterances
    ep = Endpointer(VadSettings(), emit_quiet=True)
    out = b"".join(
        e.fresh if isinstance(e, SpeechBegan) else e.audio
        for _, e in feed_in_blocks(ep, audio)
        if isinstance(e, SpeechBegan | SpeechContinued | Quiet)
    )
    frame = ep.frame_bytes
    assert out == audio[: len(audio) // frame * frame]


def test_max_utterance_length_cuts_endless_speech(speech_wav: Path) -> None:
    voice = read_wav_16k_mono(speech_wav)
    ep = Endpointer(VadSettings(max_utterance_s=1.0, hangover_ms=2000))
    events = feed_in_blocks(ep, voice * 3)
    reasons = [e.reason for _, e in events if isinstance(e, SpeechFinished)]
    assert reasons and reasons[0] == "max_length"


def test_silence_never_triggers() -> None:
    assert feed_in_blocks(Endpointer(VadSettings()), silence(5000)) == []


def test_start_trigger_needs_n_of_m_voiced_frames(two_utterances: tuple[bytes, float, float]) -> None:
    audio, _, _ = two_utterances
    eager = dataclasses.replace(VadSettings(), start_voiced=1, start_window=1)
    strict = dataclasses.replace(VadSettings(), start_voiced=10, start_window=10)
    t_eager = next(t for t, e in feed_in_blocks(Endpointer(eager), audio) if isinstance(e, SpeechBegan))
    t_strict = next(t for t, e in feed_in_blocks(Endpointer(strict), audio) if isinstance(e, SpeechBegan))
    assert t_strict - t_eager >= 0.2
