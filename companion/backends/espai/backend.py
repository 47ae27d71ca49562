"""The ESP-AI backend: this machine talks to an ESP-AI server the way an ESP-AI device does.

One long-running task (`run`) connects with the device's identity in the query string, says
`play_audio_ws_conntceed`, waits for the server's `stc_time` (sent once it has built the device's
configuration), reports `Connected` and pumps frames through the sans-I/O DeviceProtocol until the socket
dies; then it waits the shared backoff and connects again. `auth_fail` and the account errors (4000-4004)
are not retried in a storm: a fatal Alert, then the next attempt after `auth_retry_s`.

Microphone audio goes up as raw 16 kHz PCM. The reply comes down as one MP3 stream per sentence inside
binary frames; a SentenceFeed queues each sentence's bytes and the chat_bot_v3 backend's ReplyPlayer
decodes them and hands the PCM out in order, as SpeechStarted / SpeechAudio / SpeechEnded.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from typing import Any, Unpack

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ...audio.mp3 import Mp3Limits
from ...config import EspaiDeviceSettings, Settings
from ...errors import ConfigError
from ...events import (
    Alert,
    BackendEvent,
    Connected,
    EventSink,
    ListenMode,
    SpeechEnded,
    SpeechStarted,
    TurnEnded,
    UplinkFormat,
)
from ...net.tls import client_context
from ...net.urls import display_url
from ...protocols.espai import (
    DeviceProtocol,
    Mp3Piece,
    Output,
    Refused,
    Send,
    ServerClosing,
    SessionEnded,
    SessionStopped,
    connect_url,
)
from ...protocols.espai.wire import SID_TTS_FN
from ...service.logsetup import log_frame, register_secret
from ..reconnect import AuthFailed, ChannelLost, Down, Latch, ReconnectLoop, backoff_for, report_down
from ..reply_player import PlayerBackendOptions, ReplyPlayer
from ..websocket_errors import close_reason, connect_failure, upgrade_failure
from ..websocket_io import close_quietly, send_frame
from ..xiaozhi.identity import load_identity
from .sentences import SentenceFeed, sentence_key

log = logging.getLogger(__name__)

UPLINK_RATE = 16000  # the firmware's microphone format: raw PCM, 16 kHz, 16-bit, mono
UPLINK_FRAME_MS = 60
MAX_MESSAGE_BYTES = 1 << 20
REPORT_EVERY_S = 0.5  # the firmware reports its buffer at most twice a second
SENTENCE_TIMEOUT_S = 120.0  # one sentence's stream, from its first byte to its last sample


def resolve_device_id(settings: Settings) -> str:
    """`espai_device.device_id`, else the persisted identity's MAC (the one xiaozhi uses too)."""
    configured = settings.espai_device.device_id.strip()
    if configured:
        return configured
    return load_identity(settings.xiaozhi).device_id


