"""A minimal OTA endpoint for MQTT tests: answers each POST with the next JSON reply of a list.

It is a real HTTP/1.1 server on 127.0.0.1 (asyncio streams), so the backend's OTA client runs unchanged;
it records each request's path, headers and body.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OtaRequest:
    """One request the OTA peer received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class OtaPeer:
    """Serves `replies` in order (the last one repeats) at http://127.0.0.1:<port>/xiaozhi/ota/."""

    replies: list[dict[str, Any]]
    requests: list[OtaRequest] = field(default_factory=list)

    async def __aenter__(self) -> OtaPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/xiaozhi/ota/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(OtaRequest(method, path, headers, body))
                index = min(len(self.requests), len(self.replies)) - 1
                data = json.dumps(self.replies[index]).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
