"""The ESP-AI device protocol core on scripted frames: every server message, the audio prefix, stale and
malformed frames, and the order of what the device sends."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.events import Alert, Connected, Emotion, ReplyText, Transcript
from companion.protocols.espai import (
    DeviceProtocol,
    FrameError,
    Mp3Piece,
    Phase,
    Refused,
    Send,
    ServerClosing,
    SessionEnded,
    SessionStopped,
    audio_frame,
    connect_url,
    parse_audio_frame,
)


def sent(outputs: Sequence[object]) -> list[object]:
    """What the device writes back, JSON decoded (binary frames as they are)."""
    return [json.loads(o.data) if isinstance(o.data, str) else o.data for o in outputs if isinstance(o, Send)]


def ready_protocol() -> DeviceProtocol:
    proto = DeviceProtocol()
    proto.receive_text(json.dumps({"type": "stc_time", "stc_time": "1700000000000"}))
    return proto


def in_session(sid: str = "4821") -> DeviceProtocol:
    proto = ready_protocol()
    proto.start()
    proto.receive_text(json.dumps({"type": "session_start", "session_id": sid}))
    proto.receive_text(json.dumps({"type": "session_status", "status": "iat_start"}))
    return proto


# ---------------------------------------------------------------------------- the connect URL


def test_the_connect_url_carries_the_firmwares_query() -> None:
    url = connect_url(
        "ws://192.168.1.5:8088", device_id="aa:bb:cc:dd:ee:ff", api_key="K123",
        ext={"ext3": "room"}, extra={"AUDIO_BUFFER_SIZE": "20480", "LITTLE_ROM": "1"},
    )  # fmt: skip
    parts = urlsplit(url)
    assert parts.path == "/"
    assert parse_qsl(parts.query) == [
        ("v", "2.87.50"), ("device_id", "aa:bb:cc:dd:ee:ff"), ("api_key", "K123"), ("ext1", "K123"),
        ("ext3", "room"), ("AUDIO_BUFFER_SIZE", "20480"), ("LITTLE_ROM", "1"),
    ]  # fmt: skip


def test_a_given_ext1_wins_over_the_api_key_and_an_empty_key_is_not_sent() -> None:
    query = dict(parse_qsl(urlsplit(connect_url("wss://h/esp/?x=1", device_id="d", ext={"ext1": "E"})).query))
    assert query == {"x": "1", "v": "2.87.50", "device_id": "d", "ext1": "E"}
    assert urlsplit(connect_url("wss://h/esp", device_id="d")).path == "/esp/"


# ---------------------------------------------------------------------------- the audio prefix


def test_the_audio_prefix_is_four_session_digits_and_two_status_digits() -> None:
    frame = parse_audio_frame(b"482101" + b"\xff\xfb\x90\x00")
    assert (frame.session_id, frame.status, frame.mp3) == ("4821", "01", b"\xff\xfb\x90\x00")
    assert frame.ends_sentence and not frame.ends_reply
    assert parse_audio_frame(b"482102").ends_reply and parse_audio_frame(b"482102").mp3 == b""


@pytest.mark.parametrize("data", [b"", b"48210", b"48a100xx", b"482109abc", "４８２１００".encode()])
def test_a_frame_without_a_valid_prefix_is_refused(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse_audio_frame(data)


@given(st.from_regex(r"\A[0-9]{4}\Z"), st.sampled_from(["00", "01", "02", "03"]), st.binary(max_size=64))
def test_writing_and_parsing_a_frame_round_trips(sid: str, status: str, mp3: bytes) -> None:
    frame = parse_audio_frame(audio_frame(sid, status, mp3))
    assert (frame.session_id, frame.status, frame.mp3) == (sid, status, mp3)


@given(st.binary(max_size=12))
def test_any_bytes_either_parse_or_raise_frame_error(data: bytes) -> None:
    try:
        frame = parse_audio_frame(data)
    except FrameError:
        return
    assert len(frame.session_id) == 4 and frame.status in ("00", "01", "02", "03")


# ---------------------------------------------------------------------------- connection


def test_the_device_is_ready_on_the_clock_probe_and_answers_it() -> None:
    proto = DeviceProtocol()
    assert json.loads(proto.hello()) == {"type": "play_audio_ws_conntceed"}
    out = proto.receive_text('{"type":"stc_time","stc_time":"1700000000123"}')
    assert sent(out) == [{"type": "cts_time", "stc_time": "1700000000123"}]
    assert Connected() in out and proto.ready
    again = proto.receive_text('{"type":"stc_time","stc_time":"5"}')
    assert not any(isinstance(o, Connected) for o in again)


def test_auth_fail_and_account_errors_are_refusals() -> None:
    proto = DeviceProtocol()
    (refused,) = proto.receive_text('{"type":"auth_fail","message":"bad key","code":"4003"}')
    assert isinstance(refused, Refused) and refused.code == "4003" and "bad key" in refused.message
    (quota,) = proto.receive_text('{"type":"error","at":"auth","code":"4002","message":"-"}')
    assert quota == Refused("4002", "the ESP-AI quota is used up")


def test_server_errors_become_alerts_and_asr_errors_end_the_session() -> None:
    proto = in_session()
    (alert,) = proto.receive_text('{"type":"error","at":"TTS","code":"302","message":"boom"}')
    assert alert == Alert("TTS 302", "speech synthesis (TTS) call failed: boom")
    assert proto.session_id == "4821"
    out = proto.receive_text('{"type":"error","at":"IAT","code":"102","message":"asr down"}')
    assert out[0] == Alert("IAT 102", "speech recognition (IAT) call failed: asr down")
    assert out[1] == SessionEnded("asr_error") and proto.session_id == "" and proto.phase is Phase.IDLE


def test_restart_and_sever_close_ask_for_a_reconnect() -> None:
    proto = ready_protocol()
    assert isinstance(proto.receive_text('{"type":"sever-close"}')[0], ServerClosing)
    assert isinstance(proto.receive_text('{"type":"restart"}')[0], ServerClosing)


# ---------------------------------------------------------------------------- a turn


def test_audio_before_iat_start_is_held_and_sent_in_order_with_an_early_iat_end() -> None:
    proto = ready_protocol()
    assert json.loads(proto.start()) == {"type": "start"}
    assert proto.audio(b"a" * 640) == [] and proto.audio(b"b" * 640) == []
    assert proto.end_of_speech() == []  # the server is not listening yet: iat_end waits for the audio
    proto.receive_text('{"type":"session_start","session_id":"4821"}')
    out = proto.receive_text('{"type":"session_status","status":"iat_start"}')
    assert sent(out) == [b"a" * 640, b"b" * 640, {"type": "iat_end"}]
    assert proto.phase is Phase.WAITING
    assert proto.audio(b"c" * 640) == [] and proto.dropped_uplink == 1


def test_audio_streams_after_iat_start_and_iat_end_ends_the_upload() -> None:
    proto = in_session()
    assert proto.audio(b"x" * 640) == [b"x" * 640]
    assert [json.loads(m) for m in proto.end_of_speech()] == [{"type": "iat_end"}]
    assert proto.end_of_speech() == []


def test_the_held_audio_is_bounded() -> None:
    proto = ready_protocol()
    proto.max_backlog_bytes = 1000
    proto.start()
    for i in range(5):
        proto.audio(bytes([i]) * 400)
    out = proto.receive_text('{"type":"session_status","status":"iat_start"}')
    assert sent(out) == [bytes([3]) * 400, bytes([4]) * 400]  # the oldest went first
    assert proto.dropped_uplink == 3


def test_the_servers_own_iat_end_stops_the_upload() -> None:
    proto = in_session()
    assert proto.receive_text('{"type":"session_status","status":"iat_end"}') == []
    assert proto.phase is Phase.WAITING and proto.audio(b"x" * 640) == []


def test_what_the_server_heard_comes_from_its_log_message_once() -> None:
    proto = in_session()
    out = proto.receive_text(json.dumps({"type": "log", "data": "ASR 识别结果：你好"}, ensure_ascii=False))
    assert out == [Transcript("你好")]
    again = proto.receive_text('{"type":"instruct","command_id":"on_iat_cb","data":"你好"}')
    assert sent(again) == [{"type": "instruct_ack"}] and Transcript("你好") not in again
    assert proto.receive_text('{"type":"log","data":"something else"}') == []


def test_llm_text_and_emotion_become_reply_text_and_emotion() -> None:
    proto = in_session()
    out = proto.receive_text('{"type":"instruct","command_id":"on_llm_cb","data":"Hello there."}')
    assert out == [Send('{"type":"instruct_ack"}'), ReplyText("Hello there.")]
    assert proto.receive_text('{"type":"emotion","data":"开心"}') == [Emotion("happy")]
    assert proto.receive_text('{"type":"emotion","data":"Sad"}') == [Emotion("sad")]
    assert proto.receive_text('{"type":"emotion","data":"wistful"}') == [Emotion("wistful")]


def test_reply_frames_are_numbered_by_sentence_and_the_end_status_closes_the_reply() -> None:
    proto = in_session()
    proto.end_of_speech()
    pieces = [proto.receive_binary(audio_frame("4821", s, d)) for s, d in
              [("00", b"A1"), ("01", b"A2"), ("00", b"B1"), ("01", b""), ("02", b"")]]  # fmt: skip
    flat = [p for out in pieces for p in out]
    assert all(isinstance(p, Mp3Piece) for p in flat)
    assert [(p.sentence, p.mp3, p.status) for p in flat if isinstance(p, Mp3Piece)] == [
        (0, b"A1", "00"), (0, b"A2", "01"), (1, b"B1", "00"), (1, b"", "01"), (2, b"", "02"),
    ]  # fmt: skip
    assert proto.phase is Phase.IDLE
    assert json.loads(proto.playback_over("4821", "02")) == {
        "type": "client_out_audio_over", "session_id": "4821", "session_status": "02", "tts_task_id": "",
    }  # fmt: skip


def test_frames_of_another_session_and_prompt_frames_are_dropped() -> None:
    proto = in_session("4821")
    assert proto.receive_binary(audio_frame("7777", "00", b"old")) == []
    assert proto.receive_binary(audio_frame("1001", "00", b"cache")) == []
    assert proto.receive_binary(audio_frame("0001", "03", b"hi")) == []
    assert proto.stale_frames == 1 and proto.prompt_frames == 2
    (piece,) = proto.receive_binary(audio_frame("0010", "03", b"spoken"))
    assert isinstance(piece, Mp3Piece) and piece.session_id == "0010" and piece.ends_reply


def test_a_new_start_makes_the_old_sessions_frames_stale() -> None:
    proto = in_session("4821")
    proto.start()
    assert proto.receive_binary(audio_frame("4821", "00", b"late")) == []


def test_a_malformed_frame_is_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    proto = in_session()
    with caplog.at_level(logging.DEBUG, logger="companion.protocols.espai.device"):
        assert proto.receive_binary(b"48") == []
        assert proto.receive_binary(b"4x") == []
        assert proto.receive_text("{not json") == []
        assert proto.receive_text("[1, 2]") == []
        assert proto.receive_text('{"type":"weather"}') == []
        assert proto.receive_text('{"type":"emotion"}') == []
        assert proto.receive_text('{"type":"session_start","session_id":"12"}') == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6  # two bad frames are one kind of oddity
    assert proto.session_id == "4821"
    (piece,) = proto.receive_binary(audio_frame("4821", "00", b"ok"))  # the connection goes on
    assert isinstance(piece, Mp3Piece)


def test_session_stop_is_acknowledged_and_ends_the_waiting_turn() -> None:
    proto = in_session("4821")
    proto.end_of_speech()
    out = proto.receive_text('{"type":"session_stop","data":"1","session_id":"4821"}')
    assert sent(out) == [{"type": "session_stop_ack", "session_id": "4821"}]
    assert SessionStopped("4821", True) in out and proto.session_id == "" and proto.phase is Phase.IDLE


def test_session_stop_while_uploading_keeps_the_session() -> None:
    proto = in_session("4821")
    out = proto.receive_text('{"type":"session_stop","data":"","session_id":"4821"}')
    assert sent(out) == [{"type": "session_stop_ack", "session_id": "4821"}] and len(out) == 1
    assert proto.session_id == "4821"


def test_session_end_ends_the_session_without_a_reply() -> None:
    proto = in_session()
    assert proto.receive_text("session_end") == [SessionEnded("session_end")]
    assert proto.session_id == "" and proto.phase is Phase.IDLE


def test_cancel_makes_the_reply_stale_and_asks_the_server_to_drop_its_queue() -> None:
    proto = in_session("4821")
    proto.end_of_speech()
    assert [json.loads(m) for m in proto.cancel()] == [{"type": "iat_end"}]
    assert proto.receive_binary(audio_frame("4821", "00", b"late")) == []
    assert proto.cancel() == []


def test_a_text_turn_is_char_txt_and_takes_the_next_session() -> None:
    proto = ready_protocol()
    assert json.loads(proto.text_turn("你好")) == {"type": "char_txt", "text": "你好"}
    proto.receive_text('{"type":"session_start","session_id":"5000"}')
    (piece,) = proto.receive_binary(audio_frame("5000", "00", b"x"))
    assert isinstance(piece, Mp3Piece)


def test_acknowledgements_and_refusals_the_firmware_sends() -> None:
    proto = ready_protocol()
    assert sent(proto.receive_text('{"type":"clear_cache"}')) == [{"type": "clear_cache_ack"}]
    assert sent(proto.receive_text('{"type":"set_wifi_config","configs":{}}')) == [
        {"type": "set_wifi_config_res", "success": False}
    ]
    assert proto.receive_text('{"type":"instruct","command_id":"__sleep__"}') == [
        Send('{"type":"instruct_ack"}')
    ]
    assert proto.receive_text('{"type":"net_delay","net_delay":3}') == []
    assert proto.receive_text('{"type":"hardware-fns","fn_name":"pinMode","pin":2}') == []
    assert proto.receive_text('{"type":"set_local_data","field":"ext2","value":"x"}') == []
    assert proto.receive_text('{"type":"play_audio","tts_task_id":"t-1"}') == [] and proto.task_id == "t-1"


def test_the_buffer_report_carries_the_value_as_a_string() -> None:
    proto = in_session("4821")
    assert json.loads(proto.buffer_report(1234)) == {
        "type": "client_available_audio", "session_id": "4821", "value": "1234",
    }  # fmt: skip
    assert json.loads(proto.playing()) == {"type": "client_out_audio_ing"}


def test_a_lost_connection_forgets_readiness_and_the_session() -> None:
    proto = in_session()
    proto.connection_lost()
    assert not proto.ready and proto.session_id == "" and proto.phase is Phase.IDLE


@given(st.lists(st.one_of(st.text(max_size=80), st.binary(max_size=80)), max_size=20))
def test_no_sequence_of_frames_makes_the_core_raise(frames: list[str | bytes]) -> None:
    proto = in_session("4821")
    for frame in frames:
        if isinstance(frame, str):
            proto.receive_text(frame)
            proto.receive_text(json.dumps({"type": "session_status", "status": frame}))
        else:
            proto.receive_binary(b"482100" + frame)
            proto.receive_binary(frame)
