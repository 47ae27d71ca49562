"""The gateway's MQTT credentials (spec §8 vector 12), as the test gateway peer computes them."""

from __future__ import annotations

from companion.backends.xiaozhi import ota
from companion.backends.xiaozhi.identity import Identity
from companion.backends.xiaozhi.mqtt import broker_address, subscribe_topic
from tests.peers.mqtt_gateway import (
    gateway_client_id,
    gateway_mqtt_block,
    gateway_password,
    gateway_username,
)

CLIENT_ID = "GID_test@@@11_22_33_44_55_66@@@36c98363-3656-43cb-a00f-8bced2391a90"


def test_vector_12_gateway_password() -> None:
    assert gateway_password("Sig-Key-Abc9", CLIENT_ID, "eyJpcCI6InVua25vd24ifQ==") == (
        "gLNN1dShF8cKc3rpqaUCzNPtN1i7RPtVtJlHlpmq7h4="
    )


def test_vector_12_username_and_client_id() -> None:
    assert gateway_username({"ip": "unknown"}) == "eyJpcCI6InVua25vd24ifQ=="
    assert (
        gateway_client_id("GID_test", "11:22:33:44:55:66", "36c98363-3656-43cb-a00f-8bced2391a90")
        == CLIENT_ID
    )


def test_a_different_key_or_username_changes_the_password() -> None:
    base = gateway_password("Sig-Key-Abc9", CLIENT_ID, "eyJpcCI6InVua25vd24ifQ==")
    assert gateway_password("Sig-Key-Abc8", CLIENT_ID, "eyJpcCI6InVua25vd24ifQ==") != base
    assert gateway_password("Sig-Key-Abc9", CLIENT_ID, gateway_username({"ip": "1.2.3.4"})) != base


def test_the_gateway_ota_block_is_what_the_backend_connects_with() -> None:
    uuid = "36c98363-3656-43cb-a00f-8bced2391a90"
    block = gateway_mqtt_block(
        "mqtt.example", "GID_test", "11:22:33:44:55:66", uuid, {"ip": "unknown"}, "Sig-Key-Abc9"
    )
    assert block["password"] == "gLNN1dShF8cKc3rpqaUCzNPtN1i7RPtVtJlHlpmq7h4="
    reply = ota.parse_reply({"mqtt": block})
    assert reply.transport() == "mqtt" and reply.mqtt is not None
    assert broker_address(reply.mqtt.endpoint).port == 8883 and broker_address(reply.mqtt.endpoint).tls
    identity = Identity("11:22:33:44:55:66", "36c98363-3656-43cb-a00f-8bced2391a90")
    assert subscribe_topic(reply.mqtt, identity) == "devices/p2p/11_22_33_44_55_66"
