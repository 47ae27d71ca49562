"""OTA check, activation, device identity and TLS against the echo server's real HTTP/websocket endpoints."""

from __future__ import annotations

import json
import logging
import ssl
import stat
import uuid
from pathlib import Path

import pytest

from companion.backends.xiaozhi import ota
from companion.backends.xiaozhi.identity import MAC_RE, load_identity, normalize_mac, primary_mac
from companion.config import XiaozhiSettings
from companion.errors import ConfigError
from companion.events import Alert, Connected, Disconnected
from companion.fieldtest.echo_server import make_token
from tests.peers.tls_ca import make_ca_and_server_cert
from tests.peers.xiaozhi_echo import EchoPeer, verify_token
from tests.xiaozhi_harness import IDENTITY, BackendHarness, fast_settings

# ---------------------------------------------------------------- identity


def test_identity_is_created_once_and_persisted_with_mode_0600(tmp_path: Path) -> None:
    first = load_identity(XiaozhiSettings(), tmp_path)
    second = load_identity(XiaozhiSettings(), tmp_path)
    assert first == second
    assert uuid.UUID(first.client_id).version == 4
    assert len(first.device_id.split(":")) == 6 and first.device_id == first.device_id.lower()
    path = tmp_path / "xiaozhi-identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"client_id": first.client_id, "device_id": first.device_id}


def test_config_device_id_overrides_the_mac_in_lower_case_colon_form(tmp_path: Path) -> None:
    identity = load_identity(XiaozhiSettings(device_id="AA-BB-CC-DD-EE-0F"), tmp_path)
    assert identity.device_id == "aa:bb:cc:dd:ee:0f"
    assert normalize_mac("AABBCCDDEEFF") == "aa:bb:cc:dd:ee:ff"


def test_primary_mac_follows_the_default_route(tmp_path: Path) -> None:
    net = tmp_path / "net"
    for name, mac in (
        ("eth0", "02:00:00:00:00:01"),
        ("wlan0", "DC:A6:32:00:00:02"),
        ("lo", "00:00:00:00:00:00"),
    ):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
    routes = tmp_path / "route"
    routes.write_text(
        "Iface\tDestination\tGateway\tFlags\n"
        "eth0\t0000A8C0\t00000000\t0001\n"
        "wlan0\t00000000\t0100A8C0\t0003\n"
    )
    assert primary_mac(net, routes) == "dc:a6:32:00:00:02"
    assert primary_mac(net, tmp_path / "no-routes") == "02:00:00:00:00:01"


def test_a_machine_without_a_mac_gets_a_persisted_local_id_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = load_identity(XiaozhiSettings(), tmp_path)
    assert MAC_RE.match(first.device_id)
    assert int(first.device_id[:2], 16) & 0x02 and not int(first.device_id[:2], 16) & 0x01  # local, unicast
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert load_identity(XiaozhiSettings(), tmp_path) == first  # the same device next time


def test_a_configured_device_id_is_used_without_looking_for_a_mac(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from companion.backends.xiaozhi import identity as identity_module

    def no_lookup(*args: object) -> None:
        raise AssertionError("looked for a MAC although xiaozhi.device_id is set")

    monkeypatch.setattr(identity_module, "primary_mac", no_lookup)
    monkeypatch.setattr(identity_module, "_fallback_mac", no_lookup)
    identity = load_identity(XiaozhiSettings(device_id="AA-BB-CC-DD-EE-01"), tmp_path)
    assert identity.device_id == "aa:bb:cc:dd:ee:01"
    stored = json.loads((tmp_path / "xiaozhi-identity.json").read_text())
    assert stored == {"client_id": identity.client_id}  # the configured id is not frozen into the state


def test_a_corrupt_identity_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "xiaozhi-identity.json").write_text("{not json")
    identity = load_identity(XiaozhiSettings(), tmp_path)
    assert uuid.UUID(identity.client_id).version == 4


# ---------------------------------------------------------------- OTA check


async def test_ota_check_sends_the_firmware_headers_and_body() -> None:
    async with EchoPeer(ota=True) as server:
        reply = await ota.check(XiaozhiSettings(ota_url=server.ota_url), IDENTITY)
    request = server.ota_requests[0]
    headers, body = request["headers"], request["body"]
    assert headers["activation-version"] == "1"
    assert headers["device-id"] == IDENTITY.device_id and headers["client-id"] == IDENTITY.client_id
    assert headers["user-agent"].startswith("companion-pi/")
    assert headers["accept-language"] == "zh-CN"
    assert headers["content-type"] == "application/json"
    assert body["mac_address"] == IDENTITY.device_id and body["uuid"] == IDENTITY.client_id
    assert isinstance(body["minimum_free_heap_size"], str)
    assert (
        set(body["application"]) >= {"version", "elf_sha256"} and len(body["application"]["elf_sha256"]) == 64
    )
    assert set(body["board"]) >= {"type", "name", "ssid", "rssi"}
    assert reply.websocket is not None and reply.websocket.url == server.websocket_url
    assert reply.activation is None and reply.transport() == "websocket"
    assert abs(reply.clock_offset_s) < 2.0 and ota.server_clock_offset() == reply.clock_offset_s
    assert reply.firmware == ota.Firmware("0.0.0", "", False)


