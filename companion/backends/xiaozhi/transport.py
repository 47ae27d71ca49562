"""What the xiaozhi websocket and MQTT+UDP backends share: settings, identity, OTA and activation,
TLS, the reconnect loop and its reporting. Each subclass adds its transport's connection."""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Required, Unpack

from ...config import AudioSettings, XiaozhiSettings
from ...events import (
    Connected,
    Disconnected,
    EventSink,
    RestartRequested,
    SpeechEnded,
    ToolRequest,
)
from ...net.tls import client_context, explain_verify_error, find_verify_error
from ...protocols.xiaozhi.session import SessionEvent
from ..reconnect import Down, Latch, ReconnectLoop, ReconnectOptions, backoff_for
from . import ota
from .identity import Identity


class TransportOptions(ReconnectOptions, total=False):
    """What the runtime (or a test) gives a xiaozhi transport besides its settings and event sink."""

    identity: Required[Identity]
    audio: AudioSettings | None
    ota_reply: ota.OtaReply | None  # a reply the caller already has: the first OTA check is skipped
    on_activation: Callable[[ota.Activation], None] | None
    busy: Callable[[], bool] | None  # the device is mid-turn (a reply still playing): planned reconnects wait


class XiaozhiTransport:
    """The common part of a xiaozhi backend; `run()` is the one reconnect loop around `_attempt()`."""

    name = "xiaozhi"
    supports_text = True
    #: starts the log line of a failure, e.g. "xiaozhi channel down"
    channel_name = "xiaozhi channel"
    #: what refused a certificate, in messages
    server_name = "the xiaozhi server"
    #: logged when credentials were refused and the OTA check will run again
    refusal_note = "authentication failed: the OTA check runs again for fresh credentials"

    def __init__(
        self,
        settings: XiaozhiSettings,
        sink: EventSink,
        *,
        log: logging.Logger,
        close_attempt: Callable[[], Awaitable[None]] | None = None,
        **options: Unpack[TransportOptions],
    ) -> None:
        """`options["ota_reply"]`: a reply the caller already has (skips the first OTA check). Raises
        ConfigError at once for an unusable `xiaozhi.tls_ca`."""
        identity = options["identity"]
        audio = options.get("audio")
        ota_reply = options.get("ota_reply")
        on_activation = options.get("on_activation")
        self.settings = settings
        self.audio = audio or AudioSettings()
        self._sink = sink
        self.identity = identity
        self.backoff = backoff_for(options)
        self._ota_reply = ota_reply
        self._on_activation = on_activation
        self._activation_code = ota.activation_reporter(sink, on_activation)  # OTA's on_code
        self._busy: Callable[[], bool] = options.get("busy") or (lambda: False)
        self._ssl: ssl.SSLContext = client_context(settings.tls_ca)
        self._log = log
        self.stats: Counter[str] = Counter()
        self._ready = False
        self._init_id: int | None = None  # the MCP `initialize` request whose answer is awaited
        self._last_activity = 0.0  # monotonic time of the last turn traffic (planned reconnects wait)
        self._refresh = Latch()  # the next attempt runs the OTA check again (refused credentials)
        self._reconnect = ReconnectLoop(
            f"{self.channel_name} down",
            self.backoff,
            log=log,
            describe=self._describe,
            on_down=self._on_down,
            close_attempt=close_attempt,
        )

    # ------------------------------------------------------------------ for the subclasses
    @property
    def connected(self) -> bool:
        """True from `Connected` until the channel is lost."""
        return self._ready

    def _endpoint_pinned(self) -> bool:
        """True when the config names the endpoint (no OTA check to refresh credentials from)."""
        return False

    def _take_ready(self) -> bool:
        was_ready, self._ready = self._ready, False
        return was_ready

    def _on_down(self, down: Down) -> None:
        if down.was_ready or down.news:
            self._sink(Disconnected(down.reason, auth_failed=down.auth_failed))
        if down.auth_failed and not self._endpoint_pinned():
            self._refresh.set()
            self._log.info("%s", self.refusal_note)

    def _forward(self, event: SessionEvent, *, channel_open: bool = True) -> bool:
        """Pass a session event on to the conversation, with the rules both transports share: note the
        MCP `initialize` id, honour `reboot_action = ignore`, time the end of a reply. The channel's own
        Connected/Disconnected are the transport's to report, not the session's. True when passed on."""
        if isinstance(event, ToolRequest):
            method, ident = event.payload.get("method"), event.payload.get("id")
            is_id = isinstance(ident, int) and not isinstance(ident, bool)
            if method == "initialize" and channel_open and is_id:
                self._init_id = ident
        elif isinstance(event, RestartRequested) and not event.reconnect_only:
            if self.settings.reboot_action == "ignore":
                self._log.info("server asked for a reboot; ignored (xiaozhi.reboot_action = ignore)")
                return False
        elif isinstance(event, SpeechEnded):
            self._last_activity = time.monotonic()
        if isinstance(event, Connected | Disconnected):
            return False
        self._sink(event)  # type: ignore[arg-type]  # the session's own events were handled by the caller
        return True

    def _describe(self, exc: Exception) -> str:
        verify = find_verify_error(exc)
        if verify is not None:
            return explain_verify_error(self.server_name, verify, self.settings.tls_ca)
        if isinstance(exc, TimeoutError):
            return "timed out connecting"
        if isinstance(exc, OSError):
            return f"cannot connect: {exc.strerror or exc}"
        return f"{type(exc).__name__}: {exc}"
