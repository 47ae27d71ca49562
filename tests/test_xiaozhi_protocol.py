"""The sans-I/O xiaozhi core against the spec's test vectors (§8) and robust-client rules (§7)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.events import (
    Alert,
    Emotion,
    ReplyText,
    RestartRequested,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
    ToolRequest,
    Transcript,
    TurnEnded,
)
from companion.protocols.xiaozhi import framing, messages
from companion.protocols.xiaozhi.framing import FrameError
from companion.protocols.xiaozhi.session import (
    ChannelDead,
    ChannelNotOpen,
    ClientSession,
    GoodbyeReceived,
    HelloReceived,
    ServerText,
    SessionConfig,
    SessionState,
)

SERVER_HELLO = (
    '{"type":"hello","transport":"websocket","session_id":"s1",'
    '"audio_params":{"format":"opus","sample_rate":24000,"channels":1,"frame_duration":60}}'
)


def open_session(config: SessionConfig | None = None, hello: str = SERVER_HELLO) -> ClientSession:
    session = ClientSession(config)
    session.hello(0.0)
    events = session.receive_text(hello, 0.1)
    assert any(isinstance(e, HelloReceived) for e in events)
    return session


def tts(state: str, **extra: object) -> str:
    return json.dumps({"type": "tts", "state": state, "session_id": "s1", **extra})


# ---------------------------------------------------------------- §8.2 client hello, §8.4 listen, §8.5 abort


def test_client_hello_is_byte_exact_firmware_output() -> None:
    assert ClientSession().hello(0.0) == (
        '{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false},"transport":"websocket",'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
    )


def test_mqtt_hello_uses_version_3_udp_and_the_firmware_key_order() -> None:
    hello = ClientSession(SessionConfig(transport="udp", version=3)).hello(0.0)
    assert hello == (
        '{"type":"hello","version":3,"transport":"udp","features":{"mcp":true,"glyph_push":false},'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
    )


def test_qiniu_agent_params_follow_audio_params() -> None:
    cfg = SessionConfig(agent_params={"custom_replace_prompt": {"name": "小明"}})
    hello = json.loads(ClientSession(cfg).hello(0.0))
    assert list(hello) == ["type", "version", "features", "transport", "audio_params", "agent_params"]
    assert hello["agent_params"] == {"custom_replace_prompt": {"name": "小明"}}


@pytest.mark.parametrize("mode", ["auto", "manual", "realtime"])
def test_listen_start_strings(mode: str) -> None:
    session = open_session()
    assert (
        session.listen_start(mode) == f'{{"session_id":"s1","type":"listen","state":"start","mode":"{mode}"}}'
    )


def test_listen_stop_and_detect_strings() -> None:
    session = open_session()
    assert session.listen_stop() == '{"session_id":"s1","type":"listen","state":"stop"}'
    assert (
        session.listen_detect("你好小智")
        == '{"session_id":"s1","type":"listen","state":"detect","text":"你好小智"}'
    )


def test_abort_strings_with_and_without_reason() -> None:
    session = open_session()
    assert session.abort() == '{"session_id":"s1","type":"abort"}'
    assert session.abort("wake_word_detected") == (
        '{"session_id":"s1","type":"abort","reason":"wake_word_detected"}'
    )


def test_mcp_reply_is_enveloped_with_the_session_id() -> None:
    session = open_session()
    payload = {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2024-11-05"}}
    assert session.mcp(payload) == (
        '{"session_id":"s1","type":"mcp","payload":{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2024-11-05"}}}'
    )


def test_listen_before_the_server_hello_is_refused() -> None:
    session = ClientSession()
    session.hello(0.0)
    with pytest.raises(ChannelNotOpen):
        session.listen_start("auto")
    assert session.audio_frame(b"\x78\x01\x02") is None


# ---------------------------------------------------------------- §8.3 server hello


def test_server_hello_opens_the_channel_with_its_session_and_rate() -> None:
    session = ClientSession()
    session.hello(0.0)
    (event,) = session.receive_text(SERVER_HELLO, 0.05)
    assert isinstance(event, HelloReceived)
    assert session.is_open and session.session_id == "s1"
    assert (session.downlink.sample_rate, session.downlink.frame_duration) == (24000, 60)


def test_server_hello_without_audio_params_defaults_to_24000_60() -> None:
    session = open_session(hello='{"type":"hello","transport":"websocket","session_id":"x"}')
    assert (session.downlink.format, session.downlink.sample_rate, session.downlink.frame_duration) == (
        "opus",
        24000,
        60,
    )


def test_server_hello_without_session_id_uses_empty_string() -> None:
    session = open_session(hello='{"type":"hello","transport":"websocket"}')
    assert session.session_id == ""
    assert session.listen_start("auto") == '{"session_id":"","type":"listen","state":"start","mode":"auto"}'


def test_a_transport_proof_of_life_moves_the_idle_deadline_but_never_back() -> None:
    session = open_session(SessionConfig(idle_timeout_s=120.0))
    assert session.next_deadline(1.0) == pytest.approx(120.1)
    session.alive(100.0)  # a websocket pong at t=100
    assert session.check(200.0) == [] and session.next_deadline(200.0) == pytest.approx(220.0)
    session.alive(50.0)  # a late report of an older pong changes nothing
    assert session.next_deadline(200.0) == pytest.approx(220.0)
    (dead,) = session.check(220.0)
    assert isinstance(dead, ChannelDead) and "nothing received for 120 s" in dead.reason
    session.alive(221.0)  # a closed session is not revived
    assert not session.is_open and session.check(400.0) == []


def test_hello_with_wrong_transport_is_ignored_then_times_out(caplog: pytest.LogCaptureFixture) -> None:
    session = ClientSession()
    session.hello(100.0)
    with caplog.at_level(logging.WARNING):
        assert session.receive_text(SERVER_HELLO.replace('"websocket"', '"udp"'), 100.1) == []
        assert session.receive_text(SERVER_HELLO.replace('"websocket"', '"udp"'), 100.2) == []
    assert [r.getMessage() for r in caplog.records if "transport" in r.getMessage()] == [
        "server hello with transport 'udp' ignored (we speak 'websocket')"
    ]
    assert not session.is_open
    assert session.check(109.9) == []
    assert session.next_deadline(101.0) == pytest.approx(110.0)
    (dead,) = session.check(110.0)
    assert isinstance(dead, ChannelDead) and "hello" in dead.reason


def test_udp_hello_keeps_the_udp_block_for_the_mqtt_driver() -> None:
    session = ClientSession(SessionConfig(transport="udp", version=3))
    session.hello(0.0)
    hello = {
        "type": "hello",
        "version": 3,
        "session_id": "S",
        "transport": "udp",
        "udp": {
            "server": "1.2.3.4",
            "port": 8884,
            "encryption": "aes-128-ctr",
            "key": "00" * 16,
            "nonce": "01" * 16,
        },
    }
    (event,) = session.receive_text(json.dumps(hello), 0.1)
    assert isinstance(event, HelloReceived)
    assert event.udp is not None and event.udp["port"] == 8884


# ---------------------------------------------------------------- §7 liveness


def test_channel_is_dead_after_120_s_with_nothing_received() -> None:
    session = open_session()
    session.receive_text(tts("start"), 50.0)
    assert session.check(169.9) == []
    assert session.next_deadline(60.0) == pytest.approx(170.0)
    (dead,) = session.check(170.0)
    assert isinstance(dead, ChannelDead) and "120" in dead.reason
    assert session.state is SessionState.CLOSED


# ---------------------------------------------------------------- turns, gating, idempotent stop


def test_a_full_turn_becomes_normalized_events() -> None:
    session = open_session()
    session.listen_start("auto")
    got = []
    for text in (
        '{"type":"stt","text":"\\u4eca\\u5929\\u5929\\u6c14\\u600e\\u4e48\\u6837","session_id":"s1"}',
        tts("start"),
        '{"type":"llm","text":"\\ud83d\\ude06","emotion":"laughing","session_id":"s1"}',
        tts("sentence_start", text="今天晴。"),
    ):
        got += session.receive_text(text, 1.0)
    got += session.receive_binary(b"\x78\x01\x02", 1.1)
    got += session.receive_text(tts("sentence_start", text="明天雨。"), 1.2)
    got += session.receive_text(tts("stop"), 1.3)
    assert got == [
        Transcript("今天天气怎么样"),
        SpeechStarted(),
        Emotion("laughing"),
        ReplyText("今天晴。", 0),
        SpeechAudio(b"\x78\x01\x02", "opus", 24000),
        ReplyText("明天雨。", 1),
        SpeechEnded(aborted=False),
    ]


def test_audio_outside_tts_start_and_stop_is_dropped() -> None:
    session = open_session()
    assert session.receive_binary(b"\x01\x02", 1.0) == []
    session.receive_text(tts("start"), 1.1)
    assert len(session.receive_binary(b"\x01\x02", 1.2)) == 1
    session.receive_text(tts("stop"), 1.3)
    assert session.receive_binary(b"\x01\x02", 1.4) == []
    assert session.stats["downlink_dropped"] == 2


def test_duplicate_tts_stop_ends_speech_once() -> None:
    session = open_session()
    session.receive_text(tts("start"), 1.0)
    assert session.receive_text(tts("stop"), 2.0) == [SpeechEnded(False)]
    assert session.receive_text(tts("stop"), 2.4) == []


def test_abort_closes_the_gate_and_the_acknowledging_stop_is_reported_once() -> None:
    session = open_session()
    session.receive_text(tts("start"), 1.0)
    session.abort()
    assert session.receive_binary(b"\x01\x02", 1.1) == []
    assert session.receive_text(tts("stop"), 1.2) == [SpeechEnded(aborted=True)]
    assert session.receive_text(tts("stop"), 1.6) == []


def test_qiniu_is_aborted_is_reported() -> None:
    session = open_session()
    session.receive_text(tts("start"), 1.0)
    assert session.receive_text(tts("stop", is_aborted=True), 1.1) == [SpeechEnded(aborted=True)]


def test_stt_then_stop_without_speech_ends_the_turn() -> None:
    session = open_session()
    session.listen_detect("你好小智")
    events = session.receive_text('{"type":"stt","text":"你好小智","session_id":"s1"}', 1.0)
    events += session.receive_text(tts("stop"), 1.1)
    assert events == [Transcript("你好小智"), TurnEnded("no reply")]


def test_uplink_is_gated_while_the_server_speaks_except_in_realtime() -> None:
    session = open_session()
    session.listen_start("auto")
    assert session.audio_frame(b"\x01") == b"\x01"
    session.receive_text(tts("start"), 1.0)
    assert session.audio_frame(b"\x01") is None
    session.receive_text(tts("stop"), 2.0)
    session.listen_start("realtime")
    session.receive_text(tts("start"), 3.0)
    assert session.audio_frame(b"\x01") == b"\x01"


def test_qiniu_llm_action_and_notify_config_updated() -> None:
    session = open_session()
    assert session.receive_text('{"type":"llm","emotion":"happy","action":"wave"}', 1.0) == [
        Emotion("happy", "wave")
    ]
    (event,) = session.receive_text('{"type":"notify","event":"config_updated"}', 1.1)
    assert event == RestartRequested("agent configuration updated", reconnect_only=True)
    assert session.reconnect_wanted


def test_system_reboot_alert_and_mcp_become_events() -> None:
    session = open_session()
    assert session.receive_text('{"type":"system","command":"reboot"}', 1.0) == [
        RestartRequested("server asked for a reboot")
    ]
    assert session.receive_text(
        '{"type":"alert","status":"Warning","message":"Battery low","emotion":"sad"}', 1.1
    ) == [Alert("Warning", "Battery low", "sad")]
    payload = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
    assert session.receive_text(json.dumps({"type": "mcp", "payload": payload}), 1.2) == [
        ToolRequest(payload)
    ]


def test_non_json_text_is_reported_and_auth_failure_recognized(caplog: pytest.LogCaptureFixture) -> None:
    session = ClientSession()
    session.hello(0.0)
    with caplog.at_level(logging.WARNING):
        (event,) = session.receive_text("认证失败", 0.1)
    assert isinstance(event, ServerText) and event.auth_failed
    assert len([r for r in caplog.records if "non-JSON" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "text",
    ["42", "[]", '"hello"', "{}", '{"type":7}', '{"type":"weather","x":1}', '{"type":"tts","state":"dance"}'],
)
def test_unusable_or_unknown_messages_are_skipped(text: str) -> None:
    session = open_session()
    assert session.receive_text(text, 1.0) == []
    assert session.is_open


def test_repeated_bad_input_is_logged_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    session = open_session()
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            session.receive_text('{"type":"weather"}', 1.0)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert session.stats["unknown"] == 5


def test_mqtt_goodbye_must_match_the_session() -> None:
    session = open_session(
        SessionConfig(transport="udp", version=3), hello=SERVER_HELLO.replace("websocket", "udp")
    )
    assert session.receive_text('{"type":"goodbye","session_id":"other"}', 1.0) == []
    assert session.is_open
    assert session.receive_text('{"type":"goodbye","session_id":"s1"}', 1.1) == [GoodbyeReceived("s1")]
    assert not session.is_open


# ---------------------------------------------------------------- §8.6 framing


def test_framing_vectors() -> None:
    payload = bytes.fromhex("780102")
    assert framing.encode(1, payload) == payload
    assert framing.encode(2, payload, timestamp=1000) == bytes.fromhex(
        "00020000000000000000 03E8 00000003 780102"
    )
    assert framing.encode(3, payload) == bytes.fromhex("00000003 780102")
    assert framing.decode(2, bytes.fromhex("0002000000000000000003E800000003780102")) == framing.AudioFrame(
        payload, 1000
    )
    assert framing.decode(3, bytes.fromhex("00000003780102")).payload == payload


@pytest.mark.parametrize(
    ("version", "data", "why"),
    [
        (2, "0002 0000 00000000 00000000 00000010 780102", "claims 16 payload bytes but 3 arrived"),
        (2, "0002 0000 00000000 00000000 00000001 780102", "claims 1 payload bytes but 3 arrived"),
        (2, "0003 0000 00000000 00000000 00000003 780102", "carries version 3"),
        (2, "0002 0007 00000000 00000000 00000003 780102", "unknown type 7"),
        (2, "0002 0000 0000", "shorter than its 16-byte header"),
        (3, "00 00 0100 780102", "claims 256 payload bytes but 3 arrived"),
        (3, "09 00 0003 780102", "unknown type 9"),
        (3, "0000", "shorter than its 4-byte header"),
        (1, "", "empty"),
    ],
)
def test_lying_frames_raise_a_clear_frame_error(version: int, data: str, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        framing.decode(version, bytes.fromhex(data))


def test_a_lying_v3_frame_is_logged_once_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    session = open_session(SessionConfig(version=3))
    session.receive_text(tts("start"), 1.0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert session.receive_binary(bytes.fromhex("0000ffff780102"), 1.1) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["binary frame skipped: v3 header claims 65535 payload bytes but 3 arrived"]
    assert session.receive_binary(bytes.fromhex("00000003780102"), 1.2) == [
        SpeechAudio(bytes.fromhex("780102"), "opus", 24000)
    ]


def test_v2_json_frame_is_handled_as_a_text_message() -> None:
    session = open_session(SessionConfig(version=2))
    body = b'{"type":"stt","text":"hi"}'
    assert session.receive_binary(framing.encode(2, body, kind=framing.TYPE_JSON), 1.0) == [Transcript("hi")]


@given(
    version=st.sampled_from([1, 2, 3]),
    payload=st.binary(min_size=1, max_size=2000),
    ts=st.integers(0, 2**32 - 1),
)
def test_framing_round_trips(version: int, payload: bytes, ts: int) -> None:
    frame = framing.decode(version, framing.encode(version, payload, ts))
    assert frame.payload == payload
    assert frame.timestamp == (ts if version == 2 else 0)


@given(version=st.sampled_from([1, 2, 3]), data=st.binary(max_size=64))
def test_decoding_arbitrary_bytes_never_raises_anything_but_frame_error(version: int, data: bytes) -> None:
    try:
        frame = framing.decode(version, data)
    except FrameError:
        return
    assert framing.encode(version, frame.payload, frame.timestamp, frame.kind) == data


# ---------------------------------------------------------------- garbage in, session goes on

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
message_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["hello", "stt", "llm", "tts", "mcp", "system", "alert", "notify", "goodbye", "x"]
        )
    },
    optional={
        "state": st.sampled_from(["start", "stop", "sentence_start", "?"]) | json_values,
        "text": json_values,
        "emotion": json_values,
        "transport": st.sampled_from(["websocket", "udp"]) | json_values,
        "audio_params": json_values,
        "payload": json_values,
        "session_id": json_values,
        "command": json_values,
        "event": json_values,
        "is_aborted": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    inputs=st.lists(
        st.one_of(
            message_like.map(lambda m: ("text", json.dumps(m))),
            st.text(max_size=40).map(lambda t: ("text", t)),
            st.binary(max_size=40).map(lambda b: ("binary", b)),
        ),
        max_size=20,
    ),
    version=st.sampled_from([1, 2, 3]),
)
def test_garbage_never_raises_and_the_session_still_works(
    inputs: list[tuple[str, object]], version: int
) -> None:
    session = open_session(SessionConfig(version=version))
    for kind, data in inputs:
        if kind == "text":
            assert isinstance(data, str)
            session.receive_text(data, 1.0)
        else:
            assert isinstance(data, bytes)
            session.receive_binary(data, 1.0)
    session = (
        open_session(SessionConfig(version=version)) if session.state is SessionState.CLOSED else session
    )
    session.receive_text(SERVER_HELLO, 2.0)
    assert session.is_open
    assert session.listen_start("auto").startswith('{"session_id":')


def test_audio_params_parse_leniently() -> None:
    params = messages.AudioParams.from_json({"format": 5, "sample_rate": True, "frame_duration": -20})
    assert (params.format, params.sample_rate, params.frame_duration) == ("opus", 24000, 60)


# ---------------------------------------------------------------- hostile servers


def test_a_second_hello_with_absurd_audio_params_cannot_size_our_decoder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`sample_rate: 1` would make every 2 KB PCM frame resample to tens of megabytes."""
    session = open_session()
    absurd = json.dumps({
        "type": "hello", "transport": "websocket", "session_id": "s1",
        "audio_params": {"format": "pcm", "sample_rate": 1, "channels": 64, "frame_duration": 100000},
    })  # fmt: skip
    with caplog.at_level(logging.WARNING):
        session.receive_text(absurd, 1.0)
        session.receive_text(absurd, 1.1)
    assert (session.downlink.format, session.downlink.sample_rate) == ("pcm", 24000)
    assert (session.downlink.channels, session.downlink.frame_duration) == (1, 60)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "sample_rate 1" in refusals[0] and "channels 64" in refusals[0]
    session.receive_text(tts("start"), 1.2)
    (audio,) = session.receive_binary(b"\x00\x01" * 1024, 1.3)
    assert isinstance(audio, SpeechAudio) and audio.sample_rate == 24000


def test_every_real_audio_rate_is_taken_as_announced() -> None:
    for rate in (8000, 16000, 24000, 44100, 48000):
        params = messages.AudioParams.from_json({"format": "opus", "sample_rate": rate, "frame_duration": 20})
        assert (params.sample_rate, params.frame_duration) == (rate, 20)


def test_unknown_message_types_cannot_grow_memory_or_the_log(caplog: pytest.LogCaptureFixture) -> None:
    session = open_session()
    with caplog.at_level(logging.DEBUG):
        for i in range(300):
            kind = f"{i:04d}" + "k" * 900_000  # 300 distinct 900 KB type names
            session.receive_text(json.dumps({"type": kind, "session_id": "s1"}), 1.0)
    logged = sum(len(r.getMessage()) for r in caplog.records)
    assert logged < 300 * 500  # each line cut to a few hundred characters
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 64  # a bounded number of kinds is remembered, the rest go to debug
    assert session.stats["unknown"] == 300
