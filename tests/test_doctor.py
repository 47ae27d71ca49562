"""`companion doctor` on a healthy and on broken setups: one line per check, exit status = worst result."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from companion.fieldtest.echo_server import EchoServer
from tests.peers.pulse import PulseServer

pytestmark = [pytest.mark.audio, pytest.mark.slow]


async def doctor(tmp_path: Path, *args: str) -> tuple[int, str]:
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "companion", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state")),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def line(output: str, name: str) -> str:
    return next(row for row in output.splitlines() if row.startswith("[") and f"] {name}:" in row)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_healthy_setup_passes_every_check(
    pulse: PulseServer, speech_wav: Path, tmp_path: Path
) -> None:
    async with EchoServer(port=0) as server:
        player = pulse.play_into_mic(speech_wav)
        code, out = await doctor(tmp_path, "--set", f'xiaozhi.websocket_url="{server.websocket_url}"')
        player.wait(10)
    checks = ("libopus", "PortAudio", "config", "microphone", "speaker", "serial bridge", "server", "clock")
    for name in (*checks, "state directory"):
        assert line(out, name).startswith("[pass]"), out
    assert "dBFS" in line(out, "microphone")
    assert "] wake word:" not in out  # the trigger is the VAD: no wake-word line
    # the load check reads this machine, which the test does not control: a busy host may warn
    cpu = line(out, "cpu")
    loaded = cpu.startswith("[warn]") and "little headroom" in cpu
    assert cpu.startswith("[pass]") or loaded, out
    assert code == (1 if loaded else 0), out


async def test_a_missing_microphone_fails_and_names_the_devices(pulse: PulseServer, tmp_path: Path) -> None:
    async with EchoServer(port=0) as server:
        code, out = await doctor(
            tmp_path,
            "--set",
            f'xiaozhi.websocket_url="{server.websocket_url}"',
            "--set",
            "audio.input=no-such-mic",
        )
    assert code == 2
    assert line(out, "microphone").startswith("[fail]")
    assert "'default'" in line(out, "microphone")
    assert "fix:" in out


async def test_an_unreachable_server_fails(pulse: PulseServer, tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}/xiaozhi/v1/"
    code, out = await doctor(tmp_path, "--set", f'xiaozhi.websocket_url="{url}"')
    assert code == 2
    assert line(out, "server").startswith("[fail]")
    assert "unreachable" in line(out, "server")


async def test_a_bad_config_fails_the_config_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad]\naggressiveness = 9\n")
    code, out = await doctor(tmp_path, "--config", str(bad))
    assert code == 2
    assert line(out, "config").startswith("[fail]")
    assert "vad.aggressiveness" in line(out, "config")
    assert "Traceback" not in out


async def test_a_silent_microphone_is_a_warning(pulse: PulseServer, tmp_path: Path) -> None:
    async with EchoServer(port=0) as server:
        code, out = await doctor(tmp_path, "--set", f'xiaozhi.websocket_url="{server.websocket_url}"')
    assert code == 1
    assert line(out, "microphone").startswith("[warn]")
