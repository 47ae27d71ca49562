"""An ESP-AI server on 127.0.0.1 for tests, writing the open-source esp-ai server's wire format byte for byte.

What it does, and in which order, follows the esp-ai Node server (src/functions/init_server.js and
client_messages/*, functions/iat|llm|tts/index.js, utils/audio_sender.js):

- the device's identity comes from the query string; without `device_id` or `v` the server waits (5 s on
  the real one, `missing_id_delay` here), sends `{"type":"error","message":…,"code":"004"}` and closes;
  a second connection with the same device_id closes the first;
- `play_audio_ws_conntceed` → (auth check: `auth_fail` then a close) → `stc_time`;
- `start` → `session_stop` for a session still busy (and the server waits for `session_stop_ack`) →
  `session_start{session_id}` → `session_status: iat_start`; PCM is taken only after that;
- `iat_end` (or the scripted ASR timing) → `log` "ASR 识别结果：…" (+ `instruct on_iat_cb` when the
  server has an onIATcb) → `session_status: iat_end` → per sentence: `emotion` (only when it changes),
  `instruct on_llm_cb`, `play_audio{tts_task_id}`, `session_status: tts_chunk_start`, binary frames
  (4-digit session id + "00" + MP3, the last one "01" + the rest) → `session_status: llm_end` →
  a bare 6-byte frame session id + "02" (the LLM's end mark) — or, with `end_on_last_chunk`, the status
  rides on the last sentence's last chunk as the TTS sender does when it has the text's end;
- an empty transcript → `session_status: iat_end`, the bare text `session_end`, then (if scripted) the
  sleep reply in session 0010;
- `char_txt{text}` → a new session and the reply to `text`;
- `cts_time` → `net_delay`. Everything received is recorded for assertions.

JSON is written as JavaScript's JSON.stringify writes it: no spaces, keys in the server's order.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

RESERVED_SIDS = {"0000", "0001", "0010", "1000", "1001", "1002"}


def js(body: dict[str, Any]) -> str:
    """JSON.stringify's output for a flat object."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Sentence:
    """One sentence of a reply: its text (for on_llm_cb), its MP3 stream, and the emotion sent before it."""

    text: str
    mp3: bytes
    emotion: str = ""


@dataclass
class Reply:
    """What the server does for one turn."""

    transcript: str = "你好"
    sentences: list[Sentence] = field(default_factory=list)
    end_status: str = "02"  # 02: listen again (what the LLM path sends), 03: session over
    end_on_last_chunk: bool = False
    stale_before: bytes = b""  # a frame of another session sent before the reply (must be dropped)
    garbage_before: list[bytes | str] = field(default_factory=list)  # malformed frames to skip
    error: dict[str, Any] | None = None  # an `error` message sent instead of the reply
    sleep_reply: bytes = b""  # with an empty transcript: the server's sleep reply, spoken in session 0010


