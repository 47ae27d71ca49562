"""The xiaozhi backend over a websocket: the sans-I/O ClientSession joined to `websockets`.

One long-running task (`run`) connects, says hello, waits for the server hello (10 s) and then for the
MCP `initialize` exchange or `settle_ms` (a server drops audio sent before it is ready, spec §9), reports
`Connected`, and pumps messages until the channel dies; then it waits the shared backoff and connects
again, forever. An authentication failure (HTTP 401/403 on the upgrade, or the server's plain-text
`认证失败`) re-runs the OTA check for a fresh token instead of retrying the stale one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Unpack
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ...config import AudioSettings, XiaozhiSettings
from ...events import (
    Connected,
    EventSink,
    ListenMode,
    UplinkFormat,
)
from ...net.tls import find_verify_error
from ...protocols.xiaozhi.messages import AudioParams
from ...protocols.xiaozhi.session import (
    ChannelDead,
    ChannelNotOpen,
    ClientSession,
    HelloReceived,
    ServerText,
    SessionConfig,
    SessionEvent,
)
from ...service.logsetup import log_frame, register_secret
from ...service.notify import XIAOZHI_TOKEN, read_secret
from ..reconnect import AuthFailed, ChannelLost, Down, Latch
from ..websocket_errors import close_reason, retired_idle, upgrade_failure
from ..websocket_io import close_quietly, send_frame
from . import ota
from .identity import Identity
from .transport import TransportOptions, XiaozhiTransport

log = logging.getLogger(__name__)
# websockets logs handshake headers at DEBUG, Authorization included: its logger never goes below INFO.
_wire_log = logging.getLogger(f"{__name__}.websockets")
_wire_log.setLevel(logging.INFO)

IDLE_PROBE_S = 10.0  # a ping goes out this long before the idle deadline (at most half of it)
PLANNED_RECONNECT_QUIET_S = 2.0  # after `notify config_updated`: reconnect once this long without a turn
MAX_MESSAGE_BYTES = 1 << 20
QINIU_PCM_PARAMS = {
    "bit_depth": 16,
    "endianness": "little",
    "frame_size": 320,
    "sample_format": "signed_int16",
}


def handshake_headers(token: str, version: int, identity: Identity) -> dict[str, str]:
    """The firmware's websocket headers (spec §1.2, vector §8.1).

    `Bearer ` is added to a token without a space; an empty token sends no Authorization header.
    """
    headers: dict[str, str] = {}
    token = token.strip()
    if token:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    headers["Protocol-Version"] = str(version)
    headers["Device-Id"] = identity.device_id
    headers["Client-Id"] = identity.client_id
    return headers


def is_qiniu(settings: XiaozhiSettings) -> bool:
    """True when the Qiniu hello extras apply (by config, or by the URLs' host)."""
    if settings.flavor != "auto":
        return settings.flavor == "qiniu"
    hosts = (urlsplit(u).hostname or "" for u in (settings.ota_url, settings.websocket_url) if u)
    return any(h.endswith(("qiniuapi.com", "qiniu.com")) for h in hosts)


def session_config(settings: XiaozhiSettings, audio: AudioSettings, version: int) -> SessionConfig:
    """The hello we announce: the firmware's, plus Qiniu's extras when they apply."""
    qiniu = is_qiniu(settings)
    features: dict[str, Any] | None = None
    if settings.server_aec or qiniu:
        features = {"mcp": True, "glyph_push": False}
        if settings.server_aec:
            features["aec"] = True
        if qiniu:
            features["notify"] = {"config_updated": True}
    if qiniu and audio.codec == "pcm":
        uplink = AudioParams("pcm", 16000, 1, 20, dict(QINIU_PCM_PARAMS))
    else:
        uplink = AudioParams("opus", 16000, 1, 60)
    if qiniu:
        uplink = AudioParams(
            uplink.format,
            uplink.sample_rate,
            uplink.channels,
            uplink.frame_duration,
            {**uplink.extra, "play_buffer_duration": max(audio.prebuffer_ms, 300)},
        )
    agent = (
        {"custom_replace_prompt": dict(settings.custom_replace_prompt)}
        if settings.custom_replace_prompt
        else None
    )
    return SessionConfig(
        transport="websocket",
        version=version,
        uplink=uplink,
        features=features,
        agent_params=agent,
        hello_timeout_s=settings.hello_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
    )


class XiaozhiWebsocketBackend(XiaozhiTransport):
    """xiaozhi.me, Qiniu or a self-hosted xiaozhi-esp32-server over websocket (implements Backend)."""

    channel_name = "xiaozhi channel"
    refusal_note = "authentication failed: the OTA check runs again for a fresh token"

    def __init__(
        self, settings: XiaozhiSettings, sink: EventSink, **options: Unpack[TransportOptions]
    ) -> None:
        """`ota_reply`: a reply the caller already has (skips the first OTA check).

        Without `settings.websocket_url` the backend runs OTA (and activation) itself. Raises
        ConfigError at once for an unusable `xiaozhi.tls_ca`.
        """
        super().__init__(settings, sink, log=log, close_attempt=self._drop_socket, **options)
        if settings.token:
            register_secret(settings.token)
        probe = session_config(settings, self.audio, settings.protocol_version)
        fmt = probe.uplink
        self.uplink = UplinkFormat(fmt.format, fmt.sample_rate, fmt.frame_duration)
        if self.audio.codec == "pcm" and fmt.format != "pcm":
            log.warning(
                "PCM uplink needs a Qiniu server (xiaozhi-esp32-server decodes Opus only); using Opus"
            )
        self.session: ClientSession | None = None
        self._ws: ClientConnection | None = None
        self._endpoint: ota.WebsocketEndpoint | None = None
        self._auth_failed = False
        self._planned_reconnect = Latch()
        self._retired = False  # the server retired the idle channel: reopen it without a Disconnected
        self._ready_at = 0.0

    # ------------------------------------------------------------------ Backend interface
    async def run(self) -> None:
        """Connect and serve the channel forever (until `close()`), reconnecting with backoff."""
        await self._reconnect.run(
            self._attempt, take_ready=self._take_ready, planned=self._planned_reconnect.take
        )

    async def _attempt(self) -> str:
        return await self._serve(await self._resolve(self._refresh.take()))

    def _endpoint_pinned(self) -> bool:
        return bool(self.settings.websocket_url)

    def _on_down(self, down: Down) -> None:
        if self._retired:  # the device stays idle, with no offline cue, while the channel reopens
            self._retired = False
            return
        super()._on_down(down)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, websockets.exceptions.WebSocketException) and find_verify_error(exc) is None:
            return f"websocket error: {exc}"
        return super()._describe(exc)

    async def start_listening(self, mode: ListenMode) -> None:
        """Send `listen start` in `mode`."""
        await self._send_control(lambda s: s.listen_start(str(mode)))

    async def stop_listening(self) -> None:
        """Send `listen stop`."""
        await self._send_control(lambda s: s.listen_stop())

    async def send_audio(self, frame: bytes) -> None:
        """Send one uplink packet (dropped and counted when the channel is not ready or is gated)."""
        session, ws = self.session, self._ws
        if not self._ready or session is None or ws is None:
            self.stats["uplink_dropped"] += 1
            return
        data = session.audio_frame(frame)
        if data is None:
            self.stats["uplink_dropped"] += 1
            return
        self._last_activity = time.monotonic()
        if await self._send(data):
            self.stats["uplink_sent"] += 1

    async def abort(self, reason: str = "") -> None:
        """Send `abort` (reason "wake_word_detected" or none)."""
        await self._send_control(lambda s: s.abort(reason))

    async def send_text(self, text: str) -> None:
        """A typed utterance, as `listen detect` (servers treat a non-wake-word text as the user's words)."""
        await self._send_control(lambda s: s.listen_detect(text))

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        """Send an MCP reply or notification; the reply to `initialize` makes the channel ready."""
        session = self.session
        if session is None or self._ws is None:
            log.debug("MCP reply dropped: no channel")
            return
        await self._send(session.mcp(payload))
        if self._init_id is not None and payload.get("id") == self._init_id and "result" in payload:
            self._init_id = None
            self._become_ready("MCP initialize answered")

    async def close(self) -> None:
        """Stop reconnecting and close the channel."""
        self._reconnect.stop()
        await self._drop_socket()

    # ------------------------------------------------------------------ connecting
    async def _resolve(self, refresh: bool) -> ota.WebsocketEndpoint:
        settings = self.settings
        if settings.websocket_url:
            token = settings.token or read_secret(XIAOZHI_TOKEN) or ""
            return ota.WebsocketEndpoint(settings.websocket_url, token, settings.protocol_version)
        if self._endpoint is not None and not refresh:
            return self._endpoint
        reply, self._ota_reply = self._ota_reply, None
        reply = await ota.activate(settings, self.identity, on_code=self._activation_code, reply=reply)
        choice = reply.transport(settings.transport)
        if reply.websocket is None:
            raise ota.OtaError(
                f"the OTA server {settings.ota_url} offers no websocket endpoint (transport {choice}); "
                "this needs the MQTT backend (xiaozhi.transport = 'auto' or 'mqtt')"
            )
        if choice != "websocket":
            log.warning("the OTA reply prefers MQTT, but this is the websocket backend: using its websocket")
        self._endpoint = reply.websocket
        return reply.websocket

    async def _serve(self, endpoint: ota.WebsocketEndpoint) -> str:
        """One connection, from upgrade to close; returns (or raises) the reason it ended."""
        version = endpoint.version or self.settings.protocol_version
        headers = handshake_headers(endpoint.token, version, self.identity)
        secure = endpoint.url.startswith("wss:")
        log.debug("connecting to %s (protocol v%d)", endpoint.url, version)
        try:
            ws = await connect(
                endpoint.url,
                additional_headers=headers,
                ssl=self._ssl if secure else None,
                open_timeout=self.settings.hello_timeout_s,
                compression=None,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                logger=_wire_log,
            )
        except InvalidHandshake as exc:
            raise upgrade_failure(exc, endpoint.url) from None
        self._ws = ws
        session = ClientSession(session_config(self.settings, self.audio, version))
        self.session = session
        self._init_id = None
        self._auth_failed = False
        loop = asyncio.get_running_loop()
        hello_at: float | None = None
        pongs: list[float] = []  # when our liveness pings were answered
        probed_for = 0.0  # the idle deadline the last ping was sent for
        try:
            await self._send(session.hello(loop.time()))
            while True:
                now = loop.time()
                deadline = session.next_deadline(now)
                if session.is_open and deadline != float("inf"):
                    # A server says nothing while idle: before the idle deadline, ask the socket itself.
                    probe_at = deadline - min(IDLE_PROBE_S, session.config.idle_timeout_s / 2)
                    if probed_for != deadline and now >= probe_at:
                        probed_for = deadline
                        await self._probe(ws, pongs)
                    elif probed_for != deadline:
                        deadline = probe_at
                if hello_at is not None and not self._ready:
                    deadline = min(deadline, hello_at + self.settings.settle_ms / 1000)
                if session.reconnect_wanted:
                    deadline = min(deadline, now + 0.5)
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
                    # arrives as a message does, and SIGTERM would then hang on the next recv.
                    async with asyncio.timeout(max(0.0, deadline - now)):
                        message = await ws.recv()
                    log_frame("xiaozhi", "<-", message)
                except TimeoutError:
                    message = None
                now = loop.time()
                if pongs:
                    session.alive(max(pongs))
                    pongs.clear()
                if message is None:
                    events: list[SessionEvent] = session.check(now)
                elif isinstance(message, str):
                    events = session.receive_text(message, now)
                else:
                    events = session.receive_binary(message, now)
                for event in events:
                    if isinstance(event, HelloReceived):
                        hello_at = now
                        log.info("xiaozhi session %s open (%s)", event.session_id or "(no id)", endpoint.url)
                        if self.settings.settle_ms == 0:
                            self._become_ready("settle time 0")
                    else:
                        self._deliver(event)
                if (
                    hello_at is not None
                    and not self._ready
                    and now >= hello_at + self.settings.settle_ms / 1000
                ):
                    self._become_ready("settle time passed")
                if session.reconnect_wanted and self._turn_over():
                    self._planned_reconnect.set()
                    return "reconnecting: the agent configuration was updated"
        except ConnectionClosed as exc:
            await self._drain(ws, session, loop.time())
            if self._auth_failed:
                raise AuthFailed(f"{endpoint.url} refused our credentials (认证失败)") from None
            reason = close_reason(exc, MAX_MESSAGE_BYTES)
            if self._ready and retired_idle(exc, time.monotonic() - self._ready_at, self._busy()):
                self._planned_reconnect.set()
                self._retired = True
                return f"{reason} while idle; reopening it"
            raise ChannelLost(reason) from None

    async def _probe(self, ws: ClientConnection, pongs: list[float]) -> None:
        """Send a ping; its pong, when it comes, counts as hearing from the server."""
        loop = asyncio.get_running_loop()

        def answered(waiter: asyncio.Future[float]) -> None:
            if not waiter.cancelled() and waiter.exception() is None:
                pongs.append(loop.time())

        with contextlib.suppress(ConnectionClosed):
            asyncio.ensure_future(await ws.ping()).add_done_callback(answered)

    async def _drain(self, ws: ClientConnection, session: ClientSession, now: float) -> None:
        """Read what arrived before the close (e.g. the server's 认证失败 line); recv returns buffered
        messages after a close until they run out."""
        for _ in range(16):
            try:
                async with asyncio.timeout(0.2):
                    message = await ws.recv()
            except (ConnectionClosed, TimeoutError):
                return
            if isinstance(message, str):
                for event in session.receive_text(message, now):
                    if isinstance(event, ServerText) and event.auth_failed:
                        self._auth_failed = True

    def _turn_over(self) -> bool:
        """True when no turn is under way: not speaking, no reply awaited, nothing sent for a while, and
        the device not still playing a reply (the wire goes quiet well before the speaker does)."""
        session = self.session
        if session is None or session.speaking or session.awaiting_reply or self._busy():
            return False
        return time.monotonic() - self._last_activity >= PLANNED_RECONNECT_QUIET_S

    def _deliver(self, event: SessionEvent) -> None:
        if isinstance(event, ChannelDead):
            raise ChannelLost(event.reason)
        if isinstance(event, ServerText):
            if event.auth_failed:
                self._auth_failed = True
            return
        self._forward(event)

    def _become_ready(self, why: str) -> None:
        if self._ready or self.session is None or not self.session.is_open:
            return
        self._ready = True
        self._ready_at = self._last_activity = time.monotonic()
        log.debug("channel ready (%s)", why)
        self._sink(Connected(self.session.session_id))

    # ------------------------------------------------------------------ sending
    async def _send_control(self, build: Callable[[ClientSession], str]) -> None:
        session = self.session
        if session is None or self._ws is None or not self._ready:
            log.info("not connected to the xiaozhi server; message dropped")
            return
        try:
            text = build(session)
        except ChannelNotOpen as exc:
            log.info("%s", exc)
            return
        self._last_activity = time.monotonic()
        await self._send(text)

    async def _send(self, data: str | bytes) -> bool:
        return await send_frame(self._ws, "xiaozhi", data)

    async def _drop_socket(self) -> None:
        ws, self._ws = self._ws, None
        if self.session is not None:
            stats = dict(self.session.stats)
            if stats:
                log.debug("session counters: %s", stats)
            self.session.close()
        await close_quietly(ws, 0.5)  # SIGTERM must end the process within 2 s
