"""The Mindcraft chat_bot_v3 backend: the sans-I/O protocol joined to a websocket, HTTP for the TTS files,
and the z_index sequencer, exposing the Backend interface.

One long-running task (`run`) connects with the credential `chatbot_v3.auth` names (the account API key
or a device token) as the upgrade's `Authorization: Bearer` header and in the URL, sends `auth_token`,
waits for 1008, reports `Connected` and pumps server events until the socket dies; then it waits the
shared backoff and connects (and authenticates) again. A refused key (2003/2004, or HTTP 401/403 on the
upgrade) is not
retried in a storm: the user gets a fatal Alert, the state machine goes to `error`, and the next attempt
comes only after `auth_retry_s` (or a restart with a fixed config).

Each reply's speech arrives as MP3 URLs tagged with z_index. A ReplyPlayer downloads them ahead (at most
`fetch_concurrency` at once, lowest index first), decodes each while it downloads, and hands the PCM out
as SpeechAudio in z_index order, so the speaker just writes one piece after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from typing import Any, Unpack

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ...config import MINDCRAFT_LLM_MODELS, MINDCRAFT_TTS_MODELS, ChatbotV3Settings
from ...errors import ConfigError
from ...events import (
    Alert,
    Connected,
    Emotion,
    EventSink,
    ListenMode,
    ReplyText,
    Transcript,
    TurnEnded,
    UplinkFormat,
)
from ...net.tls import client_context
from ...net.urls import display_url
from ...protocols.chatbot_v3.client import (
    AgentParams,
    AuthRejected,
    ClientProtocol,
    InterfaceReply,
    NothingRecognised,
    NotReady,
    OutOfCredit,
    ProtocolEvent,
    Ready,
    ServerError,
    TtsUrl,
    TurnStopped,
    connect_url,
    upgrade_headers,
)
from ...service.logsetup import log_frame
from ..reconnect import AuthFailed, ChannelLost, Down, ReconnectLoop, backoff_for, report_down
from ..reply_player import PlayerBackendOptions, ReplyPlayer
from ..websocket_errors import close_reason, connect_failure, upgrade_failure
from ..websocket_io import close_quietly, send_frame
from .fetcher import TtsFetcher
from .sessions import (
    API_KEY,
    Credential,
    MindcraftRest,
    remember_session,
    remembered_session,
    resolve_credential,
)

log = logging.getLogger(__name__)

UPLINK_FRAME_MS = 60  # 1920 bytes at 16 kHz, close to the 2048-byte frames of the vendor's MCU client
MAX_MESSAGE_BYTES = 1 << 20
CANCEL_SETTLE_S = 0.8  # a text turn right after a cancel waits this long at most for the old turn's stop


def agent_params(settings: ChatbotV3Settings, session_token: str) -> AgentParams:
    """The agent_action parameters from the config."""
    return AgentParams(
        mode=settings.mode,
        character_uuid=settings.character_uuid,
        profile_uuid=settings.profile_uuid,
        emotion_output=settings.emotion_output,
        upload_format=settings.upload_format,
        upload_sample_rate=settings.upload_sample_rate,
        voice_id=settings.voice_id,
        speed=settings.speed,
        user_name=settings.user_name,
        user_age=settings.user_age,
        bot_name=settings.bot_name,
        bot_character_description=settings.bot_character_description,
        bot_personality=settings.bot_personality,
        bot_tone=settings.bot_tone,
        llm_model=settings.llm_model,
        max_tokens=settings.max_tokens,
        tts_model=settings.tts_model,
        session_token=session_token,
        language=settings.language,
    )


# ---------------------------------------------------------------------------- the backend


class ChatbotV3Backend:
    """Mindcraft chat_bot_v3 over its socket (implements companion.events.Backend)."""

    name = "chatbot_v3"
    supports_text = True

    def __init__(
        self, settings: ChatbotV3Settings, sink: EventSink, **options: Unpack[PlayerBackendOptions]
    ) -> None:
        """Raises ConfigError at once for a missing key or token, or an unsupported upload format."""
        if settings.upload_format != "pcm":
            raise ConfigError(
                f"chatbot_v3.upload_format = {settings.upload_format!r} is not supported: only 'pcm' is "
                "implemented (how the server frames the other formats is not documented)"
            )
        self.settings = settings
        self._sink = sink
        self.playback_rate = options.get("playback_rate", 24000)
        self.credential: Credential = resolve_credential(settings)
        warn_unknown_models(settings)
        self.uplink = UplinkFormat("pcm", settings.upload_sample_rate, UPLINK_FRAME_MS)
        self.backoff = backoff_for(options)
        self.stats: Counter[str] = Counter()
        self.player: ReplyPlayer | None = None
        self._ssl: ssl.SSLContext = client_context("", setting="chatbot_v3")
        self._proto = ClientProtocol()
        self._ws: ClientConnection | None = None
        self.fetcher = TtsFetcher(settings, self.playback_rate, self._ssl)
        self._ready = False
        self._settled = asyncio.Event()
        self._session_token = settings.session_token
        self._session_retry_at = 0.0  # after a failed create, the next attempt waits auth_retry_s
        self._pending_asr = ""
        self._credit_timer: asyncio.TimerHandle | None = None
        self._reconnect = ReconnectLoop(
            "chat_bot_v3 channel down",
            self.backoff,
            log=log,
            describe=lambda exc: connect_failure(exc).replace(
                self.credential.value, "***"
            ),  # a library may quote the URL
            on_down=self._on_down,
            close_attempt=self._teardown,
        )

    @property
    def api_key(self) -> str:
        """The account API key in use ('' with a device token)."""
        return self.credential.value if self.credential.kind == API_KEY else ""

    # ------------------------------------------------------------------ Backend interface
    @property
    def connected(self) -> bool:
        """True from 1008 (`Connected`) until the socket is lost."""
        return self._ready

    async def run(self) -> None:
        """Connect and serve the socket until `close()`, reconnecting with backoff."""
        await self._reconnect.run(self._serve, take_ready=self._take_ready)

    def _take_ready(self) -> bool:
        was_ready, self._ready = self._ready, False
        return was_ready

    def _on_down(self, down: Down) -> float | None:
        fix = f"Check {self.credential.where}."
        return report_down(self._sink, down, fix=fix, auth_retry_s=self.settings.auth_retry_s)

    async def start_listening(self, mode: ListenMode) -> None:
        """Open a voice turn: `agent_action` with the agent's parameters; PCM frames follow."""
        del mode  # chat_bot_v3 has no server VAD: the endpointer ends the utterance (manual)
        if self._proto.in_turn:
            await self.abort("a new turn starts")
        self._pending_asr = ""
        await self._start_turn(None)

    async def stop_listening(self) -> None:
        """End the upload (`stream_asr`): the server recognises and replies."""
        message = self._proto.end_of_speech()
        if message is None:
            return
        if self.player is not None:
            self.player.uploading = False
            self.player.touch()  # the reply is due from now on
        await self._send(message)
        if self._pending_asr:
            self._sink(Transcript(self._pending_asr, final=False))
            self._pending_asr = ""

    async def send_audio(self, frame: bytes) -> None:
        """One uplink PCM frame (dropped and counted outside an upload)."""
        data = self._proto.audio(frame) if self._ready else None
        if data is None:
            self.stats["uplink_dropped"] += 1
            return
        if await self._send(data):
            self.stats["uplink_sent"] += 1

    async def abort(self, reason: str = "") -> None:
        """Stop the reply (`stream_output`); its late events are dropped, its downloads stopped."""
        if self.player is not None:
            self.player.cancel()
            self.player = None
        message = self._proto.cancel()
        if message is not None:
            log.info("reply cancelled%s", f" ({reason})" if reason else "")
            await self._send(message)

    async def send_text(self, text: str) -> None:
        """A typed utterance: `agent_action` with `asr_text`.

        Right after a cancel it first waits (briefly) for the cancelled turn's stop, so that the old
        reply's late items cannot pass for the new one's.
        """
        if self._proto.in_turn:
            await self.abort("a new turn starts")
        if not self._proto.settled:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), CANCEL_SETTLE_S)
        await self._start_turn(text)

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        """chat_bot_v3 has no device tools; nothing is sent."""
        log.debug("tool result dropped: chat_bot_v3 has no device tools (%s)", payload.get("id"))

    async def close(self) -> None:
        """Stop reconnecting, close the socket and the HTTP client."""
        self._reconnect.stop()
        await self._teardown()
        await self.fetcher.aclose()

    # ------------------------------------------------------------------ turns
    async def _start_turn(self, text: str | None) -> None:
        ws = self._ws
        if not self._ready or ws is None:
            log.warning("cannot start a turn: not connected to the chat_bot_v3 server")
            return
        now = asyncio.get_running_loop().time()
        try:
            message = (
                self._proto.start_voice_turn(now) if text is None else self._proto.start_text_turn(text, now)
            )
        except NotReady as exc:
            log.warning("cannot start a turn: %s", exc)
            return
        self.player = self._new_player()
        self.player.uploading = text is None
        await self._send(message)

    def _new_player(self) -> ReplyPlayer:
        settings = self.settings
        return ReplyPlayer(
            self._sink,
            self.fetcher,
            rate=self.playback_rate,
            concurrency=settings.fetch_concurrency,
            max_wait_s=settings.missing_index_wait_s,
            idle_s=settings.reply_idle_s,
            turn=self._proto.turn,
        )

    # ------------------------------------------------------------------ the connection
    async def _serve(self) -> str:
        """One connection: session token, upgrade, auth, 1008, then events until it closes."""
        params = agent_params(self.settings, await self._session())
        secret = self.credential.value
        url = connect_url(self.settings.url, secret)
        shown = display_url(self.settings.url)
        loop = asyncio.get_running_loop()
        log.debug("connecting to %s", shown)
        try:
            ws = await connect(
                url,
                additional_headers=upgrade_headers(secret),  # the seed's `Authorization: Bearer`
                ssl=self._ssl if url.startswith("wss:") else None,
                open_timeout=self.settings.ready_timeout_s,
                max_size=MAX_MESSAGE_BYTES,
                ping_interval=20,  # the server sends no heartbeat (spec A.5): keep our own
                ping_timeout=20,
                close_timeout=2,
            )
        except InvalidHandshake as exc:
            raise upgrade_failure(exc, shown, f"the Mindcraft {self.credential.label}") from None
        self._ws = ws
        self._proto = ClientProtocol(params)
        try:
            with contextlib.suppress(ConnectionClosed):
                # A server that refuses the key in the URL answers 2003 and closes at once: the send
                # may fail, but the 2003 is still waiting to be read.
                auth = self._proto.auth(secret)
                log_frame("chat_bot_v3", "->", auth)
                await ws.send(auth)
            deadline = loop.time() + self.settings.ready_timeout_s
            while not self._proto.authenticated:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):  # not wait_for (3.11)
                        message = await ws.recv()
                except TimeoutError:
                    raise ChannelLost(
                        f"{shown} did not confirm authentication (status 1008) "
                        f"within {self.settings.ready_timeout_s:g} s"
                    ) from None
                for event in self._receive(message, loop.time()):
                    if isinstance(event, AuthRejected):
                        raise AuthFailed(_rejection(event, self.credential))
            self._ready = True
            log.info("chat_bot_v3 ready (%s)", shown)
            self.fetcher.warm_up()
            self._sink(Connected())
            async for message in ws:
                now = loop.time()
                for event in self._receive(message, now):
                    self._handle(event)
                if self._proto.settled:
                    self._settled.set()
        except ConnectionClosed as exc:
            raise ChannelLost(close_reason(exc, MAX_MESSAGE_BYTES)) from None
        return "server closed the connection"

    def _receive(self, message: str | bytes, now: float) -> list[ProtocolEvent]:
        log_frame("chat_bot_v3", "<-", message)
        if isinstance(message, str):
            return self._proto.receive_text(message, now)
        return self._proto.receive_binary(message, now)

    def _handle(self, event: ProtocolEvent) -> None:
        player = self.player
        if isinstance(event, TtsUrl | ReplyText | Transcript | Emotion) and player is not None:
            player.touch()
        if isinstance(event, TtsUrl):
            if player is None:
                self.stats["urls_without_turn"] += 1
                return
            player.announce(event.index, event.url)
        elif isinstance(event, ReplyText):
            if event.text:
                self._sink(event)
        elif isinstance(event, Transcript):
            if not event.final:
                log.debug("partial ASR: %s", event.text)
                self._pending_asr = event.text
            else:
                self._pending_asr = ""
                self._sink(event)
        elif isinstance(event, Emotion):
            self._sink(event)
        elif isinstance(event, TurnStopped):
            if player is not None:
                player.end_of_turn()
            else:
                self._sink(TurnEnded("completed"))
        elif isinstance(event, NothingRecognised):
            log.info("the server recognised no words%s", f" ({event.message})" if event.message else "")
            self._drop_player()
            self._sink(TurnEnded("nothing_recognised"))
        elif isinstance(event, OutOfCredit):
            self._out_of_credit(event)
        elif isinstance(event, ServerError):
            self._sink(Alert(str(event.status), event.message or "server error"))
            if player is not None:
                player.end_of_turn("server_error")  # what was announced still plays; the turn is over
        elif isinstance(event, AuthRejected):
            raise AuthFailed(_rejection(event, self.credential))
        elif isinstance(event, InterfaceReply):
            log.debug("interface_call %s answered", event.name)
        elif isinstance(event, Ready):
            log.debug("repeated 1008 ignored")

    def _out_of_credit(self, event: OutOfCredit) -> None:
        self._drop_player()
        detail = f" ({event.message})" if event.message else ""
        self._sink(
            Alert(
                "3002",
                f"the Mindcraft account is out of credit (积分不足){detail}: top it up on mindcraft.com.cn; "
                f"turns are refused until then (the device tries again in "
                f"{self.settings.auth_retry_s / 60:.0f} min)",
                "",
                True,
            )
        )
        if self._credit_timer is not None:
            self._credit_timer.cancel()
        self._credit_timer = asyncio.get_running_loop().call_later(
            self.settings.auth_retry_s, self._retry_credit
        )

    def _retry_credit(self) -> None:
        self._credit_timer = None
        if self._ready:
            log.info("trying the Mindcraft account again after running out of credit")
            self._sink(Connected())

    def _drop_player(self) -> None:
        if self.player is not None:
            self.player.cancel()
            self.player = None

    async def _send(self, data: str | bytes) -> bool:
        return await send_frame(self._ws, "chat_bot_v3", data)

    async def _teardown(self) -> None:
        self._drop_player()
        self._proto.connection_lost()
        if self._credit_timer is not None:
            self._credit_timer.cancel()
            self._credit_timer = None
        ws, self._ws = self._ws, None
        await close_quietly(ws, 2.0)

    async def _session(self) -> str:
        """The session token: configured, remembered, or created now (and remembered); '' on failure."""
        if self._session_token:
            return self._session_token
        token = remembered_session(self.credential.account)
        if token:
            self._session_token = token
            return token
        loop = asyncio.get_running_loop()
        if not self.settings.create_session or loop.time() < self._session_retry_at:
            return ""
        name = f"companion {socket.gethostname()}"
        try:
            credential = self.credential
            async with MindcraftRest(
                self.settings.rest_url,
                credential.value,
                verify=self._ssl,
                label=credential.label,
                where=credential.where,
            ) as rest:
                token = await rest.create_session(name, self.settings.llm_model)
        except Exception as exc:  # no memory is better than no conversation: go on without a session
            level = logging.DEBUG if self._session_retry_at else logging.WARNING
            self._session_retry_at = loop.time() + self.settings.auth_retry_s
            log.log(level, "could not create a Mindcraft session (the agent will not remember): %s", exc)
            return ""
        try:
            path = remember_session(token, self.credential.account)
            log.info("created Mindcraft session %s… (remembered in %s)", token[:8], path)
        except OSError as exc:
            log.warning("could not remember the Mindcraft session: %s", exc)
        self._session_token = token
        return token


def _rejection(event: AuthRejected, credential: Credential) -> str:
    if event.status == 2003:
        what = "API key" if credential.kind == API_KEY else "device token (2003: wrong key or token)"
    else:
        what = f"{credential.label} (invalid or expired)"
    detail = f": {event.message}" if event.message else ""
    return f"Mindcraft refused the {what} ({event.status}{detail})"


def warn_unknown_models(settings: ChatbotV3Settings) -> None:
    """One warning line per model id the seed does not list: the vendor adds models, so it is sent as
    given (the server refuses it if it is really wrong)."""
    for key, value, known in (
        ("llm_model", settings.llm_model, MINDCRAFT_LLM_MODELS),
        ("tts_model", settings.tts_model, MINDCRAFT_TTS_MODELS),
    ):
        if value not in known:
            log.warning(
                "chatbot_v3.%s = %r is not a model this version knows (%s); sending it as given",
                key,
                value,
                ", ".join(known),
            )
