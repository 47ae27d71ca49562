"""The websocket backend against the echo server's real-server variants, and under faults."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.audio.opus import OpusDecoder
from companion.backends.xiaozhi.websocket import handshake_headers
from companion.events import (
    EMOTIONS,
    Connected,
    Disconnected,
    Emotion,
    ListenMode,
    ReplyText,
    RestartRequested,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    ToolRequest,
    Transcript,
)
from tests.peers.tcp_blackhole import BlackholeProxy
from tests.peers.xiaozhi_echo import EchoPeer, Variant
from tests.peers.xiaozhi_scripted import ScriptedServer
from tests.xiaozhi_harness import IDENTITY, BackendHarness, fast_settings, opus_frames, speech_pcm

SHORT = speech_pcm(1.0)


# ---------------------------------------------------------------- §8.1 headers


def test_handshake_headers_vector() -> None:
    expected = {
        "Authorization": "Bearer abc",
        "Protocol-Version": "1",
        "Device-Id": "aa:bb:cc:dd:ee:ff",
        "Client-Id": IDENTITY.client_id,
    }
    assert handshake_headers("abc", 1, IDENTITY) == expected
    assert handshake_headers("Bearer abc", 1, IDENTITY) == expected
    assert "Authorization" not in handshake_headers("", 1, IDENTITY)


async def test_headers_and_hello_arrive_on_the_wire_as_the_firmware_sends_them() -> None:
    async with EchoPeer() as server, BackendHarness(fast_settings(server.websocket_url, token="abc")) as h:
        await h.wait_connected()
        (record,) = server.records
    headers = {k.lower(): v for k, v in record.headers.items()}
    assert headers["authorization"] == "Bearer abc"
    assert headers["protocol-version"] == "1"
    assert headers["device-id"] == "aa:bb:cc:dd:ee:ff"
    assert headers["client-id"] == IDENTITY.client_id
    assert record.received[0][1] == (
        '{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false},"transport":"websocket",'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
    )


async def test_the_token_is_never_logged_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-token-value"
    with caplog.at_level(logging.DEBUG):
        async with (
            EchoPeer() as server,
            BackendHarness(fast_settings(server.websocket_url, token=secret)) as h,
        ):
            await h.wait_connected()
            await h.manual_turn(SHORT)
    assert caplog.records
    assert not [r for r in caplog.records if secret in r.getMessage()]


# ---------------------------------------------------------------- conformance per server variant


async def test_auto_turn_follows_the_spec_order_and_gates_the_uplink() -> None:
    async with EchoPeer() as server, BackendHarness(fast_settings(server.websocket_url)) as h:
        await h.wait_connected()
        assert h.of(Connected)[0].session_id == server.records[0].session_id
        await h.backend.start_listening(ListenMode.AUTO)
        for packet in opus_frames(SHORT, silence_s=1.0):
            await h.backend.send_audio(packet)
        await h.wait_for(lambda: h.count(SpeechStarted) > 0)
        for packet in opus_frames(SHORT):  # the mic is open by mistake: the backend must not send
            await h.backend.send_audio(packet)
        await h.wait_for(lambda: h.count(SpeechEnded) > 0)
        kinds = [type(e) for e in h.events if not isinstance(e, Connected | ToolRequest)]
        (record,) = server.records
    assert (
        kinds.index(Transcript)
        < kinds.index(SpeechStarted)
        < kinds.index(SpeechAudio)
        < kinds.index(SpeechEnded)
    )
    assert kinds.index(ReplyText) < kinds.index(SpeechAudio)
    assert h.of(Emotion)[0].name in EMOTIONS
    assert record.uplink_while_speaking == 0
    assert h.backend.stats["uplink_dropped"] >= len(opus_frames(SHORT))
    assert (
        1.0 / 0.06 - 3 <= h.count(SpeechAudio) <= 1.4 / 0.06
    )  # the utterance (+ pre-roll), not the hangover


async def test_manual_turn_with_xinnan_hello_decodes_at_our_rate() -> None:
    async with (
        EchoPeer(variant="xinnan") as server,
        BackendHarness(fast_settings(server.websocket_url)) as h,
    ):
        await h.wait_connected()
        mark = await h.manual_turn(SHORT)
        await h.wait_for(lambda: any(e.payload.get("method") == "tools/list" for e in h.of(ToolRequest)), 3)
    assert h.backend.session is not None
    assert h.of(SpeechAudio, mark)[0].sample_rate == 16000  # the echoed uplink params: only a hint
    decoder = OpusDecoder(24000)
    pcm = decoder.decode(h.of(SpeechAudio, mark)[0].payload)
    assert len(pcm) == 24000 * 60 // 1000 * 2


async def test_duplicate_tts_stop_after_abort_ends_speech_once() -> None:
    async with (
        EchoPeer(variant="duplicate-stop") as server,
        BackendHarness(fast_settings(server.websocket_url)) as h,
    ):
        await h.wait_connected()
        await h.backend.start_listening(ListenMode.MANUAL)
        for packet in opus_frames(speech_pcm(2.5)):
            await h.backend.send_audio(packet)
        await h.backend.stop_listening()
        await h.wait_for(lambda: h.count(SpeechAudio) > 6)
        await h.backend.abort()
        await h.wait_for(lambda: h.count(SpeechEnded) == 1, 2)
        stops = lambda: sum('"stop"' in text for _, text in server.records[0].sent)  # noqa: E731
        await server.wait_until(lambda: stops() == 2, 2)
        audio_after = h.count(SpeechAudio)
        await asyncio.sleep(0.1)  # a late packet would show up now
    assert h.of(SpeechEnded) == [SpeechEnded(aborted=True)]
    assert h.count(SpeechAudio) == audio_after


async def test_non_json_text_frames_are_logged_once_and_the_turn_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        async with (
            EchoPeer(variant="non-json") as server,
            BackendHarness(fast_settings(server.websocket_url)) as h,
        ):
            await h.wait_connected()
            await h.manual_turn(SHORT)
    assert h.count(Transcript) == 1 and h.count(SpeechEnded) == 1
    assert len([r for r in caplog.records if "non-JSON" in r.getMessage()]) == 1


async def test_qiniu_variant_without_session_id_notify_and_is_aborted() -> None:
    async with (
        EchoPeer(variant="qiniu") as server,
        BackendHarness(fast_settings(server.websocket_url)) as h,
    ):
        await h.wait_connected()
        assert h.of(Connected)[0].session_id == ""
        await h.manual_turn(SHORT)
        assert h.of(Emotion)[0].action == "nod"
        assert json.loads(server.records[0].received[1][1])["session_id"] == ""
        await h.wait_for(lambda: h.count(RestartRequested) == 1, 3)
        # reconnect only once the turn is over and the line is quiet
        await h.wait_for(lambda: h.count(Connected) == 2, 6)
        assert h.of(Disconnected)[0].reason.startswith("reconnecting")
        assert len(server.records) == 2
        await h.backend.start_listening(ListenMode.MANUAL)
        for packet in opus_frames(speech_pcm(2.0)):
            await h.backend.send_audio(packet)
        await h.backend.stop_listening()
        await h.wait_for(lambda: h.count(SpeechAudio) > 10 + 17)
        await h.backend.abort()
        await h.wait_for(lambda: h.count(SpeechEnded) == 2)
    assert h.of(SpeechEnded)[-1] == SpeechEnded(aborted=True)


async def test_hello_with_wrong_transport_times_out_logs_once_and_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        async with (
            EchoPeer(variant="wrong-transport") as server,
            BackendHarness(fast_settings(server.websocket_url, hello_timeout_s=1.0)) as h,
        ):
            await h.wait_for(lambda: h.count(Disconnected) >= 1, 5)
            await server.wait_until(lambda: len(server.records) >= 2, 5)
    assert not h.backend.connected
    assert h.of(Disconnected)[0].reason == "no server hello within 1 s"
    assert len([r for r in caplog.records if "transport 'udp' ignored" in r.getMessage()]) >= 1
    assert len([r for r in caplog.records if "no server hello" in r.getMessage()]) == 1


@pytest.mark.parametrize("version", [2, 3])
async def test_binary_protocol_v2_and_v3_turns_complete(version: int) -> None:
    async with (
        EchoPeer() as server,
        BackendHarness(fast_settings(server.websocket_url, protocol_version=version)) as h,
    ):
        await h.wait_connected()
        await h.manual_turn(SHORT)
        (record,) = server.records
    assert record.headers["Protocol-Version"] == str(version)
    assert record.uplink_packets == len(opus_frames(SHORT))
    assert h.count(SpeechAudio) >= 15
    assert OpusDecoder(24000).decode(h.of(SpeechAudio)[0].payload)


async def test_text_turn_speaks_the_last_utterance_back() -> None:
    async with EchoPeer() as server, BackendHarness(fast_settings(server.websocket_url)) as h:
        await h.wait_connected()
        await h.manual_turn(SHORT)
        mark = len(h.events)
        await h.backend.send_text("say it again")
        await h.wait_for(lambda: h.count(SpeechEnded, mark) == 1)
    assert h.of(Transcript, mark) == [Transcript("say it again")]
    assert h.count(SpeechAudio, mark) == h.count(SpeechAudio) - h.count(SpeechAudio, mark)


async def test_without_an_mcp_answer_the_channel_is_ready_after_the_settle_time() -> None:
    async with (
        EchoPeer() as server,
        BackendHarness(fast_settings(server.websocket_url, settle_ms=300), answer_mcp=False) as h,
    ):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await h.wait_connected()
        waited = loop.time() - start
    assert waited >= 0.3


# ---------------------------------------------------------------- auth and OTA


async def test_auth_failure_text_reruns_ota_for_a_fresh_token() -> None:
    async with EchoPeer(variant="auth", ota=True) as server:
        settings = fast_settings(ota_url=server.ota_url)
        async with BackendHarness(settings) as h:
            await h.wait_connected()
            server.rotate_secret()  # the token we hold is now stale
            server.kill()
            await h.wait_for(lambda: any(e.auth_failed for e in h.of(Disconnected)), 5)
            await h.wait_for(lambda: h.count(Connected) == 2, 5)
    assert len(server.ota_requests) == 2


async def test_http_401_on_upgrade_is_an_auth_failure() -> None:
    async with EchoPeer(variant="auth-http", ota=True) as server:
        h = BackendHarness(fast_settings(ota_url=server.ota_url))
        async with h:
            await h.wait_connected()
            server.rotate_secret()
            server.kill()
            await h.wait_for(lambda: h.count(Connected) == 2, 5)
    assert any(e.auth_failed and "HTTP 401" in e.reason for e in h.of(Disconnected))


async def test_ota_reply_that_is_not_json_is_logged_once_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        async with EchoPeer(ota_not_json=True) as server:
            h = BackendHarness(fast_settings(ota_url=server.ota_url))
            async with h:
                await server.wait_until(lambda: len(server.ota_requests) >= 3, 5)
    assert "is not JSON" in h.of(Disconnected)[0].reason
    assert h.count(Disconnected) == 1
    assert len([r for r in caplog.records if "is not JSON" in r.getMessage()]) == 1


# ---------------------------------------------------------------- faults


@pytest.mark.slow
async def test_server_killed_mid_turn_20_times_reconnects_and_the_next_turn_completes() -> None:
    server = EchoPeer()
    await server.start()
    port = server.port
    url = server.websocket_url
    try:
        async with BackendHarness(fast_settings(url)) as h:
            for attempt in range(20):
                await h.wait_connected(10)
                connects = h.count(Connected)
                mark = len(h.events)
                await h.backend.start_listening(ListenMode.MANUAL)
                for packet in opus_frames(SHORT):
                    await h.backend.send_audio(packet)
                await h.backend.stop_listening()
                await h.wait_count(SpeechAudio, 3, since=mark)
                if attempt % 5 == 4:  # the whole server dies and comes back on the same port
                    await server.stop()
                    server = EchoPeer(port=port)
                    await server.start()
                else:
                    server.kill()
                await h.wait_count(Connected, connects + 1)
                mark = await h.manual_turn(SHORT)
                assert h.count(Transcript, mark) == 1
                assert h.of(SpeechEnded, mark) == [SpeechEnded(aborted=False)]
        assert h.count(Disconnected) == 20
    finally:
        await server.stop()


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
garbage_frames = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["tts", "stt", "llm", "mcp", "alert", "hello", "system", "zzz"])},
            optional={
                "state": st.sampled_from(["start", "stop", "sentence_start"]) | json_values,
                "text": json_values,
                "emotion": json_values,
                "payload": json_values,
                "transport": json_values,
                "audio_params": json_values,
            },
        ).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=30),
        st.binary(min_size=1, max_size=64),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=garbage_frames, version=st.sampled_from([1, 2, 3]))
def test_garbage_frames_never_crash_the_backend_and_the_session_goes_on(
    frames: list[str | bytes], version: int
) -> None:
    sentinel_audio = bytes.fromhex("780102")
    from companion.protocols.xiaozhi import framing

    tail: list[str | bytes] = [
        '{"type":"tts","state":"stop"}',
        '{"type":"tts","state":"start"}',
        framing.encode(version, sentinel_audio),
        '{"type":"tts","state":"stop"}',
        '{"type":"stt","text":"sentinel"}',
    ]

    async def scenario() -> BackendHarness:
        async with ScriptedServer(frames, tail) as server:
            settings_ = fast_settings(server.url, settle_ms=0, protocol_version=version)
            async with BackendHarness(settings_) as h:
                await h.wait_for(lambda: Transcript("sentinel") in h.events, 5)
                assert h.backend.connected
                return h

    h = asyncio.run(scenario())
    assert h.count(Connected) == 1 and h.count(Disconnected) == 0
    assert any(e.payload == sentinel_audio for e in h.of(SpeechAudio))


# ---------------------------------------------------------------- liveness while idle


async def test_an_idle_channel_whose_server_says_nothing_stays_up_past_the_idle_timeout() -> None:
    """Real servers send nothing between turns: our own ping's pong proves the channel alive."""
    async with EchoPeer() as server:
        settings = fast_settings(server.websocket_url, idle_timeout_s=1.0)
        async with BackendHarness(settings) as h:
            await h.wait_connected()
            await asyncio.sleep(3.5)  # three and a half idle timeouts with no server message
            assert h.count(Disconnected) == 0 and h.backend.connected
            await h.manual_turn(SHORT)  # and it still works


