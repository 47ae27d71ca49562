"""The daemon's view of the bridge: BridgeIndicator against the real emulator, and NullIndicator."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.config import BridgeSettings, LedSettings
from companion.errors import ConfigError
from companion.events import DeviceState
from companion.indicators import BoardInfo, NullIndicator
from companion.indicators.bridge import BridgeIndicator, parse_color
from firmware_bridge.emulator import Emulator, PtyPort, load_wav_16k


@contextlib.asynccontextmanager
async def running(*coroutines: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
        for task in tasks:
            assert not task.done(), task
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_states_and_emotions_follow_the_firmware_conventions(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"))
    indicator = BridgeIndicator(str(tmp_path / "board"), 921600, on_button=lambda kind: None)
    async with running(emulator.run(), indicator.run()):
        indicator.show_state(DeviceState.LISTENING, voice_active=True)
        await emulator.wait_for(lambda v: v.state == "listening" and v.voice, 2.0)
        indicator.show_emotion("happy")
        indicator.show_state(DeviceState.SPEAKING, voice_active=True)  # voice only brightens listening
        view = await emulator.wait_for(lambda v: v.state == "speaking", 1.0)
        assert view.emotion == "happy" and not view.voice
        indicator.show_state(DeviceState.IDLE)
        await emulator.wait_for(lambda v: v.state == "idle" and v.emotion == "neutral", 1.0)
        indicator.show_emotion("made-up-platform-emotion")
        await emulator.wait_for(lambda v: v.emotion == "", 1.0)
        for state in DeviceState:
            indicator.show_state(state)
            await emulator.wait_for(lambda v: v.state == state.value, 1.0)  # noqa: B023
        assert indicator.connected
        assert indicator.board == BoardInfo("emulator", 1, 12, "ws2812", True, False, 0)


async def test_emotions_can_be_turned_off(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"))
    indicator = BridgeIndicator(str(tmp_path / "board"), 921600, lambda k: None, show_emotions=False)
    async with running(emulator.run(), indicator.run()):
        indicator.show_emotion("angry")
        indicator.show_state(DeviceState.SPEAKING)
        view = await emulator.wait_for(lambda v: v.state == "speaking", 2.0)
        assert view.emotion == ""


async def test_button_presses_reach_the_daemon_by_name(tmp_path: Path) -> None:
    presses: list[str] = []
    emulator = Emulator(PtyPort(tmp_path / "board"))
    indicator = BridgeIndicator(str(tmp_path / "board"), 921600, on_button=presses.append)
    async with running(emulator.run(), indicator.run()):
        await emulator.wait_for(lambda v: v.host_connected, 2.0)
        for kind in ("press", "double", "long"):
            assert emulator.press(kind)
        await wait_until(lambda: len(presses) == 3)
    assert presses == ["press", "double", "long"]


async def test_a_failing_button_handler_does_not_break_the_link(tmp_path: Path) -> None:
    def broken(kind: str) -> None:
        raise RuntimeError("handler bug")

    emulator = Emulator(PtyPort(tmp_path / "board"))
    indicator = BridgeIndicator(str(tmp_path / "board"), 921600, on_button=broken)
    async with running(emulator.run(), indicator.run()):
        await emulator.wait_for(lambda v: v.host_connected, 2.0)
        emulator.press("press")
        indicator.show_state(DeviceState.THINKING)
        await emulator.wait_for(lambda v: v.state == "thinking", 1.0)
        assert indicator.connected and indicator.stats()["button_presses"] == 1


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


async def test_microphone_audio_arrives_in_order_at_real_time_pace(tmp_path: Path) -> None:
    ramp = (np.arange(8000) % 2000 - 1000).astype(np.int16)  # 0.5 s, recognisable
    pcm = load_wav_16k(write_wav(tmp_path / "mic.wav", ramp, 16000))
    received: list[bytes] = []
    emulator = Emulator(PtyPort(tmp_path / "board"), mic=pcm)
    indicator = BridgeIndicator(str(tmp_path / "board"), 921600, lambda k: None, on_mic_audio=received.append)
    async with running(emulator.run(), indicator.run()):
        await emulator.wait_for(lambda v: v.host_connected, 2.0)
        started = time.monotonic()
        await wait_until(lambda: sum(map(len, received)) >= len(pcm), 3.0)
        elapsed = time.monotonic() - started
        board = indicator.board
    audio = b"".join(received)
    assert audio[: len(pcm)] == pcm
    assert all(len(block) == 640 for block in received)  # 20 ms blocks
    assert 0.4 < elapsed < 1.5  # paced like a microphone, not dumped at once
    assert board is not None and board.has_mic and board.mic_rate == 16000
    assert indicator.link.mic_lost == 0


def test_a_stereo_44k_wav_is_mixed_down_and_resampled_for_the_microphone(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    pcm = np.frombuffer(load_wav_16k(write_wav(tmp_path / "s.wav", stereo, 44100, 2)), "<i2")
    assert abs(len(pcm) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    assert abs(np.argmax(spectrum) * 16000 / len(pcm) - 440) < 5


async def test_run_waits_for_a_missing_board_and_stops_when_cancelled(tmp_path: Path) -> None:
    indicator = BridgeIndicator(str(tmp_path / "absent"), 921600, lambda k: None)
    indicator.show_state(DeviceState.LISTENING)
    task = asyncio.create_task(indicator.run())
    await asyncio.sleep(0.3)
    assert not task.done() and not indicator.connected and indicator.board is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)


async def test_from_settings_applies_brightness_and_idle_colour(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"))
    indicator = BridgeIndicator.from_settings(
        BridgeSettings(port=str(tmp_path / "board"), usb_ids=["303a:1001"]),
        LedSettings(brightness=30, idle_color="#102030"),
        on_button=lambda k: None,
    )
    async with running(emulator.run(), indicator.run()):
        indicator.show_state(DeviceState.IDLE)
        view = await emulator.wait_for(lambda v: v.host_connected and v.state == "idle", 2.0)
        assert view.brightness == 30 and view.lamp == (0x10, 0x20, 0x30)


def test_bad_colour_or_usb_id_in_the_config_names_the_key() -> None:
    assert parse_color("") == (0, 0, 0)
    assert parse_color("ff8000") == (255, 128, 0)
    with pytest.raises(ConfigError, match=r"leds\.idle_color"):
        BridgeIndicator.from_settings(BridgeSettings(port="auto"), LedSettings(idle_color="orange"), print)
    with pytest.raises(ConfigError, match=r"bridge\.usb_ids"):
        BridgeIndicator.from_settings(BridgeSettings(port="auto", usb_ids=["esp"]), LedSettings(), print)


async def test_null_indicator_does_nothing_and_runs_until_cancelled() -> None:
    null = NullIndicator()
    null.show_state(DeviceState.SPEAKING, True)
    null.show_emotion("happy")
    null.set_volume(10)
    null.set_brightness(10)
    null.set_color(1, 2, 3)
    assert not null.connected and null.board is None
    task = asyncio.create_task(null.run())
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
