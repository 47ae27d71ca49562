"""The xiaozhi OTA check and activation (spec §4.1–4.3), as a Raspberry Pi with no eFuse key does them.

`check()` posts the device description and returns what the server said: the websocket or MQTT endpoint
and credentials, an activation code while the device is unbound, the server time (kept as a clock offset
for logs) and firmware info (recorded, never installed: companion does not update itself).
`wait_activated()` polls `<ota>/activate` until the code is bound; `activate()` loops both until the OTA
reply carries no `activation`, as the firmware does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ... import __version__
from ...config import XiaozhiSettings
from ...errors import ProtocolError
from ...events import Alert
from ...service.logsetup import register_secret
from .identity import Identity

if TYPE_CHECKING:  # httpx is imported when an OTA request is made: a daemon with a websocket_url never pays
    import httpx
from ...net.tls import client_context, explain_verify_error, find_verify_error

log = logging.getLogger(__name__)

ACTIVATION_POLL_S = 3.0  # 202 pending → retry after this long
ACTIVATION_RETRY_S = 10.0  # any other answer → retry after this long
ACTIVATION_POLLS = 10  # then the OTA check runs again
HTTP_TIMEOUT_S = 10.0

_clock_offset_s = 0.0


class OtaError(ProtocolError):
    """The OTA server could not be reached or answered something unusable; the message says which."""


@dataclass(frozen=True)
class Activation:
    """The device is not bound yet: show/speak `code`; `message` is the server's text for the user."""

    code: str
    message: str = ""
    challenge: str = ""
    timeout_ms: int | None = None


@dataclass(frozen=True)
class WebsocketEndpoint:
    """Where the websocket channel is and how to authenticate."""

    url: str
    token: str = field(default="", repr=False)
    version: int | None = None  # None when the reply does not say (the config's value applies)


@dataclass(frozen=True)
class MqttEndpoint:
    """The MQTT control channel's broker, credentials and topics, verbatim from the OTA reply."""

    endpoint: str
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    publish_topic: str = ""
    subscribe_topic: str = ""
    keepalive: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Firmware:
    """A firmware the server offers (recorded only)."""

    version: str
    url: str = ""
    force: bool = False


@dataclass(frozen=True)
class ServerTime:
    """The server's clock: ms since the epoch and the local zone's offset in minutes."""

    timestamp_ms: int
    timezone_offset_min: int = 0


@dataclass(frozen=True)
class OtaReply:
    """What an OTA check returned. `clock_offset_s` = server time − our time when it arrived."""

    activation: Activation | None = None
    websocket: WebsocketEndpoint | None = None
    mqtt: MqttEndpoint | None = None
    server_time: ServerTime | None = None
    firmware: Firmware | None = None
    clock_offset_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def transport(self, forced: str = "auto") -> str:
        """ "mqtt" or "websocket": the firmware's rule (an mqtt block wins; neither = mqtt) unless forced."""
        if forced in ("websocket", "mqtt"):
            return forced
        if self.mqtt is not None:
            return "mqtt"
        if self.websocket is not None:
            return "websocket"
        return "mqtt"


def server_clock_offset() -> float:
    """Seconds to add to our clock to get the server's (from the last OTA reply; 0 before one)."""
    return _clock_offset_s


def request_headers(settings: XiaozhiSettings, identity: Identity) -> dict[str, str]:
    """The firmware's OTA headers, with Activation-Version 1 (no eFuse serial number on a Pi)."""
    return {
        "Activation-Version": "1",
        "Device-Id": identity.device_id,
        "Client-Id": identity.client_id,
        "User-Agent": f"{settings.board_name}/{__version__}",
        "Accept-Language": settings.language,
        "Content-Type": "application/json",
    }


def request_body(settings: XiaozhiSettings, identity: Identity) -> dict[str, Any]:
    """The device description the firmware sends (`Board::GetSystemInfoJson`), filled in for a Linux host.

    Servers rely on `application` (version, elf_sha256), `board` (type, name, ssid, rssi) and
    `mac_address` equal to the Device-Id; the rest is there because the firmware sends it.
    """
    machine = platform.machine() or "unknown"
    build_hash = hashlib.sha256(f"companion {__version__} {machine}".encode()).hexdigest()
    return {
        "version": 2,
        "language": settings.language,
        "flash_size": 0,
        "minimum_free_heap_size": "0",
        "mac_address": identity.device_id,
        "uuid": identity.client_id,
        "chip_model_name": machine,
        "application": {
            "name": "companion",
            "version": __version__,
            "compile_time": "",
            "idf_version": f"python-{platform.python_version()}",
            "elf_sha256": build_hash,
        },
        "board": {
            "type": settings.board_name,
            "name": settings.board_name,
            "ssid": "",
            "rssi": 0,
            "mac": identity.device_id,
        },
    }