async def test_a_silently_dead_link_is_noticed_within_the_idle_timeout_and_reconnected() -> None:
    async with EchoPeer() as server, BlackholeProxy(server.port) as proxy:
        url = server.websocket_url.replace(f":{server.port}/", f":{proxy.port}/")
        async with BackendHarness(fast_settings(url, idle_timeout_s=1.0)) as h:
            await h.wait_connected()
            proxy.swallow()  # the far end is gone, and nothing says so
            started = asyncio.get_running_loop().time()
            await h.wait_count(Disconnected, 1, timeout=5)
            assert asyncio.get_running_loop().time() - started < 2.5
            assert "nothing received for 1 s" in h.of(Disconnected)[0].reason


async def test_a_message_over_the_size_limit_is_named_as_the_reason_the_channel_closed() -> None:
    huge = json.dumps({"type": "llm", "text": "x" * (1 << 21)})  # 2 MiB, over the 1 MiB we accept
    async with ScriptedServer([huge]) as server, BackendHarness(fast_settings(server.url, settle_ms=0)) as h:
        await h.wait_count(Disconnected, 1)
    reason = h.of(Disconnected)[0].reason
    assert "larger than we accept (1024 KiB)" in reason, reason
    assert "without a close frame" not in reason


def test_close_reasons_say_who_closed_and_why() -> None:
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    from companion.backends.websocket_errors import close_reason

    limit = 1 << 20
    assert close_reason(ConnectionClosedError(Close(1001, "going away"), None), limit) == (
        "server closed the connection (code 1001: going away)"
    )
    ping = close_reason(ConnectionClosedError(None, Close(1011, "keepalive ping timeout")), limit)
    assert "stopped answering pings" in ping
    assert "without a close frame" in close_reason(ConnectionClosedError(None, None), limit)


