"""The speaker: a jitter buffer in front of a PortAudio output stream, or a real-time-paced WAV writer.

The output stream is opened when a reply starts and closed once it has drained, so an idle daemon runs
no playback callback at all. The PortAudio callback only copies samples out of the ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import AudioDeviceError, ConfigError
from .jitter import JitterBuffer
from .portaudio import find_device, negotiate, sounddevice
from .resample import MonoResampler
from .stream_clock import converter_time

log = logging.getLogger(__name__)

BLOCK_MS = 10
# What PortAudio keeps queued at the device. "low" (about one 10 ms block) underruns whenever the
# callback's thread waits a little for the GIL on a busy or slow machine (a Pi Zero 2, or a loaded
# CI runner): every underrun is a click. 60 ms absorbs that, at 60 ms more to the ear.
OUTPUT_LATENCY_S = 0.06
CAPACITY_S = 30  # back-pressure beyond this: a long reply is fetched no faster than it plays


class AudioSink(Protocol):
    """Where the spoken reply goes; audio is s16le mono at `rate`."""

    rate: int
    buffer: JitterBuffer
    gain: float

    def begin(self) -> None: ...

    async def write(self, pcm: bytes) -> None: ...

    def end(self) -> None: ...

    def flush(self) -> None: ...

    async def wait_drained(self, timeout: float) -> bool: ...

    async def close(self) -> None: ...

    async def shutdown(self) -> None: ...

    def healthy(self, now: float) -> bool: ...


class _SinkBase:
    """What device and file sinks share: the ring, resampling, drained signalling."""

    def __init__(self, rate: int, out_rate: int, prebuffer_ms: int) -> None:
        self.rate = rate
        self.out_rate = out_rate
        self.buffer = JitterBuffer(out_rate * CAPACITY_S, out_rate * prebuffer_ms // 1000)
        self.buffer.rate = out_rate
        self._resampler = MonoResampler(rate, out_rate)
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop = asyncio.get_running_loop()
        self.buffer.on_drained = self._on_drained_thread
        self.last_callback = time.monotonic()
        self.active = False
        self.gain = 1.0  # volume: applied as audio is queued

    def _on_drained_thread(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._drained.set)

    def begin(self) -> None:
        """A reply starts: open the output and reset the first-sample clock."""
        self.buffer.reset_stream()
        self._drained.clear()
        self._open()

    def _open(self) -> None:
        self.active = True

    async def write(self, pcm: bytes) -> None:
        """Queue audio, waiting (back-pressure) while the ring is full."""
        if not self.active:
            self.begin()
        samples = self._resampler.process(np.frombuffer(pcm, dtype=np.int16))
        if self.gain != 1.0:
            samples = (samples * self.gain).astype(np.int16)
        arrival = time.monotonic()
        while len(samples):
            taken = self.buffer.push(samples, arrival)
            samples = samples[taken:]
            if len(samples):
                await asyncio.sleep(BLOCK_MS / 1000)
        self._drained.clear()

    def end(self) -> None:
        """No more audio for this reply; what is buffered plays out, then the sink drains."""
        tail = self._resampler.process(np.zeros(0, dtype=np.int16), last=True)
        if len(tail):
            self.buffer.push(tail)
        self._resampler.clear()
        self.buffer.end_of_stream()
        if not self.active:
            self._drained.set()

    def flush(self) -> None:
        """Stop at once: drop all unplayed audio."""
        self.buffer.flush()
        self._resampler.clear()
        if not self.active:
            self._drained.set()

    async def wait_drained(self, timeout: float) -> bool:
        """True once the reply has played out (or was flushed); False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def healthy(self, now: float) -> bool:
        """False when the output is open but its callback has stopped running."""
        return not self.active or now - self.last_callback < 2.0

    async def close(self) -> None:
        """Release the output until the next reply."""
        self.active = False

    async def shutdown(self) -> None:
        """Release everything at exit."""
        await self.close()


class DeviceSpeaker(_SinkBase):
    """Plays through a PortAudio output device."""

    def __init__(self, device: str, rate: int, prebuffer_ms: int, device_rate: int = 0) -> None:
        self._device = find_device(device, "output")
        self._sd = sounddevice()
        out_rate, self._channels = negotiate(self._device, "output", device_rate or rate)
        super().__init__(rate, out_rate, prebuffer_ms)
        self._stream: Any = None
        self._block = out_rate * BLOCK_MS // 1000
        self.device_underflows = 0  # callbacks PortAudio flagged: the device ran dry (a click)
        # the echo canceller's reference: every block played, with the time it reaches the DAC
        self.echo_tap: Callable[[np.ndarray, float], None] | None = None

    def _open(self) -> None:
        if self._stream is not None:
            self.active = True
            return
        try:
            stream = self._sd.OutputStream(
                device=self._device.index,
                samplerate=self.out_rate,
                channels=self._channels,
                dtype="int16",
                blocksize=self._block,
                latency=OUTPUT_LATENCY_S,
                callback=self._callback,
            )
            stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot open output device {self._device.name!r}: {exc}") from None
        self._stream = stream
        self.active = True

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.output_underflow:
            self.device_underflows += 1
        self.last_callback = time.monotonic()
        self.buffer.pull(outdata[:, 0])
        if self._channels > 1:
            outdata[:, 1:] = outdata[:, :1]
        tap = self.echo_tap
        if tap is not None:
            tap(outdata[:, 0], converter_time(time_info, "outputBufferDacTime", OUTPUT_LATENCY_S))

    async def close(self) -> None:
        """Close the output stream (idle: no callback runs)."""
        stream, self._stream = self._stream, None
        self.active = False
        if stream is not None:
            await asyncio.to_thread(stream.close)


class WavSpeaker(_SinkBase):
    """Writes what the speaker would play to a WAV file, pulled in real time like a sound card."""

    def __init__(self, path: str | Path, rate: int, prebuffer_ms: int) -> None:
        super().__init__(rate, rate, prebuffer_ms)
        self.path = Path(path)
        try:
            self._file = self.path.open("wb")  # opened here, so a bad path leaves no half-made writer
        except OSError as exc:
            raise ConfigError(
                f"audio.output: cannot write the WAV file {str(self.path)!r}: {exc.strerror or exc}"
                + (" (its folder must exist)" if not self.path.parent.is_dir() else "")
            ) from None
        self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in shutdown()
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._task: asyncio.Task[None] | None = None
        self._block = np.zeros(rate * BLOCK_MS // 1000, dtype=np.int16)

    def _open(self) -> None:
        self.active = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pace(), name="wav-speaker")

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        period = BLOCK_MS / 1000
        deadline = loop.time()
        while self.active:
            self.last_callback = time.monotonic()
            self.buffer.pull(self._block)
            self._wav.writeframes(self._block.tobytes())
            deadline += period
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def close(self) -> None:
        """Stop the pacing task; the file stays open for the next reply until shutdown()."""
        self.active = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shutdown(self) -> None:
        """Close the file."""
        await self.close()
        self._wav.close()
        self._file.close()
