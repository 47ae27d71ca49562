"""`python -m bench.faults`: the fault and soak harness, run by hand (not in CI). Prints one JSON object.

- `malformed_frames`: random and mutated frames fed to every protocol core (xiaozhi JSON and binary
  v1-v3, UDP, chat_bot_v3, the serial bridge): how many raised an unhandled exception (must be 0).
- `server_kills`: the echo server drops the connection mid-turn, again and again: how many times the
  backend was back and ready, and the slowest return.
- `restarts`: the daemon restarted in-process through the agent's `self.reboot` tool: RSS, threads and
  tasks before and after (growth per restart).
- `audio_losses`: the sound server killed under the running daemon and brought back: how many times
  the microphone was reopened, and the recovery time.
- `serial_unplugs`: the ESP32 (the emulator on a socat cable) unplugged and plugged back while the
  state moves on: how long after each replug the board shows the current state and emotion.
- `soak` (`soak_mmap`: the same with glibc's `MALLOC_MMAP_THRESHOLD_` fixed): `companion run` against
  the echo server for 1000 spoken turns (`SOAK_TURNS`), a looping one-word WAV as the microphone: RSS,
  threads and asyncio tasks (the `companion_asyncio_tasks` gauge) every 100 turns, and the RSS floor
  (the lowest over the 10 turns before turn 100 and the last, free of where in a turn a sample falls).
  About 46 minutes.
- `idle_real`: `companion run` idle for 10 minutes (`IDLE_REAL_S`) against a running
  xiaozhi-esp32-server (`XIAOZHI_PEER_URL`, docs/peers-xiaozhi.md), then one spoken turn, through a
  tap that counts pings, pongs and close frames; skipped, saying so, when no server answers.

With no names it runs all but `soak`, `soak_mmap` and `idle_real`, which run only when named.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ASSET = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
QUIET = {"XDG_RUNTIME_DIR", "PULSE_SERVER"}
SOAK_TURNS = int(os.environ.get("SOAK_TURNS", "1000"))  # fewer for a quick look


def malformed_frames(count: int = 100_000, seed: int = 1) -> dict[str, Any]:
    """Every core takes garbage without raising; returns the number of unhandled exceptions."""
    import logging

    from companion.protocols.chatbot_v3.client import ClientProtocol
    from companion.protocols.espai import DeviceProtocol
    from companion.protocols.xiaozhi.session import ClientSession, SessionConfig
    from companion.protocols.xiaozhi.udp import UdpAudioChannel
    from firmware_bridge import protocol as bridge

    logging.disable(logging.CRITICAL)  # the cores log each oddity; here only exceptions count
    rng = random.Random(seed)
    valid = [
        '{"type":"hello","transport":"websocket","session_id":"s","audio_params":{"format":"opus",'
        '"sample_rate":24000,"channels":1,"frame_duration":60}}',
        '{"type":"tts","state":"start"}', '{"type":"tts","state":"sentence_start","text":"x"}',
        '{"type":"stt","text":"hi"}', '{"type":"llm","emotion":"happy","text":"x"}',
        '{"type":"mcp","payload":{"jsonrpc":"2.0","id":1,"method":"tools/list"}}',
        '{"type":"notify","event":"config_updated"}', '{"type":"tts","state":"stop"}',
        '{"type":"session_start","session_id":"4821"}', '{"type":"session_status","status":"iat_start"}',
        '{"type":"session_stop","data":"1","session_id":"4821"}', '{"type":"emotion","data":"开心"}',
        '{"type":"instruct","command_id":"on_llm_cb","data":"x"}', '{"type":"stc_time","stc_time":"1"}',
    ]  # fmt: skip

    def mutate(text: str) -> str:
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(chars))
            chars[i] = chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x4E00, 0x4E50), 0]))
        return "".join(chars)

    cores: dict[str, Any] = {}
    failures: dict[str, int] = {}
    for version in (1, 2, 3):
        cores[f"xiaozhi_v{version}"] = ClientSession(SessionConfig(version=version))
        cores[f"xiaozhi_v{version}"].hello(0.0)
    chatbot = ClientProtocol()
    espai = DeviceProtocol()
    udp = UdpAudioChannel(bytes(16), bytes(16))
    decoder = bridge.Decoder()
    for i in range(count):
        now = i * 0.001
        text = (
            mutate(rng.choice(valid))
            if rng.random() < 0.7
            else rng.randbytes(rng.randrange(1, 200)).decode("latin-1")
        )
        blob = rng.randbytes(rng.randrange(0, 400))
        if rng.random() < 0.3:  # an ESP-AI audio prefix on the noise, so that the payload path runs too
            blob = rng.choice([b"4821", b"0010", b"1001"]) + rng.choice([b"00", b"01", b"02", b"03"]) + blob
        for name, session in cores.items():
            try:
                session.receive_text(text, now)
                session.receive_binary(blob, now)
            except Exception:
                failures[name] = failures.get(name, 0) + 1
        for name in ("chatbot_v3", "espai", "udp", "bridge_serial"):
            try:
                if name == "chatbot_v3":
                    chatbot.receive_text(text, now)
                    chatbot.receive_binary(blob, now)
                elif name == "espai":
                    espai.receive_text(text)
                    espai.receive_binary(blob)
                elif name == "udp":
                    udp.open(blob)
                else:
                    decoder.feed(blob)
            except Exception:
                failures[name] = failures.get(name, 0) + 1
    logging.disable(logging.NOTSET)
    return {"malformed_frames": count * (len(cores) * 2 + 4), "malformed_unhandled": sum(failures.values()),
            "malformed_unhandled_by_core": failures}  # fmt: skip


async def server_kills(count: int = 100) -> dict[str, Any]:
    """Kill the server's side of the connection mid-turn `count` times; the backend must come back."""
    from companion.events import ListenMode
    from companion.net.backoff import Backoff
    from tests.peers.xiaozhi_echo import EchoPeer
    from tests.xiaozhi_harness import BackendHarness, fast_settings, opus_frames, speech_pcm

    returns: list[float] = []
    pcm = speech_pcm(1.0)
    async with EchoPeer() as server:
        settings = fast_settings(server.websocket_url)
        async with BackendHarness(settings, backoff=Backoff(initial=0.05, cap=0.5)) as h:
            await h.wait_connected()
            for _ in range(count):
                await h.backend.start_listening(ListenMode.MANUAL)
                for packet in opus_frames(pcm)[:5]:
                    await h.backend.send_audio(packet)
                server.kill()
                killed = time.monotonic()
                await h.wait_for(lambda: not h.backend.connected, 10)
                await h.wait_connected(20)
                returns.append(time.monotonic() - killed)
    return {"server_kills": count, "server_kills_recovered": len(returns),
            "server_kill_return_s_max": round(max(returns), 3),
            "server_kill_return_s_p50": round(statistics.median(returns), 3)}  # fmt: skip