@dataclass
class Connection:
    """One device connection's record."""

    query: dict[str, str]
    texts: list[dict[str, Any] | str] = field(default_factory=list)
    pcm: bytearray = field(default_factory=bytearray)
    pcm_before_iat_start: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class EspaiServer:
    """`async with EspaiServer() as server:`; `server.url` is the device socket to configure."""

    def __init__(
        self,
        script: Callable[[int], Reply] | None = None,
        *,
        api_key: str = "",
        chunk_bytes: int = 4096,
        iat_delay: float = 0.05,
        missing_id_delay: float = 0.2,
        on_iat_cb: bool = True,
        on_llm_cb: bool = True,
        greeting: bytes = b"",
    ) -> None:
        self.script = script or (lambda turn: Reply())
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.iat_delay = iat_delay
        self.missing_id_delay = missing_id_delay
        self.on_iat_cb = on_iat_cb
        self.on_llm_cb = on_llm_cb
        self.greeting = greeting  # MP3 of the "connected" greeting (session 0001), sent after stc_time
        self.connections: list[Connection] = []
        self.turns = 0
        self.sent_reply_at: list[float] = []  # loop time of each reply's first audio frame
        self.end_of_speech_at: list[float] = []  # loop time each `iat_end` arrived
        self.turn_done = asyncio.Event()
        self._devices: dict[str, ServerConnection] = {}
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> EspaiServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def texts_of(self, kind: str) -> list[dict[str, Any]]:
        """Every JSON message of `kind` the devices sent, in order."""
        return [t for c in self.connections for t in c.texts if isinstance(t, dict) and t.get("type") == kind]

    async def wait_for_text(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        async def poll() -> list[dict[str, Any]]:
            while len(found := self.texts_of(kind)) < count:
                await asyncio.sleep(0.01)
            return found

        return await asyncio.wait_for(poll(), timeout)

    # ------------------------------------------------------------------ one connection
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        query = dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True))
        conn = Connection(query)
        self.connections.append(conn)
        try:
            device_id, version = query.get("device_id", ""), query.get("v", "")
            if not device_id or not version:
                await asyncio.sleep(self.missing_id_delay)
                await ws.send(js({"type": "error", "message": "设备异常，未读取到 device_id", "code": "004"}))
                await ws.close()
                return
            old = self._devices.get(device_id)
            if old is not None:
                await old.close()
            self._devices[device_id] = ws
            await _Session(self, ws, conn).run()
        except ConnectionClosed:
            pass
        finally:
            conn.closed.set()
            if self._devices.get(query.get("device_id", "")) is ws:
                del self._devices[query["device_id"]]


