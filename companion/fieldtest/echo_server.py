"""A local xiaozhi server that speaks your own words back: for bringing up hardware with no cloud account.

It answers `hello` as real servers do (a session id, downlink 24 kHz / 60 ms), runs its own VAD on the
uplink in `auto`/`realtime` mode (end of speech after real-time silence) or waits for `listen stop` in
`manual` mode, then replies `stt`, `tts start`, `llm` (an emotion from the 21 canonical names),
`tts sentence_start`, the user's speech re-encoded as 24 kHz Opus in 60 ms packets (5 ahead, then paced in
real time) and `tts stop`. It sends MCP `initialize` (then `tools/list`) when the client offers `mcp`.
A `listen detect` with text is a text turn: it says the user's last utterance again (or a tone).

Variants make it behave like each real server for conformance tests (see VARIANTS), and `ota=True`
serves the OTA check and activation endpoints on a second port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import math
import random
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soxr
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..audio.endpointer import Endpointer, SpeechBegan, SpeechContinued, SpeechFinished
from ..audio.opus import OpusDecoder, OpusEncoder, OpusError
from ..config import VadSettings
from ..events import EMOTIONS
from ..protocols.xiaozhi import framing, messages
from ..protocols.xiaozhi.messages import AudioParams, MessageError

log = logging.getLogger(__name__)
# websockets logs request headers (tokens) at DEBUG: keep its logger at INFO.
_wire_log = logging.getLogger(f"{__name__}.websockets")
_wire_log.setLevel(logging.INFO)

UPLINK_RATE = 16000
DOWNLINK_RATE = 24000
FRAME_MS = 60
LEAD_PACKETS = 5  # sent at once (300 ms pre-buffer), then one per 60 ms, as xiaozhi-esp32-server does
KEEP_FRAMES = 500
KEEP_RECORDS = 200
DUPLICATE_STOP_S = 0.43  # xiaozhi-esp32-server's second `tts stop` after an abort
WAKE_WORDS = frozenset({"你好小智", "你好小志", "小智", "hi xiaozhi", "hey xiaozhi"})
MISSING_DEVICE_ID_TEXT = "端口正常，如需测试连接，请启动digital-human测试"
AUTH_FAILED_TEXT = "认证失败"
EMOJI = {
    "neutral": "😶", "happy": "🙂", "laughing": "😆", "funny": "😂", "sad": "😔", "angry": "😠",
    "crying": "😭", "loving": "😍", "embarrassed": "😳", "surprised": "😲", "shocked": "😱",
    "thinking": "🤔", "confident": "😏", "confused": "🙄", "winking": "😉", "cool": "😎",
    "relaxed": "😌", "delicious": "🤤", "kissy": "😘", "sleepy": "😴", "silly": "😜",
}  # fmt: skip
ECHO_VAD = VadSettings(aggressiveness=2, frame_ms=30, start_voiced=4, start_window=6, hangover_ms=500,
                       preroll_ms=300, max_utterance_s=15.0)  # fmt: skip


# ---------------------------------------------------------------- variants


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


# ---------------------------------------------------------------- xiaozhi-esp32-server style tokens


def make_token(secret: str, client_id: str, device_id: str, timestamp: int) -> str:
    """xiaozhi-esp32-server's token: base64url_nopad(HMAC-SHA256(secret, "cid|did|ts")) + "." + ts."""
    digest = hmac.new(
        secret.encode(), f"{client_id}|{device_id}|{timestamp}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + f".{timestamp}"


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


# ---------------------------------------------------------------- the server


@dataclass
class ConnectionRecord:
    """What one client connection did, for tests and the console."""

    number: int
    device_id: str
    headers: dict[str, str] = field(default_factory=dict)  # of the upgrade request, as received
    session_id: str = ""
    mode: str = ""
    turns: int = 0
    uplink_packets: int = 0
    uplink_while_speaking: int = 0
    # the last text frames each way, with their monotonic time (bounded: a server runs for days)
    received: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=KEEP_FRAMES))
    sent: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=KEEP_FRAMES))
    tools: list[dict[str, Any]] = field(default_factory=list)
    mcp_initialized: bool = False
    closed: bool = False


