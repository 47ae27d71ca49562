"""A speaker build on the test PulseAudio: the daemon's own voice comes back into its microphone.

Shared by tests/test_echo.py and bench/bench_aec.py. The echo server says each utterance back, so a
reply is speech: without cancellation the microphone hears a voice during every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.daemon_process import DaemonProcess
from tests.peers.pulse import PulseServer
from tests.peers.xiaozhi_echo import EchoPeer

QUIET_AFTER_REPLY_S = 2.5  # a self-started turn would have ended (500 ms server hangover) and been heard


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


@dataclass
class EchoRig:
    """The daemon under test, its server, and the sound rig."""

    pulse: PulseServer
    server: EchoPeer
    daemon: DaemonProcess

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

    async def barge_in(self, reply_wav: Path, voice_wav: Path, after_s: float = 0.6) -> float | None:
        """The user talks over the reply `after_s` into it: seconds from the voice's onset to the
        `abort` at the server, or None when the reply was not interrupted."""
        await self.say(reply_wav)
        await asyncio.sleep(after_s)
        seen = len(abort_times(self.server))
        onset = time.monotonic()
        player = self.pulse.play_into_mic(voice_wav)
        deadline = onset + 3.0
        while len(abort_times(self.server)) <= seen and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(player.wait, 15)
        times = abort_times(self.server)
        await self.settle()
        return times[seen] - onset if len(times) > seen else None


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
            try:
                await daemon.wait_for_line("→ idle", 30)
                yield EchoRig(pulse, server, daemon)
            finally:
                await daemon.stop()