class _Session:
    """The server's state for one device (its G_devices entry)."""

    def __init__(self, server: EspaiServer, ws: ServerConnection, conn: Connection) -> None:
        self.server = server
        self.ws = ws
        self.conn = conn
        self.session_id = ""
        self.started = False
        self.iat_connected = False
        self.busy = False  # audio playing or a reply under way: a new `start` stops it first
        self.prev_emotion = ""
        self.stop_acked = asyncio.Event()
        self.end_of_speech = asyncio.Event()
        self.reply_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for frame in self.ws:
            if isinstance(frame, bytes):
                if self.started and self.iat_connected:
                    self.conn.pcm += frame
                elif self.started:
                    self.conn.pcm_before_iat_start += len(frame)
                continue
            try:
                msg = json.loads(frame)
            except ValueError:
                self.conn.texts.append(frame)
                continue
            self.conn.texts.append(msg)
            await self._on_message(msg)

    async def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "play_audio_ws_conntceed":
            await self._connected()
        elif kind == "cts_time":
            delay = (time.time() * 1000 - float(msg.get("stc_time") or 0)) / 2
            await self.ws.send(js({"type": "net_delay", "net_delay": delay}))
        elif kind == "start":
            self._spawn(self._start())
        elif kind == "char_txt":
            self._spawn(self._text_turn(str(msg.get("text", ""))))
        elif kind == "iat_end":
            self.server.end_of_speech_at.append(asyncio.get_running_loop().time())
            self.end_of_speech.set()
        elif kind == "session_stop_ack":
            self.stop_acked.set()
        elif kind == "client_out_audio_over":
            if msg.get("session_status") in ("02", "03") and msg.get("session_id") != "0010":
                self.session_id = ""  # clear_sid
            self.busy = False
            self.server.turn_done.set()

    def _spawn(self, work: Any) -> None:
        if self.reply_task is not None and not self.reply_task.done():
            self.reply_task.cancel()
        self.reply_task = asyncio.get_running_loop().create_task(work)

    async def _connected(self) -> None:
        if self.server.api_key and self.conn.query.get("api_key") != self.server.api_key:
            await self.ws.send(js({"type": "auth_fail", "message": "api_key 无效", "code": "4003"}))
            await asyncio.sleep(0.2)  # the real server waits 5 s, against retry storms
            await self.ws.close()
            return
        await self.ws.send(js({"type": "stc_time", "stc_time": str(int(time.time() * 1000))}))
        if self.server.greeting:
            await self._play("0001", [Sentence("后台服务连接成功", self.server.greeting)], "03", True)

    async def _stop(self) -> None:
        """G_Instance.stop: a busy session is stopped, and a 2.86+ client's ack awaited."""
        if self.busy or self.iat_connected:
            self.stop_acked.clear()
            await self.ws.send(js({"type": "session_stop", "data": "", "session_id": self.session_id}))
            await asyncio.wait_for(self.stop_acked.wait(), 5)
        self.started = False
        self.iat_connected = False
        self.busy = False

    async def _new_session(self) -> None:
        sid = ""
        while not sid or sid in RESERVED_SIDS or sid == self.session_id:
            sid = str(random.randint(1000, 9999))
        self.session_id = sid
        await self.ws.send(js({"type": "session_start", "session_id": sid}))

    async def _start(self) -> None:
        await self._stop()
        await self._new_session()
        self.started = True
        self.end_of_speech.clear()
        await asyncio.sleep(self.server.iat_delay)  # connecting the ASR service
        self.iat_connected = True
        await self.ws.send(js({"type": "session_status", "status": "iat_start"}))
        await asyncio.wait_for(self.end_of_speech.wait(), 30)
        self.server.turns += 1
        reply = self.server.script(self.server.turns)
        self.iat_connected = False
        if reply.error is not None:
            await self.ws.send(js(reply.error))
            return
        if not reply.transcript:
            await self.ws.send(js({"type": "session_status", "status": "iat_end"}))
            await self.ws.send("session_end")
            if reply.sleep_reply:  # G_Instance.tts(sleep_reply): its own session id, status 03
                await self._play(
                    "0010", [Sentence("我先休息了哦，有需要再叫我。", reply.sleep_reply)], "03", True
                )
            return
        await self.ws.send(js({"type": "log", "data": f"ASR 识别结果：{reply.transcript}"}))
        if self.server.on_iat_cb:
            await self.ws.send(js({"type": "instruct", "command_id": "on_iat_cb", "data": reply.transcript}))
        await self.ws.send(js({"type": "session_status", "status": "iat_end"}))
        await self._reply(reply)

    async def _text_turn(self, text: str) -> None:
        await self._stop()
        await self._new_session()
        self.server.turns += 1
        await self._reply(self.server.script(self.server.turns))

    async def _reply(self, reply: Reply) -> None:
        self.busy = True
        for frame in reply.garbage_before:
            await self.ws.send(frame)
        if reply.stale_before:
            await self.ws.send(reply.stale_before)
        await self._play(self.session_id, reply.sentences, reply.end_status, reply.end_on_last_chunk)

    async def _play(self, sid: str, sentences: list[Sentence], end: str, end_on_last: bool) -> None:
        first = True
        for i, sentence in enumerate(sentences):
            if sentence.emotion and sentence.emotion != self.prev_emotion:
                self.prev_emotion = sentence.emotion
                await self.ws.send(js({"type": "emotion", "data": sentence.emotion}))
            if self.server.on_llm_cb and sid != "0001":
                await self.ws.send(js({"type": "instruct", "command_id": "on_llm_cb", "data": sentence.text}))
            await self.ws.send(
                js({"type": "play_audio", "tts_task_id": f"task-{random.randint(0, 1 << 30)}"})
            )
            await self.ws.send(js({"type": "session_status", "status": "tts_chunk_start"}))
            last = i == len(sentences) - 1
            status = end if (last and end_on_last) else "01"
            data, size = sentence.mp3, self.server.chunk_bytes
            chunks = [data[p : p + size] for p in range(0, len(data), size)] or [b""]
            for n, chunk in enumerate(chunks):
                if first and sid != "0001":
                    self.server.sent_reply_at.append(asyncio.get_running_loop().time())
                    first = False
                mark = status if n == len(chunks) - 1 else "00"
                await self.ws.send(sid.encode() + mark.encode() + chunk)
                await asyncio.sleep(0)
        if sid != "0001":
            await self.ws.send(js({"type": "session_status", "status": "llm_end"}))
        if not end_on_last:
            await self.ws.send(sid.encode() + end.encode())
