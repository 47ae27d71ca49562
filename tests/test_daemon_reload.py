"""SIGHUP with a broken configuration file: the daemon keeps its old configuration and its runtime, the
turn in progress finishes, and one log line says why the reload was refused."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from companion.fieldtest.echo_server import EchoServer
from tests.daemon_process import DaemonProcess

pytestmark = pytest.mark.slow


async def test_a_broken_config_on_sighup_keeps_the_daemon_and_its_turn(
    speech_wav: Path, tmp_path: Path
) -> None:
    config = tmp_path / "companion.toml"
    config.write_text("[vad]\naggressiveness = 2\n[telemetry]\nenabled = false\n")
    async with EchoServer(port=0) as server:
        daemon = await DaemonProcess(
            "run", "--config", str(config), "--input", str(speech_wav), "--output", str(tmp_path / "out.wav"),
            "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
            state_dir=tmp_path / "state",
        ).start()  # fmt: skip
        try:
            assert daemon.proc is not None
            await daemon.wait_for_line("→ speaking", timeout=30)
            config.write_bytes(b"[vad]\naggressiveness = 3\n# \xff\xfe not UTF-8\n")
            daemon.proc.send_signal(signal.SIGHUP)
            refused = await daemon.wait_for_line("not UTF-8", timeout=10)
            await daemon.wait_for_line("turn 1 completed", timeout=30)

            config.write_text("[vad]\nmax_utterance_s = nan\n")
            daemon.proc.send_signal(signal.SIGHUP)
            refused_nan = await daemon.wait_for_line("expected a finite number", timeout=10)
            await daemon.wait_for_line("→ idle", timeout=10)
            assert daemon.proc.returncode is None
        finally:
            await daemon.stop()
    for line in (refused, refused_nan):
        assert "keeping the old one" in line and str(config) in line
    log = "\n".join(daemon.lines)
    assert "Traceback" not in log
    assert sum("ready in" in line for line in daemon.lines) == 1, log  # the runtime was never rebuilt
    assert "reloading the configuration" not in log.replace("SIGHUP: reloading the configuration", "")
    assert "turn 1 cancelled" not in log and "turn 1 interrupted" not in log
