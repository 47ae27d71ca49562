"""A local xiaozhi server that speaks your own words back: for bringing up hardware with no cloud account.

It answers `hello` as real servers do (a session id, downlink 24 kHz / 60 ms), runs its own VAD on the
uplink in `auto`/`realtime` mode (end of speech after real-time silence) or waits for `listen stop` in
`manual` mode, then replies `stt`, `tts start`, `llm` (an emotion from the 21 canonical names),
`tts sentence_start`, the user's speech re-encoded as 24 kHz Opus in 60 ms packets (5 ahead, then paced in
real time) and `tts stop`. It sends MCP `initialize` (then `tools/list`) when the client offers `mcp`.
A `listen detect` with text is a text turn: it says the user's last utterance again (or a tone).
`ota=True` serves the OTA check and activation endpoints on a second port.

A subclass changes what it does by overriding methods, never through flags: on `EchoServer`,
`check_upgrade`, `refusal`, `make_connection`, `ota_check`, `ota_activate` and `ota_reply`; on
`EchoConnection`, `send_text`/`send` (every frame and message out), `on_text`/`on_binary` (every frame
in), `hello_reply`, `list_tools`, `reply`, `speak` and `send_stop`. The tests' servers that behave like
each real server (tests/peers/xiaozhi_echo.py) are built that way.

The OTA endpoints are POSTs with a JSON body, which websockets cannot read: its HTTP parser takes only
the GET of an upgrade and refuses any request body, so `process_request` cannot serve them. They get their
own port, where h11 (already installed with httpx; sans-I/O) parses and frames HTTP/1.1 and asyncio streams
carry the bytes: no thread, no second event loop, and no new dependency (aiohttp would add several
compiled packages for three routes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http
import json
import logging
import math
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

import h11
import numpy as np
import soxr
from websockets.asyncio.server import Server, ServerConnection, serve
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
DOWNLINK = AudioParams("opus", DOWNLINK_RATE, 1, FRAME_MS)
LEAD_PACKETS = 5  # sent at once (300 ms pre-buffer), then one per 60 ms, as xiaozhi-esp32-server does
MAX_BODY = 1 << 20
# The server's configured wake words (xiaozhi-esp32-server's `wakeup_words`): a `listen detect` with one of
# them is acknowledged (stt, tts stop); any other text is a text turn. The English ones are the phrases of
# the models pymicro-wakeword and pyopen-wakeword ship.
WAKE_WORDS = frozenset({"你好小智", "你好小志", "小智", "hi xiaozhi", "hey xiaozhi", "alexa", "hey jarvis",
                        "okay nabu", "hey mycroft", "hey rhasspy"})  # fmt: skip
MISSING_DEVICE_ID_TEXT = "端口正常，如需测试连接，请启动digital-human测试"
EMOJI = {
    "neutral": "😶", "happy": "🙂", "laughing": "😆", "funny": "😂", "sad": "😔", "angry": "😠",
    "crying": "😭", "loving": "😍", "embarrassed": "😳", "surprised": "😲", "shocked": "😱",
    "thinking": "🤔", "confident": "😏", "confused": "🙄", "winking": "😉", "cool": "😎",
    "relaxed": "😌", "delicious": "🤤", "kissy": "😘", "sleepy": "😴", "silly": "😜",
}  # fmt: skip
ECHO_VAD = VadSettings(aggressiveness=2, frame_ms=30, start_voiced=4, start_window=6, hangover_ms=500,
                       preroll_ms=300, max_utterance_s=15.0)  # fmt: skip
MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2024-11-05",
        "capabilities": {"roots": {"listChanged": True}, "sampling": {}},
        "clientInfo": {"name": "companion-echo-server", "version": "1.0.0"},
    },
}


def make_token(secret: str, client_id: str, device_id: str, timestamp: int) -> str:
    """xiaozhi-esp32-server's token: base64url_nopad(HMAC-SHA256(secret, "cid|did|ts")) + "." + ts."""
    digest = hmac.new(
        secret.encode(), f"{client_id}|{device_id}|{timestamp}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + f".{timestamp}"


def request_field(request: Request, header: str) -> str:
    """A connect parameter from its header, else from the query (`Device-Id` or `?device-id=`)."""
    query = parse_qs(urlsplit(request.path).query)
    return request.headers.get(header) or (query.get(header.lower()) or [""])[0]


@dataclass(frozen=True)
class HttpRequest:
    """One request to the OTA port; header names in lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path.rstrip("/")

    @property
    def device(self) -> str:
        return self.headers.get("device-id", "").lower()


class HttpReply(NamedTuple):
    status: int
    content_type: str
    body: bytes


class EchoServer:
    """The echo server; use `async with EchoServer(port=0) as server:` then `server.websocket_url`."""

    vad: VadSettings = ECHO_VAD
    auth_secret = "echo-server-secret"  # signs the tokens the OTA reply hands out

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ota: bool = False,
        ota_port: int = 0,
        activation: bool = False,
        bind_after_polls: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`activation`: OTA hands out a 6-digit code until the device is bound (by `bind()`, a GET of
        /xiaozhi/ota/bind?code=…, or automatically after `bind_after_polls` activation polls).
        """
        self.host = host
        self.port = port
        self.ota_enabled = ota or activation
        self.ota_port = ota_port
        self.activation = activation
        self.bind_after_polls = bind_after_polls
        self.ssl_context = ssl_context
        self.connections: set[EchoConnection] = set()
        self.activation_polls = 0
        self.bound: set[str] = set()
        self.codes: dict[str, str] = {}
        self._server: Server | None = None
        self._http: asyncio.Server | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Self:
        """Listen (websocket, and OTA when enabled); `port`/`ota_port` then hold the real ports."""
        self._server = await serve(
            self._serve_connection,
            self.host,
            self.port,
            ssl=self.ssl_context,
            process_request=self.check_upgrade,
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
        """Stop listening and drop every connection (without a close frame: stopping is immediate)."""
        for connection in list(self.connections):
            connection.abort()
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

    async def __aenter__(self) -> Self:
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

    def bind(self, device_id_or_code: str) -> bool:
        """Bind a device (by Device-Id or by its activation code), as a user does in a console."""
        for device, code in self.codes.items():
            if device_id_or_code in (device, code):
                self.bound.add(device)
                log.info("device %s bound (code %s)", device, code)
                return True
        return False

    # ------------------------------------------------------------------ websocket
    def check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """An HTTP answer that refuses the websocket upgrade, or None to accept it (always here)."""
        return None

    def refusal(self, request: Request) -> str | None:
        """The plain-text line sent before closing an upgraded connection instead of serving it, or None."""
        return None if request_field(request, "Device-Id") else MISSING_DEVICE_ID_TEXT

    def make_connection(self, ws: ServerConnection, version: int) -> EchoConnection:
        """The handler of one accepted connection (binary protocol `version`)."""
        return EchoConnection(self, ws, version)

    async def _serve_connection(self, ws: ServerConnection) -> None:
        request = ws.request
        if request is None:  # websockets calls the handler only after a handshake
            return
        refusal = self.refusal(request)
        if refusal is not None:
            await ws.send(refusal)
            await ws.close()
            return
        try:
            version = int(request.headers.get("Protocol-Version", "1"))
        except ValueError:
            version = 1
        connection = self.make_connection(ws, version if version in framing.VERSIONS else 1)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            await connection.stop_reply()

    # ------------------------------------------------------------------ OTA over HTTP
    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request, protocol = await asyncio.wait_for(_read_request(reader), 10.0)
            reply = self._route(request)
            head = h11.Response(
                status_code=reply.status,
                reason=http.HTTPStatus(reply.status).phrase.encode(),
                headers=[
                    ("Content-Type", reply.content_type),
                    ("Content-Length", str(len(reply.body))),
                    ("Connection", "close"),
                ],
            )
            for event in (head, h11.Data(data=reply.body), h11.EndOfMessage()):
                writer.write(protocol.send(event) or b"")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, h11.ProtocolError) as exc:
            log.debug("OTA request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, request: HttpRequest) -> HttpReply:
        if request.path == "/xiaozhi/ota/bind":
            code = (parse_qs(urlsplit(request.target).query).get("code") or [""])[0]
            if self.bind(code):
                return HttpReply(200, "text/plain", b"bound\n")
            return HttpReply(404, "text/plain", b"unknown code\n")
        if request.path == "/xiaozhi/ota/activate" and request.method == "POST":
            return self.ota_activate(request)
        if request.path == "/xiaozhi/ota" and request.method in ("POST", "GET"):
            return self.ota_check(request)
        return HttpReply(404, "text/plain", b"not found\n")

    def ota_check(self, request: HttpRequest) -> HttpReply:
        """The OTA check: `ota_reply` as JSON, or 400 without a Device-Id."""
        if not request.device:
            return HttpReply(400, "application/json", b'{"success":false,"message":"missing Device-Id"}')
        reply = self.ota_reply(request.device, request.headers)
        return HttpReply(200, "application/json", json.dumps(reply).encode())

    def ota_activate(self, request: HttpRequest) -> HttpReply:
        """An activation poll: 200 once the device is bound (or activation is off), 202 until then."""
        self.activation_polls += 1
        device = request.device
        if self.bind_after_polls is not None and self.activation_polls >= self.bind_after_polls and device:
            self.bound.add(device)
        if not self.activation or device in self.bound:
            return HttpReply(200, "text/plain", b"success")
        return HttpReply(202, "text/plain", b"")

    def ota_reply(self, device: str, headers: dict[str, str]) -> dict[str, Any]:
        """Server time and firmware, then an activation code for an unbound device, else the websocket."""
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
        return reply


async def _read_request(reader: asyncio.StreamReader) -> tuple[HttpRequest, h11.Connection]:
    """One HTTP/1.1 request (a body of at most MAX_BODY), and the h11 state to answer it with."""
    protocol = h11.Connection(h11.SERVER)
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = protocol.next_event()
        if event is h11.NEED_DATA:
            protocol.receive_data(await reader.read(1 << 16))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ValueError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
            request = HttpRequest(head.method.decode(), head.target.decode(), headers, bytes(body))
            return request, protocol
        else:
            raise ConnectionError("the client closed the connection before a full request")


# ---------------------------------------------------------------- one client connection


class EchoConnection:
    """The server side of one websocket: hello, listening, VAD, the spoken reply, MCP."""

    def __init__(self, server: EchoServer, ws: ServerConnection, version: int) -> None:
        self.server = server
        self.ws = ws
        self.version = version
        self.session_id: str | None = str(uuid.uuid4())  # None: messages carry no session_id
        self.hello_done = False
        self.mode = ""
        self.decoder = OpusDecoder(UPLINK_RATE)
        self.endpointer = Endpointer(server.vad)
        self.utterance = bytearray()
        self.in_speech = False
        self.last_frame_at = 0.0
        self.last_utterance = b""
        self.speaking = False
        self.turns = 0  # spoken replies completed
        self.mcp_initialized = False
        self.tools: list[dict[str, Any]] = []  # what the device's tools/list answered
        self.reply_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def abort(self) -> None:
        """Drop the connection at once, without a close frame."""
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def run(self) -> None:
        """Serve the connection until it closes."""
        self._watchdog = asyncio.create_task(self._silence_watchdog())
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    await self.on_text(message)
                else:
                    await self.on_binary(message)
        except ConnectionClosed:
            pass
        finally:
            self._watchdog.cancel()

    async def send_text(self, text: str) -> None:
        """Every text frame the server sends goes through here."""
        await self.ws.send(text)

    async def send(self, kind: str, **fields: Any) -> None:
        """Every server message (but hello and MCP) goes through here."""
        await self.send_text(messages.server_message(kind, self.session_id, **fields))

    # ------------------------------------------------------------------ text
    async def on_text(self, text: str) -> None:
        """A text frame from the client (anything that is not a message is ignored)."""
        try:
            msg = messages.parse(text)
        except MessageError:
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

    def hello_reply(self, hello: dict[str, Any]) -> str:
        """The server hello answering the client's: websocket, 24 kHz / 60 ms Opus downlink."""
        return messages.server_hello(self.session_id, DOWNLINK, transport="websocket", version=self.version)

    async def on_hello(self, msg: dict[str, Any]) -> None:
        await self.send_text(self.hello_reply(msg))
        self.hello_done = True
        features = msg.get("features")
        if isinstance(features, dict) and features.get("mcp"):
            await self.send_text(messages.server_message("mcp", None, payload=MCP_INITIALIZE))

    async def on_listen(self, msg: dict[str, Any]) -> None:
        state = msg.get("state")
        if state == "start":
            mode = msg.get("mode")
            self.mode = mode if mode in messages.LISTEN_MODES else "auto"
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
        await self.send_stop(aborted=True)

    def on_mcp(self, payload: Any) -> None:
        """A JSON-RPC message from the device: `initialize` answered → tools/list, pages followed."""
        if not isinstance(payload, dict):
            return
        ident = payload.get("id")
        if ident == 1 and "result" in payload and not self.mcp_initialized:
            self.mcp_initialized = True
            asyncio.get_running_loop().create_task(self.list_tools())
        elif ident == 2 and "result" in payload:
            result = payload["result"]
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                self.tools.extend(t for t in result["tools"] if isinstance(t, dict))
                cursor = result.get("nextCursor")
                if isinstance(cursor, str) and cursor:
                    page = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": cursor}}
                    asyncio.get_running_loop().create_task(self.send_mcp(page))

    async def list_tools(self) -> None:
        """Ask for the device's tools (once it has answered `initialize`)."""
        await self.send_mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})

    async def send_mcp(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send_text(messages.server_message("mcp", None, payload=payload))

    # ------------------------------------------------------------------ audio
    async def on_binary(self, data: bytes) -> None:
        """An audio frame from the client."""
        if not self.hello_done:
            return
        try:
            frame = framing.decode(self.version, data)
        except framing.FrameError as exc:
            log.debug("bad uplink frame: %s", exc)
            return
        if self.speaking and self.mode != "realtime":
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
                    await self.send_stop(aborted=True)
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
        """Ends an auto-mode utterance when the client stops sending (wall-clock silence)."""
        hangover = self.server.vad.hangover_ms / 1000
        while True:
            await asyncio.sleep(0.05)
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
        self.reply_task = asyncio.get_running_loop().create_task(self.reply(text, pcm, "I heard you."))

    async def _text_turn(self, text: str) -> None:
        await self.stop_reply()
        if text.strip().lower() in WAKE_WORDS:
            await self.send("stt", text=text)
            await self.send_stop(aborted=False)
            return
        pcm = self.last_utterance or _tone(0.6)
        emotion = emotion_for(text) or "happy"  # a typed emoji sets the mood, as an LLM's would
        self.reply_task = asyncio.get_running_loop().create_task(self.reply(text, pcm, text, emotion))

    async def stop_reply(self) -> None:
        task, self.reply_task = self.reply_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task

    async def reply(self, heard: str, pcm: bytes, sentence: str, emotion: str = "") -> None:
        """One turn's answer: `stt` (what was heard), then `pcm` spoken back, or only `tts stop` if empty."""
        try:
            await self.send("stt", text=heard)
            if not pcm:
                await self.send_stop(aborted=False)
                return
            self.speaking = True
            await self.send("tts", state="start")
            emotion = emotion or EMOTIONS[(self.turns + 1) % len(EMOTIONS)]
            await self.send("llm", text=EMOJI[emotion], emotion=emotion)
            await self.send("tts", state="sentence_start", text=sentence)
            await self.speak(pcm)
            await self.send_stop(aborted=False)
            self.turns += 1
        except ConnectionClosed:
            pass

    async def speak(self, pcm: bytes) -> None:
        """The PCM as 24 kHz Opus, 60 ms per packet: LEAD_PACKETS at once, then one per 60 ms; returns
        about when the client's playback ends (its buffer holds the lead)."""
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
        end = start + max(0, count - LEAD_PACKETS) * FRAME_MS / 1000 + LEAD_PACKETS * FRAME_MS / 1000
        await asyncio.sleep(max(0.0, end - loop.time()))

    async def send_stop(self, aborted: bool) -> None:
        """`tts stop`: the reply is over (`aborted`: cut short by `abort` or by the user talking over it)."""
        self.speaking = False
        with contextlib.suppress(ConnectionClosed):
            await self.send("tts", state="stop")


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
