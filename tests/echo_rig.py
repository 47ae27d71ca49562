"""A speaker build on the test PulseAudio: the daemon's own voice comes back into its microphone.

Shared by tests/test_echo.py, bench/bench_aec.py and bench/barge_in.py. The echo server says each
utterance back, so a reply is speech: without cancellation the microphone hears a voice during every reply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from companion.audio.capture import DeviceCapture
from tests.daemon_process import DaemonProcess
from tests.peers.pulse import PulseServer
from tests.peers.xiaozhi_echo import EchoPeer

QUIET_AFTER_REPLY_S = 2.5  # a self-started turn would have ended (500 ms server hangover) and been heard
RATE = 16000
ONSET_LEVEL = 0.02  # a clip begins at its first sample above this fraction of its peak
MATCH = 0.5  # normalised correlation above which the clip is taken to be in the capture (0.99 seen)


def sent_count(server: EchoPeer, kind: str, state: str | None = None) -> int:
    """Text frames of `kind` (and tts `state`) the server sent."""
    count = 0
    for record in server.records:
        for _, text in record.sent:
            message = json.loads(text)
            if message.get("type") == kind and (state is None or message.get("state") == state):
                count += 1
    return count


def abort_times(server: EchoPeer) -> list[float]:
    """When each `abort` from the device arrived."""
    return [
        when
        for record in server.records
        for when, text in record.received
        if json.loads(text).get("type") == "abort"
    ]


def read_clip(wav: Path) -> np.ndarray:
    """A 16 kHz mono WAV's samples."""
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels()) == (RATE, 1), f"{wav}: want 16 kHz mono"
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


class MicTap:
    """The microphone the daemon hears, captured in this process as well (a second client of the same
    source), each block with the time its first sample was captured (PortAudio's converter time, on the
    clock the daemon's canceller uses). `onset` finds when a clip played into the microphone really
    began to be heard: what comes before (the player's start-up, a few ms, and the clip's own silence
    before the voice: 55 ms in espeak-ng's "Please stop now") is then not counted as the device's."""

    def __init__(self, keep_s: float = 30.0) -> None:
        self._blocks: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=int(keep_s * 50))
        self._capture: DeviceCapture | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> MicTap:
        capture = DeviceCapture("default", block_ms=20)
        self._capture = capture

        async def run() -> None:
            async for block in capture.blocks():
                if capture.block_time is not None:
                    self._blocks.append((capture.block_time, np.frombuffer(block, dtype=np.int16)))

        self._task = asyncio.create_task(run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._capture is not None:
            await self._capture.close()

    async def heard_until(self, when: float, timeout: float = 3.0) -> None:
        """Wait until the capture has reached `when` (monotonic)."""
        deadline = time.monotonic() + timeout
        while not self._blocks or self._blocks[-1][0] + len(self._blocks[-1][1]) / RATE < when:
            if time.monotonic() > deadline:
                raise AssertionError("the test's own capture of the microphone stopped")
            await asyncio.sleep(0.02)

    def onset(self, clip: np.ndarray, after: float) -> float | None:
        """When `clip`, played into the microphone after `after` (monotonic), began to be captured: the
        capture time of its first sample above ONSET_LEVEL of its peak. Found by normalised correlation
        with the capture (which also holds the reply's echo); None when it is not there."""
        blocks = [(t, b) for t, b in self._blocks if t + len(b) / RATE > after]
        if not blocks:
            return None
        heard = np.concatenate([b for _, b in blocks]).astype(np.float64)
        starts = np.cumsum([0] + [len(b) for _, b in blocks])
        wanted = clip.astype(np.float64)
        if len(heard) < len(wanted):
            return None
        size = 1 << int(np.ceil(np.log2(len(heard) + len(wanted))))
        dot = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(wanted, size)), size)
        dot = dot[: len(heard) - len(wanted) + 1]
        energy = np.concatenate([[0.0], np.cumsum(heard**2)])
        local = np.sqrt(np.maximum(energy[len(wanted) :] - energy[: -len(wanted)], 1e-9))
        score = dot / (local * np.linalg.norm(wanted) + 1e-9)
        at = int(np.argmax(score))
        if score[at] < MATCH:
            return None
        first = at + int(np.flatnonzero(np.abs(wanted) > ONSET_LEVEL * np.abs(wanted).max())[0])
        index = int(np.searchsorted(starts, first, side="right")) - 1
        return blocks[index][0] + (first - starts[index]) / RATE


@dataclass(frozen=True)
class BargeIn:
    """One try at talking over a reply."""

    playing: bool  # the reply was still playing when the voice began (it had not stopped itself)
    latency_s: float | None  # the voice's onset in the microphone → `abort` at the server; None: no abort
    lead_s: float  # the player launched → the voice's onset in the microphone (not the device's)
    decided_s: float | None = None  # the onset → the daemon's "voice barge-in" log line (ms stamps)


def log_time(line: str) -> float | None:
    """The monotonic time of a daemon log line, from its wall-clock stamp (ms)."""
    try:
        stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None
    return stamp - (time.time() - time.monotonic())


