"""MQTT over TLS: used exactly on port 8883 (the default when the endpoint has no port), verified.

A real Mosquitto serves TLS on 127.0.0.1:8883 with a certificate from a CA made in the test. The backend
trusts it only when `xiaozhi.tls_ca` names that CA; otherwise it refuses with a message saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.events import Connected, Disconnected
from tests.peers.mqtt_broker import Mosquitto, TlsFiles, port_is_free
from tests.peers.mqtt_events import EventLog
from tests.peers.mqtt_gateway import GatewayPeer
from tests.peers.tls_ca import make_ca_and_server_cert
from tests.test_mqtt_backend import DEVICE_TOPIC, make_backend, running, settings_for

pytestmark = [
    pytest.mark.skipif(not Mosquitto.available(), reason="the mosquitto package is not installed"),
    pytest.mark.skipif(not port_is_free(8883), reason="port 8883 is in use on this machine"),
]


def make_ca_and_server(directory: Path) -> tuple[Path, TlsFiles]:
    """A throwaway CA (PEM) and a server certificate for 127.0.0.1 signed by it."""
    ca_file, certfile, keyfile = make_ca_and_server_cert(directory)
    return ca_file, TlsFiles(certfile, keyfile, 8883)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    ca_file, tls = make_ca_and_server(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "mosquitto", tls=tls)
    try:
        broker.start()
    except RuntimeError as exc:
        if "in use" in str(exc) or not port_is_free(8883):
            pytest.skip("port 8883 was taken by another process")
        raise
    yield broker, ca_file
    broker.cleanup()


async def test_an_endpoint_without_port_means_tls_on_8883_trusting_the_configured_ca(
    tls_broker: tuple[Mosquitto, Path],
) -> None:
    broker, ca_file = tls_broker
    events = EventLog()
    async with GatewayPeer(broker.port, DEVICE_TOPIC) as gw:  # the gateway uses the plain listener
        settings = settings_for(broker.port, mqtt_endpoint="127.0.0.1", tls_ca=str(ca_file))
        async with running(make_backend(settings, events)):
            await events.next(Connected)
            assert gw.sessions == 1
    # the device came in on the TLS listener (the gateway peer uses the plain one)
    assert await asyncio.to_thread(broker.wait_for_log, "on port 8883")


async def test_a_certificate_from_an_unknown_ca_is_refused_with_a_clear_message(
    tls_broker: tuple[Mosquitto, Path],
) -> None:
    broker, _ = tls_broker
    events = EventLog()
    settings = settings_for(broker.port, mqtt_endpoint="127.0.0.1:8883")
    async with running(make_backend(settings, events)):
        refused = await events.next(Disconnected)
    assert "certificate" in refused.reason and "xiaozhi.tls_ca" in refused.reason
    assert events.of(Connected) == []


async def test_plain_ports_do_not_use_tls(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, _ = tls_broker
    events = EventLog()
    backend = make_backend(settings_for(broker.port), events)  # 127.0.0.1:<plain port>
    async with GatewayPeer(broker.port, DEVICE_TOPIC), running(backend):
        await events.next(Connected)
