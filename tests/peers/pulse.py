"""A private PulseAudio server with null sinks: a real sound card for tests on a machine without one.

`spk` is the speaker (recorded from spk.monitor); `mic` is a source remapped from the null sink
`micsink`, into which tests play WAV files (the user's voice). `speaker_heard_by_mic` adds an echo
path, a speaker in a room: a loopback from spk.monitor into micsink with a fixed delay and
attenuation. Recipe and traps: shared/spec/test-rig.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RATE = 16000

SCRIPT = f"""
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=spk rate={RATE} channels=1 format=s16le norewinds=1
load-module module-null-sink sink_name=micsink rate={RATE} channels=1 format=s16le norewinds=1
load-module module-remap-source master=micsink.monitor source_name=mic
set-default-sink spk
set-default-source mic
"""


class PulseServer:
    """Starts `pulseaudio` in a private runtime directory; `env` is what clients need."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="companion-pulse-"))
        os.chmod(self.dir, 0o700)
        self.env = dict(os.environ)
        self.env["XDG_RUNTIME_DIR"] = str(self.dir)
        self.env["PULSE_SERVER"] = f"unix:{self.dir}/pulse/native"
        self.env.pop("PULSE_SINK", None)
        self.env.pop("PULSE_SOURCE", None)
        self._procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> bool:
        """True when the pulseaudio binaries are installed."""
        return all(shutil.which(b) for b in ("pulseaudio", "pactl", "pacat", "paplay"))

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and the keep-alive stream; waits until `pactl info` answers."""
        script = self.dir / "test.pa"
        script.write_text(SCRIPT)
        server = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
             "--disallow-exit", "--log-target=stderr", "--log-level=error"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._procs.append(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {server.returncode}")
            ok = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=5)
            if ok.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("pulseaudio did not answer in time")
        # Without a stream into micsink, the first capture callback can arrive ~1.6 s late.
        self._procs.append(subprocess.Popen(
            ["pacat", "--playback", "--device=micsink", "--latency-msec=20", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=1", "/dev/zero"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip

    def play_into_mic(self, wav: str | Path) -> subprocess.Popen[bytes]:
        """Start playing a WAV into the virtual microphone (real time); returns the process."""
        return subprocess.Popen(["paplay", "--device=micsink", str(wav)], env=self.env)

    def record_speaker(self, path: str | Path) -> subprocess.Popen[bytes]:
        """Start recording the virtual speaker to a raw s16le 16 kHz mono file."""
        return subprocess.Popen(
            ["parec", "--device=spk.monitor", "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1",
             "--latency-msec=20", str(path)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def pactl(self, *args: str) -> str:
        """Run pactl against this server; its output."""
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def add_echo(self, delay_ms: int = 100, gain_db: float = -6.0) -> int:
        """Feed everything the speaker plays back into the microphone `delay_ms` later, `gain_db`
        quieter; returns the loopback's module index (for `remove_echo`)."""
        module = int(self.pactl(
            "load-module", "module-loopback", "source=spk.monitor", "sink=micsink",
            f"latency_msec={delay_ms}", "source_dont_move=true", "sink_dont_move=true", "remix=false",
            "adjust_time=0",  # no rate adjustment: the echo keeps its delay, as a room's does
        ).strip())  # fmt: skip
        inputs = json.loads(self.pactl("--format=json", "list", "sink-inputs"))
        mine = [i["index"] for i in inputs if str(i.get("owner_module")) == str(module)]
        if not mine:
            self.remove_echo(module)
            raise RuntimeError("the loopback made no stream into micsink")
        self.pactl("set-sink-input-volume", str(mine[0]), f"{gain_db}dB")
        return module

    def remove_echo(self, module: int) -> None:
        """Take the echo path away again."""
        self.pactl("unload-module", str(module))

    @contextlib.contextmanager
    def speaker_heard_by_mic(self, delay_ms: int = 100, gain_db: float = -6.0) -> Iterator[int]:
        """An echo path for the duration of the block (see `add_echo`)."""
        module = self.add_echo(delay_ms, gain_db)
        try:
            yield module
        finally:
            self.remove_echo(module)

    def crash(self) -> None:
        """Kill the server as a crash would (SIGKILL), keeping its address: `start()` brings it back."""
        for proc in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
        self._procs.clear()

    def stop(self) -> None:
        """Stop everything started here and remove the runtime directory."""
        for proc in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is None:
                proc.kill()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_pulse() -> Iterator[PulseServer]:
    """A started PulseServer, stopped afterwards."""
    server = PulseServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def pulse_environment() -> Iterator[PulseServer]:
    """A started PulseServer whose address is in os.environ (for PortAudio in this process) until exit."""
    keys = ("XDG_RUNTIME_DIR", "PULSE_SERVER")
    saved = {key: os.environ.get(key) for key in keys}
    with running_pulse() as server:
        os.environ.update({key: server.env[key] for key in keys})
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
