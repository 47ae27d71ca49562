"""A JACK server with the dummy driver: a real sound device, reached through PortAudio's JACK host API,
that refuses every rate but its own (48 kHz), as raw `hw:` devices of I2S HATs and many USB codecs do.
`jack_metro` is a JACK client that plays clicks, so a capture from it hears real audio."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from types import TracebackType

RATE = 48000


class JackServer:
    """`jackd -d dummy` at 48 kHz with 2 capture and 2 playback ports, under a private server name."""

    def __init__(self) -> None:
        self.name = f"companion-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1"}
        self._procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> bool:
        return all(shutil.which(tool) for tool in ("jackd", "jack_wait", "jack_metro", "jack_connect"))

    def __enter__(self) -> JackServer:
        self._procs.append(
            subprocess.Popen(
                ["jackd", "--no-realtime", "-n", self.name,
                 "-d", "dummy", "-r", str(RATE), "-C", "2", "-P", "2", "-p", "960"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        subprocess.run(["jack_wait", "-w", "-t", "10"], env=self.env, check=True, capture_output=True)
        return self

    def metronome(self, bpm: int = 600, hz: int = 1000) -> str:
        """Start a click track; returns its JACK port name."""
        name = f"metro{len(self._procs)}"
        self._procs.append(
            subprocess.Popen(
                ["jack_metro", "-n", name, "-b", str(bpm), "-f", str(hz), "-A", "0.5", "-D", "60"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        return f"{name}:{bpm}_bpm"

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
