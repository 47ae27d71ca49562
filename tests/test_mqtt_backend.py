"""The MQTT+UDP backend against a real Mosquitto and a gateway peer that speaks §4.4–4.5 byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from companion.backends.xiaozhi import mqtt as xiaozhi_mqtt
from companion.backends.xiaozhi import ota
from companion.backends.xiaozhi.identity import Identity
from companion.backends.xiaozhi.mqtt import XiaozhiMqttBackend
from companion.config import XiaozhiSettings
from companion.events import (
    Alert,
    Connected,
    Disconnected,
    Emotion,
    ListenMode,
    ReplyText,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    ToolRequest,
    Transcript,
    TurnEnded,
)
from companion.net.backoff import Backoff
from companion.tools import MemoryControls, ToolServer
from tests.peers.mqtt_broker import Mosquitto
from tests.peers.mqtt_events import EventLog
from tests.peers.mqtt_gateway import (
    GatewayPeer,
    Uplink,
    gateway_client_id,
    gateway_mqtt_block,
    gateway_password,
    gateway_username,
    udp_header,
)
from tests.peers.mqtt_ota import OtaPeer

pytestmark = pytest.mark.skipif(not Mosquitto.available(), reason="the mosquitto package is not installed")

IDENTITY = Identity("11:22:33:44:55:66", "36c98363-3656-43cb-a00f-8bced2391a90")
CLIENT_ID = gateway_client_id("GID_test", IDENTITY.device_id, IDENTITY.client_id)
USERNAME = gateway_username({"ip": "unknown"})
SIGNATURE_KEY = "Sig-Key-Abc9"
PASSWORD = gateway_password(SIGNATURE_KEY, CLIENT_ID, USERNAME)
DEVICE_TOPIC = "devices/p2p/11_22_33_44_55_66"
MQTT_HELLO = (
    '{"type":"hello","version":3,"transport":"udp","features":{"mcp":true,"glyph_push":false},'
    '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
)


JUNK_TEXT: tuple[str | bytes, ...] = (
    b"\xff\xfe\x00",
    "not json",
    "[1,2]",
    '{"no":"type"}',
    '{"type":"unknown_x"}',
    '{"type":"tts","state":"start"',
    '{"type":"mcp","payload":7}',
    "认证失败",
)


def gateway_block(endpoint: str) -> dict[str, Any]:
    """The OTA mqtt block the gateway would hand this test device."""
    return gateway_mqtt_block(
        endpoint, "GID_test", IDENTITY.device_id, IDENTITY.client_id, {"ip": "unknown"}, SIGNATURE_KEY
    )


def mcp_request(ident: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"type": "mcp", "payload": {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.cleanup()


def settings_for(port: int, **changes: Any) -> XiaozhiSettings:
    values: dict[str, Any] = {
        "mqtt_endpoint": f"127.0.0.1:{port}",
        "mqtt_client_id": CLIENT_ID,
        "mqtt_username": USERNAME,
        "mqtt_password": PASSWORD,
        "settle_ms": 0,
        "hello_timeout_s": 3.0,
    }
    values.update(changes)
    return XiaozhiSettings(**values)


def make_backend(settings: XiaozhiSettings, events: EventLog, **kwargs: Any) -> XiaozhiMqttBackend:
    return XiaozhiMqttBackend(
        settings, events, identity=IDENTITY, backoff=Backoff(initial=0.05, cap=0.2, jitter=0.0), **kwargs
    )


@contextlib.asynccontextmanager
async def running(backend: XiaozhiMqttBackend) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(backend.run())
    try:
        yield task
    finally:
        await backend.close()
        await asyncio.wait_for(task, 5)


async def server_goodbye(gw: GatewayPeer, events: EventLog, session_id: str = "s1") -> None:
    """The gateway says goodbye; returns once the backend has handled it (an alert sent after it arrived)."""
    alerts = len(events.of(Alert))
    await gw.publish({"type": "goodbye", "session_id": session_id})
    await gw.publish({"type": "alert", "status": "sync", "message": "", "emotion": ""})
    await events.next(Alert, count=alerts + 1)


async def open_turn(backend: XiaozhiMqttBackend, gw: GatewayPeer, frames: list[bytes]) -> None:
    """listen start, then uplink frames until the gateway has them all (UDP may overtake MQTT)."""
    listens = len(gw.messages("listen"))
    await backend.start_listening(ListenMode.AUTO)
    before = len(gw.session_uplink())
    for frame in frames:
        await backend.send_audio(frame)
    await gw.uplink_count(before + len(frames))
    await gw.message("listen", count=listens + 1)


# ---------------------------------------------------------------- a full turn


async def test_full_turn_over_a_real_broker_and_encrypted_udp(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            connected = await events.next(Connected)
            assert connected.session_id == "s1"
            assert gw.published[0].text == MQTT_HELLO  # §4.4 byte for byte
            # the address primer: the gateway learns where we are before it has audio for us
            await gw.uplink_count(1)
            assert gw.session_uplink()[0] == Uplink(1, 0, b"\x58", "s1")

            frames = [bytes([i]) * (20 + i) for i in range(5)]
            await open_turn(backend, gw, frames)
            assert gw.messages("listen")[0] == {
                "session_id": "s1", "type": "listen", "state": "start", "mode": "auto"
            }  # fmt: skip
            uplink = gw.session_uplink()[1:]
            assert [u.payload for u in uplink] == frames
            assert [u.sequence for u in uplink] == [2, 3, 4, 5, 6]
            assert [u.timestamp for u in uplink] == [0, 60, 120, 180, 240]

            await gw.publish({"type": "stt", "text": "今天天气怎么样", "session_id": "s1"})
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await gw.publish({"type": "llm", "text": "😆", "emotion": "laughing", "session_id": "s1"})
            await gw.publish(
                {"type": "tts", "state": "sentence_start", "text": "今天晴。", "session_id": "s1"}
            )
            await events.next(ReplyText)  # MQTT and UDP are separate paths: audio goes once speaking
            replies = [os.urandom(n) for n in (65, 120, 247, 3)]
            for i, reply in enumerate(replies):
                gw.send_audio(reply, timestamp=60 * i)
            await events.until(lambda: len(events.of(SpeechAudio)) == len(replies))
            await backend.send_audio(b"mic while speaking")  # gated: the firmware closes the mic
            await gw.publish({"type": "tts", "state": "stop", "session_id": "s1"})
            await events.next(SpeechEnded)

            kinds = [type(e).__name__ for e in events.events]
            assert kinds == ["Connected", "Transcript", "SpeechStarted", "Emotion", "ReplyText"] + [
                "SpeechAudio"
            ] * len(replies) + ["SpeechEnded"]
            assert events.of(Transcript)[0].text == "今天天气怎么样"
            assert events.of(Emotion)[0].name == "laughing"
            assert events.of(ReplyText)[0].text == "今天晴。"
            audio = events.of(SpeechAudio)
            assert [a.payload for a in audio] == replies
            assert {(a.codec, a.sample_rate) for a in audio} == {("opus", 24000)}
            assert events.of(SpeechEnded)[0].aborted is False
        # closing the backend closes the audio channel: goodbye goes out with our session id
        goodbye = await gw.message("goodbye")
        assert gw.published[-1].text == '{"session_id":"s1","type":"goodbye"}' and goodbye
        assert all(u.payload != b"mic while speaking" for u in gw.uplink)
        assert {p.qos for p in gw.published} == {0}  # QoS 0 only ([GW] closes on anything else)
        assert gw.misrouted == 0


async def test_keepalive_is_240_unless_the_ota_reply_sets_one(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC):
        async with running(make_backend(settings_for(broker.port), events)):
            await events.next(Connected)
        line = await asyncio.to_thread(broker.wait_for_log, f"as {CLIENT_ID}")
        assert "k240" in line
        block = {**gateway_block(f"127.0.0.1:{broker.port}"), "keepalive": 45}
        reply = ota.parse_reply({"mqtt": block})
        events = EventLog()
        backend = make_backend(settings_for(broker.port, mqtt_endpoint=""), events, ota_reply=reply)
        async with running(backend):
            await events.next(Connected)
        assert "k45" in await asyncio.to_thread(broker.wait_for_log, "k45")


# ---------------------------------------------------------------- goodbye both ways


async def test_server_goodbye_stops_audio_goes_idle_is_not_answered_and_the_next_turn_reopens(
    broker: Mosquitto,
) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await open_turn(backend, gw, [b"a", b"b"])
            await gw.publish({"type": "stt", "text": "hi", "session_id": "s1"})
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await events.next(SpeechStarted)
            gw.send_audio(b"first")
            await events.next(SpeechAudio)

            await gw.publish({"type": "goodbye", "session_id": "s1"})
            # stop audio, go idle: Disconnected flushes playback, Connected says the next turn may start
            disconnected = await events.next(Disconnected)
            assert "ended the session" in disconnected.reason
            assert (await events.next(Connected, count=2)).session_id == ""
            assert not backend.channel_open and backend.connected

            # the next turn opens a new session: new hello, sequences from 1 again
            await open_turn(backend, gw, [b"again"])
            assert gw.sessions == 2 and len(gw.messages("hello")) == 2
            assert [(u.sequence, u.payload) for u in gw.session_uplink()] == [(1, b"\x58"), (2, b"again")]
            assert gw.messages("listen")[-1]["session_id"] == "s2"
            # nothing answered the server's goodbye (MQTT keeps order: it would precede hello #2)
            assert gw.messages("goodbye") == []


async def test_a_goodbye_for_another_session_is_ignored(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await gw.publish({"type": "goodbye", "session_id": "someone-else"})
            await gw.publish({"type": "alert", "status": "Warning", "message": "m", "emotion": "sad"})
            await events.next(Alert)  # published after the goodbye, so the goodbye was handled
            assert backend.channel_open
            assert events.of(Disconnected) == []


async def test_goodbye_while_idle_just_closes_the_channel(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await gw.publish({"type": "goodbye", "session_id": "s1"})
            await gw.publish({"type": "alert", "status": "Info", "message": "m", "emotion": ""})
            await events.next(Alert)
            assert not backend.channel_open
            assert [type(e) for e in events.events] == [Connected, Alert]


async def test_an_idle_audio_channel_is_closed_with_goodbye_and_reopened_on_demand(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        # idle_timeout_s is ≥ 10 in config files; the dataclass takes a short one for the test
        backend = make_backend(settings_for(broker.port, idle_timeout_s=0.5), events)
        async with running(backend):
            await events.next(Connected)
            goodbye = await gw.message("goodbye", timeout=5)
            assert goodbye == {"session_id": "s1", "type": "goodbye"}
            assert not backend.channel_open and backend.connected
            await open_turn(backend, gw, [b"x"])
            assert gw.sessions == 2
            assert [type(e) for e in events.events] == [Connected]  # nothing for the conversation to do
            # a reopened channel is watched too
            assert await gw.message("goodbye", count=2) == {"session_id": "s2", "type": "goodbye"}


async def test_silence_while_speaking_ends_the_turn_and_closes_the_channel_with_goodbye(
    broker: Mosquitto,
) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port, idle_timeout_s=0.5), events)
        async with running(backend):
            await events.next(Connected)
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await events.next(SpeechStarted)
            # then the server goes quiet: after idle_timeout_s the channel is dead
            disconnected = await events.next(Disconnected, timeout=5)
            assert "nothing received" in disconnected.reason
            await events.next(Connected, count=2)
            assert await gw.message("goodbye") == {"session_id": "s1", "type": "goodbye"}


async def test_audio_that_overtakes_tts_start_is_played_not_lost(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await gw.uplink_count(1)
            # UDP goes straight to the device while `tts start` goes through the broker, so the
            # first packets usually arrive first; whichever order they take, none may be lost
            first = [b"\x01" * 40, b"\x02" * 41]
            for payload in first:
                gw.send_audio(payload)
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            gw.send_audio(b"\x03" * 42)
            await events.until(lambda: len(events.of(SpeechAudio)) == 3)
            assert [type(e) for e in events.events] == [Connected, SpeechStarted] + [SpeechAudio] * 3
            assert [a.payload for a in events.of(SpeechAudio)] == [*first, b"\x03" * 42]


async def test_audio_older_than_the_early_window_is_dropped(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xiaozhi_mqtt, "EARLY_AUDIO_S", 0.0)  # any packet before tts start is stale
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await gw.uplink_count(1)
            gw.send_audio(b"stale")
            await gw.publish({"type": "alert", "status": "s", "message": "m", "emotion": ""})
            await events.next(Alert)  # a broker round trip later: the datagram has long arrived
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await events.next(SpeechStarted)
            gw.send_audio(b"fresh")
            await events.next(SpeechAudio)
            assert [a.payload for a in events.of(SpeechAudio)] == [b"fresh"]


async def test_text_turn_reopens_a_closed_channel(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await server_goodbye(gw, events)
            assert not backend.channel_open
            await backend.send_text("你好小智")
            detect = await gw.message("listen")
            assert detect == {"session_id": "s2", "type": "listen", "state": "detect", "text": "你好小智"}
            await gw.uplink_count(1)  # primed: server audio can reach us without mic uplink


# ---------------------------------------------------------------- MCP over MQTT


async def test_mcp_works_without_an_audio_channel_and_initialize_makes_the_channel_ready(
    broker: Mosquitto,
) -> None:
    tools = ToolServer.for_device(MemoryControls(), name="companion-pi", version="9.9.9")
    backend: XiaozhiMqttBackend | None = None
    tasks: set[asyncio.Task[None]] = set()

    def answer(event: Any) -> None:
        if isinstance(event, ToolRequest) and backend is not None:
            task = asyncio.create_task(tools.serve(event.payload, backend.send_tool_result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    events = EventLog(also=answer)
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        # settle_ms is long: only the answered initialize can make the channel ready this fast
        backend = make_backend(settings_for(broker.port, settle_ms=8000), events)
        async with running(backend):
            await gw.until(lambda: gw.sessions == 1)
            await gw.publish(mcp_request(1, "initialize", {"capabilities": {}}))
            await events.next(Connected, timeout=3)
            reply = await gw.message("mcp")
            assert reply["session_id"] == "s1" and reply["payload"]["result"]["serverInfo"] == {
                "name": "companion-pi", "version": "9.9.9"
            }  # fmt: skip

            # the gateway asks at MQTT-connect time, outside any session: still answered
            await server_goodbye(gw, events)
            assert not backend.channel_open
            await gw.publish(mcp_request(10001, "tools/list", {"withUserTools": False}))
            await gw.publish(
                {"type": "mcp", "payload": {"jsonrpc": "2.0", "method": "notifications/initialized"}}
            )
            volume = {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 150}}
            await gw.publish(mcp_request(10002, "tools/call", volume))
            listing = (await gw.message("mcp", count=2))["payload"]
            assert listing["id"] == 10001
            assert "self.reboot" not in [t["name"] for t in listing["result"]["tools"]]
            refused = (await gw.message("mcp", count=3))["payload"]
            assert refused == {
                "jsonrpc": "2.0",
                "id": 10002,
                "error": {"message": "Value exceeds maximum allowed: 100"},
            }
            assert len(gw.messages("mcp")) == 3  # the notification got no reply


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "the server refused the hello: '处理 hello 消息失败'"),
        ("bad_udp", "udp.nonce must be 16 bytes"),
        ("silent", "no server hello within 1 s"),
    ],
)
async def test_a_hello_that_fails_is_reported_and_retried(broker: Mosquitto, mode: str, reason: str) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC, hello_mode=mode) as gw:
        backend = make_backend(settings_for(broker.port, hello_timeout_s=1.0), events)
        async with running(backend):
            disconnected = await events.next(Disconnected, timeout=4)
            assert reason in disconnected.reason
            await gw.until(lambda: len(gw.messages("hello")) >= 2, timeout=4)  # retried with backoff
            assert not backend.connected


async def test_garbage_on_both_channels_is_skipped_and_the_session_goes_on(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port), events)
        async with running(backend):
            await events.next(Connected)
            await gw.uplink_count(1)
            for junk in JUNK_TEXT:
                await gw.publish(junk)
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await events.next(SpeechStarted)
            header = udp_header(3, gw.ssrc, 0, 1)
            for data in (b"", b"\x01" * 15, b"\x02" + header[1:] + b"abc", header + b"ab", header + b"abcd",
                         udp_header(3, gw.ssrc, 0, 0) + b"abc", os.urandom(40)):  # fmt: skip
                gw.send_datagram(data)
            gw.local_sequence = 1  # the next real packet is sequence 2
            gw.send_audio(b"real")
            audio = await events.next(SpeechAudio)
            assert audio.payload == b"real"
            assert [type(e) for e in events.events] == [Connected, SpeechStarted, SpeechAudio]
            assert backend.connected and backend.channel_open


async def test_broker_restart_mid_turn_reconnects_and_the_next_turn_works(
    broker: Mosquitto, tmp_path: Path
) -> None:
    events = EventLog()
    backend = make_backend(settings_for(broker.port, hello_timeout_s=1.0), events)
    async with running(backend):
        async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
            await events.next(Connected)
            await open_turn(backend, gw, [b"a"])
            await gw.publish({"type": "tts", "state": "start", "session_id": "s1"})
            await events.next(SpeechStarted)
            broker.stop()
            disconnected = await events.next(Disconnected)
            assert disconnected.retry
        again = Mosquitto(tmp_path / "mosquitto-2", port=broker.port)
        again.start()
        try:
            async with GatewayPeer(again.port, DEVICE_TOPIC) as gw2:
                await events.next(Connected, count=2, timeout=10)
                await open_turn(backend, gw2, [b"after restart"])
                assert gw2.session_uplink()[-1].payload == b"after restart"
        finally:
            again.cleanup()


async def test_refused_credentials_rerun_ota_for_fresh_ones(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "auth", users={USERNAME: PASSWORD, "gateway": "gw-secret"})
    broker.start()
    try:
        good = gateway_block(f"127.0.0.1:{broker.port}")
        stale = {**good, "password": gateway_password("old-key", good["client_id"], good["username"])}
        async with (
            OtaPeer([{"mqtt": stale}, {"mqtt": good}]) as ota_peer,
            GatewayPeer(broker.port, DEVICE_TOPIC, username="gateway", password="gw-secret") as gw,
        ):
            events = EventLog()
            settings = settings_for(broker.port, mqtt_endpoint="", ota_url=ota_peer.url)
            async with running(make_backend(settings, events)):
                await events.next(Connected)
                refused = events.of(Disconnected)
                assert len(refused) == 1 and refused[0].auth_failed
                assert "refused our credentials" in refused[0].reason
                assert len(ota_peer.requests) == 2
                assert ota_peer.requests[0].headers["device-id"] == IDENTITY.device_id
                assert gw.sessions == 1
        assert PASSWORD not in "\n".join(broker.log)
    finally:
        broker.cleanup()


async def test_a_failed_reopen_ends_the_turn_with_an_alert(broker: Mosquitto) -> None:
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(broker.port, hello_timeout_s=1.0), events)
        async with running(backend):
            await events.next(Connected)
            await server_goodbye(gw, events)
            assert not backend.channel_open
            gw.hello_mode = "silent"
            await backend.start_listening(ListenMode.AUTO)
            await backend.send_audio(b"buffered, then dropped")
            alert = await events.next(Alert, count=2)  # the first one synchronised the goodbye
            assert "no server hello within 1 s" in alert.message
            assert (await events.next(TurnEnded)).reason == "audio channel failed"
            assert backend.connected  # the MQTT link is fine; the next turn tries again
            gw.hello_mode = "ok"
            await open_turn(backend, gw, [b"ok now"])
            assert all(u.payload != b"buffered, then dropped" for u in gw.uplink)
