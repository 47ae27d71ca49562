"""The daemon as a service: per-turn records, SIGTERM mid-turn, SIGHUP reload, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess
from tests.peers.xiaozhi_echo import EchoPeer

pytestmark = pytest.mark.slow

MARKS = (
    "speech_start", "speech_end", "listen_sent", "first_transcript", "emotion",
    "first_reply_audio", "first_sample_played", "turn_end",
)  # fmt: skip


def args_for(server: EchoPeer, wav: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--input", str(wav), "--output", str(out),
        "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200", *extra,
    ]  # fmt: skip


async def one_turn(server: EchoPeer, speech_wav: Path, tmp_path: Path) -> Path:
    """Run the daemon for one turn against `server`; returns its state directory."""
    state = tmp_path / "state"
    daemon = await DaemonProcess(
        *args_for(server, speech_wav, tmp_path / "out.wav", "--turns", "1"), state_dir=state
    ).start()
    try:
        assert await daemon.wait(40) == 0, daemon.output()
    finally:
        await daemon.stop()
    return state


async def test_every_turn_leaves_a_complete_private_record(speech_wav: Path, tmp_path: Path) -> None:
    async with EchoPeer(port=0) as server:
        state = await one_turn(server, speech_wav, tmp_path)
    path = state / "turns.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["backend"] == "xiaozhi" and record["mode"] == "auto" and record["outcome"] == "completed"
    missing = [m for m in MARKS if record.get(m) is None]
    assert not missing, record
    order = [record[m] for m in ("speech_start", "speech_end", "first_transcript", "first_reply_audio",
                                 "first_sample_played", "turn_end")]  # fmt: skip
    assert order == sorted(order)
    assert record["bytes_up"] > 5000 and record["bytes_down"] > 5000
    assert record["transcript"]


async def test_a_reply_whose_tts_stop_comes_late_records_no_underrun(
    speech_wav: Path, tmp_path: Path
) -> None:
    """xiaozhi-esp32-server sends `tts stop` ~0.4 s after its last packet: the speaker buffer is empty
    by then, which is the reply's end, not a gap in it."""
    async with EchoPeer(port=0, variant="xinnan") as server:
        state = await one_turn(server, speech_wav, tmp_path)
    (record,) = [json.loads(line) for line in (state / "turns.jsonl").read_text().splitlines()]
    assert record["outcome"] == "completed" and record["underruns"] == 0


async def test_sigterm_during_a_reply_exits_cleanly_within_two_seconds(
    speech_wav: Path, tmp_path: Path
) -> None:
    async with EchoPeer(port=0) as server:
        daemon = await DaemonProcess(
            *args_for(server, speech_wav, tmp_path / "out.wav", "--set", "telemetry.enabled=false"),
            state_dir=tmp_path / "state",
        ).start()
        try:
            await daemon.wait_for_line("→ speaking", timeout=30)
            assert daemon.proc is not None
            sent = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            code = await daemon.wait(5)
            elapsed = time.monotonic() - sent
        finally:
            await daemon.stop()
    assert code == 0, daemon.output()
    assert elapsed < 2.0
    assert "Traceback" not in daemon.output()


async def test_sighup_reloads_the_configuration_and_keeps_running(speech_wav: Path, tmp_path: Path) -> None:
    config = tmp_path / "companion.toml"
    config.write_text("[vad]\naggressiveness = 2\n[telemetry]\nenabled = false\n")
    async with EchoPeer(port=0) as server:
        daemon = await DaemonProcess(
            *args_for(server, speech_wav, tmp_path / "out.wav", "--config", str(config)),
            state_dir=tmp_path / "state",
        ).start()
        try:
            await daemon.wait_for_line("→ idle", timeout=30)
            assert daemon.proc is not None
            config.write_text("[vad]\naggressiveness = 3\n[telemetry]\nenabled = false\n")
            daemon.proc.send_signal(signal.SIGHUP)
            await daemon.wait_for_line("reloading the configuration", timeout=10)
            await asyncio.sleep(0.2)
            lines_before = len(daemon.lines)
            await daemon.wait_for_line("ready in", timeout=10)
            assert any("ready in" in line for line in daemon.lines[lines_before - 5 :])
            assert daemon.proc.returncode is None
            # a broken file on the next reload is reported and the old one kept
            config.write_text("[vad]\naggressiveness = 9\n")
            daemon.proc.send_signal(signal.SIGHUP)
            await daemon.wait_for_line("keeping the old one", timeout=10)
            assert daemon.proc.returncode is None
        finally:
            await daemon.stop()


async def test_a_debug_log_of_a_full_turn_holds_no_secret(speech_wav: Path, tmp_path: Path) -> None:
    token = "tok-3f9a1c77e2b44d0e9b1a"
    async with EchoPeer(port=0) as server:
        daemon = await DaemonProcess(
            *args_for(server, speech_wav, tmp_path / "out.wav", "--turns", "1", "--debug",
                      "--set", "log.wire=true"),
            state_dir=tmp_path / "state",
            env={
                "COMPANION_MINDCRAFT_KEY": "MC-0123456789ABCDEF0123456789ABCDEF",
                "COMPANION_XIAOZHI_TOKEN": token,  # secrets never go through --set (argv shows in ps)
            },
        ).start()  # fmt: skip
        try:
            assert await daemon.wait(40) == 0, daemon.output()
        finally:
            await daemon.stop()
        headers = [r.headers for r in server.records]
    log = "\n".join(daemon.lines)
    assert "turn 1 completed" in log
    assert any(
        {k.lower(): v for k, v in h.items()}.get("authorization") == f"Bearer {token}" for h in headers
    )
    assert token not in log
    assert "MC-0123456789ABCDEF0123456789ABCDEF" not in log
    # log.wire shows the frames themselves: the hello we sent, the server's JSON and its audio
    sent = [line for line in daemon.lines if "xiaozhi -> " in line]
    assert any('"type":"hello"' in line for line in sent), log[-3000:]
    assert any("xiaozhi <- " in line and '"type":"tts"' in line for line in daemon.lines)
    assert any("xiaozhi <- binary" in line for line in daemon.lines)


async def test_the_running_daemon_exports_where_audio_was_dropped(speech_wav: Path, tmp_path: Path) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tests.peers.platform_http import free_port

    port = free_port()
    async with EchoPeer(port=0) as server:
        daemon = await DaemonProcess(
            *args_for(server, speech_wav, tmp_path / "out.wav", "--set", f"telemetry.prometheus_port={port}"),
            state_dir=tmp_path / "state",
        ).start()
        try:
            await daemon.wait_for_line("ready in", timeout=20)
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
        finally:
            await daemon.stop()
    dropped = {
        sample.labels["where"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "companion_audio_dropped_total"
    }
    assert set(dropped) == {"capture_ring", "capture_device", "speaker_device", "uplink_queue", "reply_audio"}
    assert all(value >= 0 for value in dropped.values())
