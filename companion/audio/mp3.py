"""MP3 decoding while the file downloads: bytes in as they arrive, s16le mono PCM at a chosen rate out.

miniaudio decodes; it is always given `nchannels=1` and the stream's own `sample_rate` (its defaults
are stereo 44.1 kHz), and soxr converts to the output rate. The decoder pulls bytes through a blocking
read callback, so it runs in a worker thread; the event loop feeds it and receives PCM blocks back with
`call_soon_threadsafe`. Each file is cut gaplessly: the LAME/Info frame is never decoded, and the
encoder delay and padding it declares (plus the decoder's fixed 529 samples) are trimmed, so sentences
join without the ~70 ms of silence an MP3 otherwise carries at its ends. A 3 ms fade at both ends keeps
a cut (a download that stops mid-word) from clicking.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import miniaudio
import numpy as np

from .resample import MonoResampler

DECODER_DELAY = 529  # samples every Layer III decoder outputs before the first encoded sample
HEAD_LIMIT = 256 * 1024  # bytes searched for the first frame (ID3 tags with pictures can be large)
FADE_MS = 3.0
FIRST_BLOCK_MS = 20  # small first block: the sentence starts as early as possible
BLOCK_MS = 100

_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_BITRATES_V1_L3 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_V2_L3 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


class Mp3Error(Exception):
    """The data is not a decodable MP3, or breaks a limit; the message says which."""


@dataclass(frozen=True)
class Mp3Limits:
    """What one file may cost: bytes downloaded, seconds of audio decoded, seconds of wall time."""

    max_bytes: int = 2_000_000
    max_audio_s: float = 120.0
    timeout_s: float = 30.0  # from the first byte asked for to the last sample handed out


@dataclass(frozen=True)
class StreamStart:
    """What the first frame says: where the audio starts and how much to trim for gapless joins."""

    sample_rate: int
    channels: int
    audio_offset: int  # where the first audio frame starts (after ID3 tags and the Info frame)
    skip_start: int  # samples to drop at the start (encoder delay + decoder delay)
    skip_end: int  # samples to drop at the end (encoder padding - decoder delay)
    id3_bytes: int  # ID3v2 tag bytes before the first frame (for logs)


def _frame_header(data: bytes | bytearray, pos: int) -> tuple[int, int, int, int, int] | None:
    """(sample rate, channels, frame bytes, samples per frame, side-info offset) of a Layer III header."""
    if pos + 4 > len(data):
        return None
    b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
    if data[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
        return None
    version = (b1 >> 3) & 3
    layer = (b1 >> 1) & 3
    bitrate_index = b2 >> 4
    rate_index = (b2 >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, free format or not Layer III: not a frame we can use
    rate = _SAMPLE_RATES[version][rate_index]
    mpeg1 = version == 3
    bitrate = (_BITRATES_V1_L3 if mpeg1 else _BITRATES_V2_L3)[bitrate_index] * 1000
    padding = (b2 >> 1) & 1
    channels = 1 if (b3 >> 6) == 3 else 2
    samples = 1152 if mpeg1 else 576
    length = (144 if mpeg1 else 72) * bitrate // rate + padding
    side_info = (32 if channels == 2 else 17) if mpeg1 else (17 if channels == 2 else 9)
    crc = 0 if (b1 & 1) else 2
    return rate, channels, length, samples, 4 + crc + side_info


def parse_stream_start(data: bytes, final: bool = False) -> StreamStart | None:
    """Read the start of an MP3; None when more bytes are needed, Mp3Error when it is not an MP3.

    `final`: `data` is the whole file, so a frame that runs to its end needs no frame after it.
    """
    pos = 0
    while data[pos : pos + 3] == b"ID3":
        if len(data) < pos + 10:
            if final:
                raise Mp3Error("the file ends inside its ID3 tag")
            return None
        size = 0
        for byte in data[pos + 6 : pos + 10]:
            size = (size << 7) | (byte & 0x7F)
        footer = 10 if data[pos + 5] & 0x10 else 0
        pos += 10 + size + footer
    id3 = pos
    if len(data) < pos + 4:
        if final:
            raise Mp3Error(f"no MP3 frame in {len(data)} bytes ({_describe_head(data)})")
        return None
    start = pos
    while True:
        start = data.find(b"\xff", start)  # every frame starts with 0xFF: skip what cannot
        if start < 0 or start + 4 > len(data) or start - id3 >= HEAD_LIMIT:
            if len(data) - id3 >= HEAD_LIMIT:
                raise Mp3Error(f"no MP3 frame in the first {HEAD_LIMIT // 1024} KiB ({_describe_head(data)})")
            if final:
                raise Mp3Error(f"no MP3 frame in {len(data)} bytes ({_describe_head(data)})")
            return None
        header = _frame_header(data, start)
        # A real first frame is followed by another one (or by the end of what we have so far).
        if header is not None:
            following = start + header[2]
            if following + 4 > len(data):
                if final and following <= len(data):
                    break
                if not final and len(data) - id3 < HEAD_LIMIT:
                    return None
            elif _frame_header(data, following) is not None:
                break
        start += 1
    rate, channels, length, _samples, xing = _frame_header(data, start) or (0, 0, 0, 0, 0)
    skip_start, skip_end, offset = DECODER_DELAY, 0, start
    if data[start + xing : start + xing + 4] in (b"Xing", b"Info"):
        # The tag frame holds no audio. It is cut out, so that no decoder build can treat it its own
        # way (play it as silence, or trim the gap itself): what the decoder outputs is then always
        # delay + 529 samples, the audio, padding - 529 samples.
        delay, padding = _lame_gapless(data, start + xing)
        skip_start = delay + DECODER_DELAY
        skip_end = max(0, padding - DECODER_DELAY)
        offset = start + length
    return StreamStart(rate, channels, offset, skip_start, skip_end, id3)


def _lame_gapless(data: bytes, tag: int) -> tuple[int, int]:
    """(encoder delay, padding) from a LAME extension after a Xing/Info tag; (0, 0) without one."""
    flags = int.from_bytes(data[tag + 4 : tag + 8], "big")
    pos = tag + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2) + 100 * bool(flags & 4) + 4 * bool(flags & 8)
    encoder = data[pos : pos + 4]
    if len(data) < pos + 24 or not encoder.isalnum():
        return 0, 0
    b0, b1, b2 = data[pos + 21], data[pos + 22], data[pos + 23]
    return (b0 << 4) | (b1 >> 4), ((b1 & 0x0F) << 8) | b2


def _describe_head(data: bytes) -> str:
    head = data[:16]
    if head.lstrip().startswith((b"<", b"{")):
        return "it looks like an HTML or JSON page"
    return f"starts with {head[:8].hex()}"


class _Feed(miniaudio.StreamableSource):
    """The decoder's input: one whole frame per read, waiting for it to arrive; b'' only at the end.

    The decoder asks for more input before every frame and takes an empty read as the end of the
    stream; and given a buffer that stops inside a frame, minimp3 resets itself and throws the buffer
    away. Handing out exactly one whole frame per read, and waiting for it, avoids both on a slow
    download. It keeps what it received (a file is small and bounded by Mp3Limits.max_bytes) so the
    decoder can seek back after probing the first bytes; the end is unknown while downloading, so
    seeking from the end is refused.
    """

    def __init__(self, cancelled: threading.Event) -> None:
        self._data = bytearray()
        self._pos = 0
        self._ends: list[int] = []  # end offset of each whole frame received so far
        self._scan = 0  # where the next frame header is expected
        self._unframed = False  # junk or free format: hand out whatever arrived, the decoder resyncs
        self._ended = False
        self._cond = threading.Condition()
        self._cancelled = cancelled

    def put(self, data: bytes) -> None:
        with self._cond:
            self._data += data
            while not self._unframed and self._scan + 4 <= len(self._data):
                header = _frame_header(self._data, self._scan)
                if header is None:
                    self._unframed = True
                elif self._scan + header[2] <= len(self._data):
                    self._scan += header[2]
                    self._ends.append(self._scan)
                else:
                    break
            self._cond.notify()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    def read(self, num_bytes: int) -> bytes:
        with self._cond:
            while True:
                if self._cancelled.is_set():
                    return b""
                i = bisect.bisect_right(self._ends, self._pos)
                if i < len(self._ends):
                    end = self._ends[i]
                    break
                if self._ended or (self._unframed and self._pos < len(self._data)):
                    end = len(self._data)
                    break
                self._cond.wait()
            out = bytes(self._data[self._pos : min(end, self._pos + num_bytes)])
            self._pos += len(out)
            return out

    def seek(self, offset: int, origin: miniaudio.SeekOrigin) -> bool:
        with self._cond:
            if origin == miniaudio.SeekOrigin.START:
                target = offset
            elif origin == miniaudio.SeekOrigin.CURRENT:
                target = self._pos + offset
            else:
                return False
            if target < 0:
                return False
            self._pos = target
            return True


class _Shaper:
    """Trims the gapless lead and tail, converts the rate and fades both ends (runs in the worker)."""

    def __init__(self, start: StreamStart, rate: int) -> None:
        self._lead = start.skip_start
        self._tail_len = start.skip_end
        self._resampler = MonoResampler(start.sample_rate, rate)
        self._fade = max(1, int(rate * FADE_MS / 1000))
        self._faded_in = False
        self._held = np.zeros(0, dtype=np.int16)  # output kept back for the fade-out
        self._tail = np.zeros(0, dtype=np.int16)  # input kept back in case it is the padding

    def feed(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._lead:
            cut = min(self._lead, len(block))
            block = block[cut:]
            self._lead -= cut
        if self._tail_len:
            block = np.concatenate([self._tail, block])
            keep = min(self._tail_len, len(block))
            self._tail = block[len(block) - keep :]
            block = block[: len(block) - keep]
        out = self._resampler.process(block, last=last)
        if not self._faded_in and len(out):
            out = out.copy()
            n = min(self._fade, len(out))
            out[:n] = (out[:n] * np.linspace(0.0, 1.0, n, endpoint=False)).astype(np.int16)
            self._faded_in = True
        out = np.concatenate([self._held, out])
        if last:
            n = min(self._fade, len(out))
            out = out.copy()
            out[len(out) - n :] = (out[len(out) - n :] * np.linspace(1.0, 0.0, n)).astype(np.int16)
            self._held = out[:0]
            return out
        self._held = out[max(0, len(out) - self._fade) :]
        return out[: max(0, len(out) - self._fade)]


@dataclass
class DecodeResult:
    """What the worker did: samples handed out, and the error that stopped it, if any."""

    samples: int = 0
    error: str = ""


def _decode_worker(
    feed: _Feed,
    start: StreamStart,
    rate: int,
    emit: Callable[[bytes], None],
    limits: Mp3Limits,
    cancelled: threading.Event,
) -> DecodeResult:
    result = DecodeResult()
    shaper = _Shaper(start, rate)
    max_samples = int(limits.max_audio_s * rate)
    first = max(1, start.sample_rate * FIRST_BLOCK_MS // 1000)
    block = max(1, start.sample_rate * BLOCK_MS // 1000)
    try:
        frames = miniaudio.stream_any(
            feed,
            miniaudio.FileFormat.MP3,
            miniaudio.SampleFormat.SIGNED16,
            nchannels=1,
            sample_rate=start.sample_rate,
            frames_to_read=block,
        )
        want = first
        while not cancelled.is_set():
            try:
                samples: array.array[int] = frames.send(want)
            except StopIteration:
                break
            want = block
            out = shaper.feed(np.frombuffer(samples, dtype=np.int16))
            if len(out):
                result.samples += len(out)
                emit(out.tobytes())
            if result.samples > max_samples:
                result.error = f"longer than {limits.max_audio_s:g} s of audio"
                return result
        if not cancelled.is_set():
            out = shaper.feed(np.zeros(0, dtype=np.int16), last=True)
            if len(out):
                result.samples += len(out)
                emit(out.tobytes())
    except (miniaudio.MiniaudioError, ValueError) as exc:
        result.error = f"MP3 decoding failed ({exc})"
    return result


async def stream_decode(
    chunks: AsyncIterable[bytes],
    rate: int,
    on_pcm: Callable[[bytes], None],
    *,
    limits: Mp3Limits | None = None,
    executor: Executor | None = None,
) -> float:
    """Decode an MP3 while its bytes arrive; `on_pcm` gets s16le mono blocks at `rate`, on the loop.

    The first block is handed out as soon as the first frames decode. Returns the seconds of audio
    handed out. Raises Mp3Error for data that is not MP3, a broken stream or a broken limit; audio
    handed out before the error stays handed out. Cancelling stops the worker at once and hands out
    nothing more.
    """
    limits = limits or Mp3Limits()
    loop = asyncio.get_running_loop()
    cancelled = threading.Event()
    feed = _Feed(cancelled)

    def deliver(pcm: bytes) -> None:
        if not cancelled.is_set():
            on_pcm(pcm)

    def emit(pcm: bytes) -> None:
        loop.call_soon_threadsafe(deliver, pcm)

    def launch(start: StreamStart) -> asyncio.Future[DecodeResult]:
        return loop.run_in_executor(executor, _decode_worker, feed, start, rate, emit, limits, cancelled)

    source = aiter(chunks)
    try:
        async with asyncio.timeout(limits.timeout_s):
            result = await _pump(source, feed, limits, launch)
    except TimeoutError:
        cancelled.set()
        feed.end()
        raise Mp3Error(f"took longer than {limits.timeout_s:g} s") from None
    except BaseException:
        cancelled.set()
        feed.end()  # wakes a worker waiting for bytes
        raise
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()  # an HTTP body left early (a limit was hit): release the connection
    if result.error:
        cancelled.set()
        raise Mp3Error(result.error)
    if not result.samples:
        raise Mp3Error("no audio in the file")
    return result.samples / rate


async def _pump(
    source: AsyncIterator[bytes],
    feed: _Feed,
    limits: Mp3Limits,
    launch: Callable[[StreamStart], asyncio.Future[DecodeResult]],
) -> DecodeResult:
    """Feed the downloaded bytes to the worker (launched once the first frame is known); its result."""
    head = bytearray()
    total = 0
    start: StreamStart | None = None
    worker: asyncio.Future[DecodeResult] | None = None
    async for chunk in source:
        if not chunk:
            continue
        total += len(chunk)
        if total > limits.max_bytes:
            raise Mp3Error(f"larger than {limits.max_bytes} bytes")
        if start is None:
            head += chunk
            start = parse_stream_start(bytes(head))
            if start is None:
                continue
            feed.put(bytes(head[start.audio_offset :]))
            worker = launch(start)
            head.clear()
        else:
            feed.put(chunk)
        if worker is not None and worker.done():
            break  # the worker stopped early (a limit or a decoding error)
    if start is None:
        if not head:
            raise Mp3Error("empty file")
        start = parse_stream_start(bytes(head), final=True)
        assert start is not None  # final=True answers or raises
        feed.put(bytes(head[start.audio_offset :]))
        worker = launch(start)
    feed.end()
    assert worker is not None
    result = await worker
    # Blocks emitted by the worker are queued on the loop ahead of this point; let them through.
    await asyncio.sleep(0)
    return result
