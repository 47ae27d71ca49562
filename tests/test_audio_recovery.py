"""The microphone comes back by itself: a sound server that dies (or a USB mic pulled out) is logged,
shown as the error state, and the device is opened again by name when it returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.fieldtest.echo_server import EchoServer
from tests.daemon_process import DaemonProcess
from tests.peers.pulse import PulseServer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not PulseServer.available(), reason="pulseaudio missing")]


async def test_the_microphone_is_reopened_when_its_sound_server_returns(tmp_path: Path) -> None:
    pulse = PulseServer()
    pulse.start()
    try:
        async with EchoServer(port=0) as server:
            daemon = await DaemonProcess(
                "run", "--input", "default", "--output", str(tmp_path / "out.wav"),
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "backend.trigger=button",
                "--set", "telemetry.enabled=false",
                state_dir=tmp_path / "state",
                env={key: pulse.env[key] for key in ("XDG_RUNTIME_DIR", "PULSE_SERVER")},
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("→ idle", timeout=20)
                pulse.crash()
                lost = await daemon.wait_for_line("microphone failed", timeout=10)
                assert "stopped delivering audio" in lost or "cannot open input device" in lost
                await daemon.wait_for_line("→ error", timeout=5)
                pulse.start()
                await daemon.wait_for_line("microphone works again", timeout=30)
                await daemon.wait_for_line("error → idle", timeout=5)
                assert daemon.proc is not None and daemon.proc.returncode is None
            finally:
                await daemon.stop()
    finally:
        pulse.stop()
    output = daemon.output()
    assert "Traceback" not in output
    assert output.count("microphone failed") <= 2  # said once per cause, not once per retry
