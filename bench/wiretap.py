"""A TCP relay between the daemon and a websocket server that counts the frames liveness is made of:
pings, pongs and close frames by the side that sent them, and the connections made. It reads the
bytes as they pass and changes nothing, so what it counts is what the two ends really exchanged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

OPCODES = {0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}


@dataclass
class Close:
    """One close frame: who sent it, when (seconds after the tap started) and its code."""

    side: str
    at_s: float
    code: int | None


@dataclass
class WireTap:
    """Listens on 127.0.0.1:`port` (0 picks one) and relays every connection to `target_port`."""

    target_host: str
    target_port: int
    port: int = 0
    frames: Counter[str] = field(default_factory=Counter)
    closes: list[Close] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _started: float = 0.0

    async def __aenter__(self) -> WireTap:
        self._started = time.monotonic()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pipe(client_r, server_w, "client"),
            self._pipe(server_r, client_w, "server"),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: str) -> None:
        pending = bytearray()
        upgraded = False
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                pending += data
                if not upgraded:  # the HTTP upgrade comes first, then frames
                    end = pending.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    del pending[: end + 4]
                    upgraded = True
                self._count(pending, side)
        finally:
            writer.close()

    def _count(self, pending: bytearray, side: str) -> None:
        while len(pending) >= 2:
            length, start = pending[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(pending[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(pending[2:10], "big"), 10
            masked = bool(pending[1] & 0x80)
            mask = bytes(pending[start : start + 4]) if masked else b""
            start += 4 if masked else 0
            if len(pending) < start + length:
                return
            opcode = pending[0] & 0x0F
            self.frames[f"{side}_{OPCODES.get(opcode, 'continuation')}"] += 1
            if opcode == 0x8:
                payload = bytes(pending[start : start + length])
                if masked:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closes.append(Close(side, round(time.monotonic() - self._started, 1), code))
            del pending[: start + length]
