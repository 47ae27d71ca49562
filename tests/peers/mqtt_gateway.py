"""A test peer that plays the xiaozhi MQTT gateway (xinnan-tech/xiaozhi-mqtt-gateway) over a real broker.

The real gateway is itself an MQTT server; here a real Mosquitto carries the messages and this peer is
an MQTT client subscribed to the devices' publish topic (`device-server`), answering on
`devices/p2p/<mac_>`. It speaks the wire format of spec §4.4–4.5 with its own AES-CTR code (not the
product's udp.py), so a test that passes proves the two sides agree on the bytes:

- hello (version 3 only) → a fresh key, ssrc and session id, and the gateway's hello reply with a
  `udp` block; sequences restart at 0;
- UDP datagrams are routed by ssrc, decrypted and recorded; the first one teaches it the device's address;
- `send_audio` encrypts downlink packets with the header as the CTR counter block;
- every JSON message the device publishes is recorded with its QoS.

`gateway_password` is the gateway's MQTT password rule (spec §8 vector 12).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SERVER_TOPIC = "device-server"
DOWNLINK_PARAMS = {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60}


# ---------------------------------------------------------------- credentials ([GW] mqtt_config_v2.js)


def gateway_password(signature_key: str, client_id: str, username: str) -> str:
    """base64(HMAC-SHA256(MQTT_SIGNATURE_KEY, client_id + "|" + username)), as the gateway checks it."""
    digest = hmac.new(signature_key.encode(), f"{client_id}|{username}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def gateway_client_id(group: str, mac: str, uuid: str) -> str:
    """`GID_<model>@@@<mac with _>@@@<uuid>`."""
    return f"{group}@@@{mac.replace(':', '_')}@@@{uuid}"


def gateway_username(user_data: dict[str, Any]) -> str:
    """base64 of the compact JSON object (JavaScript's JSON.stringify)."""
    return base64.b64encode(json.dumps(user_data, separators=(",", ":")).encode()).decode("ascii")


def gateway_mqtt_block(
    endpoint: str, group: str, mac: str, uuid: str, user_data: dict[str, Any], signature_key: str
) -> dict[str, Any]:
    """The OTA reply's `mqtt` block the gateway's generateMqttConfig produces (subscribe_topic "null")."""
    client_id = gateway_client_id(group, mac, uuid)
    username = gateway_username(user_data)
    return {
        "endpoint": endpoint,
        "client_id": client_id,
        "username": username,
        "password": gateway_password(signature_key, client_id, username),
        "publish_topic": SERVER_TOPIC,
        "subscribe_topic": "null",
    }


# ---------------------------------------------------------------- UDP packets (independent of udp.py)


def udp_header(length: int, ssrc: int, timestamp: int, sequence: int) -> bytes:
    """type 1, flags 0, u16 length, u32 ssrc, u32 timestamp, u32 sequence (big-endian)."""
    return struct.pack(">BBHIII", 1, 0, length, ssrc, timestamp & 0xFFFFFFFF, sequence & 0xFFFFFFFF)


def aes_ctr(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-128-CTR with `counter_block` as the initial counter (encrypts and decrypts)."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return cipher.update(data) + cipher.finalize()


@dataclass(frozen=True)
class Uplink:
    """One decrypted uplink datagram as the gateway saw it."""

    sequence: int
    timestamp: int
    payload: bytes
    session: str


@dataclass
class Published:
    """One message the device published."""

    topic: str
    qos: int
    text: str
    data: dict[str, Any] | None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, peer: GatewayPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.peer._on_datagram(data, addr)


@dataclass
class GatewayPeer:
    """The gateway, over a Mosquitto on 127.0.0.1:`port` (use `async with`).

    `hello_mode`: "ok" answers hellos, "error" answers with the gateway's error message, "silent"
    never answers, "bad_udp" answers with a nonce that is not 16 bytes.
    """

    port: int
    device_topic: str
    server_topic: str = SERVER_TOPIC
    hello_mode: str = "ok"
    username: str | None = None
    password: str | None = None
    on_message: Callable[[GatewayPeer, dict[str, Any]], Any] | None = None
    published: list[Published] = field(default_factory=list)
    uplink: list[Uplink] = field(default_factory=list)
    misrouted: int = 0
    sessions: int = 0
    session_id: str = ""
    key: bytes = b""
    ssrc: int = 0
    device_addr: Any = None
    local_sequence: int = 0
    remote_sequence: int = 0

    async def __aenter__(self) -> GatewayPeer:
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=("127.0.0.1", 0))
        self.udp_port = self._udp.get_extra_info("sockname")[1]
        self._client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier="test-gateway", username=self.username, password=self.password
        )
        await self._client.__aenter__()
        await self._client.subscribe(self.server_topic, qos=1)  # delivered QoS = what the device used
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # disconnect first: the reader then ends by itself and collects the client's disconnect error
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)
        await asyncio.wait({self._reader}, timeout=2.0)
        if not self._reader.done():
            self._reader.cancel()
            await asyncio.wait({self._reader}, timeout=2.0)
        if self._reader.done() and not self._reader.cancelled():
            self._reader.exception()
        self._udp.close()

    # ------------------------------------------------------------------ waiting
    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until `predicate()` holds; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def messages(self, kind: str) -> list[dict[str, Any]]:
        """Every JSON message of type `kind` the device published, in order."""
        return [p.data for p in self.published if p.data is not None and p.data.get("type") == kind]

    async def message(self, kind: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """The `count`-th message of type `kind`, waiting for it."""
        await self.until(lambda: len(self.messages(kind)) >= count, timeout)
        return self.messages(kind)[count - 1]

    async def uplink_count(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` uplink datagrams of the current session arrived."""
        await self.until(lambda: len(self.session_uplink()) >= count, timeout)

    def session_uplink(self) -> list[Uplink]:
        """The uplink datagrams of the current session."""
        return [u for u in self.uplink if u.session == self.session_id]

    # ------------------------------------------------------------------ sending
    async def publish(self, message: dict[str, Any] | str | bytes) -> None:
        """Publish a JSON object (compact, like Node's JSON.stringify), or raw text/bytes, to the device."""
        payload = json.dumps(message, separators=(",", ":")) if isinstance(message, dict) else message
        await self._client.publish(self.device_topic, payload, qos=0)

    def send_audio(self, payload: bytes, timestamp: int = 0) -> int:
        """Encrypt and send one downlink packet with the next sequence number; returns it."""
        self.local_sequence += 1
        header = udp_header(len(payload), self.ssrc, timestamp, self.local_sequence)
        self.send_datagram(header + aes_ctr(self.key, header, payload))
        return self.local_sequence

    def send_datagram(self, data: bytes) -> None:
        """Send raw bytes to the device's UDP address (learned from its first datagram)."""
        assert self.device_addr is not None, "the device has sent no datagram yet"
        self._udp.sendto(data, self.device_addr)

    # ------------------------------------------------------------------ receiving
    async def _read(self) -> None:
        async for message in self._client.messages:
            raw = message.payload
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                data = None
            self.published.append(Published(str(message.topic), message.qos, text, data))
            if data is not None and data.get("type") == "hello":
                await self._on_hello(data)
            elif data is not None and self.on_message is not None:
                result = self.on_message(self, data)
                if asyncio.iscoroutine(result):
                    await result
            self._changed.set()

    async def _on_hello(self, hello: dict[str, Any]) -> None:
        if hello.get("version") != 3 or self.hello_mode == "silent":
            return
        if self.hello_mode == "error":
            await self.publish({"type": "error", "message": "处理 hello 消息失败"})
            return
        self.sessions += 1
        self.session_id = f"s{self.sessions}"
        self.key = os.urandom(16)
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.local_sequence = self.remote_sequence = 0
        self.device_addr = None
        nonce = udp_header(0, self.ssrc, 0, 0).hex()
        if self.hello_mode == "bad_udp":
            nonce = nonce[:30]
        await self.publish(
            {
                "type": "hello",
                "version": 3,
                "session_id": self.session_id,
                "transport": "udp",
                "udp": {
                    "server": "127.0.0.1",
                    "port": self.udp_port,
                    "encryption": "aes-128-ctr",
                    "key": self.key.hex(),
                    "nonce": nonce,
                },
                "audio_params": DOWNLINK_PARAMS,
            }
        )

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        if len(data) < 16 or data[0] != 1:
            return
        length, ssrc, timestamp, sequence = struct.unpack_from(">HIII", data, 2)
        if ssrc != self.ssrc or len(data) < 16 + length:
            self.misrouted += 1
            self._changed.set()
            return
        self.device_addr = addr
        if sequence < self.remote_sequence:
            return
        self.remote_sequence = sequence
        payload = aes_ctr(self.key, data[:16], data[16 : 16 + length])
        self.uplink.append(Uplink(sequence, timestamp, payload, self.session_id))
        self._changed.set()
