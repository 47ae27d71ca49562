"""Garbage on the MQTT control channel and on UDP never breaks the backend (hypothesis, real broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.events import Connected, SpeechAudio
from tests.peers.mqtt_broker import Mosquitto
from tests.peers.mqtt_events import EventLog
from tests.peers.mqtt_gateway import GatewayPeer
from tests.test_mqtt_backend import DEVICE_TOPIC, make_backend, open_turn, running, settings_for

pytestmark = pytest.mark.skipif(not Mosquitto.available(), reason="the mosquitto package is not installed")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
server_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["tts", "stt", "llm", "mcp", "hello", "goodbye", "alert", "system", "notify", "x"]
        )
    },
    optional={
        "state": st.sampled_from(["start", "stop", "sentence_start", "?"]) | json_values,
        "session_id": st.text(max_size=6) | json_values,
        "payload": json_values,
        "transport": st.sampled_from(["udp", "websocket"]) | json_values,
        "udp": json_values,
        "text": json_values,
        "emotion": json_values,
        "command": json_values,
    },
)
mqtt_garbage = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60),
    json_values.map(json.dumps),
    server_like.map(json.dumps),
)


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(Path(tmp_path_factory.mktemp("mosquitto")))
    server.start()
    yield server
    server.cleanup()


async def handled(gw: GatewayPeer, events: EventLog, tag: str) -> None:
    """Returns once the backend has handled everything published before (MQTT keeps their order)."""
    await gw.publish({"type": "alert", "status": tag, "message": "", "emotion": ""})
    await events.until(lambda: any(getattr(e, "status", "") == tag for e in events.events))


async def scenario(port: int, texts: list[Any], datagrams: list[bytes]) -> None:
    events = EventLog()
    async with GatewayPeer(port, DEVICE_TOPIC) as gw:
        backend = make_backend(settings_for(port), events)
        async with running(backend) as task:
            await events.next(Connected)
            await gw.uplink_count(1)
            for text in texts:
                await gw.publish(text)
            for data in datagrams:
                gw.send_datagram(data)
            # whatever that did (a goodbye closes the channel, a tts start leaves it speaking …),
            # once it has been handled the next turn works
            await gw.publish({"type": "tts", "state": "stop", "session_id": gw.session_id})
            await handled(gw, events, "sync-1")
            await open_turn(backend, gw, [b"after garbage"])
            await gw.publish({"type": "tts", "state": "start", "session_id": gw.session_id})
            await handled(gw, events, "sync-2")
            gw.send_audio(b"still alive")
            await events.until(lambda: any(a.payload == b"still alive" for a in events.of(SpeechAudio)))
            assert not task.done() and backend.connected


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mqtt_garbage, max_size=12), st.lists(st.binary(max_size=80), max_size=12))
def test_garbage_never_breaks_the_session(
    module_broker: Mosquitto, texts: list[Any], datagrams: list[bytes]
) -> None:
    asyncio.run(asyncio.wait_for(scenario(module_broker.port, texts, datagrams), 30))
