"""A virtual ESP32 on a pseudo-terminal: the firmware's protocol core, LEDs drawn in the terminal.

It runs the same DeviceCore and animation code as the MicroPython firmware, so a host cannot tell it
from a board. Two ways to plug it in:
- `PtyPort(link)`: a new pty whose slave is reachable at the stable symlink `link` (give that path to
  the daemon as [bridge] port);
- `AttachedPort(path)`: the board's end of an existing tty (e.g. one side of a socat pair). When that
  tty disappears the emulator waits for it to come back and then boots afresh, like a replugged board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import termios
import time
import tty
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from firmware_bridge import protocol
from firmware_bridge.button import TICKS_MASK
from firmware_bridge.device import DeviceCore

log = logging.getLogger(__name__)

MIC_BLOCK_MS = 20
MIC_BLOCK_BYTES = protocol.MIC_RATE * MIC_BLOCK_MS // 1000 * 2
OUT_LIMIT = 64 * 1024
TICK_S = 0.02
REATTACH_POLL_S = 0.05


def now_ms() -> int:
    """The emulator's clock in the firmware's form: ms that wrap at 2**30."""
    return int(time.monotonic() * 1000) & TICKS_MASK


def default_link_path() -> Path:
    """Where `companion bridge emulate` puts its pty symlink when no --link is given."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "companion-bridge"
    return Path(f"/tmp/companion-bridge-{os.getuid()}")


@dataclass(frozen=True)
class View:
    """What the emulated board shows right now."""

    state: str  # what the LEDs show ("offline" while no host talks to the board)
    host_state: str  # the last state the host sent
    voice: bool
    emotion: str
    intensity: int
    brightness: int
    lamp: tuple[int, int, int]
    volume: int
    host_connected: bool
    raw: bool
    boots: int


# ---------------------------------------------------------------- the two ways to plug in