def test_transport_choice_mqtt_wins_unless_config_forces() -> None:
    both = ota.parse_reply({"websocket": {"url": "ws://x/"}, "mqtt": {"endpoint": "m:8883"}})
    assert both.transport() == "mqtt"
    assert both.transport("websocket") == "websocket"
    assert ota.parse_reply({"websocket": {"url": "ws://x/", "version": 3}}).transport() == "websocket"
    assert ota.parse_reply({}).transport() == "mqtt"  # the firmware's default


def test_reply_parsing_keeps_secrets_out_of_repr_and_reads_server_time() -> None:
    reply = ota.parse_reply(
        {
            "websocket": {"url": "wss://x/", "token": "tok-123", "version": 2},
            "mqtt": {"endpoint": "h", "password": "pw-456", "client_id": "c", "keepalive": 240},
            "server_time": {"timestamp": 1_700_000_000_000, "timezone_offset": 480},
            "activation": {"code": "123456", "message": "xiaozhi.me\n123456", "challenge": "aa:bb"},
            "firmware": {"version": "9.9.9", "url": "http://f", "force": 1},
        },
        received_at=1_700_000_010.0,
    )
    assert "tok-123" not in repr(reply) and "pw-456" not in repr(reply)
    assert reply.websocket == ota.WebsocketEndpoint("wss://x/", "tok-123", 2)
    assert reply.mqtt is not None and reply.mqtt.keepalive == 240
    assert reply.server_time == ota.ServerTime(1_700_000_000_000, 480)
    assert reply.clock_offset_s == pytest.approx(-10.0)
    assert reply.activation == ota.Activation("123456", "xiaozhi.me\n123456", "aa:bb")
    assert reply.firmware == ota.Firmware("9.9.9", "http://f", True)


async def test_ota_reply_that_is_not_json_raises_a_clear_error() -> None:
    async with EchoPeer(ota_not_json=True) as server:
        with pytest.raises(ota.OtaError, match="is not JSON: '<html><body>502 Bad Gateway"):
            await ota.check(XiaozhiSettings(ota_url=server.ota_url), IDENTITY)


async def test_unreachable_ota_server_raises_a_clear_error() -> None:
    async with EchoPeer(ota=True) as server:
        url = server.ota_url
    with pytest.raises(ota.OtaError, match="cannot reach the OTA server"):
        await ota.check(XiaozhiSettings(ota_url=url), IDENTITY)


# ---------------------------------------------------------------- activation


async def test_activation_polls_until_bound_then_the_reply_has_the_channel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codes: list[ota.Activation] = []
    async with EchoPeer(activation=True, bind_after_polls=3) as server:
        with caplog.at_level(logging.WARNING):
            reply = await ota.activate(
                XiaozhiSettings(ota_url=server.ota_url), IDENTITY, on_code=codes.append, poll_s=0.01
            )
    assert len(codes) == 1 and len(codes[0].code) == 6 and codes[0].code.isdigit()
    assert codes[0].challenge == IDENTITY.device_id
    assert server.activation_polls == 3
    assert reply.activation is None and reply.websocket is not None
    assert len(server.ota_requests) == 2  # checked, activated, checked again
    assert any(codes[0].code in r.getMessage() for r in caplog.records)


async def test_activation_cycles_ota_after_ten_unanswered_polls() -> None:
    codes: list[ota.Activation] = []
    async with EchoPeer(activation=True) as server:

        def bind_on_second_code(code: ota.Activation) -> None:
            codes.append(code)
            if len(codes) == 2:
                server.bind(code.code)

        await ota.activate(
            XiaozhiSettings(ota_url=server.ota_url), IDENTITY, on_code=bind_on_second_code, poll_s=0.001
        )
    assert server.activation_polls == 11  # ten 202s, OTA again (same code), one 200
    assert codes[0] == codes[1]


async def test_the_backend_activates_before_opening_the_channel() -> None:
    async with EchoPeer(activation=True, bind_after_polls=1) as server:
        h = BackendHarness(fast_settings(ota_url=server.ota_url))
        async with h:
            await h.wait_connected(10)
    (alert,) = h.of(Alert)
    assert alert.status == "activation" and server.codes[IDENTITY.device_id] in alert.message
    assert h.events.index(alert) < h.events.index(h.of(Connected)[0])