def _proc_status(pid: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = float(rest.split()[0])
    return values


async def restarts(count: int = 300) -> dict[str, Any]:
    """In-process restarts through `self.reboot`: RSS and threads must stay flat."""
    from tests.daemon_process import DaemonProcess
    from tests.peers.xiaozhi_echo import EchoPeer

    async with EchoPeer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            daemon = await DaemonProcess(
                "run", "--input", str(ASSET), "--output", str(Path(state) / "out.wav"),
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "backend.trigger=button",
                "--set", "telemetry.enabled=false", state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                assert daemon.proc is not None
                pid = daemon.proc.pid

                def newest() -> int:
                    return max(
                        (r.number for r in server.records if r.mcp_initialized and not r.closed), default=0
                    )

                await server.wait_until(lambda: newest() > 0, 20)
                samples = []
                for i in range(count + 1):
                    if i in (10, count // 2, count):
                        await asyncio.sleep(0.5)
                        samples.append(_proc_status(pid))
                    if i < count:
                        before = newest()
                        await server.call_tool("self.reboot", {})
                        await server.wait_until(lambda: newest() > before, 20)  # noqa: B023
            finally:
                await daemon.stop()
    first, middle, last = samples
    return {"restarts": count, "restart_rss_mb_after_10": round(first["VmRSS"] / 1024, 1),
            "restart_rss_mb_after_half": round(middle["VmRSS"] / 1024, 1),
            "restart_rss_mb_after_all": round(last["VmRSS"] / 1024, 1),
            "restart_rss_kb_per_restart_second_half":
                round((last["VmRSS"] - middle["VmRSS"]) / (count - count // 2), 1),
            "restart_threads": [int(first["Threads"]), int(last["Threads"])]}  # fmt: skip


SOAK_SPEECH_S = 0.95  # the first word of demo_hello.wav
SOAK_SILENCE_S = 1.4  # then quiet long enough for the reply: one turn per pass through the file
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc's threshold fixed: no dynamic warm-up


def _soak_clip(folder: Path) -> Path:
    """A WAV that, played in a loop, is someone saying one word every 2.65 s."""
    import wave

    with wave.open(str(ASSET)) as source:
        speech = source.readframes(int(source.getframerate() * SOAK_SPEECH_S))
        rate = source.getframerate()
    path = folder / "one-word.wav"
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(speech + bytes(2 * int(rate * SOAK_SILENCE_S)))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _asyncio_tasks(port: int) -> int | None:
    """The daemon's `companion_asyncio_tasks` gauge."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "companion_asyncio_tasks":
                return int(sample.value)
    return None


async def soak(turns: int = 1000, env: dict[str, str] | None = None, key: str = "soak") -> dict[str, Any]:
    """`companion run` against the echo server for `turns` spoken turns (a looping WAV as the
    microphone): RSS, threads and asyncio tasks at turn 100 and at the last, sampled every 100 turns."""
    from tests.daemon_process import DaemonProcess
    from tests.peers.xiaozhi_echo import EchoPeer

    every = min(100, turns)
    samples: dict[int, dict[str, float]] = {}
    started = time.monotonic()
    async with EchoPeer(port=0) as server:
        with tempfile.TemporaryDirectory() as state:
            port = _free_port()
            daemon = await DaemonProcess(
                "run", "--input", str(_soak_clip(Path(state))), "--output", str(Path(state) / "out.wav"),
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "audio.input_loop=true",
                "--set", 'xiaozhi.listen_mode="manual"', "--set", "vad.hangover_ms=300",
                "--set", f"telemetry.prometheus_port={port}", state_dir=Path(state), env=env,
            ).start()  # fmt: skip
            try:
                assert daemon.proc is not None
                completed, seen, last_turn = 0, 0, time.monotonic()
                trace: list[tuple[int, float]] = []  # (turns completed, VmRSS kB), every 0.2 s
                while completed < turns:
                    trace.append((completed, _proc_status(daemon.proc.pid)["VmRSS"]))
                    for line in daemon.lines[seen:]:
                        if " completed: {" in line:
                            completed += 1
                            last_turn = time.monotonic()
                            if completed % every == 0:
                                status = _proc_status(daemon.proc.pid)
                                status["tasks"] = float(await _asyncio_tasks(port) or -1)
                                samples[completed] = status
                    seen = len(daemon.lines)
                    if daemon.proc.returncode is not None or time.monotonic() - last_turn > 30:
                        raise RuntimeError(f"no turn for 30 s after {completed}:\n{daemon.output()}")
                    await asyncio.sleep(0.2)
                lines = list(daemon.lines)
            finally:
                await daemon.stop()
    first, last = samples[every], samples[turns]

    def floor(n: int) -> float:  # the lowest RSS over the 10 turns before turn n: wherever in a turn
        return min(rss for done, rss in trace if n - 10 <= done < n)  # a point sample falls, ±0.8 MB

    outcomes = [
        line.split(" turn ", 1)[1].split(":", 1)[0] for line in lines if "conversation: turn " in line
    ]
    return {f"{key}_turns": turns, f"{key}_minutes": round((time.monotonic() - started) / 60, 1),
            f"{key}_rss_mb_at_{every}": round(first["VmRSS"] / 1024, 2),
            f"{key}_rss_mb_at_{turns}": round(last["VmRSS"] / 1024, 2),
            f"{key}_rss_growth_kb": int(last["VmRSS"] - first["VmRSS"]),
            f"{key}_rss_floor_mb_at_{every}": round(floor(every) / 1024, 2),
            f"{key}_rss_floor_mb_at_{turns}": round(floor(turns) / 1024, 2),
            f"{key}_rss_floor_growth_kb": int(floor(turns) - floor(every)),
            f"{key}_rss_mb_every_{every}": [round(samples[n]["VmRSS"] / 1024, 2) for n in sorted(samples)],
            f"{key}_threads": [int(first["Threads"]), int(last["Threads"])],
            f"{key}_tasks": [int(first["tasks"]), int(last["tasks"])],
            f"{key}_turns_not_completed": sum(" completed" not in o for o in outcomes),
            f"{key}_offline": sum("→ offline" in line for line in lines),
            f"{key}_server_connections": len(server.records)}  # fmt: skip


PEER_URL = os.environ.get("XIAOZHI_PEER_URL", "ws://127.0.0.1:8000/xiaozhi/v1/")
IDLE_REAL_S = float(os.environ.get("IDLE_REAL_S", "600"))


def _quiet_then_speech(folder: Path, quiet_s: float) -> Path:
    """A WAV that is a quiet room for `quiet_s`, then demo_hello.wav, then quiet again."""
    import wave

    with wave.open(str(ASSET)) as source:
        rate = source.getframerate()
        speech = source.readframes(source.getnframes())
    path = folder / "quiet-then-speech.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(rate * quiet_s)) + speech + bytes(2 * rate * 3))
    return path


async def idle_real(seconds: float = IDLE_REAL_S) -> dict[str, Any]:
    """`companion run` idle against a running xiaozhi-esp32-server (docs/peers-xiaozhi.md) for
    `seconds`, then one spoken turn, through a tap that counts pings, pongs and close frames: the
    device must stay idle (no offline state, no cue) and the session must still answer."""
    from urllib.parse import urlsplit

    from bench.wiretap import WireTap
    from tests.daemon_process import DaemonProcess

    parts = urlsplit(PEER_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        _, probe = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        probe.close()
    except (OSError, TimeoutError):
        message = f"skipped: no xiaozhi-esp32-server at {PEER_URL} (docs/peers-xiaozhi.md starts one)"
        print(f"idle_real {message}", file=sys.stderr)
        return {"idle_real": message}
    log_path = Path(tempfile.gettempdir()) / "companion-idle-real.log"
    with tempfile.TemporaryDirectory() as state:
        wav = _quiet_then_speech(Path(state), seconds)
        async with WireTap(host, port) as tap:
            tapped = PEER_URL.replace(parts.netloc, f"127.0.0.1:{tap.port}", 1)
            daemon = await DaemonProcess(
                "run", "--input", str(wav), "--output", str(Path(state) / "out.wav"),
                "--set", f'xiaozhi.websocket_url="{tapped}"', "--set", 'log.level="debug"',
                state_dir=Path(state),
            ).start()  # fmt: skip
            try:
                await daemon.wait_for_line("→ idle", 30)
                idle_from = time.monotonic()
                await daemon.wait_for_line("→ listening", seconds + 60)
                idle_s = time.monotonic() - idle_from
                ended = await daemon.wait_for_line("conversation: turn ", 60)
            finally:
                await daemon.stop()
                log_path.write_text("\n".join(daemon.lines) + "\n")
    lines = daemon.lines
    turn_starts = next(i for i, line in enumerate(lines) if "→ listening" in line)

    def after(marker: str, start: int = 0, end: int | None = None) -> list[str]:
        return [line.split(marker, 1)[1].strip() for line in lines[start:end] if marker in line]

    return {"idle_real_idle_s": round(idle_s),
            "idle_real_state_changes_while_idle": after("state: ", end=turn_starts),
            "idle_real_state_changes_in_the_turn": after("state: ", start=turn_starts),
            "idle_real_offline": sum("→ offline" in line for line in lines),
            "idle_real_cues_while_idle": after("cue: ", end=turn_starts),
            "idle_real_cues_in_the_turn": after("cue: ", start=turn_starts),
            "idle_real_channel_down": after("channel down: "),
            "idle_real_sessions_opened": sum(" open (ws" in line for line in lines),
            "idle_real_reconnects_counted": sum("disconnected:" in line for line in lines),
            "idle_real_tcp_connections": tap.connections, "idle_real_frames": dict(tap.frames),
            "idle_real_closes": [vars(close) for close in tap.closes],
            "idle_real_turn": ended.split("conversation: ", 1)[1][:60],
            "idle_real_heard": after("heard: "), "idle_real_reply": after("reply: ")[:3],
            "idle_real_log": str(log_path)}  # fmt: skip


async def audio_losses(count: int = 20) -> dict[str, Any]:
    """Kill the sound server under the daemon `count` times; the microphone must come back each time."""
    from tests.daemon_process import DaemonProcess
    from tests.peers.pulse import PulseServer
    from tests.peers.xiaozhi_echo import EchoPeer

    pulse = PulseServer()
    pulse.start()
    recoveries: list[float] = []
    failures: list[str] = []
    try:
        async with EchoPeer(port=0) as server:
            with tempfile.TemporaryDirectory() as state:
                daemon = await DaemonProcess(
                    "run", "--input", "default", "--output", str(Path(state) / "out.wav"),
                    "--set", f'xiaozhi.websocket_url="{server.websocket_url}"',
                    "--set", "backend.trigger=button", "--set", "telemetry.enabled=false",
                    state_dir=Path(state), env={k: pulse.env[k] for k in QUIET},
                ).start()  # fmt: skip
                try:
                    await daemon.wait_for_line("→ idle", timeout=20)

                    def count_lines(needle: str, since: int = 0) -> int:
                        return sum(needle in line for line in daemon.lines[since:])

                    for _ in range(count):
                        mark = len(daemon.lines)
                        pulse.crash()
                        while not count_lines("→ error", mark):  # this loss noticed
                            await asyncio.sleep(0.05)
                        pulse.start()
                        back = time.monotonic()
                        while not count_lines("microphone works again", mark):
                            await asyncio.sleep(0.05)
                            if time.monotonic() - back > 30:
                                failures.append("\n".join(daemon.lines[-15:]))
                                break
                        else:
                            recoveries.append(time.monotonic() - back)
                finally:
                    await daemon.stop()
    finally:
        pulse.stop()
    return {"audio_losses": count, "audio_losses_recovered": len(recoveries),
            "audio_recovery_s_p50": round(statistics.median(recoveries), 2) if recoveries else None,
            "audio_recovery_s_max": round(max(recoveries), 2) if recoveries else None,
            "audio_not_recovered_logs": failures}  # fmt: skip


async def serial_unplugs(count: int = 50) -> dict[str, Any]:
    """Unplug the board, change what it should show, plug it back: the time until it shows it."""
    from firmware_bridge.emulator import AttachedPort, Emulator
    from firmware_bridge.link import BridgeLink
    from tests.peers.bridge_socat import SocatCable

    looks = [("listening", "neutral"), ("speaking", "happy"), ("thinking", "neutral"), ("speaking", "sad")]
    restored: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        cable = SocatCable(Path(folder))
        await cable.plug()
        emulator = Emulator(AttachedPort(cable.board), leds=4)
        link = BridgeLink(str(cable.host))
        tasks = [asyncio.create_task(emulator.run()), asyncio.create_task(link.run())]
        try:
            await link.wait_connected(5.0)
            for cycle in range(count):
                state, emotion = looks[cycle % len(looks)]
                await cable.unplug()
                await emulator.wait_for(lambda v: not v.host_connected, 5.0)
                link.set_state(state)
                link.set_emotion(emotion)
                await cable.plug()
                replugged = time.monotonic()
                await emulator.wait_for(lambda v: (v.state, v.emotion) == (state, emotion), 5.0)  # noqa: B023
                restored.append(time.monotonic() - replugged)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await cable.unplug()
    ordered = sorted(restored)
    return {"serial_unplugs": count, "serial_restored": len(restored),
            "serial_restore_ms_p50": round(statistics.median(ordered) * 1000, 1),
            "serial_restore_ms_max": round(ordered[-1] * 1000, 1)}  # fmt: skip


async def _all(only: set[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if not only or "malformed" in only:
        figures.update(malformed_frames())
    if not only or "kills" in only:
        figures.update(await server_kills())
    if not only or "restarts" in only:
        figures.update(await restarts())
    if not only or "audio" in only:
        figures.update(await audio_losses())
    if not only or "serial" in only:
        figures.update(await serial_unplugs())
    # the long runs only when named
    if "soak" in only:
        figures.update(await soak(SOAK_TURNS))
    if "soak_mmap" in only:
        figures.update(await soak(SOAK_TURNS, env=MMAP_THRESHOLD, key="soak_mmap"))
    if "idle_real" in only:
        figures.update(await idle_real())
    return figures


def main() -> None:
    os.environ.setdefault("STATE_DIRECTORY", tempfile.mkdtemp(prefix="companion-faults-"))
    only = set(sys.argv[1:])  # e.g. `python -m bench.faults audio restarts`; none: all but the long runs
    json.dump(asyncio.run(_all(only)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