async def test_a_planned_reconnect_waits_until_the_device_has_finished_playing() -> None:
    """After `notify config_updated` the wire goes quiet as soon as the last packet is sent, seconds
    before the speaker has played it: the reconnect waits for the device, not only for the wire."""
    playing = [True]
    notify = json.dumps({"type": "notify", "event": "config_updated"})
    async with ScriptedServer([notify]) as server:
        hellos = lambda: sum(isinstance(m, str) and '"hello"' in m for m in server.received)  # noqa: E731
        async with BackendHarness(fast_settings(server.url, settle_ms=0), busy=lambda: playing[0]) as h:
            await h.wait_connected()
            await asyncio.sleep(3.0)  # past the 2 s of quiet a planned reconnect waits for
            assert hellos() == 1 and h.count(Disconnected) == 0
            playing[0] = False  # the reply has played out
            await h.wait_for(lambda: hellos() >= 2, 10)
        assert "configuration was updated" in h.of(Disconnected)[0].reason


async def test_an_idle_channel_the_server_retires_is_reopened_without_a_disconnect() -> None:
    """xiaozhi-esp32-server closes (code 1000) a connection with no speech for 180 s: the device was
    idle and nothing failed, so the channel comes back at once and nobody hears of it."""
    async with (
        EchoPeer(variant=Variant(idle_close_s=5.5)) as server,
        BackendHarness(fast_settings(server.websocket_url), busy=lambda: False) as h,
    ):
        await h.wait_connected()
        await server.wait_until(lambda: len(server.records) == 2 and server.records[0].closed, 15)
        await h.wait_for(lambda: h.count(Connected) == 2)
        assert h.count(Disconnected) == 0 and h.backend.connected
        await h.manual_turn(SHORT)  # the new channel talks


async def test_a_normal_close_soon_after_connecting_or_mid_turn_is_still_a_disconnect() -> None:
    """Only a channel that was up for a while and idle is retired: a server that closes at once
    refuses us, and a close mid-turn ends the turn, and both must be heard about."""
    async with (
        EchoPeer(variant=Variant(idle_close_s=1.0)) as server,
        BackendHarness(fast_settings(server.websocket_url), busy=lambda: False) as h,
    ):
        await h.wait_count(Disconnected, 1, timeout=10)
    assert "server closed the connection (code 1000)" in h.of(Disconnected)[0].reason
    async with (
        EchoPeer(variant=Variant(idle_close_s=5.5)) as server,
        BackendHarness(fast_settings(server.websocket_url), busy=lambda: True) as busy,
    ):
        await busy.wait_count(Disconnected, 1, timeout=15)
