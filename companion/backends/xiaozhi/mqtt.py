"""The xiaozhi backend over MQTT + UDP: JSON on an MQTT control channel, encrypted Opus over UDP (§4.4–4.5).

One long-running task (`run`) connects to the broker named by the OTA reply (QoS 0 only, TLS only on
port 8883), opens the audio channel (hello version 3 → the server's hello with a `udp` block → a UDP
socket), waits for the MCP `initialize` exchange or `settle_ms`, reports `Connected`, and then serves
until the MQTT link dies; it waits the shared backoff and connects again. A broker that refuses our
credentials makes the OTA check run again for fresh ones.

The audio channel lives inside the MQTT connection, as in the firmware:
- each hello starts a new UDP session (new key and nonce, both sequence counters back to 0);
- right after the UDP socket opens, one empty-sounding Opus packet goes up, because the gateway learns
  our address from our first datagram and cannot send downlink audio before it;
- a server `goodbye` (for our session) closes the channel: audio stops, the turn ends, nothing is sent
  back; so does 120 s with nothing received. We send `goodbye` whenever we close the channel ourselves;
- the next turn (`start_listening` or a text) opens it again, buffering the microphone meanwhile.
MCP requests arrive on MQTT even when no audio channel is open (the gateway lists our tools right after
the MQTT connect), so they are always delivered as ToolRequest events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from ...config import XiaozhiSettings
from ...events import (
    Alert,
    Connected,
    Disconnected,
    EventSink,
    ListenMode,
    SpeechStarted,
    TurnEnded,
    UplinkFormat,
)
from ...net.tls import explain_verify_error, find_verify_error
from ...protocols.xiaozhi import messages
from ...protocols.xiaozhi.messages import AudioParams
from ...protocols.xiaozhi.session import (
    ChannelDead,
    ChannelNotOpen,
    ClientSession,
    GoodbyeReceived,
    HelloReceived,
    ServerText,
    SessionConfig,
    SessionEvent,
)
from ...protocols.xiaozhi.udp import UdpAudioChannel, UdpConfigError, UdpParams
from ...service.logsetup import log_frame
from ..reconnect import AuthFailed, ChannelLost
from . import ota
from .identity import Identity
from .transport import TransportOptions, XiaozhiTransport

log = logging.getLogger(__name__)

PASSWORD_ENV = "COMPANION_XIAOZHI_MQTT_PASSWORD"
TLS_PORT = 8883
DEFAULT_PORT = TLS_PORT  # the firmware's default when the endpoint has no :port
FRAME_MS = 60
# A 1-byte Opus packet (TOC 0x58: SILK wideband, 60 ms, no frame data): decoders play 60 ms of silence.
# Sent once per UDP session so the gateway learns our address before it has audio for us.
ADDRESS_PRIMER = b"\x58"
PENDING_UPLINK_FRAMES = 34  # ~2 s of 60 ms frames buffered while the audio channel (re)opens
MAX_QUEUED_MESSAGES = 256
PLANNED_REOPEN_QUIET_S = 2.0
# Downlink UDP can overtake the `tts start` that travels through the broker; such packets are held
# this long (at most EARLY_AUDIO_PACKETS of them) and played if `tts start` follows.
EARLY_AUDIO_S = 0.5
EARLY_AUDIO_PACKETS = 10
WATCH_INTERVAL_S = 30.0
_AUTH_REFUSED = {4, 5, 134, 135}  # CONNACK: bad user name or password / not authorised (3.1.1 and 5)


@dataclass(frozen=True)
class BrokerAddress:
    """Where the MQTT broker is and whether to use TLS (only on port 8883, as the firmware does)."""

    host: str
    port: int
    tls: bool


def broker_address(endpoint: str) -> BrokerAddress:
    """Parse an OTA `endpoint` "host[:port]" ("[v6]:port" too); no port means 8883 with TLS."""
    text = endpoint.strip()
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"MQTT endpoint {endpoint!r}: unclosed '['")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"MQTT endpoint {endpoint!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"MQTT endpoint {endpoint!r} has no host")
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
            raise ValueError(f"MQTT endpoint {endpoint!r}: port must be 1..65535")
        port = int(port_text)
    return BrokerAddress(host, port, port == TLS_PORT)


def subscribe_topic(endpoint: ota.MqttEndpoint, identity: Identity) -> str:
    """The topic to subscribe to: the OTA's, else the gateway's `devices/p2p/<mac_>` convention.

    The firmware no longer subscribes because the gateway writes to the connection anyway; a plain
    broker delivers only what we subscribe to, and subscribing is harmless with the gateway. The
    gateway's OTA sends the string "null" here for old firmware's sake: treated as empty.
    """
    topic = endpoint.subscribe_topic.strip()
    if topic and topic != "null":
        return topic
    parts = endpoint.client_id.split("@@@")
    mac = parts[1] if len(parts) >= 2 and parts[1] else identity.device_id.replace(":", "_")
    return f"devices/p2p/{mac}"


def configured_endpoint(settings: XiaozhiSettings) -> ota.MqttEndpoint | None:
    """The endpoint given in config (mqtt_endpoint …), which skips OTA; None when not set."""
    if not settings.mqtt_endpoint:
        return None
    return ota.MqttEndpoint(
        settings.mqtt_endpoint,
        settings.mqtt_client_id,
        settings.mqtt_username,
        settings.mqtt_password or os.environ.get(PASSWORD_ENV, ""),
        settings.mqtt_publish_topic,
        settings.mqtt_subscribe_topic,
        None,
    )


def session_config(settings: XiaozhiSettings) -> SessionConfig:
    """The MQTT hello: version 3, transport udp, Opus 16 kHz 60 ms; features.aec when configured."""
    features: dict[str, Any] | None = None
    if settings.server_aec:
        features = {"aec": True, "mcp": True, "glyph_push": False}  # the firmware's key order
    return SessionConfig(
        transport="udp",
        version=3,
        uplink=AudioParams("opus", 16000, 1, FRAME_MS),
        features=features,
        hello_timeout_s=settings.hello_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
    )


class _UdpReceiver(asyncio.DatagramProtocol):
    def __init__(self, owner: XiaozhiMqttBackend) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._owner._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        self._owner._on_udp_error(exc)


class XiaozhiMqttBackend(XiaozhiTransport):
    """xiaozhi over MQTT + UDP (implements companion.events.Backend)."""

    uplink = UplinkFormat("opus", 16000, FRAME_MS)
    channel_name = "xiaozhi MQTT channel"
    server_name = "the MQTT broker"
    refusal_note = "the broker refused our credentials: the OTA check runs again for fresh ones"

    def __init__(
        self, settings: XiaozhiSettings, sink: EventSink, **options: Unpack[TransportOptions]
    ) -> None:
        """`ota_reply`: a reply the caller already has, whose `mqtt` block is used first.

        Without it (and without `settings.mqtt_endpoint`) the backend runs OTA and activation itself.
        Raises ConfigError at once for an unusable `xiaozhi.tls_ca`.
        """
        super().__init__(settings, sink, log=log, **options)
        self._session_config = session_config(settings)
        if self.audio.codec == "pcm":
            log.warning("MQTT+UDP carries Opus only; using Opus for the uplink")
        self.session = ClientSession(self._session_config)
        self._endpoint: ota.MqttEndpoint | None = None
        self._client: aiomqtt.Client | None = None
        self._topic = ""
        self._udp: UdpAudioChannel | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._uplink_ms = 0
        self._kick = asyncio.Event()
        self._hello_waiter: asyncio.Future[HelloReceived] | None = None
        self._settled = asyncio.Event()
        self._control = asyncio.Lock()
        self._opening = False
        self._pending: deque[bytes] = deque(maxlen=PENDING_UPLINK_FRAMES)
        self._early: deque[tuple[float, bytes]] = deque(maxlen=EARLY_AUDIO_PACKETS)

    # ------------------------------------------------------------------ Backend interface
    @property
    def connected(self) -> bool:
        """True from `Connected` until the MQTT link is lost (the audio channel may be closed between
        turns; the next turn reopens it)."""
        return self._ready

    @property
    def channel_open(self) -> bool:
        """True while an audio channel (hello answered, UDP socket up) exists."""
        return self._transport is not None and self.session.is_open

    async def run(self) -> None:
        """Connect and serve forever (until `close()`), reconnecting with backoff."""
        await self._reconnect.run(self._attempt, take_ready=self._take_ready)

    async def _attempt(self) -> str:
        await self._serve(await self._resolve(self._refresh.take()))
        return "closed"

    def _endpoint_pinned(self) -> bool:
        return bool(self.settings.mqtt_endpoint)

    async def start_listening(self, mode: ListenMode) -> None:
        """Send `listen start` in `mode`, opening the audio channel first when it is closed."""
        await self._send_control(lambda s: s.listen_start(str(mode)), reopen=True)

    async def stop_listening(self) -> None:
        """Send `listen stop`."""
        await self._send_control(lambda s: s.listen_stop())

    async def send_audio(self, frame: bytes) -> None:
        """Send one uplink Opus packet; buffered (≤ ~2 s) while the channel opens, else dropped."""
        if self._opening:
            if len(self._pending) == self._pending.maxlen:
                self.stats["uplink_dropped"] += 1
            self._pending.append(frame)
            return
        if not self.channel_open or not self.session.uplink_allowed():
            self.stats["uplink_dropped"] += 1
            return
        self._send_uplink(frame)

    async def abort(self, reason: str = "") -> None:
        """Send `abort` (reason "wake_word_detected" or none)."""
        await self._send_control(lambda s: s.abort(reason))

    async def send_text(self, text: str) -> None:
        """A typed utterance, as `listen detect`; opens the audio channel when it is closed."""
        await self._send_control(lambda s: s.listen_detect(text), reopen=True)

    async def send_tool_result(self, payload: dict[str, Any]) -> None:
        """Publish an MCP reply or notification (also when no audio channel is open)."""
        if self._client is None:
            log.debug("MCP reply dropped: not connected")
            return
        await self._publish(self.session.mcp(payload))
        if self._init_id is not None and payload.get("id") == self._init_id and "result" in payload:
            self._init_id = None
            self._settled.set()

    async def close(self) -> None:
        """Say goodbye if an audio channel is open, stop reconnecting and disconnect."""
        self._reconnect.stop()
        self._kick.set()
        await self._close_channel(send_goodbye=True)

    # ------------------------------------------------------------------ connecting
    async def _resolve(self, refresh: bool) -> ota.MqttEndpoint:
        configured = configured_endpoint(self.settings)
        if configured is not None:
            return configured
        if self._endpoint is not None and not refresh:
            return self._endpoint
        reply, self._ota_reply = self._ota_reply, None
        reply = await ota.activate(self.settings, self.identity, on_code=self._activation_code, reply=reply)
        if reply.mqtt is None:
            raise ota.OtaError(
                f"the OTA server {self.settings.ota_url} offers no MQTT endpoint; "
                "use the websocket transport (xiaozhi.transport = 'auto' or 'websocket')"
            )
        self._endpoint = reply.mqtt
        return reply.mqtt

    async def _serve(self, endpoint: ota.MqttEndpoint) -> None:
        """One MQTT connection, from CONNECT to its loss; raises the reason it ended."""
        try:
            address = broker_address(endpoint.endpoint)
        except ValueError as exc:
            raise ChannelLost(str(exc)) from None
        if not endpoint.publish_topic:
            raise ChannelLost("the MQTT endpoint has no publish topic")
        keepalive = endpoint.keepalive if endpoint.keepalive else self.settings.mqtt_keepalive_s
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=endpoint.username or None,
            password=endpoint.password or None,
            identifier=endpoint.client_id or None,
            keepalive=keepalive,
            tls_context=self._ssl if address.tls else None,
            timeout=self.settings.hello_timeout_s,
            clean_session=True,
            max_queued_incoming_messages=MAX_QUEUED_MESSAGES,
            logger=logging.getLogger(f"{__name__}.paho"),
        )
        where = f"{address.host}:{address.port}{' (TLS)' if address.tls else ''}"
        log.debug("connecting to MQTT broker %s as %r", where, endpoint.client_id)
        reader: asyncio.Task[None] | None = None
        try:
            async with client:
                self._client = client
                self._topic = endpoint.publish_topic
                self._new_session()
                topic = subscribe_topic(endpoint, self.identity)
                await client.subscribe(topic, qos=0)
                log.info("MQTT connected to %s (publish %s, subscribe %s)", where, self._topic, topic)
                reader = asyncio.create_task(self._read(client), name="xiaozhi-mqtt-reader")
                try:
                    await self._open_channel()
                    self._become_ready()
                    await self._watch(reader)
                finally:
                    if not self._reconnect.stopped and self.channel_open and not reader.done():
                        await self._close_channel(send_goodbye=True)
                    self._close_udp()
        except MqttConnectError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if code in _AUTH_REFUSED:
                raise AuthFailed(f"MQTT broker {where} refused our credentials ({exc})") from None
            raise ChannelLost(f"MQTT broker {where} refused the connection ({exc})") from None
        except aiomqtt.MqttError as exc:
            verify = find_verify_error(exc)
            if verify is not None:
                raise ChannelLost(
                    explain_verify_error(f"the MQTT broker {where}", verify, self.settings.tls_ca)
                ) from None
            raise ChannelLost(f"MQTT broker {where}: {exc}") from None
        finally:
            if reader is not None:
                await _finish_reader(reader)
            self._client = None
            waiter = self._hello_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(ChannelLost("the MQTT connection was lost"))
            self._close_udp()
            self._new_session()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            log_frame("mqtt", "<-", payload if isinstance(payload, str) else bytes(payload or b""))
            if isinstance(payload, bytes | bytearray):
                try:
                    text = bytes(payload).decode("utf-8")
                except UnicodeDecodeError:
                    self.stats["bad_mqtt_payload"] += 1
                    level = logging.WARNING if self.stats["bad_mqtt_payload"] == 1 else logging.DEBUG
                    log.log(level, "MQTT message on %s is not UTF-8; skipped", message.topic)
                    continue
            elif isinstance(payload, str):
                text = payload
            else:
                continue
            self._on_text(text)

    async def _watch(self, reader: asyncio.Task[None]) -> None:
        """Until the MQTT link dies: check the audio channel's liveness and planned reopenings."""
        loop = asyncio.get_running_loop()
        while not self._reconnect.stopped:
            now = loop.time()
            deadline = self.session.next_deadline(now) if self.channel_open else now + WATCH_INTERVAL_S
            if self.session.reconnect_wanted:
                deadline = min(deadline, now + 0.5)
            self._kick.clear()
            kick = asyncio.create_task(self._kick.wait())
            try:
                await asyncio.wait(
                    {reader, kick},
                    timeout=max(0.0, min(deadline - now, WATCH_INTERVAL_S)),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                kick.cancel()
            if reader.done():
                reader.result()  # raises the MQTT error
                raise ChannelLost("the MQTT message stream ended")
            if self.channel_open:
                speaking, in_turn = self.session.speaking, self.session.in_turn  # check() closes it
                for event in self.session.check(loop.time()):
                    if isinstance(event, ChannelDead):
                        await self._close_channel(send_goodbye=True)
                        log.info("xiaozhi audio channel ended: %s", event.reason)
                        self._end_turn(event.reason, speaking=speaking, in_turn=in_turn)
            if self.session.reconnect_wanted and self.channel_open and self._quiet():
                log.info("agent configuration updated: the audio channel reopens on the next turn")
                await self._close_channel(send_goodbye=True)

    # ------------------------------------------------------------------ the audio channel
    async def _open_channel(self) -> None:
        """hello → server hello with udp → UDP socket → MCP initialize or settle time; raises ChannelLost."""
        loop = asyncio.get_running_loop()
        self._close_udp()
        session = self._new_session()
        self._init_id = None
        self._settled.clear()
        waiter: asyncio.Future[HelloReceived] = loop.create_future()
        self._hello_waiter = waiter
        timeout = self.settings.hello_timeout_s
        try:
            await self._publish(session.hello(loop.time()), required=True)
            hello = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self._new_session()
            raise ChannelLost(f"no server hello within {timeout:g} s") from None
        finally:
            self._hello_waiter = None
        try:
            params = UdpParams.from_hello(hello.udp)
        except UdpConfigError as exc:
            self._new_session()
            raise ChannelLost(f"the server hello is unusable: {exc}") from None
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_datagram_endpoint(
                    lambda: _UdpReceiver(self), remote_addr=(params.server, params.port)
                ),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._new_session()
            raise ChannelLost(f"cannot open UDP to {params.server}:{params.port}: {exc}") from None
        self._transport = transport
        self._udp = UdpAudioChannel.from_params(params)
        self._uplink_ms = 0
        self._send_datagram(self._udp.seal(ADDRESS_PRIMER, 0))
        log.info(
            "xiaozhi audio channel open: session %s, UDP %s:%d",
            session.session_id or "(no id)",
            params.server,
            params.port,
        )
        self._kick.set()  # the watcher recomputes its deadline for the new channel
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self.settings.settle_ms / 1000)
        self._last_activity = time.monotonic()

    async def _close_channel(self, *, send_goodbye: bool) -> None:
        """Close the audio channel; `send_goodbye` when we are the side closing it.

        The UDP socket is what says a channel exists: the session may already be closed (the core
        closes it when it reports ChannelDead).
        """
        open_now = self._transport is not None
        session = self.session
        self._close_udp()
        self._opening = False
        self._pending.clear()
        if open_now and send_goodbye and self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publish(session.goodbye()), 1.0)
            log.info("xiaozhi audio channel closed (goodbye sent)")
        self._new_session()

    def _end_turn(self, reason: str, *, speaking: bool, in_turn: bool) -> None:
        """The channel ended: stop audio and go idle (the conversation ends its turn)."""
        if speaking:
            # Disconnected flushes playback and ends the turn; Connected says we can take the next one.
            self._sink(Disconnected(reason))
            if self._ready:
                self._sink(Connected(""))
        elif in_turn:
            self._sink(TurnEnded(reason))

    def _new_session(self) -> ClientSession:
        """A fresh session (state NEW): MCP and goodbye are understood before the next hello."""
        self.session.close()
        self.session = ClientSession(self._session_config)
        return self.session

    def _close_udp(self) -> None:
        transport, self._transport = self._transport, None
        udp, self._udp = self._udp, None
        self._early.clear()
        if udp is not None and udp.stats:
            log.debug("UDP counters: %s", dict(udp.stats))
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------------ incoming
    def _on_text(self, text: str) -> None:
        waiter = self._hello_waiter
        if waiter is not None and not waiter.done():
            self._fail_hello_on_error(text, waiter)
        session = self.session
        speaking, in_turn = session.speaking, session.in_turn
        now = asyncio.get_running_loop().time()
        for event in session.receive_text(text, now):
            self._on_session_event(event, speaking=speaking, in_turn=in_turn)

    def _fail_hello_on_error(self, text: str, waiter: asyncio.Future[HelloReceived]) -> None:
        """The gateway answers a hello it cannot serve with {"type":"error"}: fail now, not in 10 s."""
        try:
            msg = messages.parse(text)
        except messages.MessageError:
            return
        if msg["type"] == "error":
            detail = msg.get("message")
            waiter.set_exception(ChannelLost(f"the server refused the hello: {detail!r}"))

    def _on_session_event(self, event: SessionEvent, *, speaking: bool, in_turn: bool) -> None:
        if isinstance(event, HelloReceived):
            waiter = self._hello_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
            else:
                log.info("unexpected server hello ignored")
            return
        if isinstance(event, GoodbyeReceived):
            self.stats["server_goodbye"] += 1
            waiter = self._hello_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(ChannelLost("the server said goodbye instead of hello"))
            was_open = self._transport is not None
            self._close_udp()
            self._new_session()
            if was_open:
                log.info("the server closed the audio channel (goodbye)")
                self._end_turn("the server ended the session", speaking=speaking, in_turn=in_turn)
            return
        if isinstance(event, ChannelDead | ServerText):
            return  # deadlines are checked by _watch; non-JSON text was logged by the session
        if self._forward(event, channel_open=self.session.is_open) and isinstance(event, SpeechStarted):
            self._replay_early_audio()

    def _on_datagram(self, data: bytes) -> None:
        udp, session = self._udp, self.session
        if udp is None or not session.is_open:
            self.stats["downlink_dropped"] += 1
            return
        packet = udp.open(data)
        if packet is None:
            return
        now = asyncio.get_running_loop().time()
        if not session.speaking:
            self.stats["early_audio"] += 1
            self._early.append((now, packet.payload))
            return
        self._deliver_audio(packet.payload, now)

    def _replay_early_audio(self) -> None:
        """Play the packets that arrived just before `tts start` (they overtook it)."""
        now = asyncio.get_running_loop().time()
        early = [payload for at, payload in self._early if now - at <= EARLY_AUDIO_S]
        self._early.clear()
        if early:
            log.debug("%d downlink packet(s) arrived before tts start; played", len(early))
        for payload in early:
            self._deliver_audio(payload, now)

    def _deliver_audio(self, payload: bytes, now: float) -> None:
        for event in self.session.receive_audio(payload, now):
            if not isinstance(event, HelloReceived | ServerText | ChannelDead | GoodbyeReceived):
                self._sink(event)

    def _on_udp_error(self, exc: Exception) -> None:
        self.stats["udp_errors"] += 1
        log.debug("UDP error: %s", exc)

    # ------------------------------------------------------------------ sending
    async def _send_control(self, build: Callable[[ClientSession], str], *, reopen: bool = False) -> None:
        async with self._control:
            if not self._ready or self._client is None:
                log.info("not connected to the xiaozhi server; message dropped")
                return
            if not self.channel_open:
                if not reopen:
                    log.debug("no audio channel open; message dropped")
                    return
                if not await self._reopen():
                    return
            try:
                text = build(self.session)
            except ChannelNotOpen as exc:
                log.info("%s", exc)
            else:
                self._last_activity = time.monotonic()
                await self._publish(text)
            finally:
                self._flush_pending()

    async def _reopen(self) -> bool:
        """Open the audio channel for a turn, buffering the microphone meanwhile; False if it failed."""
        self._opening = True
        self._pending.clear()
        try:
            await self._open_channel()
        except (ChannelLost, aiomqtt.MqttError) as exc:
            self._opening = False
            self._pending.clear()
            log.warning("cannot open the xiaozhi audio channel: %s", exc)
            self._sink(Alert("error", f"cannot open the audio channel: {exc}", "cloud_off"))
            self._sink(TurnEnded("audio channel failed"))
            return False
        return True

    def _flush_pending(self) -> None:
        """Send what the microphone gave while the channel opened (after `listen start` went out)."""
        pending = list(self._pending)
        self._pending.clear()
        self._opening = False
        for frame in pending:
            if self.channel_open and self.session.uplink_allowed():
                self._send_uplink(frame)
            else:
                self.stats["uplink_dropped"] += 1

    def _send_uplink(self, frame: bytes) -> None:
        udp = self._udp
        if udp is None:
            self.stats["uplink_dropped"] += 1
            return
        try:
            datagram = udp.seal(frame, self._uplink_ms)
        except ValueError as exc:
            self.stats["uplink_dropped"] += 1
            log.warning("uplink packet dropped: %s", exc)
            return
        self._uplink_ms += FRAME_MS
        if self._send_datagram(datagram):
            self.stats["uplink_sent"] += 1
            self._last_activity = time.monotonic()

    def _send_datagram(self, datagram: bytes) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.sendto(datagram)
        return True

    async def _publish(self, text: str, *, required: bool = False) -> bool:
        """Publish one JSON message (QoS 0). Errors are logged and dropped unless `required`."""
        client = self._client
        if client is None:
            if required:
                raise ChannelLost("not connected to the MQTT broker")
            return False
        log_frame("mqtt", "->", text)
        try:
            await client.publish(self._topic, text.encode("utf-8"), qos=0)
        except aiomqtt.MqttError as exc:
            if required:
                raise ChannelLost(f"MQTT publish failed: {exc}") from None
            log.info("MQTT publish failed: %s", exc)
            return False
        return True

    def _become_ready(self) -> None:
        if self._ready:
            return
        self._ready = True
        self._last_activity = time.monotonic()
        self._sink(Connected(self.session.session_id))

    def _quiet(self) -> bool:
        session = self.session
        if session.speaking or session.awaiting_reply or self._control.locked() or self._busy():
            return False
        return time.monotonic() - self._last_activity >= PLANNED_REOPEN_QUIET_S


async def _finish_reader(reader: asyncio.Task[None]) -> None:
    """Let the reader end by itself now that the client has disconnected, so it collects the client's
    disconnect error (cancelling it first would leave that error unretrieved); cancel it if it lingers."""
    await asyncio.wait({reader}, timeout=1.0)
    if not reader.done():
        reader.cancel()
        await asyncio.wait({reader}, timeout=1.0)
    if reader.done() and not reader.cancelled():
        reader.exception()  # an MqttError once the client has disconnected: expected, already reported