def activate_url(ota_url: str) -> str:
    """`<ota_url>activate`, with the `/` the firmware adds when missing."""
    return (ota_url if ota_url.endswith("/") else ota_url + "/") + "activate"


def make_client(settings: XiaozhiSettings) -> httpx.AsyncClient:
    """An HTTP client that verifies TLS (trusting `xiaozhi.tls_ca` too) and times out."""
    import httpx

    return httpx.AsyncClient(verify=client_context(settings.tls_ca), timeout=HTTP_TIMEOUT_S)


async def check(
    settings: XiaozhiSettings, identity: Identity, *, client: httpx.AsyncClient | None = None
) -> OtaReply:
    """Run one OTA check against `settings.ota_url`; raises OtaError with what went wrong."""
    url = settings.ota_url
    if not url:
        raise OtaError("xiaozhi.ota_url is empty: set it, or set xiaozhi.websocket_url to skip OTA")
    own = client is None
    http = client or make_client(settings)
    try:
        response = await _post(
            http, url, request_headers(settings, identity), request_body(settings, identity), settings
        )
    finally:
        if own:
            await http.aclose()
    if response.status_code != 200:
        raise OtaError(f"OTA server {url} answered HTTP {response.status_code}: {_snippet(response.text)}")
    try:
        data = response.json()
    except ValueError:
        raise OtaError(f"OTA reply from {url} is not JSON: {_snippet(response.text)}") from None
    if not isinstance(data, dict):
        raise OtaError(f"OTA reply from {url} is not a JSON object: {_snippet(response.text)}")
    reply = parse_reply(data, received_at=time.time())
    _record(reply, url)
    return reply


def parse_reply(data: dict[str, Any], received_at: float | None = None) -> OtaReply:
    """An OtaReply from the reply's JSON; malformed blocks are logged and left out."""
    activation = websocket = mqtt = server_time = firmware = None
    block = data.get("activation")
    if isinstance(block, dict) and (block.get("code") or block.get("challenge")):
        timeout = block.get("timeout_ms")
        activation = Activation(
            str(block.get("code") or ""),
            str(block.get("message") or ""),
            str(block.get("challenge") or ""),
            int(timeout) if isinstance(timeout, int | float) and not isinstance(timeout, bool) else None,
        )
    block = data.get("websocket")
    if isinstance(block, dict):
        url = block.get("url")
        if isinstance(url, str) and url:
            version = block.get("version")
            websocket = WebsocketEndpoint(
                url,
                str(block.get("token") or ""),
                version if isinstance(version, int) and version in (1, 2, 3) else None,
            )
        else:
            log.warning("OTA reply has a websocket block without a url; ignored")
    block = data.get("mqtt")
    if isinstance(block, dict):
        if isinstance(block.get("endpoint"), str) and block["endpoint"]:
            keepalive = block.get("keepalive")
            mqtt = MqttEndpoint(
                block["endpoint"],
                str(block.get("client_id") or ""),
                str(block.get("username") or ""),
                str(block.get("password") or ""),
                str(block.get("publish_topic") or ""),
                str(block.get("subscribe_topic") or ""),
                int(keepalive)
                if isinstance(keepalive, int | float) and not isinstance(keepalive, bool)
                else None,
                dict(block),
            )
        else:
            log.warning("OTA reply has an mqtt block without an endpoint; ignored")
    block = data.get("server_time")
    offset = 0.0
    if isinstance(block, dict) and isinstance(block.get("timestamp"), int | float):
        tz = block.get("timezone_offset")
        server_time = ServerTime(int(block["timestamp"]), int(tz) if isinstance(tz, int | float) else 0)
        if received_at is not None:
            offset = server_time.timestamp_ms / 1000.0 - received_at
    block = data.get("firmware")
    if isinstance(block, dict) and block.get("version"):
        firmware = Firmware(
            str(block["version"]), str(block.get("url") or ""), block.get("force") in (1, True)
        )
    for secret in (websocket.token if websocket else "", mqtt.password if mqtt else ""):
        if secret:
            register_secret(secret)  # masked in every later log line, whatever logs it
    return OtaReply(activation, websocket, mqtt, server_time, firmware, offset, data)


