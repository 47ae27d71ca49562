"""A TCP proxy on 127.0.0.1 that can stop forwarding without closing anything: a link whose far end
went away silently (Wi-Fi gone, a router rebooted), which only a liveness probe can notice."""

from __future__ import annotations

import asyncio
import contextlib


class BlackholeProxy:
    """Forwards to `target_port` until `swallow()`; from then on every byte, both ways, is dropped."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.swallowing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def swallow(self) -> None:
        self.swallowing = True

    async def __aenter__(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await source.read(65536):
                if not self.swallowing:
                    sink.write(data)
                    await sink.drain()