class EchoServer:
    """The echo server; use `async with EchoServer(port=0) as server:` then `server.websocket_url`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        variant: str | Variant | None = None,
        ota: bool = False,
        ota_port: int = 0,
        activation: bool = False,
        bind_after_polls: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        auth_secret: str = "echo-server-secret",
        token_ttl_s: float = 30 * 24 * 3600.0,
        vad: VadSettings = ECHO_VAD,
        ota_extra: dict[str, Any] | None = None,
        ota_not_json: bool = False,
    ) -> None:
        """`activation`: OTA hands out a 6-digit code until the device is bound (by `bind()`, a GET of
        /xiaozhi/ota/bind?code=…, or automatically after `bind_after_polls` activation polls).
        `ota_extra` is merged into every OTA reply (e.g. an `mqtt` block); `ota_not_json` makes the
        OTA reply an HTML page.
        """
        self.host = host
        self.port = port
        self.variant = parse_variant(variant)
        self.ota_enabled = ota or activation or ota_not_json or ota_extra is not None
        self.ota_port = ota_port
        self.activation = activation
        self.bind_after_polls = bind_after_polls
        self.ssl_context = ssl_context
        self.auth_secret = auth_secret
        self.token_ttl_s = token_ttl_s
        self.vad = vad
        self.ota_extra = ota_extra or {}
        self.ota_not_json = ota_not_json
        self.records: deque[ConnectionRecord] = deque(maxlen=KEEP_RECORDS)  # newest last
        self.turns_completed = 0
        self.ota_requests: deque[dict[str, Any]] = deque(
            maxlen=KEEP_RECORDS
        )  # headers and body of each check
        self.activation_polls = 0
        self.bound: set[str] = set()
        self.codes: dict[str, str] = {}
        self._server: Server | None = None
        self._http: asyncio.Server | None = None
        self._handlers: set[_Connection] = set()
        self._changed = asyncio.Condition()
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> EchoServer:
        """Listen (websocket, and OTA when enabled); `port`/`ota_port` then hold the real ports."""
        self._server = await serve(
            self._serve_connection,
            self.host,
            self.port,
            ssl=self.ssl_context,
            process_request=self._process_request,
            compression=None,
            max_size=1 << 20,
            logger=_wire_log,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.ota_enabled:
            self._http = await asyncio.start_server(
                self._serve_http, self.host, self.ota_port, ssl=self.ssl_context
            )
            self.ota_port = self._http.sockets[0].getsockname()[1]
        log.info(
            "echo server listening on %s%s",
            self.websocket_url,
            f", OTA at {self.ota_url}" if self._http else "",
        )
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        self.kill()
        if self._server is not None:
            self._server.close(close_connections=False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self._http is not None:
            self._http.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.wait_closed(), 2.0)
            self._http = None

    async def __aenter__(self) -> EchoServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    @property
    def websocket_url(self) -> str:
        """The websocket URL clients connect to."""
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self._public_host()}:{self.port}/xiaozhi/v1/"

    @property
    def ota_url(self) -> str:
        """The OTA check URL (activation is `<ota_url>activate`)."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self._public_host()}:{self.ota_port}/xiaozhi/ota/"

    def _url_for(self, host_header: str) -> str:
        """The websocket URL as the OTA client reached us (the LAN address when bound to all)."""
        if self.host not in ("0.0.0.0", "", "::") or not host_header:
            return self.websocket_url
        host = urlsplit(f"//{host_header}").hostname or self._public_host()
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{host}:{self.port}/xiaozhi/v1/"

    def _public_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    def kill(self) -> None:
        """Drop every client connection at once, without a close frame (as a crashed server would)."""
        for handler in list(self._handlers):
            handler.kill()

    # ------------------------------------------------------------------ test helpers
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

    def live(self) -> list[ConnectionRecord]:
        """Records of the connections open now."""
        return [h.record for h in self._handlers if not h.record.closed]

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send MCP tools/call to the newest live client and return its JSON-RPC reply."""
        handlers = [h for h in self._handlers if not h.record.closed]
        if not handlers:
            raise ConnectionError("no client connected")
        newest = max(handlers, key=lambda h: h.record.number)
        return await newest.mcp_request("tools/call", {"name": name, "arguments": arguments}, timeout)

    def bind(self, device_id_or_code: str) -> bool:
        """Bind a device (by Device-Id or by its activation code), as a user does in a console."""
        for device, code in self.codes.items():
            if device_id_or_code in (device, code):
                self.bound.add(device)
                log.info("device %s bound (code %s)", device, code)
                return True
        return False

    def rotate_secret(self) -> None:
        """Invalidate every token issued so far (the next connects fail auth until OTA runs again)."""
        self.auth_secret = uuid.uuid4().hex

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ websocket
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.variant.auth == "http":
            token = request.headers.get("Authorization", "")
            device = request.headers.get("Device-Id", "")
            client = request.headers.get("Client-Id", "")
            if not verify_token(self.auth_secret, token, client, device, time.time(), self.token_ttl_s):
                return connection.respond(401, "Unauthorized\n")
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        request = ws.request
        headers = request.headers if request is not None else Headers()
        path = request.path if request is not None else "/"
        query = parse_qs(urlsplit(path).query)
        device = headers.get("Device-Id") or (query.get("device-id") or [""])[0]
        client = headers.get("Client-Id") or (query.get("client-id") or [""])[0]
        token = headers.get("Authorization") or (query.get("authorization") or [""])[0]
        if not device:
            await ws.send(MISSING_DEVICE_ID_TEXT)
            await ws.close()
            return
        if self.variant.auth == "token" and not verify_token(
            self.auth_secret, token, client, device, time.time(), self.token_ttl_s
        ):
            await ws.send(AUTH_FAILED_TEXT)
            await ws.close()
            return
        try:
            version = int(headers.get("Protocol-Version", "1"))
        except ValueError:
            version = 1
        record = ConnectionRecord(next(self._numbers), device.lower(), dict(headers.raw_items()))
        self.records.append(record)
        handler = _Connection(self, ws, record, version if version in framing.VERSIONS else 1)
        self._handlers.add(handler)
        await self._notify()
        try:
            await handler.run()
        finally:
            record.closed = True
            self._handlers.discard(handler)
            await handler.stop_reply()
            await self._notify()

    # ------------------------------------------------------------------ OTA over HTTP
    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_http_request(reader), 10.0)
            if request is None:
                return
            status, content_type, body = self._http_route(*request)
            writer.write(_http_response(status, content_type, body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug("OTA request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _http_route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        path = urlsplit(target).path.rstrip("/")
        device = headers.get("device-id", "").lower()
        if path == "/xiaozhi/ota/bind":
            code = (parse_qs(urlsplit(target).query).get("code") or [""])[0]
            ok = self.bind(code)
            return (200 if ok else 404), "text/plain", (b"bound\n" if ok else b"unknown code\n")
        if path == "/xiaozhi/ota/activate" and method == "POST":
            self.activation_polls += 1
            if (
                self.bind_after_polls is not None
                and self.activation_polls >= self.bind_after_polls
                and device
            ):
                self.bound.add(device)
            if not self.activation or device in self.bound:
                return 200, "text/plain", b"success"
            return 202, "text/plain", b""
        if path == "/xiaozhi/ota" and method in ("POST", "GET"):
            try:
                parsed = json.loads(body) if body else {}
            except ValueError:
                parsed = None
            self.ota_requests.append({"headers": headers, "body": parsed})
            if self.ota_not_json:
                return 200, "text/html", b"<html><body>502 Bad Gateway</body></html>"
            if not device:
                return 400, "application/json", b'{"success":false,"message":"missing Device-Id"}'
            return 200, "application/json", json.dumps(self._ota_reply(device, headers)).encode()
        return 404, "text/plain", b"not found\n"

    def _ota_reply(self, device: str, headers: dict[str, str]) -> dict[str, Any]:
        now = time.time()
        reply: dict[str, Any] = {
            "server_time": {"timestamp": int(now * 1000), "timezone_offset": 0},
            "firmware": {"version": "0.0.0", "url": ""},
        }
        if self.activation and device not in self.bound:
            code = self.codes.setdefault(device, f"{random.randint(0, 999999):06d}")
            reply["activation"] = {
                "code": code,
                "message": f"{self.ota_url}bind?code={code}\n{code}",
                "challenge": device,
                "timeout_ms": 30000,
            }
        else:
            token = make_token(self.auth_secret, headers.get("client-id", ""), device, int(now))
            reply["websocket"] = {"url": self._url_for(headers.get("host", "")), "token": token}
        reply.update(self.ota_extra)
        return reply


# ---------------------------------------------------------------- one client connection


class _Connection:
    """The server side of one websocket: hello, listening, VAD, the spoken reply, MCP."""

    def __init__(
        self, server: EchoServer, ws: ServerConnection, record: ConnectionRecord, version: int
    ) -> None:
        self.server = server
        self.ws = ws
        self.record = record
        self.version = version
        self.variant = server.variant
        self.session_id = "" if self.variant.qiniu else str(uuid.uuid4())
        self.sid: str | None = None if self.variant.qiniu else self.session_id
        self.hello_done = False
        self.mode = ""
        self.decoder = OpusDecoder(UPLINK_RATE)
        self.endpointer = Endpointer(server.vad)
        self.utterance = bytearray()
        self.in_speech = False
        self.last_frame_at = 0.0
        self.last_utterance = b""
        self.speaking = False
        self.reply_task: asyncio.Task[None] | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.mcp_ids = itertools.count(3)
        self.notified = False
        self.last_activity = time.monotonic()  # audio or `listen` received, reply audio sent

    def kill(self) -> None:
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def run(self) -> None:
        self.watchdog = asyncio.create_task(self._silence_watchdog())
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    await self.on_text(message)
                else:
                    await self.on_binary(message)
        except ConnectionClosed:
            pass
        finally:
            self.watchdog.cancel()
            for future in self.pending.values():
                future.cancel()

    async def send_text(self, text: str) -> None:
        self.record.sent.append((time.monotonic(), text))
        await self.ws.send(text)

    async def send(self, kind: str, **fields: Any) -> None:
        await self.send_text(messages.server_message(kind, self.sid, **fields))

    # ------------------------------------------------------------------ text
    async def on_text(self, text: str) -> None:
        self.record.received.append((time.monotonic(), text))
        try:
            msg = messages.parse(text)
        except MessageError:
            if self.variant.non_json:
                await self.send_text(text)  # xiaozhi-esp32-server echoes what it cannot parse
            return
        kind = msg["type"]
        if kind == "hello":
            await self.on_hello(msg)
        elif not self.hello_done:
            return
        elif kind == "listen":
            await self.on_listen(msg)
        elif kind == "abort":
            await self.on_abort()
        elif kind == "mcp":
            self.on_mcp(msg.get("payload"))

    async def on_hello(self, msg: dict[str, Any]) -> None:
        transport = "udp" if self.variant.wrong_transport else "websocket"
        if self.variant.echo_audio_params:
            params = AudioParams.from_json(msg.get("audio_params"), default_rate=UPLINK_RATE)
        else:
            params = AudioParams("opus", DOWNLINK_RATE, 1, FRAME_MS)
        if self.variant.non_json:
            await self.send_text("echo-server: a plain-text line that is not JSON")
        await self.send_text(
            messages.server_hello(self.sid, params, transport=transport, version=self.version)
        )
        self.record.session_id = self.session_id
        self.hello_done = not self.variant.wrong_transport
        features = msg.get("features")
        if self.hello_done and isinstance(features, dict) and features.get("mcp"):
            init = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"roots": {"listChanged": True}, "sampling": {}},
                    "clientInfo": {"name": "companion-echo-server", "version": "1.0.0"},
                },
            }
            await self.send_text(messages.server_message("mcp", None, payload=init))
        await self.server._notify()

    async def on_listen(self, msg: dict[str, Any]) -> None:
        self.last_activity = time.monotonic()
        state = msg.get("state")
        if state == "start":
            mode = msg.get("mode")
            self.mode = mode if mode in messages.LISTEN_MODES else "auto"
            self.record.mode = self.mode
            self._reset_capture()
        elif state == "stop":
            if self.utterance or self.mode == "manual":
                await self._end_utterance()
            self.mode = ""
        elif state == "detect":
            text = msg.get("text")
            await self._text_turn(text if isinstance(text, str) else "")

    async def on_abort(self) -> None:
        if self.reply_task is not None and not self.reply_task.done():
            await self.stop_reply()
        await self._send_stop(aborted=True)

    def on_mcp(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        ident = payload.get("id")
        if ident == 1 and "result" in payload and not self.record.mcp_initialized:
            self.record.mcp_initialized = True
            asyncio.get_running_loop().create_task(self._list_tools())
        elif ident == 2 and "result" in payload:
            result = payload["result"]
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                self.record.tools.extend(t for t in result["tools"] if isinstance(t, dict))
                cursor = result.get("nextCursor")
                if isinstance(cursor, str) and cursor:
                    request = {
                        "jsonrpc": "2.0",
                        "id": 2,
                        "method": "tools/list",
                        "params": {"cursor": cursor},
                    }
                    asyncio.get_running_loop().create_task(self._send_mcp(request))
        if isinstance(ident, int) and ident in self.pending:
            self.pending.pop(ident).set_result(payload)

    async def _list_tools(self) -> None:
        await asyncio.sleep(self.variant.mcp_tools_list_delay_s)
        await self._send_mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        await self.server._notify()

    async def _send_mcp(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send_text(messages.server_message("mcp", None, payload=payload))

    async def mcp_request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        ident = next(self.mcp_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        await self._send_mcp({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(ident, None)

    # ------------------------------------------------------------------ audio
    async def on_binary(self, data: bytes) -> None:
        if not self.hello_done:
            return
        try:
            frame = framing.decode(self.version, data)
        except framing.FrameError as exc:
            log.debug("bad uplink frame: %s", exc)
            return
        self.last_activity = time.monotonic()
        self.record.uplink_packets += 1
        if self.speaking:
            self.record.uplink_while_speaking += 1
            if self.mode != "realtime":
                return
        if not self.mode:
            return
        try:
            pcm = self.decoder.decode(frame.payload)
        except OpusError:
            return
        self.last_frame_at = time.monotonic()
        if self.mode == "manual":
            self.utterance += pcm
            return
        for event in self.endpointer.feed(pcm):
            if isinstance(event, SpeechBegan):
                if self.speaking:  # realtime: the user talks over the reply
                    await self.stop_reply()
                    await self._send_stop(aborted=True)
                self.in_speech = True
                self.utterance = bytearray(event.audio)
            elif isinstance(event, SpeechContinued):
                self.utterance += event.audio
            elif isinstance(event, SpeechFinished):
                if event.reason == "silence":  # the hangover is silence: do not say it back
                    keep = len(self.utterance) - (self.server.vad.hangover_ms - 100) * UPLINK_RATE // 1000 * 2
                    del self.utterance[max(0, keep) :]
                await self._end_utterance()

    async def _silence_watchdog(self) -> None:
        """Ends an auto-mode utterance when the client stops sending (wall-clock silence), and closes
        a connection idle for the variant's `idle_close_s`."""
        hangover = self.server.vad.hangover_ms / 1000
        idle_close = self.variant.idle_close_s
        while True:
            await asyncio.sleep(0.05)
            if idle_close and not self.speaking and time.monotonic() - self.last_activity > idle_close:
                log.info("closing the connection: idle for %g s", idle_close)
                await self.ws.close()  # 1000, as xiaozhi-esp32-server's timeout check does
                return
            if (
                self.in_speech
                and self.mode in ("auto", "realtime")
                and time.monotonic() - self.last_frame_at > hangover
            ):
                await self._end_utterance()

    def _reset_capture(self) -> None:
        self.endpointer.reset()
        self.decoder = OpusDecoder(UPLINK_RATE)
        self.utterance = bytearray()
        self.in_speech = False

    async def _end_utterance(self) -> None:
        pcm = bytes(self.utterance)
        self._reset_capture()
        if self.mode == "manual":
            self.mode = ""
        seconds = len(pcm) / 2 / UPLINK_RATE
        if pcm:
            self.last_utterance = pcm
        await self.stop_reply()
        text = f"({seconds:.1f} s of speech)" if pcm else ""
        self.reply_task = asyncio.get_running_loop().create_task(self._reply(text, pcm, "I heard you."))

    async def _text_turn(self, text: str) -> None:
        await self.stop_reply()
        if text.strip().lower() in WAKE_WORDS:
            await self.send("stt", text=text)
            await self._send_stop(aborted=False)
            return
        pcm = self.last_utterance or _tone(0.6)
        emotion = emotion_for(text) or "happy"  # a typed emoji sets the mood, as an LLM's would
        self.reply_task = asyncio.get_running_loop().create_task(self._reply(text, pcm, text, emotion))

    async def stop_reply(self) -> None:
        task, self.reply_task = self.reply_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task

    async def _reply(self, heard: str, pcm: bytes, sentence: str, emotion: str = "") -> None:
        try:
            await self.send("stt", text=heard)
            if self.variant.non_json:
                await self.send_text("echo-server: another plain-text line")
            if not pcm:
                await self._send_stop(aborted=False)
                return
            self.speaking = True
            await self.send("tts", state="start")
            emotion = emotion or EMOTIONS[(self.record.turns + 1) % len(EMOTIONS)]
            llm: dict[str, Any] = {"text": EMOJI[emotion], "emotion": emotion}
            if self.variant.qiniu:
                llm["action"] = "nod"
            await self.send("llm", **llm)
            await self.send("tts", state="sentence_start", text=sentence)
            await self._speak(pcm)
            await self._send_stop(aborted=False)
            self.record.turns += 1
            self.server.turns_completed += 1
            await self.server._notify()
            if self.variant.qiniu and not self.notified:
                self.notified = True
                await self.send("notify", event="config_updated")
        except ConnectionClosed:
            pass

    async def _speak(self, pcm: bytes) -> None:
        """The PCM as 24 kHz Opus, 60 ms per packet: LEAD_PACKETS at once, then one per 60 ms."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        up = soxr.resample(samples, UPLINK_RATE, DOWNLINK_RATE).astype(np.int16)
        step = DOWNLINK_RATE * FRAME_MS // 1000
        if len(up) % step:
            up = np.concatenate([up, np.zeros(step - len(up) % step, dtype=np.int16)])
        encoder = OpusEncoder(DOWNLINK_RATE, FRAME_MS, bitrate=32000, complexity=3, dtx=False)
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = len(up) // step
        for i in range(count):
            due = start + max(0, i - LEAD_PACKETS + 1) * FRAME_MS / 1000
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            packet = encoder.encode(up[i * step : (i + 1) * step].tobytes())
            await self.ws.send(framing.encode(self.version, packet))
            self.last_activity = time.monotonic()
        # `tts stop` about when the client's playback ends (its buffer holds the lead)
        end = start + max(0, count - LEAD_PACKETS) * FRAME_MS / 1000 + LEAD_PACKETS * FRAME_MS / 1000
        await asyncio.sleep(max(0.0, end - loop.time()) + self.variant.late_stop_s)

    async def _send_stop(self, aborted: bool) -> None:
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


def emotion_for(text: str) -> str | None:
    """The emotion of the first known emoji in `text` (xiaozhi-esp32-server's rule), None if there is none."""
    by_emoji = {emoji: name for name, emoji in EMOJI.items()}
    by_emoji["😯"] = "surprised"  # the firmware font's emoji for it
    for char in text:
        if char in by_emoji:
            return by_emoji[char]
    return None


def _tone(seconds: float, hz: float = 440.0) -> bytes:
    """A soft sine tone at 16 kHz (the reply to a text turn before anything was said)."""
    t = np.arange(int(UPLINK_RATE * seconds)) / UPLINK_RATE
    return (np.sin(2 * math.pi * hz * t) * 6000).astype(np.int16).tobytes()


# ---------------------------------------------------------------- a tiny HTTP/1.1 server for OTA


async def _read_http_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {lines[0]!r}")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > 1 << 20:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def _http_response(status: int, content_type: str, body: bytes) -> bytes:
    reasons = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Status')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