class EspaiBackend:
    """An ESP-AI server over its device socket (implements companion.events.Backend)."""

    name = "espai"
    supports_text = True

    def __init__(self, settings: Settings, sink: EventSink, **options: Unpack[PlayerBackendOptions]) -> None:
        """Raises ConfigError at once for a missing URL or an unreadable CA file."""
        self.settings: EspaiDeviceSettings = settings.espai_device
        if not self.settings.url:
            raise ConfigError(
                "espai_device.url is empty: set it to the ESP-AI server's device socket, e.g. "
                "ws://192.168.1.10:8088"
            )
        self._sink = sink
        self.playback_rate = options.get("playback_rate", 24000)
        self.api_key = self.settings.api_key.strip()
        if self.api_key:
            register_secret(self.api_key)  # masked in every log line, the URL's query included
        self.device_id = resolve_device_id(settings)
        self.uplink = UplinkFormat("pcm", UPLINK_RATE, UPLINK_FRAME_MS)
        self.backoff = backoff_for(options)
        self.stats: Counter[str] = Counter()
        self.player: ReplyPlayer | None = None
        self.feed = SentenceFeed(
            self.playback_rate, Mp3Limits(self.settings.sentence_max_bytes, 600.0, SENTENCE_TIMEOUT_S)
        )
        self._ssl: ssl.SSLContext = client_context(self.settings.tls_ca, setting="espai_device.tls_ca")
        self._proto = DeviceProtocol()
        self._ws: ClientConnection | None = None
        self._ready = False
        self._planned = Latch()  # the server asked for the reconnect
        self._turns = 0
        self._announced: dict[str, int] = {}  # sentence key → the player's index
        self._reply_end: tuple[str, str] | None = None  # (session id, status) of the reply's end frame
        self._last_report = 0.0
        self._tasks: set[asyncio.Task[bool]] = set()
        self._reconnect = ReconnectLoop(
            "ESP-AI channel down",
            self.backoff,
            log=log,
            describe=self._describe,
            on_down=self._on_down,
            close_attempt=self._teardown,
        )

    # ------------------------------------------------------------------ Backend interface
    @property
    def connected(self) -> bool:
        """True from the server's `stc_time` (`Connected`) until the socket is lost."""
        return self._ready

    async def run(self) -> None:
        """Connect and serve the socket until `close()`, reconnecting with backoff."""
        await self._reconnect.run(self._serve, take_ready=self._take_ready, planned=self._planned.take)

    def _take_ready(self) -> bool:
        was_ready, self._ready = self._ready, False
        return was_ready

    def _on_down(self, down: Down) -> float | None:
        # a refused device or an empty quota does not change in a second
        fix = "Check espai_device.api_key / ext1..ext7 or COMPANION_ESPAI_DEVICE_KEY."
        return report_down(self._sink, down, fix=fix, auth_retry_s=self.settings.auth_retry_s)

    async def start_listening(self, mode: ListenMode) -> None:
        """`start`: a new session; audio is held until the server says `iat_start`."""
        del mode  # our endpointer ends the utterance with `iat_end` (the server's VAD may end it first)
        if await self._open_turn(uploading=True):
            await self._send(self._proto.start())

    async def stop_listening(self) -> None:
        """`iat_end`: recognise what was said now."""
        if self.player is not None:
            self.player.uploading = False
            self.player.touch()  # the reply is due from now on
        for text in self._proto.end_of_speech():
            await self._send(text)

    async def send_audio(self, frame: bytes) -> None:
        """One uplink PCM frame (held before `iat_start`, dropped and counted outside a turn)."""
        frames = self._proto.audio(frame) if self._ready else []
        if not frames:
            self.stats["uplink_held_or_dropped"] += 1
        for data in frames:
            if await self._send(data):
                self.stats["uplink_sent"] += 1

    async def abort(self, reason: str = "") -> None:
        """Stop the reply: its later frames are stale, its queued sentences dropped on the server."""
        self._drop_player()
        messages = self._proto.cancel()
        if messages:
            log.info("reply cancelled%s", f" ({reason})" if reason else "")
        for text in messages:
            await self._send(text)

    async def send_text(self, text: str) -> None:
        """A typed utterance: `char_txt`; the server answers in a new session."""
        if await self._open_turn(uploading=False):
            await self._send(self._proto.text_turn(text))

    async def _open_turn(self, *, uploading: bool) -> bool:
        """End a turn still open, then get a player ready for the new one; False when not connected."""
        if self._proto.in_turn or self.player is not None:
            await self.abort("a new turn starts")
        if not self._ready:
            log.warning("cannot start a turn: not connected to the ESP-AI server")
            return False
        self._new_player(uploading=uploading)
        return True

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        """The ESP-AI protocol has no device tools; nothing is sent."""
        log.debug("tool result dropped: the ESP-AI protocol has no device tools (%s)", payload.get("id"))

    async def close(self) -> None:
        """Stop reconnecting, close the socket and the decoder threads."""
        self._reconnect.stop()
        await self._teardown()
        for task in list(self._tasks):
            task.cancel()
        self.feed.close()

    # ------------------------------------------------------------------ the connection
    async def _serve(self) -> str:
        """One connection: upgrade with the device query, hello, `stc_time`, then frames until it closes."""
        settings = self.settings
        extra = {"AUDIO_BUFFER_SIZE": str(settings.audio_buffer_size)}
        if settings.little_rom:
            extra["LITTLE_ROM"] = "1"
        url = connect_url(
            settings.url, device_id=self.device_id, client_version=settings.client_version,
            api_key=self.api_key, ext={k: str(v) for k, v in settings.ext.items()}, extra=extra,
        )  # fmt: skip
        shown = display_url(settings.url)
        loop = asyncio.get_running_loop()
        log.debug("connecting to %s as device %s", shown, self.device_id)
        try:
            ws = await connect(
                url,
                ssl=self._ssl if url.startswith("wss:") else None,
                open_timeout=settings.ready_timeout_s,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
            )
        except InvalidHandshake as exc:
            raise upgrade_failure(exc, shown, "the device (api_key / device_id)") from None
        self._ws = ws
        self._proto = DeviceProtocol()
        last_alert = ""
        try:
            await self._send(self._proto.hello())
            deadline = loop.time() + settings.ready_timeout_s
            while not self._proto.ready:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        frame = await ws.recv()
                except TimeoutError:
                    why = f" (last error: {last_alert})" if last_alert else ""
                    raise ChannelLost(
                        f"{shown} did not send stc_time within {settings.ready_timeout_s:g} s{why}"
                    ) from None
                for out in self._receive(frame):
                    if isinstance(out, Alert):
                        last_alert = f"{out.status}: {out.message}"
                    if not isinstance(out, Connected):
                        await self._handle(out)
            self._ready = True
            log.info("ESP-AI server ready (%s, device %s)", shown, self.device_id)
            self._sink(Connected())
            async for frame in ws:
                for out in self._receive(frame):
                    await self._handle(out)
        except ConnectionClosed as exc:
            reason = close_reason(exc, MAX_MESSAGE_BYTES)
            if last_alert and not self._ready:
                reason = f"{reason} after: {last_alert}"
            raise ChannelLost(reason) from None
        return "server closed the connection"

    def _receive(self, frame: str | bytes) -> list[Output]:
        log_frame("espai", "<-", frame)
        if isinstance(frame, str):
            return self._proto.receive_text(frame)
        return self._proto.receive_binary(frame)

    async def _handle(self, out: Output) -> None:
        if isinstance(out, Send):
            await self._send(out.data)
        elif isinstance(out, Mp3Piece):
            self._on_piece(out)
        elif isinstance(out, SessionEnded):
            self._session_ended(out)
        elif isinstance(out, SessionStopped):
            self._session_stopped(out)
        elif isinstance(out, Refused):
            raise AuthFailed(f"the ESP-AI server refused the device ({out.code}: {out.message})")
        elif isinstance(out, ServerClosing):
            self._planned.set()
            raise ChannelLost(out.reason)
        else:
            if self.player is not None:
                self.player.touch()
            self._sink(out)

    # ------------------------------------------------------------------ the reply
    def _new_player(self, *, uploading: bool) -> ReplyPlayer:
        self._drop_player()
        self._turns += 1
        self.player = ReplyPlayer(
            self._from_player,
            self.feed,
            rate=self.playback_rate,
            concurrency=2,
            max_wait_s=1.0,
            idle_s=self.settings.reply_idle_s,
            turn=self._turns,
        )
        self.player.uploading = uploading
        self._announced = {}
        self._reply_end = None
        return self.player

    def _from_player(self, event: BackendEvent) -> None:
        """The player's events go to the sink; the server hears when playback starts and ends."""
        if isinstance(event, SpeechStarted):
            self._later(self._proto.playing())
        elif isinstance(event, SpeechEnded | TurnEnded):
            self.player = None
            if self._reply_end is not None:
                self._later(self._proto.playback_over(*self._reply_end))
                self._reply_end = None
        self._sink(event)

    def _on_piece(self, piece: Mp3Piece) -> None:
        if piece.session_id == SID_TTS_FN and self._proto.uploading:
            self.stats["server_speech_during_upload"] += 1
            return  # the server's own speech (e.g. its sleep reply) does not cut into a turn the user began
        player = self.player
        if player is None or player.done:
            if piece.session_id != SID_TTS_FN and not piece.mp3:
                return  # the bare end frame of a reply already finished
            player = self._new_player(uploading=False)  # speech the server started by itself
        player.touch()
        key = sentence_key(piece.session_id, piece.sentence)
        if piece.mp3:
            if key not in self._announced:
                self._announced[key] = len(self._announced)
                self.feed.open(key)
                player.announce(self._announced[key], key)
            self._report_buffer()  # before this frame: what earlier frames left undecoded
            self.feed.put(key, piece.mp3)
            self.stats["mp3_bytes"] += len(piece.mp3)
        if piece.ends_sentence:
            self.feed.end(key)
        if piece.ends_reply:
            self._reply_end = (piece.session_id, piece.status)
            player.end_of_turn()

    def _report_buffer(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self._later(self._proto.buffer_report(self.feed.pending))

    def _session_ended(self, ended: SessionEnded) -> None:
        outcome = "nothing_recognised" if ended.reason == "session_end" else ended.reason
        if ended.reason == "session_end":
            log.info("the ESP-AI server heard nothing and ended the session")
        if self.player is not None:
            self.player.end_of_turn(outcome)
        else:
            self._sink(TurnEnded(outcome))

    def _session_stopped(self, stopped: SessionStopped) -> None:
        player = self.player
        if player is None:
            return
        if stopped.stop_playback:
            speaking = player.speaking
            self._drop_player()
            self._sink(SpeechEnded(aborted=True) if speaking else TurnEnded("stopped"))
        else:
            player.end_of_turn("stopped")  # what arrived still plays; nothing more comes

    def _drop_player(self) -> None:
        if self.player is not None:
            self.player.cancel()
            self.player = None
        self.feed.clear()
        self._announced = {}
        self._reply_end = None

    # ------------------------------------------------------------------ writing
    def _later(self, text: str) -> None:
        """Send from a callback (the player's events are not awaited)."""
        task = asyncio.get_running_loop().create_task(self._send(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, data: str | bytes) -> bool:
        return await send_frame(self._ws, "espai", data)

    async def _teardown(self) -> None:
        self._drop_player()
        self._proto.connection_lost()
        ws, self._ws = self._ws, None
        await close_quietly(ws, 2.0)

    def _describe(self, exc: BaseException) -> str:
        text = connect_failure(exc)
        return text.replace(self.api_key, "***") if self.api_key else text
