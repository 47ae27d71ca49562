"""The chat_bot_v3 protocol core: byte strings in, events out; requests in, JSON out. No sockets."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.events import Emotion, ReplyText, Transcript
from companion.protocols.chatbot_v3.client import (
    AgentParams,
    AuthRejected,
    ClientProtocol,
    NothingRecognised,
    NotReady,
    OutOfCredit,
    Ready,
    ServerError,
    TtsUrl,
    TurnState,
    TurnStopped,
    connect_url,
)
from tests.peers.chatbot_server import agent_stop, asr, emotion, llm, status, tts

SEED_TTS = (
    '{"socket_type": "agent_event", "socket_message": "request_completed", "socket_status": 1003, '
    '"event_name": "agent_action", "agent_output": {"output_type": "tts", "audio_seconds": 2.13, '
    '"tts_audio": "https://api.mindcraft.com.cn/static/agent/4a312ef1f4b7422bb6e88ba034132c0c/2.mp3", '
    '"z_index": 1}, "agent_name": "chat_bot_v3"}'
)


def ready_protocol(params: AgentParams | None = None) -> ClientProtocol:
    proto = ClientProtocol(params)
    assert proto.receive_text(json.dumps({"socket_status": 1008, "socket_message": "连接成功"}), 0.0) == [
        Ready("连接成功")
    ]
    return proto


def feed(proto: ClientProtocol, message: dict[str, object], now: float = 1.0) -> list[object]:
    return list(proto.receive_text(json.dumps(message, ensure_ascii=False), now))


def test_connect_url_carries_the_key_as_token() -> None:
    url = connect_url("wss://api.mindcraft.com.cn/socket-v1/", "MC-KEY")
    assert url == "wss://api.mindcraft.com.cn/socket-v1/?token=MC-KEY"
    assert (
        connect_url("wss://h/socket-v1/?type=mcu&token=old", "new") == "wss://h/socket-v1/?type=mcu&token=new"
    )


def test_auth_event_has_the_mcu_shape() -> None:
    assert json.loads(ClientProtocol().auth("MC-KEY")) == {
        "socket_type": "agent_event",
        "event_name": "auth_token",
        "event_params": {"token": "MC-KEY"},
    }


def test_no_turn_before_1008() -> None:
    with pytest.raises(NotReady):
        ClientProtocol().start_voice_turn(0.0)


@pytest.mark.parametrize("code", [2003, 2004])
def test_2003_and_2004_are_auth_rejections(code: int) -> None:
    proto = ready_protocol()
    (event,) = feed(proto, {"socket_status": code, "socket_message": "api key错误"})
    assert event == AuthRejected(code, "api key错误")
    assert not proto.authenticated


def test_voice_turn_sends_every_parameter_then_audio_then_stream_asr() -> None:
    params = AgentParams(character_uuid="mc20250326a54kf", session_token="0886a1f1", speed=0.5)
    proto = ready_protocol(params)
    action = json.loads(proto.start_voice_turn(0.0))
    assert action["socket_type"] == "agent_event" and action["event_name"] == "agent_action"
    sent = action["event_params"]
    assert sent["agent_name"] == "chat_bot_v3"
    assert sent["upload_sample_rate"] == 16000  # an int, not "16000" (spec A.7.8)
    for key in (
        "mode", "character_uuid", "emotion_output", "upload_format", "upload_sample_rate", "voice_id",
        "speed", "user_age", "llm_model", "max_tokens", "tts_model", "session_token", "language",
    ):  # fmt: skip
        assert key in sent, key
    assert "asr_text" not in sent and "profile_uuid" not in sent  # empty optional strings are left out
    assert proto.audio(b"\x01\x00" * 960) == b"\x01\x00" * 960
    assert json.loads(proto.end_of_speech() or "") == {
        "socket_type": "intervent_event",
        "event_name": "stream_asr",
        "socket_id": action["socket_id"],
    }
    assert proto.audio(b"\x00\x00") is None  # the upload is over


def test_text_turn_carries_asr_text() -> None:
    proto = ready_protocol()
    action = json.loads(proto.start_text_turn("你好", 0.0))
    assert action["event_params"]["asr_text"] == "你好"
    assert proto.audio(b"\x00\x00") is None


def test_seed_example_is_understood() -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    assert proto.receive_text(SEED_TTS, 1.0) == [
        TtsUrl("https://api.mindcraft.com.cn/static/agent/4a312ef1f4b7422bb6e88ba034132c0c/2.mp3", 1, 2.13)
    ]


@pytest.mark.parametrize("envelope", [1003, 1007])
def test_both_envelopes_give_the_same_events(envelope: int) -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    assert feed(proto, emotion("happy", envelope)) == [Emotion("happy")]
    first = feed(proto, llm("你好呀", 0, envelope, asr="你好啊"))
    assert first == [Transcript("你好啊"), ReplyText("你好呀", 0)]
    assert feed(proto, llm("今天", 1, envelope, asr="你好啊")) == [ReplyText("今天", 1)]  # ASR repeats once
    assert feed(proto, tts("https://x/0.mp3", 0, envelope, 1.26)) == [TtsUrl("https://x/0.mp3", 0, 1.26)]
    assert feed(proto, agent_stop()) == [TurnStopped()]
    assert proto.state is TurnState.IDLE


def test_emotion_words_outside_the_project_vocabulary_are_mapped_by_the_core() -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    msg = {"socket_status": 1003, "agent_output": {"output_type": "emotion", "emotion_output": " Joy "}}
    assert feed(proto, msg) == [Emotion("happy")]
    msg = {"socket_status": 1003, "agent_output": {"output_type": "emotion", "emotion_output": "winking"}}
    assert feed(proto, msg) == [Emotion("winking")]


def test_v2_aliases_and_string_z_index() -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    msg = {"socket_status": 1003, "agent_output": {"output_type": "emotion", "emotion_value": "Sad"}}
    assert feed(proto, msg) == [Emotion("sad")]
    msg = {
        "socket_status": "1003",
        "agent_output": {"output_type": "tts", "tts_audio": "http://h/a.mp3", "z_index": "3", "to_sleep": 2},
    }
    assert feed(proto, msg) == [TtsUrl("http://h/a.mp3", 3, 2.0)]


def test_asr_during_upload_is_marked_partial() -> None:
    proto = ready_protocol()
    proto.start_voice_turn(0.0)
    assert feed(proto, asr("今天")) == [Transcript("今天", final=False)]
    proto.end_of_speech()
    assert feed(proto, asr("今天天气")) == [Transcript("今天天气", final=True)]


def test_statuses_3001_3002_4006() -> None:
    proto = ready_protocol()
    proto.start_voice_turn(0.0)
    proto.end_of_speech()
    assert feed(proto, status(3001, error="未识别到文字")) == [NothingRecognised("未识别到文字")]
    assert proto.state is TurnState.IDLE
    assert feed(proto, status(3002, message="积分不足")) == [OutOfCredit("积分不足")]
    assert feed(proto, status(4006, message="model busy")) == [ServerError(4006, "model busy")]


def test_events_after_stream_output_are_dropped_until_the_next_turn() -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    assert json.loads(proto.cancel() or "")["event_name"] == "stream_output"
    assert feed(proto, tts("https://x/1.mp3", 1)) == []
    assert feed(proto, agent_stop()) == []
    assert proto.dropped == 2
    proto.start_text_turn("again", 5.0)
    assert feed(proto, tts("https://x/0.mp3", 0), now=5.5) == [TtsUrl("https://x/0.mp3", 0, 1.5)]


def test_a_stop_racing_a_new_turn_is_the_cancelled_turns() -> None:
    proto = ready_protocol()
    proto.start_text_turn("one", 0.0)
    proto.cancel()
    proto.start_text_turn("two", 1.0)
    assert feed(proto, agent_stop(), now=1.1) == []  # the first turn's, arriving late
    assert feed(proto, tts("https://x/0.mp3", 0), now=1.5) == [TtsUrl("https://x/0.mp3", 0, 1.5)]
    assert feed(proto, agent_stop(), now=2.0) == [TurnStopped()]


def test_while_a_voice_turn_uploads_any_reply_is_an_older_turns() -> None:
    proto = ready_protocol()
    proto.start_text_turn("one", 0.0)
    proto.cancel()
    assert not proto.settled
    proto.start_voice_turn(0.5)
    assert feed(proto, tts("https://x/2.mp3", 2), now=0.6) == []  # the cancelled reply, still arriving
    assert feed(proto, agent_stop(), now=0.7) == []
    assert feed(proto, asr("在吗"), now=0.8) == [Transcript("在吗", final=False)]
    proto.end_of_speech()
    assert feed(proto, tts("https://x/0.mp3", 0), now=1.5) == [TtsUrl("https://x/0.mp3", 0, 1.5)]
    assert feed(proto, agent_stop(), now=2.0) == [TurnStopped()]


def test_the_cancelled_turns_stop_settles_it() -> None:
    proto = ready_protocol()
    proto.start_text_turn("one", 0.0)
    proto.cancel()
    assert not proto.settled
    assert feed(proto, {**agent_stop(), "socket_message": "agent_stop_force"}) == []
    assert proto.settled


def test_an_echoed_socket_id_decides_exactly() -> None:
    proto = ready_protocol()
    proto.start_text_turn("one", 0.0)
    old = proto.socket_id
    proto.cancel()
    proto.start_text_turn("two", 1.0)
    assert feed(proto, {**tts("https://x/9.mp3", 9), "socket_id": old}) == []
    assert feed(proto, {**agent_stop(), "socket_id": proto.socket_id}, now=1.1) == [TurnStopped()]


def test_output_outside_a_turn_is_dropped() -> None:
    proto = ready_protocol()
    assert feed(proto, tts("https://x/0.mp3", 0)) == []


def test_cancel_without_a_turn_sends_nothing() -> None:
    assert ready_protocol().cancel() is None


def test_malformed_messages_and_unknown_statuses_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    proto = ready_protocol()
    proto.start_text_turn("hi", 0.0)
    with caplog.at_level(logging.WARNING, logger="companion.protocols.chatbot_v3.client"):
        for _ in range(3):
            assert proto.receive_text("not json {", 1.0) == []
            assert feed(proto, {"socket_status": 1005, "socket_message": "who knows"}) == []
            assert feed(proto, {"socket_status": 1003, "agent_output": {"output_type": "video"}}) == []
            assert (
                feed(proto, {"socket_status": 1003, "agent_output": {"output_type": "tts", "tts_audio": 5}})
                == []
            )
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4, warnings
    assert any("1005" in w for w in warnings)
    assert feed(proto, agent_stop()) == [TurnStopped()]  # the session goes on


def test_connection_lost_needs_a_new_1008() -> None:
    proto = ready_protocol()
    proto.start_voice_turn(0.0)
    proto.connection_lost()
    assert not proto.authenticated and proto.state is TurnState.IDLE
    with pytest.raises(NotReady):
        proto.start_voice_turn(1.0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
known_keys = st.sampled_from(
    ["socket_status", "socket_message", "socket_data", "agent_output", "output_type", "z_index", "tts_audio",
     "llm_response", "emotion_output", "text", "socket_id", "socket_type"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(known_keys, json_values | st.sampled_from([1003, 1004, 1006, 1007, 1008, 2003, 3001])),
    st.booleans(),
)
def test_any_json_message_gives_events_or_nothing_never_an_exception(
    message: dict[str, object], turn: bool
) -> None:
    proto = ready_protocol()
    if turn:
        proto.start_text_turn("hi", 0.0)
    events = proto.receive_text(json.dumps(message), 1.0)
    assert isinstance(events, list)
