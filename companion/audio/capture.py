"""Microphone sources that all yield 16 kHz mono s16le blocks: a PortAudio device, a WAV file, a queue.

The PortAudio callback only copies samples into a preallocated ring and wakes the loop with
`call_soon_threadsafe`; downmixing and resampling happen on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import AudioDeviceError
from .portaudio import find_device, negotiate, sounddevice
from .resample import MonoResampler
from .stream_clock import StreamClock, converter_time

RATE = 16000
BLOCK_MS = 60


class AudioSource(Protocol):
    """A microphone: `blocks()` yields 16 kHz mono s16le audio until closed."""

    overflows: int

    def blocks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...

    def healthy(self, now: float) -> bool: ...


STALL_S = 2.0  # no capture callback for this long: the device is gone


class DeviceCapture:
    """Captures from a PortAudio input device at any rate and channel count."""

    def __init__(
        self,
        device: str,
        device_rate: int = 0,
        ring_seconds: float = 2.0,
        block_ms: int = BLOCK_MS,
        input_channel: int = -1,
    ) -> None:
        """`input_channel`: which channel of a multi-channel device is the microphone (-1: their mix)."""
        self._sd = sounddevice()
        self._device = find_device(device, "input")
        self.rate, self.channels = negotiate(self._device, "input", device_rate or RATE)
        if input_channel >= self.channels:
            raise AudioDeviceError(
                f"audio.input_channel = {input_channel}, but {self._device.name!r} opens with "
                f"{self.channels} channel(s): use 0-{self.channels - 1}, or -1 for their mix"
            )
        self._pick = input_channel if input_channel >= 0 and self.channels > 1 else None
        block = self.rate * block_ms // 1000
        self._block = block
        self._ring = np.zeros((int(self.rate * ring_seconds) // block * block, self.channels), dtype=np.int16)
        self._written = 0  # callback thread
        self._read = 0  # loop
        self.overflows = 0  # blocks dropped because the loop fell a whole ring behind
        self.device_overflows = 0  # callbacks PortAudio flagged: the device dropped input before us
        self._resampler = MonoResampler(self.rate, RATE)
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.last_callback = time.monotonic()
        self._stream: Any = None
        self._closed = False
        self.clock = StreamClock(self.rate)  # when each captured sample met the ADC (for echo cancelling)
        self.block_time: float | None = None  # that time for the first sample of the block just yielded

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.device_overflows += 1
        self.clock.mark(self._written, converter_time(time_info, "inputBufferAdcTime", -frames / self.rate))
        ring = self._ring
        start = self._written % len(ring)
        first = min(frames, len(ring) - start)
        ring[start : start + first] = indata[:first]
        if frames > first:
            ring[: frames - first] = indata[first:]
        self._written += frames
        self.last_callback = time.monotonic()
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        """Open and start the input stream."""
        try:
            self._stream = self._sd.InputStream(
                device=self._device.index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self._block,
                callback=self._callback,
            )
            self._stream.start()
        except Exception as exc:
            raise AudioDeviceError(f"cannot open input device {self._device.name!r}: {exc}") from None

    async def blocks(self) -> AsyncIterator[bytes]:
        """Resampled blocks as they arrive."""
        if self._stream is None:
            self.start()
        ring = self._ring
        while not self._closed:
            try:
                async with asyncio.timeout(STALL_S):  # not wait_for: on 3.11 it can swallow a cancellation
                    await self._wake.wait()
            except TimeoutError:  # the callback stopped: the device is gone or its sound server died
                raise AudioDeviceError(
                    f"input device {self._device.name!r} stopped delivering audio for {STALL_S:g} s "
                    "(unplugged, or its sound server stopped?)"
                ) from None
            self._wake.clear()
            written = self._written
            if written - self._read > len(ring):  # the loop fell behind by a whole ring: drop the oldest
                self.overflows += 1
                self._read = written - len(ring) + self._block
            while self._read < written:
                start = self._read % len(ring)
                n = min(written - self._read, len(ring) - start)
                chunk = ring[start : start + n]
                self.block_time = self.clock.time_of(self._read)
                self._read += n
                out = self._resampler.process(chunk if self._pick is None else chunk[:, self._pick])
                if len(out):
                    yield out.tobytes()

    async def close(self) -> None:
        """Stop the stream."""
        self._closed = True
        self._wake.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)

    def healthy(self, now: float) -> bool:
        """False when the callback stopped arriving (device gone or PortAudio stuck)."""
        return self._stream is None or now - self.last_callback < 2.0


def read_wav_16k_mono(path: str | Path) -> bytes:
    """A WAV file's audio as 16 kHz mono s16le; raises AudioDeviceError for unreadable files."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(f"{path}: cannot read as WAV: {exc}") from None
    if width != 2:
        raise AudioDeviceError(f"{path}: need 16-bit PCM WAV, this one has {8 * width}-bit samples")
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
    return MonoResampler(rate, RATE).process(samples, last=True).astype("<i2").tobytes()


class WavSource:
    """Plays a WAV file as the microphone, paced in real time, then silence (as a quiet room would)."""

    def __init__(self, path: str | Path, lead_silence_ms: int = 300, loop_file: bool = False) -> None:
        self.path = Path(path)
        self._audio = read_wav_16k_mono(path)
        self._lead = bytes(RATE * 2 * lead_silence_ms // 1000)
        self._loop_file = loop_file
        self.overflows = 0
        self.last_callback = time.monotonic()
        self._closed = False
        self.finished = asyncio.Event()

    async def blocks(self) -> AsyncIterator[bytes]:
        """Blocks of BLOCK_MS, one per BLOCK_MS of wall-clock time."""
        loop = asyncio.get_running_loop()
        step = RATE * 2 * BLOCK_MS // 1000
        silence = bytes(step)
        data = self._lead + self._audio
        pos = 0
        deadline = loop.time()
        while not self._closed:
            if pos < len(data):
                block = data[pos : pos + step].ljust(step, b"\0")
                pos += step
            else:
                self.finished.set()
                if self._loop_file:
                    pos = 0
                block = silence
            self.last_callback = time.monotonic()
            yield block
            deadline += BLOCK_MS / 1000
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def close(self) -> None:
        """Stop producing."""
        self._closed = True

    def healthy(self, now: float) -> bool:
        """A file never fails."""
        return True


class QueueSource:
    """Audio pushed from elsewhere (the ESP32 bridge's MIC_AUDIO), already 16 kHz mono s16le."""

    def __init__(self, max_blocks: int = 100) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_blocks)
        self.overflows = 0
        self.last_callback = time.monotonic()
        self._closed = False

    def push(self, pcm: bytes) -> None:
        """Add audio; the oldest block is dropped (and counted) when the queue is full."""
        if self._queue.full():
            self._queue.get_nowait()
            self.overflows += 1
        self._queue.put_nowait(pcm)
        self.last_callback = time.monotonic()

    async def blocks(self) -> AsyncIterator[bytes]:
        """Blocks as they arrive."""
        while not self._closed:
            block = await self._queue.get()
            if block:
                yield block

    async def close(self) -> None:
        """Stop producing."""
        self._closed = True
        self._queue.put_nowait(b"")

    def healthy(self, now: float) -> bool:
        """A bridge microphone may be silent while unplugged; the bridge reports that itself."""
        return True
