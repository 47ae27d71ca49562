"""The daemon with the ESP32 bridge: LEDs follow the state machine, the button starts turns, the board's
microphone feeds the voice loop, and pulling the cable never stops the voice loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from companion.audio.capture import read_wav_16k_mono
from companion.fieldtest.echo_server import EchoServer
from firmware_bridge.emulator import AttachedPort, Emulator
from tests.daemon_process import DaemonProcess
from tests.peers.bridge_socat import SocatCable

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SocatCable.available(), reason="socat missing")]


def daemon_args(server: EchoServer, cable: SocatCable, *extra: str) -> list[str]:
    return [
        "run", "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
        "--set", f'bridge.port="{cable.host}"', "--set", "telemetry.enabled=false", *extra,
    ]  # fmt: skip


async def test_the_boards_microphone_drives_a_turn_and_its_leds_follow(
    speech_wav: Path, tmp_path: Path
) -> None:
    mic = bytes(32000 * 2) + read_wav_16k_mono(speech_wav)  # 2 s of room noise while the daemon connects
    async with EchoServer(port=0) as server, SocatCable(tmp_path) as cable:
        emulator = Emulator(AttachedPort(cable.board), mic=mic)
        board = asyncio.create_task(emulator.run())
        daemon = await DaemonProcess(
            *daemon_args(
                server, cable, "--input", "bridge", "--output", str(tmp_path / "out.wav"), "--turns", "1"
            ),
            state_dir=tmp_path / "state",
        ).start()
        try:
            await emulator.wait_for(lambda v: v.host_state == "idle", 20)
            await emulator.wait_for(lambda v: v.host_state == "listening", 20)
            # state and emotion are two messages in one write: wait for the board to show both
            speaking = await emulator.wait_for(
                lambda v: v.host_state == "speaking" and v.emotion != "neutral", 20
            )
            assert speaking.emotion == "happy"  # the echo server's emotion for every reply
            assert await daemon.wait(30) == 0, daemon.output()
        finally:
            await daemon.stop()
            emulator.stop()
            await board
    assert "turn 1 completed" in daemon.output()
    assert emulator.mic_sent > 100


async def test_a_button_press_starts_a_turn(speech_wav: Path, tmp_path: Path) -> None:
    async with EchoServer(port=0) as server, SocatCable(tmp_path) as cable:
        emulator = Emulator(AttachedPort(cable.board))
        board = asyncio.create_task(emulator.run())
        daemon = await DaemonProcess(
            *daemon_args(server, cable, "--set", "backend.trigger=button", "--input", str(speech_wav),
                         "--output", str(tmp_path / "out.wav")),
            state_dir=tmp_path / "state",
        ).start()  # fmt: skip
        try:
            await emulator.wait_for(lambda v: v.host_state == "idle" and v.host_connected, 20)
            await asyncio.sleep(1.0)  # speech alone does not start a turn with the button trigger
            assert emulator.view().host_state == "idle"
            assert emulator.press("press")
            await emulator.wait_for(lambda v: v.host_state == "listening", 5)
            await daemon.wait_for_line("button: press", 5)
        finally:
            await daemon.stop()
            emulator.stop()
            await board


async def test_unplugging_the_board_never_stops_the_voice_loop(speech_wav: Path, tmp_path: Path) -> None:
    async with EchoServer(port=0) as server, SocatCable(tmp_path) as cable:
        emulator = Emulator(AttachedPort(cable.board))
        board = asyncio.create_task(emulator.run())
        daemon = await DaemonProcess(
            *daemon_args(server, cable, "--input", str(speech_wav), "--output", str(tmp_path / "out.wav"),
                         "--turns", "1"),
            state_dir=tmp_path / "state",
        ).start()  # fmt: skip
        try:
            await emulator.wait_for(lambda v: v.host_state == "idle" and v.host_connected, 20)
            await cable.unplug()  # the turn starts (the WAV plays) with no board attached
            await daemon.wait_for_line("→ speaking", 20)
            await cable.plug()
            view = await emulator.wait_for(lambda v: v.host_connected and v.host_state == "speaking", 3)
            assert view.host_state == "speaking"
            assert await daemon.wait(30) == 0, daemon.output()
        finally:
            await daemon.stop()
            emulator.stop()
            await board
    assert "Traceback" not in daemon.output()