# ---------------------------------------------------------------- xiaozhi-esp32-server tokens (§8.12)


def test_xinnan_token_vector() -> None:
    token = make_token("test-secret", "36c98363-3656-43cb-a00f-8bced2391a90", "11:22:33:44:55:66", 1700000000)
    assert token == "5UqjBXdjBZXgv6Hu7igp11Sb9aZsbELxUH7CAh3M0AI.1700000000"
    ids = ("36c98363-3656-43cb-a00f-8bced2391a90", "11:22:33:44:55:66")
    assert verify_token("test-secret", f"Bearer {token}", *ids, now=1700000100, ttl_s=3600)
    assert not verify_token("test-secret", token, *ids, now=1700000000 + 7200, ttl_s=3600)
    assert not verify_token("other", token, *ids, now=1700000100, ttl_s=3600)


# ---------------------------------------------------------------- TLS with a throwaway CA


@pytest.fixture
def tls_server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, ca


async def test_wss_and_https_work_when_the_config_names_the_ca(
    tls_server_context: tuple[ssl.SSLContext, Path],
) -> None:
    context, ca = tls_server_context
    async with EchoPeer(ota=True, ssl_context=context) as server:
        assert server.ota_url.startswith("https://") and server.websocket_url.startswith("wss://")
        settings = fast_settings(ota_url=server.ota_url, tls_ca=str(ca))
        async with BackendHarness(settings) as h:
            await h.wait_connected()
            await h.manual_turn(b"\x10\x00" * 16000)


async def test_a_self_signed_server_is_refused_with_a_clear_message(
    tls_server_context: tuple[ssl.SSLContext, Path],
) -> None:
    context, _ca = tls_server_context
    async with EchoPeer(ota=True, ssl_context=context) as server:
        with pytest.raises(
            ota.OtaError, match=r"TLS certificate of https://127\.0\.0\.1.*set xiaozhi\.tls_ca"
        ):
            await ota.check(XiaozhiSettings(ota_url=server.ota_url), IDENTITY)
        async with BackendHarness(fast_settings(server.websocket_url)) as h:
            await h.wait_for(lambda: h.count(Disconnected) > 0, 5)
    reason = h.of(Disconnected)[0].reason
    assert "TLS certificate" in reason and "xiaozhi.tls_ca" in reason
    assert not h.backend.connected


@pytest.mark.parametrize(
    ("cert_options", "expected", "not_expected"),
    [
        ({"expired": True}, "check this device's clock", "did not sign it"),
        ({"names": ("speaker.example",)}, "the certificate is for another name", "did not sign it"),
    ],
    ids=["expired", "wrong-name"],
)
async def test_a_refused_certificate_is_explained_by_its_cause_not_blamed_on_the_ca(
    tmp_path: Path, cert_options: dict[str, object], expected: str, not_expected: str
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path, **cert_options)  # type: ignore[arg-type]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with EchoPeer(ota=True, ssl_context=context) as server:
        with pytest.raises(ota.OtaError) as refused:
            await ota.check(XiaozhiSettings(ota_url=server.ota_url, tls_ca=str(ca)), IDENTITY)
        async with BackendHarness(fast_settings(server.websocket_url, tls_ca=str(ca))) as h:
            await h.wait_for(lambda: h.count(Disconnected) > 0, 5)
    for reason in (str(refused.value), h.of(Disconnected)[0].reason):
        assert expected in reason and not_expected not in reason, reason


def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"xiaozhi\.tls_ca"):
        BackendHarness(fast_settings("wss://127.0.0.1:1/", tls_ca=str(tmp_path / "nope.pem")))


async def test_an_unreachable_ota_server_is_reported_once_then_reminded_not_logged_every_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import socket

    from companion.backends.xiaozhi.backend import XiaozhiBackend
    from companion.config import load_settings
    from companion.net.backoff import Backoff

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket is closed
    settings = load_settings(None, [f'xiaozhi.ota_url="http://127.0.0.1:{port}/xiaozhi/ota/"'])
    events: list[object] = []
    backend = XiaozhiBackend(settings, events.append)
    backend.backoff = Backoff(initial=0.01, cap=0.02)
    with caplog.at_level(logging.DEBUG):
        task = asyncio.create_task(backend.run())
        while sum("OTA check failed" in r.getMessage() for r in caplog.records) < 12:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failures = [r for r in caplog.records if "OTA check failed" in r.getMessage()]
    warnings = [r for r in failures if r.levelno >= logging.WARNING]
    assert len(failures) >= 12 and len(warnings) == 2  # the first, and the reminder at the 10th attempt
    assert "(attempt 10)" in warnings[1].getMessage()
    assert sum(isinstance(e, Disconnected) for e in events) == 1  # the device says "offline" once
