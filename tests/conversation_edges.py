"""The conversation's edges, recorded: a backend that notes every call and a speaker that keeps what
it is given. No sockets, no sound devices: the state machine is driven by scripted events and a
hand-moved clock, and these show what it asked of the outside world."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from companion.audio.jitter import JitterBuffer
from companion.events import ListenMode, UplinkFormat

WAIT_S = 2.0  # bound on any wait for the conversation's tasks; they finish in microseconds


class RecordingBackend:
    """A connected Backend that answers every call at once and records it as (name, argument)."""

    name = "recording"

    def __init__(self, *, supports_text: bool = True, codec: str = "pcm") -> None:
        self.supports_text = supports_text
        self.connected = True
        self.calls: list[tuple[str, Any]] = []
        self._format = UplinkFormat(codec=codec)
        self._changed = asyncio.Condition()

    @property
    def uplink(self) -> UplinkFormat:
        return self._format

    def names(self) -> list[str]:
        """The calls' names in order, audio packets left out."""
        return [name for name, _ in self.calls if name != "send_audio"]

    def audio(self) -> list[bytes]:
        return [arg for name, arg in self.calls if name == "send_audio"]

    async def _record(self, name: str, arg: Any = None) -> None:
        async with self._changed:
            self.calls.append((name, arg))
            self._changed.notify_all()

    async def wait_for(self, check: Callable[[list[str]], bool]) -> list[str]:
        """Return the call names once `check(names)` holds (bounded by WAIT_S)."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: check(self.names()))

        await asyncio.wait_for(until(), WAIT_S)
        return self.names()

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def start_listening(self, mode: ListenMode) -> None:
        await self._record("start_listening", mode)

    async def stop_listening(self) -> None:
        await self._record("stop_listening")

    async def send_audio(self, frame: bytes) -> None:
        await self._record("send_audio", frame)

    async def abort(self, reason: str = "") -> None:
        await self._record("abort", reason)

    async def send_text(self, text: str) -> None:
        await self._record("send_text", text)

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        await self._record("send_tool_result", payload)

    async def close(self) -> None:
        self.connected = False


class RecordingSink:
    """An AudioSink that keeps what it is given; it drains at `end()` unless `hold_drain` is set."""

    def __init__(self, rate: int = 24000) -> None:
        self.rate = rate
        self.buffer = JitterBuffer(rate * 10, 0)
        self.gain = 1.0
        self.events: list[str] = []  # begin, end, flush, close
        self.written: list[bytes] = []
        self.hold_drain = False
        self.active = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._changed = asyncio.Event()

    def _note(self, event: str) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, check: Callable[[], bool]) -> None:
        """Return once `check()` holds after something reached the sink (bounded by WAIT_S)."""

        async def until() -> None:
            while not check():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), WAIT_S)

    def begin(self) -> None:
        self._note("begin")
        self.active = True
        self._drained.clear()

    async def write(self, pcm: bytes) -> None:
        self.written.append(pcm)
        self._drained.clear()
        self._changed.set()

    def end(self) -> None:
        self._note("end")
        if not self.hold_drain:
            self._drained.set()

    def release(self) -> None:
        """The held reply has played out."""
        self.hold_drain = False
        self._drained.set()

    def flush(self) -> None:
        self._note("flush")
        self.written.clear()
        self._drained.set()

    async def wait_drained(self, timeout: float) -> bool:
        await self._drained.wait()  # the test bounds the whole wait; a held drain waits for release()
        return True

    async def close(self) -> None:
        self._note("close")
        self.active = False

    async def shutdown(self) -> None:
        await self.close()

    def healthy(self, now: float) -> bool:
        return True
