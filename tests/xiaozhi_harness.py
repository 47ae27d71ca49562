"""Runs the real xiaozhi websocket backend in a test: collects its events and waits on them with timeouts."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from companion.audio.opus import OpusEncoder
from companion.backends.xiaozhi.identity import Identity
from companion.backends.xiaozhi.websocket import XiaozhiWebsocketBackend
from companion.config import XiaozhiSettings
from companion.events import BackendEvent, ListenMode, SpeechEnded, ToolRequest
from companion.net.backoff import Backoff

IDENTITY = Identity("aa:bb:cc:dd:ee:ff", "36c98363-3656-43cb-a00f-8bced2391a90")
ASSETS = Path(__file__).resolve().parent.parent / "companion" / "assets"
FRAME_BYTES = 1920  # 60 ms at 16 kHz, s16


def speech_pcm(seconds: float | None = None) -> bytes:
    """The bundled spoken sentence (16 kHz mono s16), optionally cut to `seconds`."""
    with wave.open(str(ASSETS / "demo_hello.wav")) as w:
        pcm = w.readframes(w.getnframes())
    if seconds is not None:
        pcm = pcm[: int(seconds * 16000) * 2]
    return pcm


def opus_frames(pcm: bytes, silence_s: float = 0.0) -> list[bytes]:
    """The PCM (plus trailing silence) as 60 ms Opus packets, as the uplink sends them."""
    pcm = pcm + b"\0" * (int(silence_s * 16000) * 2)
    if len(pcm) % FRAME_BYTES:
        pcm += b"\0" * (FRAME_BYTES - len(pcm) % FRAME_BYTES)
    encoder = OpusEncoder(16000, 60, 24000, 0, dtx=True)
    return [encoder.encode(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]


def fast_settings(url: str = "", **changes: Any) -> XiaozhiSettings:
    """Settings for tests: no OTA unless given, short waits."""
    base = XiaozhiSettings(websocket_url=url, ota_url="", settle_ms=200, hello_timeout_s=2.0)
    return replace(base, **changes)


class BackendHarness:
    """The backend under test with a sink that records events; answers MCP initialize like a device."""

    def __init__(self, settings: XiaozhiSettings, *, answer_mcp: bool = True, **kwargs: Any) -> None:
        self.events: list[BackendEvent] = []
        self.answer_mcp = answer_mcp
        self._changed = asyncio.Condition()
        kwargs.setdefault("identity", IDENTITY)
        kwargs.setdefault("backoff", Backoff(initial=0.05, cap=0.3))
        self.backend = XiaozhiWebsocketBackend(settings, self.sink, **kwargs)
        self._task: asyncio.Task[None] | None = None

    def sink(self, event: BackendEvent) -> None:
        self.events.append(event)
        if self.answer_mcp and isinstance(event, ToolRequest) and event.payload.get("method") == "initialize":
            reply = {
                "jsonrpc": "2.0",
                "id": event.payload["id"],
                "result": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "test", "version": "0"},
                },
            }
            asyncio.get_running_loop().create_task(self.backend.send_tool_result(reply))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until predicate() holds; raises TimeoutError."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_count(self, kind: type, at_least: int, since: int = 0, timeout: float = 10.0) -> None:
        """Wait until at least `at_least` events of `kind` arrived after index `since`."""
        await self.wait_for(lambda: self.count(kind, since) >= at_least, timeout)

    def count(self, kind: type, since: int = 0) -> int:
        return sum(isinstance(e, kind) for e in self.events[since:])

    def of(self, kind: type, since: int = 0) -> list[Any]:
        return [e for e in self.events[since:] if isinstance(e, kind)]

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: self.backend.connected, timeout)

    async def manual_turn(self, pcm: bytes, timeout: float = 20.0) -> int:
        """listen start manual, the PCM as a burst of Opus, listen stop; waits for the reply's end.

        Returns the index of the first event of this turn.
        """
        mark = len(self.events)
        await self.backend.start_listening(ListenMode.MANUAL)
        for packet in opus_frames(pcm):
            await self.backend.send_audio(packet)
        await self.backend.stop_listening()
        await self.wait_for(lambda: self.count(SpeechEnded, mark) > 0, timeout)
        return mark

    async def __aenter__(self) -> BackendHarness:
        self._task = asyncio.get_running_loop().create_task(self.backend.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.backend.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5.0)