class PtyPort:
    """A fresh pty; the host opens the symlink `link`. Holding the slave open keeps the pty alive
    across host disconnects (the host can close and reopen it as often as it likes)."""

    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.master = -1
        self._slave = -1
        self.slave_name = ""

    def open(self) -> int:
        """Create the pty and the symlink; returns the fd to read and write."""
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self._slave)
        tmp = self.link.with_name(self.link.name + f".{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.link)
        return self.master

    def reopen(self) -> int | None:
        """A pty never goes away under us."""
        return None

    def discard_input_of_host(self) -> None:
        """Throw away what we wrote that no host read (the host is gone; it would be stale)."""
        with contextlib.suppress(OSError):
            termios.tcflush(self._slave, termios.TCIFLUSH)

    def close(self) -> None:
        """Remove the symlink (if still ours) and close the pty."""
        with contextlib.suppress(OSError):
            if os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        for fd in (self.master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = -1

    def describe(self) -> str:
        """The path to give the host."""
        return str(self.link)


class AttachedPort:
    """The board's end of an existing tty (one side of a socat pair); follows it when it comes back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd = -1

    def open(self) -> int:
        """Open the tty now; OSError if it is not there."""
        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with contextlib.suppress(termios.error):  # not a tty (a FIFO): raw bytes anyway
            tty.setraw(fd)
        self.fd = fd
        return fd

    def reopen(self) -> int | None:
        """Try to open the path again after it vanished; None while it is still gone."""
        self.close()
        try:
            return self.open()
        except OSError:
            return None

    def discard_input_of_host(self) -> None:
        """Nothing to do: the host's side flushes on open."""

    def close(self) -> None:
        """Close our end."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1

    def describe(self) -> str:
        """The path we are attached to."""
        return str(self.path)


Port = PtyPort | AttachedPort


# ---------------------------------------------------------------- microphone from a WAV file


def load_wav_16k(path: str | Path) -> bytes:
    """A WAV file as 16 kHz s16le mono PCM (mixed down and resampled when it is not already)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; give a 16-bit PCM WAV")
    if channels == 1 and rate == protocol.MIC_RATE:
        return data
    import numpy as np

    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.float32).mean(axis=1)
    if rate != protocol.MIC_RATE:
        import soxr

        samples = soxr.resample(samples, rate, protocol.MIC_RATE)
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------- displays


class LineDisplay:
    """One line per change, for logs, pipes and tests."""

    def __init__(self, out: TextIO | None = None, prefix: str = "emulator") -> None:
        self.out = out or sys.stdout
        self.prefix = prefix
        self._last: tuple[object, ...] | None = None

    def event(self, text: str) -> None:
        """Something happened (a button sent, a host said hello)."""
        self._write(f"[{self.prefix}] {text}")

    def show(self, view: View, pixels: bytes) -> None:
        """Print the view if it changed."""
        key = (view.state, view.voice, view.emotion, view.intensity, view.brightness, view.lamp, view.raw)
        if key == self._last:
            return
        self._last = key
        emotion = f"{view.emotion}({view.intensity})" if view.emotion else "-"
        lamp = ",".join(map(str, view.lamp)) if any(view.lamp) else "off"
        self._write(
            f"[{self.prefix}] state={view.state} voice={'yes' if view.voice else 'no'} "
            f"emotion={emotion} brightness={view.brightness} lamp={lamp}" + (" raw" if view.raw else "")
        )

    def _write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        """Nothing to restore."""


class TerminalDisplay(LineDisplay):
    """The LEDs as coloured blocks on one redrawn line, with the state and emotion by name."""

    MAX_SHOWN = 32

    def show(self, view: View, pixels: bytes) -> None:
        """Redraw the status line."""
        count = len(pixels) // 3
        step = max(1, -(-count // self.MAX_SHOWN))
        cells = []
        for i in range(0, count, step):
            r, g, b = pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]
            if r or g or b:
                cells.append(f"\x1b[38;2;{r};{g};{b}m██")
            else:
                cells.append("\x1b[38;2;60;60;60m··")
        label = view.state
        if view.state == "listening" and view.voice:
            label += " (voice)"
        if view.state == "speaking" and view.emotion:
            label += f" · {view.emotion}"
        if not view.host_connected:
            label += " · no host"
        line = "".join(cells) + f"\x1b[0m  {label:<34} bright {view.brightness:>3}%"
        with contextlib.suppress(OSError, ValueError):
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()

    def event(self, text: str) -> None:
        """Print above the status line."""
        with contextlib.suppress(OSError, ValueError):
            self.out.write("\r\x1b[2K" + f"[{self.prefix}] {text}\n")
            self.out.flush()

    def close(self) -> None:
        """Leave the cursor on a clean line."""
        with contextlib.suppress(OSError, ValueError):
            self.out.write("\x1b[0m\n")
            self.out.flush()


# ---------------------------------------------------------------- the emulator


KEYS = {" ": "press", "\r": "press", "\n": "press", "p": "press", "d": "double", "l": "long"}
KINDS = {"press": protocol.BUTTON_PRESS, "double": protocol.BUTTON_DOUBLE, "long": protocol.BUTTON_LONG}


class Emulator:
    """A virtual board: DeviceCore on a pty, a display, key presses as BUTTON, a WAV as MIC_AUDIO."""

    def __init__(
        self,
        port: Port,
        *,
        name: str = "emulator",
        leds: int = 12,
        button: bool = True,
        mic: bytes | None = None,
        mic_loop: bool = False,
        display: LineDisplay | None = None,
        version: int = protocol.VERSION,
        fps: int = 20,
    ) -> None:
        self.port = port
        self.name = name
        self.leds = leds
        self.button = button
        self.mic_pcm = mic
        self.mic_loop = mic_loop
        self.display = display
        self.version = version
        self.fps = fps
        self.core = self._boot()
        self.boots = 0
        self.fd = -1
        self.attached = False
        self.tx_dropped = 0
        self.mic_sent = 0
        self._out = bytearray()
        self._writer_on = False
        self._changed = asyncio.Event()
        self._last_seen: tuple[int, int, bool] = (0, -1, False)
        self._stop = asyncio.Event()

    def _boot(self) -> DeviceCore:
        return DeviceCore(
            self.name,
            self.leds,
            button=self.button,
            mic_rate=protocol.MIC_RATE if self.mic_pcm is not None else 0,
            version=self.version,  # another version pretends to be older or newer firmware
        )

    # ------------------------------------------------------------ what tests and the CLI use
    def view(self) -> View:
        """What the board shows now."""
        core = self.core
        return View(
            state=protocol.state_name(core.shown_state()),
            host_state=protocol.state_name(core.state),
            voice=core.voice,
            emotion=protocol.emotion_name(core.emotion),
            intensity=core.intensity,
            brightness=core.brightness,
            lamp=core.lamp,
            volume=core.volume,
            host_connected=core.host_ok,
            raw=core.raw is not None,
            boots=self.boots,
        )

    def pixels(self) -> bytes:
        """The LED colours now."""
        return bytes(self.core.pixels(now_ms()))

    async def wait_for(self, predicate: Callable[[View], bool], timeout: float) -> View:
        """The first view for which `predicate` holds; TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = self.view()
            if predicate(view):
                return view
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"emulator still shows {view}")
            self._changed.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    def press(self, kind: str) -> bool:
        """Press the button ("press", "double", "long"); False when no host is listening."""
        if not self.button:
            return False
        sent = self.core.press(KINDS[kind])
        self._flush()
        if self.display is not None:
            self.display.event(f"button {kind} " + ("sent" if sent else "ignored: no host"))
        return sent

    def reboot(self) -> None:
        """Press the board's reset button: it forgets everything and says HELLO again."""
        self.core = self._boot()
        self.boots += 1
        if self.display is not None:
            self.display.event("reset")
        self._flush()
        self._notice_changes()

    def stop(self) -> None:
        """End run()."""
        self._stop.set()

    # ------------------------------------------------------------ running
    async def run(self) -> None:
        """Serve the host until stop() or cancellation."""
        loop = asyncio.get_running_loop()
        try:
            self.fd = self.port.open()
        except OSError:
            if isinstance(self.port, PtyPort):
                raise
            if self.display is not None:  # a board whose cable is not plugged in yet
                self.display.event(f"waiting for {self.port.describe()}")
        else:
            self.attached = True
            self.boots = 1
            loop.add_reader(self.fd, self._readable)
            self._flush()
        tasks = [asyncio.create_task(self._ticker(), name="emulator-tick")]
        if self.mic_pcm is not None:
            tasks.append(asyncio.create_task(self._mic(), name="emulator-mic"))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._detach(loop)
            self.port.close()
            if self.display is not None:
                self.display.close()

    def _detach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)
            if self._writer_on:
                loop.remove_writer(self.fd)
        self._writer_on = False
        self._out = bytearray()
        self.attached = False

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"read failed: {exc.strerror}")
            return
        if not data:
            self._lost("end of file")
            return
        messages = self.core.receive(data, now_ms())
        if self.display is not None:
            for message in messages:
                if isinstance(message, protocol.Hello):
                    self.display.event(f"host HELLO: {message.name} (protocol {message.version})")
        self._flush()
        self._notice_changes()

    def _lost(self, reason: str) -> None:
        """Our tty went away (socat killed = cable pulled): wait for it, then boot again."""
        loop = asyncio.get_running_loop()
        self._detach(loop)
        self.port.close()
        if self.display is not None:
            self.display.event(f"unplugged ({reason}); waiting for {self.port.describe()}")
        self.core = self._boot()
        self._notice_changes()

    def _try_reattach(self) -> None:
        fd = self.port.reopen()
        if fd is None:
            return
        self.fd = fd
        self.attached = True
        self.boots += 1
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._readable)
        if self.display is not None:
            self.display.event(f"plugged in again at {self.port.describe()}")
        self._flush()
        self._notice_changes()

    def _flush(self) -> None:
        data = self.core.take_output()
        if not self.attached:
            return
        if data:
            if len(self._out) + len(data) > OUT_LIMIT:
                self.tx_dropped += len(data)  # the host is not reading: like a UART, bytes are lost
                return
            self._out.extend(data)
        self._write_some()

    def _write_some(self) -> None:
        loop = asyncio.get_running_loop()
        while self._out:
            try:
                sent = os.write(self.fd, self._out)
            except BlockingIOError:
                break
            except OSError as exc:  # EIO, ENXIO …: the tty is gone
                self._lost(f"write failed: {exc.strerror}")
                return
            del self._out[:sent]
        want_writer = bool(self._out)
        if want_writer and not self._writer_on:
            loop.add_writer(self.fd, self._write_some)
        elif not want_writer and self._writer_on:
            loop.remove_writer(self.fd)
        self._writer_on = want_writer

    def _notice_changes(self) -> None:
        core = self.core
        seen = (id(core), core.changes, core.host_ok)
        if seen != self._last_seen:
            self._last_seen = seen
            self._changed.set()

    async def _ticker(self) -> None:
        frame_every = 1.0 / max(1, self.fps)
        next_frame = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            if not self.attached:
                self._try_reattach()
            else:
                host_was_there = self.core.host_ok
                self.core.tick(now_ms())
                if host_was_there and not self.core.host_ok:  # what we wrote since is stale: drop it
                    self._out = bytearray()
                    self.port.discard_input_of_host()
                self._notice_changes()
            if self.display is not None and loop.time() >= next_frame:
                next_frame = loop.time() + frame_every
                self.display.show(self.view(), self.pixels())

    async def _mic(self) -> None:
        """Stream the WAV in 20 ms blocks at real-time pace while a host wants the microphone."""
        assert self.mic_pcm is not None
        pcm = self.mic_pcm
        silence = bytes(MIC_BLOCK_BYTES)
        pos = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not (self.attached and self.core.mic_wanted):
                await asyncio.sleep(MIC_BLOCK_MS / 1000)
                deadline = loop.time()
                continue
            if pos < len(pcm):
                block = pcm[pos : pos + MIC_BLOCK_BYTES]
                pos += len(block)
                if pos >= len(pcm) and self.mic_loop:
                    pos = 0
            else:
                block = silence
            if self.core.mic(block):
                self.mic_sent += 1
                self._flush()
            deadline += MIC_BLOCK_MS / 1000
            await asyncio.sleep(max(0.0, deadline - loop.time()))


