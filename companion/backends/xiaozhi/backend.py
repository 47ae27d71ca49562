"""The xiaozhi backend as the runtime sees it: OTA and activation first, then the transport the OTA
reply chooses (an `mqtt` block wins, as in the firmware) unless the config forces one.

It implements Backend by delegating to the websocket or MQTT+UDP backend once that is chosen; until
then it is connecting (or activating) and has no channel.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ...config import Settings
from ...events import Backend, Disconnected, EventSink, ListenMode, UplinkFormat
from ...net.backoff import Backoff
from ..reconnect import Down, ReconnectLoop
from . import ota
from .identity import Identity, load_identity
from .websocket import XiaozhiWebsocketBackend

log = logging.getLogger(__name__)


class XiaozhiBackend:
    """Runs OTA/activation, picks websocket or MQTT+UDP, then serves through that backend."""

    name = "xiaozhi"
    supports_text = True

    def __init__(
        self,
        settings: Settings,
        sink: EventSink,
        *,
        identity: Identity | None = None,
        on_activation: Callable[[ota.Activation], None] | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """`busy`: True while the device is mid-turn; planned reconnects wait for it to be False."""
        self.settings = settings
        self._sink = sink
        self.identity = identity or load_identity(settings.xiaozhi)
        self._on_activation = on_activation
        self._busy = busy
        self.inner: Backend | None = None
        self.backoff = Backoff(cap=settings.backend.reconnect_max_s)
        # fail at once on an unusable tls_ca and learn the uplink format the websocket would use
        self._probe = XiaozhiWebsocketBackend(
            settings.xiaozhi, sink, identity=self.identity, audio=settings.audio
        )

    @property
    def uplink(self) -> UplinkFormat:
        """The chosen transport's format (the websocket's until one is chosen)."""
        return (self.inner or self._probe).uplink

    @property
    def connected(self) -> bool:
        """True while the chosen transport has an open channel."""
        return self.inner is not None and self.inner.connected

    async def run(self) -> None:
        """OTA (retried with backoff while unreachable), then the transport's own run loop."""
        xz = self.settings.xiaozhi
        if xz.websocket_url or (xz.transport == "mqtt" and xz.mqtt_endpoint):
            self.inner = self._build(xz.transport if xz.transport != "auto" else "websocket", None)
            await self.inner.run()
            return
        reply = await self._activated_reply()
        transport = reply.transport(xz.transport)
        log.info("OTA chose the %s transport", transport)
        self.inner = self._build(transport, reply)
        await self.inner.run()

    async def _activated_reply(self) -> ota.OtaReply:
        def on_down(down: Down) -> None:
            if down.news:
                self._sink(Disconnected(down.reason))

        retry = ReconnectLoop("OTA check failed", self.backoff, log=log, describe=str, on_down=on_down)
        return await retry.first_success(
            lambda: ota.activate(
                self.settings.xiaozhi,
                self.identity,
                on_code=ota.activation_reporter(self._sink, self._on_activation),
            ),
            errors=(ota.OtaError,),
        )

    def _build(self, transport: str, reply: ota.OtaReply | None) -> Backend:
        kind: Any = XiaozhiWebsocketBackend
        if transport == "mqtt":
            from .mqtt import XiaozhiMqttBackend  # only MQTT users pay for the MQTT client

            kind = XiaozhiMqttBackend
        backend: Backend = kind(
            self.settings.xiaozhi,
            self._sink,
            identity=self.identity,
            audio=self.settings.audio,
            reconnect_max_s=self.settings.backend.reconnect_max_s,
            ota_reply=reply,
            on_activation=self._on_activation,
            busy=self._busy,
        )
        return backend

    def _require(self) -> Backend:
        if self.inner is None:
            raise ConnectionError("the xiaozhi channel is not open yet")
        return self.inner

    async def start_listening(self, mode: ListenMode) -> None:
        await self._require().start_listening(mode)

    async def stop_listening(self) -> None:
        await self._require().stop_listening()

    async def send_audio(self, frame: bytes) -> None:
        await self._require().send_audio(frame)

    async def abort(self, reason: str = "") -> None:
        await self._require().abort(reason)

    async def send_text(self, text: str) -> None:
        await self._require().send_text(text)

    async def announce_wake_word(self, phrase: str) -> None:
        """`listen detect` with the wake word, as the firmware sends it before `listen start`."""
        await self._require().send_text(phrase)  # both transports send a text as `listen detect`

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        await self._require().send_tool_result(payload)

    async def close(self) -> None:
        if self.inner is not None:
            with contextlib.suppress(Exception):
                await self.inner.close()