def _record(reply: OtaReply, url: str) -> None:
    global _clock_offset_s
    if reply.server_time is not None:
        _clock_offset_s = reply.clock_offset_s
        if abs(reply.clock_offset_s) >= 2.0:
            log.warning("the OTA server's clock is %+.1f s from ours", reply.clock_offset_s)
    if reply.firmware is not None:
        log.info(
            "OTA server offers firmware %s (not installed: companion never updates itself)",
            reply.firmware.version,
        )
    offered = [name for name, block in (("websocket", reply.websocket), ("mqtt", reply.mqtt)) if block]
    log.info("OTA check at %s: offers %s%s", url, " and ".join(offered) or "no channel",
             ", device not activated yet" if reply.activation else "")  # fmt: skip


async def wait_activated(
    settings: XiaozhiSettings,
    identity: Identity,
    *,
    client: httpx.AsyncClient | None = None,
    poll_s: float = ACTIVATION_POLL_S,
    retry_s: float = ACTIVATION_RETRY_S,
    max_polls: int = ACTIVATION_POLLS,
) -> bool:
    """Poll `<ota>/activate` (body {}) until 200 (True) or `max_polls` answers without it (False).

    202 means "not bound yet" and is retried after `poll_s`; other answers and network errors after
    `retry_s`. Raises OtaError only for a certificate the server cannot be trusted with.
    """
    url = activate_url(settings.ota_url)
    own = client is None
    http = client or make_client(settings)
    try:
        for attempt in range(max_polls):
            delay = retry_s
            try:
                response = await _post(http, url, request_headers(settings, identity), {}, settings)
            except OtaError as exc:
                if find_verify_error(exc) is not None:
                    raise
                log.warning("activation poll failed: %s", exc)
            else:
                if response.status_code == 200:
                    log.info("device activated")
                    return True
                if response.status_code == 202:
                    delay = poll_s
                    log.debug("activation pending (poll %d)", attempt + 1)
                else:
                    log.warning("activation poll: HTTP %d %s", response.status_code, _snippet(response.text))
            if attempt + 1 < max_polls:
                await asyncio.sleep(delay)
        return False
    finally:
        if own:
            await http.aclose()


async def activate(
    settings: XiaozhiSettings,
    identity: Identity,
    *,
    on_code: Callable[[Activation], None] | None = None,
    client: httpx.AsyncClient | None = None,
    poll_s: float = ACTIVATION_POLL_S,
    retry_s: float = ACTIVATION_RETRY_S,
    max_polls: int = ACTIVATION_POLLS,
    reply: OtaReply | None = None,
) -> OtaReply:
    """Check, and while the reply carries `activation`: announce the code, poll, check again.

    Returns the first OTA reply without `activation` (it holds the channel endpoint). `on_code` is
    called each time a code is (re)announced, for the console, LEDs and spoken digits.
    """
    own = client is None
    http = client or make_client(settings)
    try:
        while True:
            if reply is None:
                reply = await check(settings, identity, client=http)
            if reply.activation is None:
                return reply
            announce(reply.activation)
            if on_code is not None:
                on_code(reply.activation)
            await wait_activated(
                settings, identity, client=http, poll_s=poll_s, retry_s=retry_s, max_polls=max_polls
            )
            reply = None
    finally:
        if own:
            await http.aclose()


def activation_alert(activation: Activation) -> Alert:
    """The event that puts the device in its activating state, with the code and the instructions."""
    text = f"activation code {activation.code}"
    if activation.message:
        text += f": {' '.join(activation.message.split())}"
    return Alert("activation", text, "link")


def activation_reporter(
    sink: Callable[[Alert], None], also: Callable[[Activation], None] | None = None
) -> Callable[[Activation], None]:
    """The `on_code` callback every backend gives `activate`: the activation alert to the sink (the
    device shows and speaks the code), then `also` (e.g. the CLI printing it)."""

    def report(activation: Activation) -> None:
        sink(activation_alert(activation))
        if also is not None:
            also(activation)

    return report


def announce(activation: Activation) -> None:
    """Log the activation code and the server's instructions."""
    message = " ".join(activation.message.split()) if activation.message else ""
    log.warning("device not activated: activation code %s%s", activation.code or "(none)",
                f" ({message})" if message else "")  # fmt: skip


async def _post(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    settings: XiaozhiSettings,
) -> httpx.Response:
    import httpx  # already loaded: `http` is an httpx client

    try:
        return await http.post(url, headers=headers, content=json.dumps(body, separators=(",", ":")))
    except httpx.HTTPError as exc:
        verify = find_verify_error(exc)
        if verify is not None:
            raise OtaError(explain_verify_error(url, verify, settings.tls_ca)) from exc
        raise OtaError(f"cannot reach the OTA server {url}: {exc or type(exc).__name__}") from exc


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))