# ---------------------------------------------------------------- key presses


class KeyReader:
    """Key presses (a terminal) or lines (a pipe) from stdin as button kinds; "q" stops."""

    def __init__(self, emulator: Emulator, stream: TextIO | None = None) -> None:
        self.emulator = emulator
        self.stream = stream or sys.stdin
        self._saved: list[Any] | None = None
        self._buffer = ""
        self._fd = -1
        self._tty = False

    def start(self) -> bool:
        """Start listening on the loop; False when there is no usable stdin."""
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError, AttributeError):
            return False
        loop = asyncio.get_running_loop()
        self._fd = fd
        self._tty = os.isatty(fd)
        if self._tty:
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        loop.add_reader(fd, self._readable)
        return True

    def stop(self) -> None:
        """Stop listening and give the terminal back as it was."""
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 256).decode("utf-8", "replace")
        except BlockingIOError:
            return
        except OSError:
            chunk = ""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self._fd)  # stdin closed: keep running
            return
        if self._tty:
            for key in chunk:
                if key in ("q", "\x04"):
                    self.emulator.stop()
                elif key == "r":
                    self.emulator.reboot()
                elif key.lower() in KEYS:
                    self.emulator.press(KEYS[key.lower()])
            return
        self._buffer += chunk
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            word = line.strip().lower()
            if word in KINDS:
                self.emulator.press(word)
            elif word in ("q", "quit"):
                self.emulator.stop()
            elif word in ("r", "reset"):
                self.emulator.reboot()
