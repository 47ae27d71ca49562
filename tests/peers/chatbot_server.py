"""A Mindcraft chat_bot_v3 server on 127.0.0.1 for tests, following ../shared/spec/chatbot-v3.md.

- The socket (websockets): the seed's `Authorization: Bearer <secret>` header on the upgrade (checked:
  missing or wrong is HTTP 401, unless `header` says otherwise), then the secret as `?token=` or in an
  `auth_token` event (or both), answered by 1008, 2003 (unknown) or 2004 (an expired device token). The
  secret is the account API key or one of `device_tokens`. `agent_action` opens a turn (voice: binary
  PCM until `stream_asr`, then ASR 1004; text: `asr_text`), the scripted reply follows in either
  envelope (1003 top-level `agent_output`, or 1007 in `socket_data`) with z_index, then 1006
  `agent_stop`. `stream_output` cancels the script; a configurable number of its steps are still sent
  afterwards, as the real server's late frames.
- An HTTP server: TTS MP3 files (with per-file status, delay and trickle), and the REST session API
  (`/v1/session/` create and list, `/v1/message/clear/`) behind `Authorization: Bearer <key or token>`.

Everything received is recorded for assertions. Use it inside a test's event loop (`async with`), or on
a thread of its own for synchronous callers such as click's CliRunner (`ThreadedServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

API_KEY = "MC-" + "0123456789ABCDEF" * 2
DEVICE_TOKEN = "dt-" + "5f3c9a7e21b84d06" * 3  # a device access token, not the account key


# ---------------------------------------------------------------------------- server messages


def output(body: dict[str, Any], envelope: int = 1003) -> dict[str, Any]:
    """An agent output item in the seed's envelope (1003) or the live demo's (1007)."""
    if envelope == 1007:
        return {
            "socket_type": "agent_event",
            "socket_status": 1007,
            "event_name": "agent_action",
            "socket_data": {"agent_output": body},
            "agent_name": "chat_bot_v3",
        }
    return {
        "socket_type": "agent_event",
        "socket_message": "request_completed",
        "socket_status": 1003,
        "event_name": "agent_action",
        "agent_output": body,
        "agent_name": "chat_bot_v3",
    }


def emotion(name: str, envelope: int = 1003) -> dict[str, Any]:
    return output({"output_type": "emotion", "emotion_output": name}, envelope)


def llm(text: str, index: int, envelope: int = 1003, asr: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"output_type": "llm", "llm_response": text, "z_index": index}
    if asr:
        body["asr_content"] = asr
    return output(body, envelope)


def tts(url: str, index: int | None, envelope: int = 1003, seconds: float = 1.5) -> dict[str, Any]:
    body: dict[str, Any] = {"output_type": "tts", "audio_seconds": seconds, "tts_audio": url}
    if index is not None:
        body["z_index"] = index
    return output(body, envelope)


def agent_stop() -> dict[str, Any]:
    return {
        "socket_type": "agent_event",
        "socket_message": "agent_stop",
        "socket_status": 1006,
        "event_name": "agent_action",
        "agent_name": "chat_bot_v3",
    }


def asr(text: str) -> dict[str, Any]:
    return {"socket_type": "agent_event", "socket_status": 1004, "socket_data": {"text": text}}


def status(code: int, **data: Any) -> dict[str, Any]:
    return {"socket_type": "agent_event", "socket_status": code, "socket_data": data}


@dataclass
class Step:
    """One scripted server message, sent `delay` seconds after the previous one."""

    message: dict[str, Any] | str
    delay: float = 0.0


@dataclass
class Turn:
    """What the server saw of one turn."""

    params: dict[str, Any]
    socket_id: str | None
    audio_bytes: int = 0
    frames: int = 0
    stream_asr: bool = False
    cancelled: bool = False


Script = Callable[[Turn], list[Step]]


@dataclass
class Behaviour:
    """How the HTTP server serves one file."""

    status: int = 200
    delay: float = 0.0  # before the response starts
    chunk: int = 0  # bytes per write; 0 = all at once
    chunk_delay: float = 0.0


@dataclass
class ServerState:
    """Everything recorded, for assertions."""

    connections: int = 0
    authenticated: int = 0
    auth_events: list[str] = field(default_factory=list)
    query_tokens: list[str] = field(default_factory=list)
    header_tokens: list[str | None] = field(default_factory=list)  # the upgrade's Bearer, None: no header
    refused_upgrades: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    http_requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    sessions: list[dict[str, str]] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)


class ChatbotServer:
    """The socket server and the HTTP server, on free ports of 127.0.0.1."""

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        api_key: str = API_KEY,
        device_tokens: tuple[str, ...] = (DEVICE_TOKEN,),
        expired_tokens: tuple[str, ...] = (),  # device tokens past their 7 days: answered 2004
        auth: str = "both",  # where the key is accepted: "query", "event" or "both"
        header: str = "require",  # the upgrade's Bearer: "require" (seed), "check" (if present), "ignore"
        echo_socket_id: bool = False,
        late_steps: int = 2,
        stop_after_cancel: bool = True,
        asr_text: str = "hello",
    ) -> None:
        self.files = dict(files or {})
        self.behaviour: dict[str, Behaviour] = {}
        self.api_key = api_key
        self.device_tokens = set(device_tokens)
        self.expired_tokens = set(expired_tokens)
        self.auth = auth
        self.header = header
        self.echo_socket_id = echo_socket_id
        self.late_steps = late_steps
        self.stop_after_cancel = stop_after_cancel
        self.asr_text = asr_text
        self._remaining: list[Step] = []
        self.script: Script = lambda turn: [Step(agent_stop())]
        self.state = ServerState()
        self.changed = asyncio.Condition()
        self._ws_server: Server | None = None
        self._http_server: asyncio.Server | None = None
        self._connections: set[ServerConnection] = set()
        self.ws_port = 0
        self.http_port = 0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> ChatbotServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._ws_server = await serve(
            self._serve_socket, "127.0.0.1", 0, max_size=1 << 20, process_request=self._check_upgrade
        )
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._http_server = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        self.http_port = self._http_server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._http_server is not None:
            self._http_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_server.wait_closed(), 2)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/socket-v1/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rest_url(self) -> str:
        return f"{self.http_url}/v1/"

    def file_url(self, name: str) -> str:
        return f"{self.http_url}/tts/{name}.mp3?sig=secret"

    async def drop_connections(self) -> None:
        """Close every open socket (a network drop seen from the client)."""
        for connection in list(self._connections):
            await connection.close(1011, "test drop")

    async def wait_for(self, predicate: Callable[[ServerState], bool], timeout: float = 10.0) -> None:
        """Until `predicate(state)` holds (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: predicate(self.state))

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # ------------------------------------------------------------------ socket
    def valid(self, token: str) -> bool:
        """A secret this server accepts: the account key or a device token."""
        return token == self.api_key or token in self.device_tokens

    def _check_upgrade(self, ws: ServerConnection, request: Request) -> Response | None:
        """The seed's required header: `Authorization: Bearer <api key or device token>`."""
        value = request.headers.get("Authorization")
        bearer = value[7:] if value is not None and value.startswith("Bearer ") else None
        self.state.header_tokens.append(bearer if value is not None else None)
        if self.header == "ignore" or (self.header == "check" and value is None):
            return None
        if bearer is not None and (self.valid(bearer) or bearer in self.expired_tokens):
            return None  # an expired token is told so (2004) once the socket is open
        self.state.refused_upgrades += 1
        return ws.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong Authorization: Bearer\n")

    async def _serve_socket(self, ws: ServerConnection) -> None:
        self.state.connections += 1
        self._connections.add(ws)
        await self._notify()
        path = ws.request.path if ws.request is not None else ""
        query_token = parse_qs(urlsplit(path).query).get("token", [""])[0]
        self.state.query_tokens.append(query_token)
        authenticated = False
        script_task: asyncio.Task[None] | None = None
        turn: Turn | None = None
        try:
            if query_token and self.auth in ("query", "both"):
                authenticated = await self._authenticate(ws, query_token)
                if not authenticated:
                    return
            async for message in ws:
                if isinstance(message, bytes):
                    if turn is not None and not turn.stream_asr and authenticated:
                        turn.audio_bytes += len(message)
                        turn.frames += 1
                    continue
                msg = json.loads(message)
                self.state.messages.append(msg)
                name = msg.get("event_name")
                await self._notify()
                if name == "auth_token":
                    token = str(msg.get("event_params", {}).get("token", ""))
                    self.state.auth_events.append(token)
                    if self.auth in ("event", "both") and not authenticated:
                        authenticated = await self._authenticate(ws, token)
                        if not authenticated:
                            return
                    continue
                if not authenticated:
                    await self._send(ws, status(2003, message="not authenticated"), None)
                    continue
                if name == "agent_action":
                    if script_task is not None and not script_task.done():
                        script_task.cancel()
                    params = dict(msg.get("event_params") or {})
                    turn = Turn(params, msg.get("socket_id"))
                    self.state.turns.append(turn)
                    await self._notify()
                    if "asr_text" in params:
                        script_task = asyncio.create_task(self._play(ws, turn, []))
                elif name == "stream_asr" and turn is not None:
                    turn.stream_asr = True
                    await self._notify()
                    lead = [Step(asr(self.asr_text))] if turn.audio_bytes and self.asr_text else []
                    script_task = asyncio.create_task(self._play(ws, turn, lead))
                elif name == "stream_output" and turn is not None:
                    turn.cancelled = True
                    await self._notify()
                    if script_task is not None and not script_task.done():
                        script_task.cancel()
                        late = self._remaining[: self.late_steps]
                        if self.stop_after_cancel:
                            late.append(Step({**agent_stop(), "socket_message": "agent_stop_force"}))
                        script_task = asyncio.create_task(self._send_late(ws, turn, late))
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(ws)
            if script_task is not None:
                script_task.cancel()

    async def _authenticate(self, ws: ServerConnection, token: str) -> bool:
        if token in self.expired_tokens:
            await self._send(
                ws,
                {"socket_type": "agent_event", "socket_status": 2004, "socket_message": "token无效或已过期"},
            )
            await ws.close(1008, "token expired")
            await self._notify()
            return False
        if self.valid(token):
            self.state.authenticated += 1
            await self._send(
                ws, {"socket_type": "agent_event", "socket_status": 1008, "socket_message": "连接成功"}
            )
            await self._notify()
            return True
        await self._send(
            ws, {"socket_type": "agent_event", "socket_status": 2003, "socket_message": "api key错误"}
        )
        await ws.close(1008, "bad api key")
        await self._notify()
        return False

    async def _play(self, ws: ServerConnection, turn: Turn, lead: list[Step]) -> None:
        steps = lead + self.script(turn)
        self._remaining = list(steps)
        while self._remaining:
            step = self._remaining[0]
            if step.delay:
                await asyncio.sleep(step.delay)
            self._remaining.pop(0)
            await self._send(ws, step.message, turn)

    async def _send_late(self, ws: ServerConnection, turn: Turn, steps: list[Step]) -> None:
        for step in steps:
            await self._send(ws, step.message, turn)

    async def _send(
        self, ws: ServerConnection, message: dict[str, Any] | str, turn: Turn | None = None
    ) -> None:
        if isinstance(message, dict) and self.echo_socket_id and turn is not None and turn.socket_id:
            message = {**message, "socket_id": turn.socket_id}
        text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    # ------------------------------------------------------------------ HTTP
    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            method, target, _ = request.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            self.state.http_requests.append((method, target, headers, body))
            await self._notify()
            path = urlsplit(target).path
            if path.startswith("/tts/"):
                await self._serve_file(writer, path.removeprefix("/tts/").removesuffix(".mp3"))
            elif path.startswith("/v1/"):
                await self._serve_rest(writer, method, path, headers, body)
            else:
                await self._respond(writer, 404, b"not found", "text/plain")
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _serve_file(self, writer: asyncio.StreamWriter, name: str) -> None:
        behaviour = self.behaviour.get(name, Behaviour())
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        data = self.files.get(name)
        if data is None or behaviour.status != 200:
            code = 404 if data is None else behaviour.status
            await self._respond(writer, code, b"<html><body>Not Found</body></html>", "text/html")
            return
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        step = behaviour.chunk or len(data)
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
            if behaviour.chunk_delay and i + step < len(data):
                await asyncio.sleep(behaviour.chunk_delay)

    async def _serve_rest(
        self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        bearer = headers.get("authorization", "")
        if not bearer.startswith("Bearer ") or not self.valid(bearer[7:]):
            await self._json(writer, 401, {"detail": "Authentication credentials were not provided."})
            return
        if path == "/v1/session/" and method == "POST":
            fields = _form_fields(headers.get("content-type", ""), body)
            if "session_name" not in fields or "model" not in fields:
                await self._json(
                    writer, 400, {"message": "session_name and model are required", "status": 400}
                )
                return
            token = str(uuid.uuid4())
            self.state.sessions.append({**fields, "session_token": token})
            await self._json(
                writer, 201, {"message": "", "status": 201, "data": {"session_token": token, **fields}}
            )
        elif path == "/v1/session/" and method == "GET":
            results = [
                {
                    "session_token": s["session_token"],
                    "session_name": s["session_name"],
                    "created_at": "2025-05-01",
                }
                for s in self.state.sessions
            ]
            await self._json(writer, 200, {"count": len(results), "results": results})
        elif path == "/v1/message/clear/" and method == "POST":
            try:
                token = json.loads(body).get("session_token")
            except ValueError:
                token = None
            if not isinstance(token, str) or not token:
                await self._json(writer, 400, {"message": "session_token is required", "status": 400})
                return
            self.state.cleared.append(token)
            await self._json(writer, 200, {"message": "ok", "status": 200})
        else:
            await self._json(writer, 404, {"detail": "Not found."})
        await self._notify()

    async def _json(self, writer: asyncio.StreamWriter, code: int, body: dict[str, Any]) -> None:
        await self._respond(writer, code, json.dumps(body).encode(), "application/json")

    async def _respond(self, writer: asyncio.StreamWriter, code: int, body: bytes, content_type: str) -> None:
        reason = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        head = (
            f"HTTP/1.1 {code} {reason.get(code, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (no files)."""
    match = re.search(r"boundary=([^;]+)", content_type)
    if not match:
        return {}
    fields: dict[str, str] = {}
    for part in body.split(b"--" + match.group(1).strip('"').encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if sep and name:
            fields[name.group(1).decode()] = value.removesuffix(b"\r\n").decode()
    return fields


class ThreadedServer:
    """A ChatbotServer on its own event loop thread, for synchronous tests (CliRunner)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatbot-peer", daemon=True)
        self.server: ChatbotServer | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[ChatbotServer]:
        self._thread.start()
        try:
            self.server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
            yield self.server
        finally:
            if self.server is not None:
                asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _start(self) -> ChatbotServer:
        server = ChatbotServer(**self._kwargs)
        await server.start()
        return server
