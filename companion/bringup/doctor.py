"""`companion doctor`: checks a setup one line each (pass/warn/fail) with the fix for anything wrong.

Each check is a small function returning a CheckResult; they run in order and never raise.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import enum
import os
import ssl
import stat
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import numpy as np

from ..config import Settings, load_settings
from ..errors import CompanionError


class Status(enum.IntEnum):
    """Ordered so that the worst result is the maximum."""

    PASS = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class CheckResult:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        """`[pass] name: detail (fix: …)`."""
        text = f"[{self.status.name.lower()}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix and self.status is not Status.PASS else "")


def check_libraries() -> list[CheckResult]:
    """libopus and PortAudio are installed and load."""
    results = []
    for name, lib, package in (("libopus", "opus", "libopus0"), ("PortAudio", "portaudio", "libportaudio2")):
        path = ctypes.util.find_library(lib)
        if path is None:
            results.append(CheckResult(name, Status.FAIL, "not found", f"sudo apt-get install {package}"))
        else:
            results.append(CheckResult(name, Status.PASS, f"found ({path})"))
    return results


def check_config(config_path: str | None, overrides: tuple[str, ...]) -> tuple[CheckResult, Settings | None]:
    """The configuration loads and validates."""
    try:
        settings = load_settings(config_path, overrides)
    except CompanionError as exc:
        return CheckResult("config", Status.FAIL, str(exc), "correct the key named above"), None
    return CheckResult("config", Status.PASS, f"valid ({settings.source})"), settings


async def check_input(settings: Settings, seconds: float = 2.0) -> CheckResult:
    """The microphone delivers audio; prints its level."""
    spec = settings.audio.input
    if spec == "bridge" or spec.lower().endswith(".wav"):
        return CheckResult("microphone", Status.PASS, f"{spec!r} is not a sound device; skipped")
    from ..audio.capture import DeviceCapture

    try:
        capture = DeviceCapture(spec, settings.audio.device_rate, input_channel=settings.audio.input_channel)
    except CompanionError as exc:
        return CheckResult("microphone", Status.FAIL, str(exc), "choose a device from `companion devices`")
    got = bytearray()

    async def collect() -> None:
        async for block in capture.blocks():
            got.extend(block)

    task = asyncio.create_task(collect())
    try:
        await asyncio.sleep(seconds)
    finally:
        await capture.close()
        task.cancel()
    if not got:
        return CheckResult(
            "microphone",
            Status.FAIL,
            f"no audio from {spec!r} in {seconds:.0f} s",
            "check the device is not in use and the user is in the 'audio' group",
        )
    samples = np.frombuffer(bytes(got), dtype=np.int16).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples**2)))
    dbfs = 20 * np.log10(max(rms, 1.0) / 32768)
    received = len(samples) / 16000
    status = Status.PASS if received >= seconds * 0.8 else Status.WARN
    fix = "the device delivers audio slower than real time; try another device_rate"
    if rms < 1:  # a real microphone always hears some noise: exact zeros mean muted or unplugged
        status, fix = Status.WARN, "the input is muted or unplugged: check it with alsamixer / pavucontrol"
    level = "silent (digital zero)" if rms < 1 else f"level {dbfs:.0f} dBFS"
    meter = "#" * int(max(0, min(30, (dbfs + 90) / 3)))
    return CheckResult(
        "microphone",
        status,
        f"{received:.1f} s received in {seconds:.0f} s, {level} |{meter:<30}|",
        fix,
    )


async def check_output(settings: Settings) -> CheckResult:
    """The speaker plays a short test tone to the end."""
    spec = settings.audio.output
    if spec.lower().endswith(".wav"):
        return CheckResult("speaker", Status.PASS, f"{spec!r} is a file; skipped")
    from ..audio.speaker import DeviceSpeaker

    try:
        speaker = DeviceSpeaker(
            spec, settings.audio.playback_rate, settings.audio.prebuffer_ms, settings.audio.device_rate
        )
        rate = speaker.rate
        t = np.arange(int(rate * 0.4)) / rate
        tone = (0.2 * 32767 * np.sin(2 * np.pi * 880 * t) * np.hanning(len(t))).astype(np.int16)
        speaker.begin()
        await speaker.write(tone.tobytes())
        speaker.end()
        drained = await speaker.wait_drained(3.0)
        await speaker.close()
    except CompanionError as exc:
        return CheckResult("speaker", Status.FAIL, str(exc), "choose a device from `companion devices`")
    if not drained:
        return CheckResult(
            "speaker",
            Status.FAIL,
            "the test tone did not play out in 3 s",
            "the output device is stuck; check `companion devices` and the sound server",
        )
    return CheckResult("speaker", Status.PASS, f"played a 0.4 s test tone on {spec!r}")


def check_echo(settings: Settings) -> CheckResult:
    """Which echo mode the device runs in, and why: a speaker build without a working canceller keeps
    the microphone closed while it speaks."""
    from ..audio.echo import echo_path

    path = echo_path(settings)
    if path.fell_back:
        return CheckResult(
            "echo", Status.WARN, path.reason, "see docs/echo.md; or set audio.echo = 'none' to say so"
        )
    return CheckResult("echo", Status.PASS, path.reason)


def check_wake_word(settings: Settings) -> CheckResult | None:
    """With the wake word as trigger: the engine and every model load, and what one capture block of
    detection costs here (None when another trigger starts turns)."""
    if settings.backend.trigger != "wake_word":
        return None
    from ..audio.wakeword import build_detector

    wake = settings.wake_word
    started = time.perf_counter()
    try:
        detector = build_detector(wake)
    except CompanionError as exc:
        fix = "pip install the engine, or fix wake_word.models (docs/wake-word.md)"
        return CheckResult("wake word", Status.FAIL, str(exc), fix)
    loaded_ms = 1000 * (time.perf_counter() - started)
    block = np.zeros(960, dtype=np.int16).tobytes()  # 60 ms, as captured
    started = time.perf_counter()
    for _ in range(50):
        detector.feed(block)
    per_block_ms = 1000 * (time.perf_counter() - started) / 50
    phrases = ", ".join(repr(p) for p in detector.phrases)
    share = 100 * per_block_ms / 60
    cost = f"{per_block_ms:.2f} ms per 60 ms block ({share:.1f} % of a core while voice is heard)"
    return CheckResult(
        "wake word",
        Status.PASS,
        f"{detector.engine} listening for {phrases}; loaded in {loaded_ms:.0f} ms, {cost}",
    )


async def check_bridge(settings: Settings, timeout: float = 3.0) -> CheckResult:
    """The ESP32 serial bridge answers HELLO."""
    if not settings.bridge.port:
        return CheckResult("serial bridge", Status.PASS, "off ([bridge] port is empty)")
    from firmware_bridge.link import probe_hello

    try:
        info = await asyncio.wait_for(probe_hello(settings.bridge.port, settings.bridge.baudrate), timeout)
    except TimeoutError:
        return CheckResult(
            "serial bridge",
            Status.FAIL,
            f"no HELLO from {settings.bridge.port} in {timeout:.0f} s",
            "flash the firmware with `companion bridge flash --port PORT`",
        )
    except Exception as exc:
        return CheckResult(
            "serial bridge",
            Status.FAIL,
            f"{settings.bridge.port}: {exc}",
            "check the cable and that the user is in the 'dialout' group",
        )
    return CheckResult("serial bridge", Status.PASS, f"HELLO from {info}")


def _server_url(settings: Settings) -> str:
    if settings.backend.kind == "chatbot_v3":
        return settings.chatbot_v3.url
    if settings.backend.kind == "espai":
        return settings.espai_device.url
    return settings.xiaozhi.websocket_url or settings.xiaozhi.ota_url


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca = settings.espai_device.tls_ca if settings.backend.kind == "espai" else settings.xiaozhi.tls_ca
    if ca:
        context.load_verify_locations(ca)
    return context


async def check_server(settings: Settings, timeout: float = 5.0) -> list[CheckResult]:
    """The server is reachable, its TLS certificate is valid, and our clock agrees with its clock."""
    url = _server_url(settings)
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    if not host:
        return [CheckResult("server", Status.FAIL, f"no host in {url!r}", "set the server URL in the config")]
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=_tls_context(settings) if secure else None,
                server_hostname=host if secure else None,
            ),
            timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        return [
            CheckResult(
                "server",
                Status.FAIL,
                f"{host}:{port}: TLS certificate not trusted ({exc.verify_message})",
                "for a self-hosted server, name its CA in xiaozhi.tls_ca",
            )
        ]
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return [
            CheckResult(
                "server",
                Status.FAIL,
                f"{host}:{port} unreachable: {reason}",
                "check the network, DNS and the URL in the config",
            )
        ]
    rtt_ms = (time.monotonic() - started) * 1000
    results = [
        CheckResult(
            "server",
            Status.PASS,
            f"{host}:{port} reachable in {rtt_ms:.0f} ms" + (", TLS certificate valid" if secure else ""),
        )
    ]
    try:
        path = parts.path or "/"
        writer.write(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.read(4096), timeout)
        results.append(_clock_skew(head))
    except (OSError, TimeoutError):
        results.append(CheckResult("clock", Status.WARN, "the server sent no Date header to compare with"))
    finally:
        writer.close()
    return results


def _clock_skew(head: bytes) -> CheckResult:
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("date:"):
            try:
                server = parsedate_to_datetime(line[5:].strip()).timestamp()
            except (TypeError, ValueError):
                break
            skew = time.time() - server
            if abs(skew) > 60:
                return CheckResult(
                    "clock",
                    Status.FAIL,
                    f"off by {skew:+.0f} s from the server",
                    "enable time sync: sudo timedatectl set-ntp true",
                )
            status = Status.WARN if abs(skew) > 5 else Status.PASS
            return CheckResult(
                "clock",
                status,
                f"within {abs(skew):.0f} s of the server",
                "enable time sync: sudo timedatectl set-ntp true",
            )
    return CheckResult("clock", Status.WARN, "the server sent no Date header to compare with")


def check_state_dir() -> CheckResult:
    """The state directory exists, is ours and is private."""
    from ..service.state_dir import state_dir

    try:
        path = state_dir()
    except OSError as exc:
        return CheckResult(
            "state directory", Status.FAIL, str(exc), "set STATE_DIRECTORY to a writable directory"
        )
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        return CheckResult(
            "state directory",
            Status.FAIL,
            f"{path} belongs to uid {info.st_uid}",
            f"sudo chown -R {os.getuid()} {path}",
        )
    if mode & 0o077:
        return CheckResult(
            "state directory",
            Status.WARN,
            f"{path} is mode {mode:o} (others can read secrets)",
            f"chmod 700 {path}",
        )
    loose = [p.name for p in path.iterdir() if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    if loose:
        return CheckResult(
            "state directory",
            Status.WARN,
            f"files readable by others: {', '.join(loose)}",
            f"chmod 600 {path}/*",
        )
    return CheckResult("state directory", Status.PASS, f"{path} (mode {mode:o})")


def check_cpu() -> CheckResult:
    """Enough CPU headroom for real-time audio (load average per core)."""
    cores = os.cpu_count() or 1
    load1 = os.getloadavg()[0]
    per_core = load1 / cores
    detail = f"load {load1:.2f} on {cores} core(s)"
    if per_core > 0.9:
        return CheckResult(
            "cpu", Status.WARN, detail + ": little headroom for real-time audio", "stop other heavy processes"
        )
    return CheckResult("cpu", Status.PASS, detail)


async def run_checks(
    config_path: str | None, overrides: tuple[str, ...], emit: Callable[[CheckResult], None]
) -> Status:
    """Run every check, emitting each line as it completes; returns the worst status."""
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        emit(result)

    for result in check_libraries():
        add(result)
    config_result, settings = check_config(config_path, overrides)
    add(config_result)
    if settings is not None:
        add(await check_input(settings))
        add(await check_output(settings))
        add(check_echo(settings))
        wake = check_wake_word(settings)
        if wake is not None:
            add(wake)
        add(await check_bridge(settings))
        for result in await check_server(settings):
            add(result)
    add(check_state_dir())
    add(check_cpu())
    return max(r.status for r in results)
