"""A xiaozhi websocket server that answers hello and then sends whatever frames a test scripts.

For hostile input (garbage JSON, lying binary headers) that no real server variant produces on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HELLO = {
    "type": "hello",
    "version": 1,
    "transport": "websocket",
    "session_id": "scripted",
    "audio_params": {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60},
}


class ScriptedServer:
    """Answers the client hello, then sends `script` (str → text frame, bytes → binary), then `tail`."""

    def __init__(self, script: Sequence[str | bytes] = (), tail: Sequence[str | bytes] = ()) -> None:
        self.script = list(script)
        self.tail = list(tail)
        self.received: list[str | bytes] = []
        self.script_sent = asyncio.Event()
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/xiaozhi/v1/"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            first = await ws.recv()
            self.received.append(first)
            await ws.send(json.dumps(HELLO))
            for frame in self.script:
                await ws.send(frame)
            self.script_sent.set()
            for frame in self.tail:
                await ws.send(frame)
            async for message in ws:
                self.received.append(message)
        except ConnectionClosed:
            pass
