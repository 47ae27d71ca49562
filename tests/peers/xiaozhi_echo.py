"""The echo server as the tests' reference xiaozhi server: variants that behave like each real server,
fault switches, and a record of every connection.

`EchoPeer` extends the product's `EchoServer` (companion/fieldtest/echo_server.py) through its override
points only: what the product does stays what a maker runs, and the quirks of xiaozhi-esp32-server
("xinnan") and Qiniu, the broken OTA replies and the dropped connections live here, next to the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from companion.fieldtest.echo_server import (
    DOWNLINK,
    UPLINK_RATE,
    EchoConnection,
    EchoServer,
    HttpReply,
    HttpRequest,
    make_token,
    request_field,
)
from companion.protocols.xiaozhi import framing, messages
from companion.protocols.xiaozhi.messages import AudioParams, MessageError

log = logging.getLogger(__name__)

KEEP_FRAMES = 500
KEEP_RECORDS = 200
DUPLICATE_STOP_S = 0.43  # xiaozhi-esp32-server's second `tts stop` after an abort
AUTH_FAILED_TEXT = "认证失败"


@dataclass(frozen=True)
class Variant:
    """How the server deviates from the firmware-spec default, to look like a given real server."""

    echo_audio_params: bool = False  # xiaozhi-esp32-server: hello echoes the client's audio_params
    duplicate_stop: bool = False  # a second identical `tts stop` ~430 ms after the first
    non_json: bool = False  # plain-text frames between messages; non-JSON input is echoed back
    qiniu: bool = False  # no session_id in hello, `is_aborted` on `tts stop`, `action` in llm, notify
    wrong_transport: bool = False  # hello answered with transport "udp"
    auth: str = ""  # "" | "token" (plain-text 认证失败 then close) | "http" (HTTP 401 on the upgrade)
    mcp_tools_list_delay_s: float = 0.0  # xiaozhi-esp32-server asks tools/list 1 s after initialize
    late_stop_s: float = 0.0  # xiaozhi-esp32-server: `tts stop` ~0.42 s after the client's playback ends
    idle_close_s: float = 0.0  # xiaozhi-esp32-server closes (1000) 180 s after the last audio/listen/reply


VARIANTS: dict[str, dict[str, Any]] = {
    "firmware": {},
    "xinnan": {
        "echo_audio_params": True,
        "duplicate_stop": True,
        "mcp_tools_list_delay_s": 1.0,
        "late_stop_s": 0.42,
        "idle_close_s": 180.0,
    },
    "duplicate-stop": {"duplicate_stop": True},
    "non-json": {"non_json": True},
    "qiniu": {"qiniu": True},
    "wrong-transport": {"wrong_transport": True},
    "auth": {"auth": "token"},
    "auth-http": {"auth": "http"},
}


def parse_variant(spec: str | Variant | None) -> Variant:
    """A Variant from comma-separated names (e.g. "xinnan,non-json"); raises ValueError naming the bad one."""
    if isinstance(spec, Variant):
        return spec
    variant = Variant()
    for name in (spec or "").replace(" ", "").split(","):
        if not name or name == "default":
            continue
        if name not in VARIANTS:
            raise ValueError(f"unknown echo-server variant {name!r} (known: {', '.join(VARIANTS)})")
        variant = replace(variant, **VARIANTS[name])
    return variant


def verify_token(secret: str, token: str, client_id: str, device_id: str, now: float, ttl_s: float) -> bool:
    """True for a token made with `secret` for these ids and not older than `ttl_s`."""
    if token.startswith("Bearer "):
        token = token[7:]
    _sig, dot, ts = token.rpartition(".")
    if not dot or not ts.isdigit():
        return False
    if now - int(ts) > ttl_s:
        return False
    return hmac.compare_digest(make_token(secret, client_id, device_id, int(ts)), token)


class EchoPeer(EchoServer):
    """The echo server with `variant` (names from VARIANTS), `ota_extra` (merged into every OTA reply,
    e.g. an `mqtt` block), `ota_not_json` (the OTA check answers an HTML page), `kill()`, and `records`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        variant: str | Variant | None = None,
        ota: bool = False,
        ota_extra: dict[str, Any] | None = None,
        ota_not_json: bool = False,
        token_ttl_s: float = 30 * 24 * 3600.0,
        **options: Any,
    ) -> None:
        super().__init__(host, port, ota=ota or ota_not_json or ota_extra is not None, **options)
        self.variant = parse_variant(variant)
        self.ota_extra = ota_extra or {}
        self.ota_not_json = ota_not_json
        self.token_ttl_s = token_ttl_s
        self.records: deque[PeerConnection] = deque(maxlen=KEEP_RECORDS)  # every connection, newest last
        self.ota_requests: deque[dict[str, Any]] = deque(maxlen=KEEP_RECORDS)  # headers and body of each
        self.turns_completed = 0
        self._changed = asyncio.Condition()
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------------ for the tests
    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds (checked on every change and every 50 ms); raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while not predicate():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(0.05, remaining))

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def kill(self) -> None:
        """Drop every client connection at once, without a close frame (as a crashed server would)."""
        for connection in list(self.connections):
            connection.abort()

    def rotate_secret(self) -> None:
        """Invalidate every token issued so far (the next connects fail auth until OTA runs again)."""
        self.auth_secret = uuid.uuid4().hex

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send MCP tools/call to the newest live client and return its JSON-RPC reply."""
        live = [c for c in self.records if not c.closed]
        if not live:
            raise ConnectionError("no client connected")
        newest = max(live, key=lambda c: c.number)
        return await newest.mcp_request("tools/call", {"name": name, "arguments": arguments}, timeout)

    # ------------------------------------------------------------------ overrides
    def _authorized(self, request: Request) -> bool:
        token, client, device = (
            request_field(request, name) for name in ("Authorization", "Client-Id", "Device-Id")
        )
        return verify_token(self.auth_secret, token, client, device, time.time(), self.token_ttl_s)

    def check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.variant.auth == "http" and not self._authorized(request):
            return connection.respond(401, "Unauthorized\n")
        return None

    def refusal(self, request: Request) -> str | None:
        refused = super().refusal(request)
        if refused is None and self.variant.auth == "token" and not self._authorized(request):
            return AUTH_FAILED_TEXT
        return refused

    def make_connection(self, ws: ServerConnection, version: int) -> EchoConnection:
        return PeerConnection(self, ws, version)

    def ota_check(self, request: HttpRequest) -> HttpReply:
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            body = None
        self.ota_requests.append({"headers": request.headers, "body": body})
        if self.ota_not_json:
            return HttpReply(200, "text/html", b"<html><body>502 Bad Gateway</body></html>")
        return super().ota_check(request)

    def ota_reply(self, device: str, headers: dict[str, str]) -> dict[str, Any]:
        return {**super().ota_reply(device, headers), **self.ota_extra}


class PeerConnection(EchoConnection):
    """One connection of an `EchoPeer`, with the variant's behaviour and what it sent and received."""

    server: EchoPeer

    def __init__(self, server: EchoPeer, ws: ServerConnection, version: int) -> None:
        super().__init__(server, ws, version)
        self.variant = server.variant
        if self.variant.qiniu:
            self.session_id = None
        self.number = next(server._numbers)
        self.headers = dict(ws.request.headers.raw_items()) if ws.request else {}  # of the upgrade request
        # the last text frames each way, with their monotonic time
        self.received: deque[tuple[float, str]] = deque(maxlen=KEEP_FRAMES)
        self.sent: deque[tuple[float, str]] = deque(maxlen=KEEP_FRAMES)
        self.uplink_packets = 0
        self.uplink_while_speaking = 0
        self.closed = False
        self.notified = False
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.mcp_ids = itertools.count(3)
        self.last_activity = time.monotonic()  # audio or `listen` received, reply audio sent

    async def run(self) -> None:
        self.server.records.append(self)
        await self.server.changed()
        idle = asyncio.create_task(self._close_when_idle()) if self.variant.idle_close_s else None
        try:
            await super().run()
        finally:
            if idle is not None:
                idle.cancel()
            self.closed = True
            for future in self.pending.values():
                future.cancel()
            await self.server.changed()

    async def send_text(self, text: str) -> None:
        self.sent.append((time.monotonic(), text))
        await super().send_text(text)

    async def send(self, kind: str, **fields: Any) -> None:
        if kind == "llm" and self.variant.qiniu:
            fields["action"] = "nod"
        await super().send(kind, **fields)
        if kind == "stt" and self.variant.non_json:
            await self.send_text("echo-server: another plain-text line")

    async def on_text(self, text: str) -> None:
        self.received.append((time.monotonic(), text))
        if self.variant.non_json and not _is_message(text):
            await self.send_text(text)  # xiaozhi-esp32-server echoes what it cannot parse
            return
        await super().on_text(text)

    def hello_reply(self, hello: dict[str, Any]) -> str:
        params = DOWNLINK
        if self.variant.echo_audio_params:
            params = AudioParams.from_json(hello.get("audio_params"), default_rate=UPLINK_RATE)
        transport = "udp" if self.variant.wrong_transport else "websocket"
        return messages.server_hello(self.session_id, params, transport=transport, version=self.version)

    async def on_hello(self, msg: dict[str, Any]) -> None:
        if self.variant.non_json:
            await self.send_text("echo-server: a plain-text line that is not JSON")
        if self.variant.wrong_transport:  # the client must not take this for a session
            await self.send_text(self.hello_reply(msg))
        else:
            await super().on_hello(msg)
        await self.server.changed()

    def on_mcp(self, payload: Any) -> None:
        super().on_mcp(payload)
        ident = payload.get("id") if isinstance(payload, dict) else None
        if isinstance(ident, int) and ident in self.pending:
            self.pending.pop(ident).set_result(payload)

    async def list_tools(self) -> None:
        await asyncio.sleep(self.variant.mcp_tools_list_delay_s)
        await super().list_tools()
        await self.server.changed()

    async def mcp_request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        ident = next(self.mcp_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        await self.send_mcp({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(ident, None)

    async def _close_when_idle(self) -> None:
        """As xiaozhi-esp32-server's timeout check: a normal close (1000) once nothing happened a while."""
        limit = self.variant.idle_close_s
        while True:
            await asyncio.sleep(0.05)
            if not self.speaking and time.monotonic() - self.last_activity > limit:
                log.info("closing the connection: idle for %g s", limit)
                await self.ws.close()
                return

    async def on_listen(self, msg: dict[str, Any]) -> None:
        self.last_activity = time.monotonic()
        await super().on_listen(msg)

    async def on_binary(self, data: bytes) -> None:
        if self.hello_done:
            with contextlib.suppress(framing.FrameError):
                framing.decode(self.version, data)
                self.last_activity = time.monotonic()
                self.uplink_packets += 1
                if self.speaking:
                    self.uplink_while_speaking += 1
        await super().on_binary(data)

    async def reply(self, heard: str, pcm: bytes, sentence: str, emotion: str = "") -> None:
        turns = self.turns
        await super().reply(heard, pcm, sentence, emotion)
        if self.turns == turns:
            return
        self.server.turns_completed += 1
        await self.server.changed()
        if self.variant.qiniu and not self.notified:
            self.notified = True
            with contextlib.suppress(ConnectionClosed):
                await self.send("notify", event="config_updated")

    async def speak(self, pcm: bytes) -> None:
        self.last_activity = time.monotonic()
        await super().speak(pcm)
        self.last_activity = time.monotonic()  # the reply's audio went out until now
        await asyncio.sleep(self.variant.late_stop_s)

    async def send_stop(self, aborted: bool) -> None:
        self.speaking = False
        fields: dict[str, Any] = {"state": "stop"}
        if self.variant.qiniu:
            fields["is_aborted"] = aborted
        with contextlib.suppress(ConnectionClosed):
            await self.send("tts", **fields)
            if self.variant.duplicate_stop:
                asyncio.get_running_loop().call_later(
                    DUPLICATE_STOP_S, lambda: asyncio.ensure_future(self._late_stop(fields))
                )

    async def _late_stop(self, fields: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send("tts", **fields)


def _is_message(text: str) -> bool:
    try:
        messages.parse(text)
    except MessageError:
        return False
    return True