@dataclass
class EchoRig:
    """The daemon under test, its server, the sound rig, and the test's own ear on the microphone."""

    pulse: PulseServer
    server: EchoPeer
    daemon: DaemonProcess
    tap: MicTap
    onsets: list[float] = field(default_factory=list)  # of the voices `barge_in` played

    def lines_with(self, needle: str) -> int:
        return sum(needle in line for line in self.daemon.lines)

    async def wait_lines(self, needle: str, more_than: int, timeout: float) -> bool:
        """True once more than `more_than` lines contain `needle`."""
        deadline = time.monotonic() + timeout
        while self.lines_with(needle) <= more_than:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def settle(self, quiet_s: float = 2.0, timeout: float = 30.0) -> None:
        """Wait until the device is idle and has started no reply for `quiet_s` (the barge-in turn's
        own reply has played out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = len(self.daemon.lines)
            await asyncio.sleep(quiet_s)
            fresh = self.daemon.lines[lines:]
            if not any("→ speaking" in line or "→ listening" in line for line in fresh):
                last = [line for line in self.daemon.lines if "state:" in line][-1:]
                if last and last[0].endswith("→ idle"):
                    return

    async def say(self, wav: Path) -> None:
        """The user says `wav` and the device starts speaking its reply."""
        speaking = self.lines_with("→ speaking")
        await asyncio.to_thread(self.pulse.play_into_mic(wav).wait, 15)
        if not await self.wait_lines("→ speaking", speaking, 15):
            raise AssertionError("no reply started:\n" + self.daemon.output())

    async def reply_heard_only_by_the_user(self, wav: Path) -> bool:
        """One turn; True when its reply played to the end with no barge-in and no turn of its own."""
        heard, barged = sent_count(self.server, "stt"), self.lines_with("voice barge-in")
        stops = sent_count(self.server, "tts", "stop")
        await self.say(wav)
        deadline = time.monotonic() + 20
        while sent_count(self.server, "tts", "stop") <= stops and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(QUIET_AFTER_REPLY_S)
        return self.lines_with("voice barge-in") == barged and sent_count(self.server, "stt") == heard + 1

    def state_at(self, when: float) -> str | None:
        """The device state the daemon had logged by `when` (monotonic)."""
        state = None
        for line in self.daemon.lines:
            if "state:" in line and "→" in line:
                at = log_time(line)
                if at is not None and at <= when:
                    state = line.rsplit("→", 1)[1].strip()
        return state

    async def barge_in(self, reply_wav: Path, voice_wav: Path, after_s: float = 0.6) -> BargeIn:
        """The user talks over the reply `after_s` into it. The latency runs from the voice's onset as
        the microphone captured it (the tap) to the first `abort` at the server after it."""
        clip = read_clip(voice_wav)
        before = len(abort_times(self.server))
        await self.say(reply_wav)
        await asyncio.sleep(after_s)
        launched = time.monotonic()
        player = self.pulse.play_into_mic(voice_wav)
        deadline = launched + 3.0
        while not any(t > launched for t in abort_times(self.server)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(player.wait, 15)
        await self.tap.heard_until(time.monotonic())
        onset = self.tap.onset(clip, launched)
        if onset is None:
            raise AssertionError("the voice played into the microphone is not in its capture")
        aborts = abort_times(self.server)[before:]
        # Still speaking at the onset (the daemon logs a change within a block of making it), and no
        # abort before it: the reply had neither interrupted itself nor ended when the voice began.
        playing = self.state_at(onset) == "speaking" and not any(t <= onset for t in aborts)
        after = [t - onset for t in aborts if t > onset]
        latency = after[0] if after and after[0] < 3.0 else None
        decided = self._barge_ins_between(onset, onset + (latency or 0.0) + 0.01)
        self.onsets.append(onset)
        await self.settle()
        return BargeIn(playing, latency, onset - launched, decided[0] - onset if decided else None)

    def _barge_ins_between(self, start: float, stop: float) -> list[float]:
        times = (log_time(line) for line in self.daemon.lines if "voice barge-in" in line)
        return [t for t in times if t is not None and start - 0.002 <= t <= stop]

    def barge_ins_not_by_the_user(self) -> int:
        """Voice barge-ins the daemon logged since the first `barge_in` that no voice of it caused: a
        reply (typically the barge-in turn's own, which starts ~2 s after the voice) that interrupted
        itself."""
        if not self.onsets:
            return 0
        times = self._barge_ins_between(self.onsets[0], float("inf"))
        return sum(not any(onset - 0.002 <= t <= onset + 1.0 for onset in self.onsets) for t in times)


@contextlib.asynccontextmanager
async def speaker_build(
    pulse: PulseServer,
    state_dir: Path,
    echo: str = "aec",
    delay_ms: int = 100,
    gain_db: float = -6.0,
    extra: tuple[str, ...] = (),
) -> AsyncIterator[EchoRig]:
    """The daemon running with `audio.echo = echo` while its speaker is heard by its microphone."""
    async with EchoPeer(port=0) as server:
        with pulse.speaker_heard_by_mic(delay_ms, gain_db):
            daemon = await DaemonProcess(
                "run", "--input", "default", "--output", "default", "--set", f"audio.echo={echo}",
                "--set", f'xiaozhi.websocket_url="{server.websocket_url}"', "--set", "xiaozhi.settle_ms=200",
                "--set", "xiaozhi.listen_mode=manual", "--set", "telemetry.enabled=false",
                *extra, state_dir=state_dir,
            ).start()  # fmt: skip
            tap = await MicTap().start()
            try:
                await daemon.wait_for_line("→ idle", 30)
                yield EchoRig(pulse, server, daemon, tap)
            finally:
                await tap.stop()
                await daemon.stop()
