"""Test harness: a private PulseAudio server for the whole session, started before PortAudio loads.

PortAudio enumerates devices once, when sounddevice is imported, so PULSE_SERVER must be in the
environment before any test imports it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.pulse import PulseServer

_PULSE: PulseServer | None = None
ASSETS = Path(__file__).resolve().parent.parent / "companion" / "assets"


def pytest_configure(config: pytest.Config) -> None:
    global _PULSE
    if PulseServer.available() and not os.environ.get("COMPANION_TEST_NO_PULSE"):
        server = PulseServer()
        server.start()
        for key in ("XDG_RUNTIME_DIR", "PULSE_SERVER"):
            os.environ[key] = server.env[key]
        _PULSE = server


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PULSE is not None:
        _PULSE.stop()


@pytest.fixture(autouse=True)
def no_host_mac(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every in-process test sees a machine with no network interfaces (a container, a chroot), so
    no result depends on whether the host has a MAC; the tests of the MAC lookup pass their own paths."""
    from companion.backends.xiaozhi import identity

    empty = tmp_path_factory.mktemp("no-net")
    monkeypatch.setattr(identity, "_SYS_NET", empty / "class-net")
    monkeypatch.setattr(identity, "_ROUTES", empty / "route")


@pytest.fixture
def pulse() -> PulseServer:
    """The session's PulseAudio server (tests that need real audio devices)."""
    if _PULSE is None:
        pytest.skip("pulseaudio is not installed (scripts/test.sh installs it)")
    return _PULSE


@pytest.fixture
def speech_wav() -> Path:
    """The bundled spoken sentence (16 kHz mono, 3.6 s)."""
    return ASSETS / "demo_hello.wav"


@pytest.fixture(scope="session")
def espeak() -> Iterator[str]:
    """Path of espeak-ng, to make speech with known silences."""
    path = shutil.which("espeak-ng")
    if path is None:
        pytest.skip("espeak-ng is not installed")
    yield path


def make_speech(espeak_path: str, text: str, out: Path) -> Path:
    """A 16 kHz mono WAV of `text` spoken by espeak-ng."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run([espeak_path, "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out
