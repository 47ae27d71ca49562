"""A speaker build that hears itself: with audio.echo = "aec" its own reply neither starts a turn nor
interrupts itself, while the user's voice over the reply does; without a canceller the microphone is
closed while it speaks. The rig (tests/echo_rig.py) feeds the speaker back into the microphone."""

from __future__ import annotations

import asyncio
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from companion.audio.echo import EchoCanceller, FarEnd
from companion.audio.endpointer import Endpointer, SpeechBegan
from companion.audio.stream_clock import StreamClock
from companion.config import VadSettings
from tests.conftest import make_speech
from tests.echo_rig import speaker_build
from tests.peers.pulse import PulseServer

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"


def speech() -> np.ndarray:
    with wave.open(str(ASSET)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


# ---------------------------------------------------------------- timing and cancelling, no devices


def test_a_single_late_report_does_not_move_the_stream_clock() -> None:
    clock = StreamClock(16000)
    clock.mark(0, 100.0)
    assert clock.mark(320, 100.02 + 0.08) is None  # one callback reported 80 ms late (a busy machine)
    assert clock.mark(640, 100.04) is None  # the next is on time again
    assert clock.time_of(16000) == pytest.approx(101.0, abs=0.005)


def test_a_confirmed_jump_moves_the_stream_clock_from_its_first_report() -> None:
    clock = StreamClock(16000)
    clock.mark(0, 100.0)
    assert clock.mark(320, 103.0) is None  # the speaker was closed for 3 s and opened again
    assert clock.mark(640, 103.02) == (320, 103.0)
    assert clock.time_of(320 + 16000) == pytest.approx(104.0, abs=1e-6)


def test_the_far_end_is_read_back_at_the_time_it_was_played() -> None:
    far = FarEnd(24000)
    tone = (1000 * np.sin(np.arange(2400) / 7)).astype(np.int16)
    for i in range(0, 2400, 240):  # 10 ms callbacks from t = 50.0 s on
        far.played(tone[i : i + 240], 50.0 + i / 24000)
    got = far.take(50 * 16000 - 800, 3200)  # from 50 ms before it played to 50 ms after it ended
    assert not got[:800].any()
    assert np.abs(got[820:2200]).max() > 500
    assert not got[2450:].any()


def test_aec3_removes_a_delayed_echo_of_speech_by_more_than_20_db() -> None:
    played = np.tile(speech(), 2)
    echo = np.zeros(len(played))
    echo[1600:] = played[:-1600] * 0.5  # 100 ms later, 6 dB quieter
    far = FarEnd(16000)
    canceller = EchoCanceller(far, silence_residue=False)
    out = bytearray()
    for i in range(0, len(played) - 320, 320):
        far.played(played[i : i + 320], 10.0 + i / 16000)
        out.extend(canceller.process(echo[i : i + 320].astype(np.int16).tobytes(), 10.0 + i / 16000))
    cleaned = np.frombuffer(bytes(out), dtype=np.int16).astype(np.float64)
    raw = echo[: len(cleaned)]
    assert 10 * np.log10(np.sum(raw**2) / np.sum(cleaned**2)) >= 20


def test_frames_the_canceller_silenced_never_count_as_voice() -> None:
    """Two frames of a reply's echo leak through, then the canceller zeroes the rest: webrtcvad's own
    hangover calls the zeroed frames after them voiced (4 of 6: a start), the endpointer does not."""
    import webrtcvad

    frame = 480  # 30 ms
    pairs = speech()[: len(speech()) // (2 * frame) * 2 * frame].reshape(-1, 2 * frame).astype(np.float64)
    loud = speech()[int(np.argmax((pairs**2).sum(axis=1))) * 2 * frame :][: 2 * frame]  # the loudest 60 ms
    zeros = np.zeros(4 * frame, dtype=np.int16)
    leak = np.concatenate([np.zeros(6 * frame, dtype=np.int16), loud, zeros])
    vad = webrtcvad.Vad(VadSettings().aggressiveness)
    raw = [vad.is_speech(leak[i : i + frame].tobytes(), 16000) for i in range(0, len(leak), frame)]
    assert sum(raw[6:]) >= VadSettings().start_voiced  # the hangover alone would start speech
    endpointer = Endpointer(VadSettings(), emit_quiet=True)
    assert not any(isinstance(e, SpeechBegan) for e in endpointer.feed(leak.tobytes()))
    assert any(isinstance(e, SpeechBegan) for e in endpointer.feed(speech()[:32000].tobytes()))


def starts(pcm: np.ndarray, vad: VadSettings | None = None, block: int = 320) -> list[float]:
    """Seconds into `pcm` at the end of each block in which speech began (the AEC-mode endpointer
    unless `vad` is given)."""
    endpointer = Endpointer(vad or VadSettings().effective("aec"), emit_quiet=True)
    return [
        (i + block) / 16000
        for i in range(0, len(pcm), block)
        if any(isinstance(e, SpeechBegan) for e in endpointer.feed(pcm[i : i + block].tobytes()))
    ]


def began_at(vad: VadSettings, pcm: np.ndarray) -> float:
    """Seconds into `pcm` at the end of the 20 ms block in which speech first began."""
    began = starts(pcm, vad)
    assert began, "no speech start"
    return began[0]


def cancel_moved_echo(mic_extra: np.ndarray | None = None) -> tuple[EchoCanceller, np.ndarray]:
    """A reply heard 100 ms late and 6 dB down; halfway the path moves to 200 ms (the speaker turned,
    the buffer grew), and AEC3 lets the echo through nearly whole while it finds the new delay."""
    played = np.tile(speech(), 4).astype(np.float64)
    half = len(played) // 2
    mic = np.zeros(len(played))
    mic[1600:half] = played[: half - 1600] * 0.5
    mic[half:] = played[half - 3200 : -3200] * 0.5
    if mic_extra is not None:
        mic[: len(mic_extra)] += mic_extra
    mic = np.clip(mic, -32768, 32767).astype(np.int16)
    far = FarEnd(16000)
    canceller = EchoCanceller(far)
    out = bytearray()
    for i in range(0, len(played) - 320, 320):
        far.played(played[i : i + 320].astype(np.int16), 10.0 + i / 16000)
        out.extend(canceller.process(mic[i : i + 320].tobytes(), 10.0 + i / 16000))
    return canceller, np.frombuffer(bytes(out), dtype=np.int16)


def test_echo_the_canceller_lets_through_is_silenced_at_the_level_the_speaker_is_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canceller, cleaned = cancel_moved_echo()
    assert starts(cleaned) == []
    assert canceller.at_echo_level > 0
    monkeypatch.setattr("companion.audio.echo.ECHO_MARGIN_DB", float("-inf"))  # no level check
    _, leaked = cancel_moved_echo()
    assert starts(leaked)  # without it the moved echo starts a turn


def test_a_voice_louder_than_the_echo_passes_the_level_check(espeak: str, tmp_path: Path) -> None:
    with wave.open(str(make_speech(espeak, "Please stop now", tmp_path / "voice.wav"))) as wav:
        voice = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float64)
    echo_rms = np.sqrt(np.mean((speech().astype(np.float64) * 0.5) ** 2))
    voice *= 2 * echo_rms / np.sqrt(np.mean(voice[voice != 0] ** 2))  # 6 dB over the echo
    onset = len(speech()) * 2 + 16000  # 1 s after the path moved, while AEC3 still leaks
    extra = np.zeros(onset + len(voice))
    extra[onset:] = voice
    _, cleaned = cancel_moved_echo(extra)
    began = starts(cleaned)
    assert began and 0 < began[0] - onset / 16000 <= 0.2


def test_with_aec_speech_starts_on_5_voiced_of_7_frames_of_20_ms_unless_the_user_set_the_trigger() -> None:
    aec = VadSettings().effective("aec")
    assert (aec.frame_ms, aec.start_voiced, aec.start_window) == (20, 5, 7)
    assert VadSettings(start_voiced=3).effective("aec") == VadSettings(start_voiced=3)
    assert VadSettings(frame_ms=10).effective("aec") == VadSettings(frame_ms=10)
    onset = np.concatenate([np.zeros(8000, dtype=np.int16), speech()])
    assert began_at(VadSettings(), onset) - began_at(aec, onset) >= 0.02  # 100 of 140 ms, not 120 of 180


# ---------------------------------------------------------------- the daemon on a speaker build


@pytest.fixture
def voice(espeak: str, tmp_path: Path) -> Path:
    """The user interrupting, in another voice than the reply's."""
    return make_speech(espeak, "Please stop now", tmp_path / "voice.wav")


@pytest.mark.audio
@pytest.mark.slow
async def test_with_aec_the_reply_heard_by_the_microphone_starts_no_turn_and_no_barge_in(
    pulse: PulseServer, tmp_path: Path
) -> None:
    async with speaker_build(pulse, tmp_path / "state", "aec") as rig:
        assert "echo: aec: WebRTC AEC3" in rig.daemon.output()
        clean = [await rig.reply_heard_only_by_the_user(ASSET) for _ in range(3)]
    # Without the canceller every reply interrupts itself (the control test below). With it the bench
    # measured 0 of 20, yet on this shared machine a reply sometimes leaks (0-2 of 20 over runs):
    # the test allows one of three, the bench holds the target.
    assert clean.count(False) <= 1, rig.daemon.output()


@pytest.mark.audio
@pytest.mark.slow
async def test_with_aec_the_users_voice_over_the_reply_barges_in(
    pulse: PulseServer, voice: Path, tmp_path: Path
) -> None:
    async with speaker_build(pulse, tmp_path / "state", "aec") as rig:
        # A reply that stopped itself on its own echo before the voice came proves nothing here (the test
        # above allows one of three on this shared machine): then the voice goes over a second reply.
        tries = [await rig.barge_in(ASSET, voice)]
        if not tries[0].playing:
            tries.append(await rig.barge_in(ASSET, voice))
    assert tries[-1].playing, f"both replies stopped before the voice began: {tries}\n{rig.daemon.output()}"
    assert tries[-1].latency_s is not None, f"{tries}\n{rig.daemon.output()}"
    assert tries[-1].latency_s <= 1.0  # the 300 ms target is measured by bench/bench_aec.py


@pytest.mark.audio
@pytest.mark.slow
async def test_the_rig_echo_interrupts_a_reply_when_nothing_cancels_it(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """The control: voice barge-in with no canceller (headset mode on a speaker) stops on its own echo."""
    async with speaker_build(pulse, tmp_path / "state", "headset") as rig:
        barged = rig.lines_with("voice barge-in")
        await rig.say(ASSET)
        assert await rig.wait_lines("voice barge-in", barged, 5), rig.daemon.output()


@pytest.mark.audio
@pytest.mark.slow
async def test_without_aec_the_microphone_is_closed_while_the_device_speaks(
    pulse: PulseServer, voice: Path, tmp_path: Path
) -> None:
    async with speaker_build(pulse, tmp_path / "state", "none") as rig:
        assert "mic closed" in rig.daemon.output() or "microphone is closed" in rig.daemon.output()
        assert await rig.reply_heard_only_by_the_user(ASSET), rig.daemon.output()
        talked_over = await rig.barge_in(ASSET, voice)
    assert talked_over.playing and talked_over.latency_s is None, f"{talked_over}\n{rig.daemon.output()}"


# ---------------------------------------------------------------- companion doctor


async def doctor_echo_line(tmp_path: Path, *args: str, pythonpath: str = "") -> str:
    env = dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state"))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "companion", "doctor", "--set", 'xiaozhi.websocket_url="ws://127.0.0.1:9/"',
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return next(row for row in out.decode().splitlines() if row.startswith("[") and "] echo:" in row)


@pytest.mark.audio
@pytest.mark.slow
async def test_doctor_names_the_echo_mode_and_why(pulse: PulseServer, tmp_path: Path) -> None:
    none = await doctor_echo_line(tmp_path)
    assert none.startswith("[pass]") and "microphone is closed while the device speaks" in none
    headset = await doctor_echo_line(tmp_path, "--set", "audio.echo=headset")
    assert headset.startswith("[pass]") and "headset: no echo path" in headset
    aec = await doctor_echo_line(tmp_path, "--set", "audio.echo=aec")
    assert aec.startswith("[pass]") and "WebRTC AEC3 in-process" in aec
    wav_out = f'audio.output="{tmp_path}/o.wav"'
    to_file = await doctor_echo_line(tmp_path, "--set", "audio.echo=aec", "--set", wav_out)
    assert to_file.startswith("[warn]") and "audio.output not a sound device" in to_file


@pytest.mark.audio
@pytest.mark.slow
async def test_doctor_warns_when_the_canceller_cannot_load(pulse: PulseServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pywebrtc_audio.py").write_text("raise ImportError('no wheel for this machine')\n")
    line = await doctor_echo_line(tmp_path, "--set", "audio.echo=aec", pythonpath=str(broken))
    assert line.startswith("[warn]") and "no wheel for this machine" in line
    assert "microphone is closed while the device speaks" in line
