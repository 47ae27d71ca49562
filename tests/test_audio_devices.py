"""Capture and playback through real PortAudio callbacks on a private PulseAudio server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from companion.audio.capture import DeviceCapture, read_wav_16k_mono
from companion.audio.resample import MonoResampler
from companion.audio.speaker import DeviceSpeaker
from companion.errors import AudioDeviceError
from tests.audio_match import best_match
from tests.peers.pulse import PulseServer

pytestmark = pytest.mark.audio


async def test_capture_delivers_what_the_microphone_hears(pulse: PulseServer, speech_wav: Path) -> None:
    reference = read_wav_16k_mono(speech_wav)
    capture = DeviceCapture("default")
    got = bytearray()

    async def collect() -> None:
        async for block in capture.blocks():
            got.extend(block)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0.2)  # the stream is open and running before the sound starts
    player = pulse.play_into_mic(speech_wav)
    await asyncio.to_thread(player.wait, 15)
    await asyncio.sleep(0.5)
    await capture.close()
    task.cancel()
    lag, score = best_match(reference, bytes(got))
    assert score >= 0.9, f"correlation {score:.3f} at lag {lag}"
    assert capture.overflows == 0


async def test_capture_at_another_device_rate_is_resampled_to_16k(
    pulse: PulseServer, speech_wav: Path
) -> None:
    reference = read_wav_16k_mono(speech_wav)
    capture = DeviceCapture("default", device_rate=48000)
    assert capture.rate == 48000
    got = bytearray()

    async def collect() -> None:
        async for block in capture.blocks():
            got.extend(block)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0.2)
    player = pulse.play_into_mic(speech_wav)
    await asyncio.to_thread(player.wait, 15)
    await asyncio.sleep(0.5)
    await capture.close()
    task.cancel()
    seconds = len(got) / 32000
    _, score = best_match(reference, bytes(got))
    assert score >= 0.9
    assert seconds == pytest.approx(3.6 + 0.7 + 0.2, abs=0.6)


async def test_speaker_plays_gaplessly_what_it_is_given(
    pulse: PulseServer, speech_wav: Path, tmp_path: Path
) -> None:
    voice16 = read_wav_16k_mono(speech_wav)
    voice24 = MonoResampler(16000, 24000).process(np.frombuffer(voice16, dtype=np.int16), last=True)
    recording = tmp_path / "spk.raw"
    recorder = pulse.record_speaker(recording)
    await asyncio.sleep(0.3)
    speaker = DeviceSpeaker("default", 24000, prebuffer_ms=120)
    speaker.begin()
    # 60 ms packets, as a server would send them
    step = 24000 * 60 // 1000
    for pos in range(0, len(voice24), step):
        await speaker.write(voice24[pos : pos + step].tobytes())
    speaker.end()
    assert await speaker.wait_drained(10)
    assert speaker.buffer.underruns == 0
    await speaker.close()
    await asyncio.sleep(0.3)
    recorder.terminate()
    recorder.wait(5)
    _, score = best_match(voice16, recording.read_bytes())
    assert score >= 0.9, f"correlation {score:.3f}"


async def test_flush_stops_playback_at_once(pulse: PulseServer, speech_wav: Path) -> None:
    voice = read_wav_16k_mono(speech_wav)
    speaker = DeviceSpeaker("default", 16000, prebuffer_ms=60)
    speaker.begin()
    await speaker.write(voice)
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    speaker.flush()
    assert await speaker.wait_drained(1.0)
    assert time.monotonic() - t0 < 0.1
    played = speaker.buffer.played_samples / 16000
    await speaker.close()
    assert played < 1.0


async def test_a_missing_device_names_the_devices_that_exist(pulse: PulseServer) -> None:
    with pytest.raises(AudioDeviceError) as err:
        DeviceCapture("no-such-microphone")
    assert "no input device named 'no-such-microphone'" in str(err.value)
    assert "'default'" in str(err.value)


def test_a_machine_with_no_devices_is_told_its_next_step() -> None:
    from companion.audio.portaudio import _describe

    message = _describe([])
    assert message.startswith("there are no devices")
    assert "`companion demo` needs no sound card" in message and "`companion devices`" in message


async def test_portaudio_overflow_and_underflow_flags_are_counted(pulse: PulseServer) -> None:
    """What the device itself lost (PortAudio's status flags) is counted, not only our own drops."""
    import sounddevice as sd

    capture = DeviceCapture("default")
    speaker = DeviceSpeaker("default", 24000, 120)
    block = np.zeros((480, 1), dtype=np.int16)
    capture._callback(block, 480, None, sd.CallbackFlags())
    capture._callback(block, 480, None, sd.CallbackFlags(sd._lib.paInputOverflow))
    speaker._callback(
        np.zeros((480, 1), dtype=np.int16), 480, None, sd.CallbackFlags(sd._lib.paOutputUnderflow)
    )
    assert (capture.device_overflows, speaker.device_underflows) == (1, 1)
    await capture.close()
    await speaker.close()
