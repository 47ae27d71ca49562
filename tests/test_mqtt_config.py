"""How the MQTT backend reads its endpoint, topics and hello from the OTA reply or the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.backends.xiaozhi import ota
from companion.backends.xiaozhi.identity import Identity
from companion.backends.xiaozhi.mqtt import (
    PASSWORD_ENV,
    BrokerAddress,
    XiaozhiMqttBackend,
    broker_address,
    configured_endpoint,
    session_config,
    subscribe_topic,
)
from companion.config import XiaozhiSettings, describe_settings, load_settings, settings_from_mapping
from companion.errors import ConfigError
from companion.events import Backend, UplinkFormat
from companion.protocols.xiaozhi.session import ClientSession

IDENTITY = Identity("aa:bb:cc:dd:ee:ff", "36c98363-3656-43cb-a00f-8bced2391a90")


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("mqtt.xiaozhi.me", BrokerAddress("mqtt.xiaozhi.me", 8883, True)),  # no port: 8883 with TLS
        ("mqtt.xiaozhi.me:8883", BrokerAddress("mqtt.xiaozhi.me", 8883, True)),
        ("192.168.1.5:1883", BrokerAddress("192.168.1.5", 1883, False)),  # TLS only on 8883
        ("broker:8884", BrokerAddress("broker", 8884, False)),
        ("[::1]:1883", BrokerAddress("::1", 1883, False)),
        ("[fe80::1]", BrokerAddress("fe80::1", 8883, True)),
        (" host ", BrokerAddress("host", 8883, True)),
    ],
)
def test_endpoints_follow_the_firmware_rule(endpoint: str, address: BrokerAddress) -> None:
    assert broker_address(endpoint) == address


@pytest.mark.parametrize("endpoint", ["", ":1883", "host:0", "host:70000", "host:abc", "[::1", "[::1]x"])
def test_unusable_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="MQTT endpoint"):
        broker_address(endpoint)


def test_subscribe_topic_comes_from_ota_or_the_gateway_convention() -> None:
    block = ota.MqttEndpoint("h", "GID_test@@@11_22_33_44_55_66@@@uuid", subscribe_topic="devices/p2p/x")
    assert subscribe_topic(block, IDENTITY) == "devices/p2p/x"
    # the gateway's OTA sends the string "null"; the reply topic is then devices/p2p/<mac part of client id>
    block = ota.MqttEndpoint("h", "GID_test@@@11_22_33_44_55_66@@@uuid", subscribe_topic="null")
    assert subscribe_topic(block, IDENTITY) == "devices/p2p/11_22_33_44_55_66"
    assert subscribe_topic(ota.MqttEndpoint("h", "plain-id"), IDENTITY) == "devices/p2p/aa_bb_cc_dd_ee_ff"


def test_the_mqtt_hello_is_the_firmware_one_byte_for_byte() -> None:
    hello = ClientSession(session_config(XiaozhiSettings())).hello(0.0)
    assert hello == (
        '{"type":"hello","version":3,"transport":"udp","features":{"mcp":true,"glyph_push":false},'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
    )


def test_server_aec_is_announced_in_the_mqtt_hello() -> None:
    hello = ClientSession(session_config(XiaozhiSettings(server_aec=True))).hello(0.0)
    assert '"features":{"aec":true,"mcp":true,"glyph_push":false}' in hello


def test_configured_endpoint_skips_ota_and_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert configured_endpoint(XiaozhiSettings()) is None
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    endpoint = configured_endpoint(XiaozhiSettings(mqtt_endpoint="b:1883", mqtt_client_id="c"))
    assert endpoint is not None
    assert (endpoint.endpoint, endpoint.client_id, endpoint.password) == ("b:1883", "c", "from-env")
    assert endpoint.publish_topic == "device-server" and endpoint.keepalive is None
    assert "from-env" not in repr(endpoint)


def test_mqtt_settings_load_from_toml_and_the_password_is_masked(tmp_path: Path) -> None:
    path = tmp_path / "companion.toml"
    path.write_text(
        '[xiaozhi]\nmqtt_endpoint = "broker.lan:1883"\nmqtt_password = "s3cret"\nmqtt_keepalive_s = 60\n'
    )
    settings = load_settings(path)
    assert settings.xiaozhi.mqtt_endpoint == "broker.lan:1883" and settings.xiaozhi.mqtt_keepalive_s == 60
    assert describe_settings(settings)["xiaozhi"]["mqtt_password"] == "***"


def test_keepalive_outside_the_mqtt_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"xiaozhi.mqtt_keepalive_s: expected a value ≤ 65535"):
        settings_from_mapping({"xiaozhi": {"mqtt_keepalive_s": 70000}})


def test_the_mqtt_backend_has_the_backend_interface() -> None:
    backend: Backend = XiaozhiMqttBackend(XiaozhiSettings(), lambda event: None, identity=IDENTITY)
    assert backend.name == "xiaozhi" and backend.supports_text and not backend.connected
    assert backend.uplink == UplinkFormat("opus", 16000, 60)
