"""The conversation's two helpers on their own: the turn book and the microphone's side of a turn."""

from __future__ import annotations

import wave
from pathlib import Path

from companion.audio.endpointer import Endpointer, SpeechBegan, SpeechFinished
from companion.config import AudioSettings, VadSettings
from companion.daemon.clock import ManualClock
from companion.daemon.turn import MAX_TURN_TEXT, Turn, TurnBook
from companion.daemon.uplink_streamer import UplinkStreamer
from companion.daemon.utterance import Utterance
from tests.conversation_edges import RecordingBackend

SPEECH = Path(__file__).resolve().parent.parent / "companion" / "assets" / "demo_hello.wav"
BLOCK = 16000 * 2 * 20 // 1000  # 20 ms


def speech_pcm() -> bytes:
    with wave.open(str(SPEECH), "rb") as wav:
        return wav.readframes(wav.getnframes())


# ---------------------------------------------------------------- TurnBook


def test_a_turn_nobody_used_closes_unreported_and_uncounted() -> None:
    book = TurnBook()
    heard: list[Turn] = []
    book.listeners.add(heard.append)
    book.open("follow_up", 10.0, 1e9)
    assert book.close("completed", 12.0, None) is None
    assert (book.current, book.completed, heard, book.finished.is_set()) == (None, 0, [], False)


def test_a_turn_that_began_is_reported_once_and_counted_only_when_completed() -> None:
    book = TurnBook()
    heard: list[Turn] = []
    book.listeners.add(heard.append)
    first = book.open("vad", 10.0, 1e9)
    first.mark("speech_start", 10.5)
    assert book.close("timeout", 20.0, None) is first
    second = book.open("button", 30.0, 1e9)
    second.mark("first_reply_audio", 31.0)
    book.close("completed", 33.0, 31.2)
    assert [t.number for t in heard] == [1, 2]
    assert [t.outcome for t in heard] == ["timeout", "completed"]
    assert book.completed == 1 and book.finished.is_set()
    assert second.offsets_ms() == {
        "first_reply_audio": 1000.0,
        "first_sample_played": 1200.0,
        "turn_end": 3000.0,
    }
    book.open("vad", 40.0, 1e9)
    assert not book.finished.is_set()  # a new turn is in progress


def test_the_reply_text_kept_is_bounded_and_the_transcript_times_the_end_of_speech() -> None:
    turn = Turn(1, "vad", 0.0, 0.0)
    turn.mark("speech_start", 1.0)
    turn.heard("x" * (MAX_TURN_TEXT + 10), now=3.0, last_voice=2.2)
    for _ in range(3):
        turn.add_reply("y" * (MAX_TURN_TEXT // 2 + 1))
    turn.add_reply("")
    assert len(turn.transcript) == MAX_TURN_TEXT
    assert sum(map(len, turn.reply)) == MAX_TURN_TEXT and len(turn.reply) == 2
    assert (turn.marks["stt"], turn.marks["speech_end"]) == (3.0, 2.2)


# ---------------------------------------------------------------- Utterance


def utterance() -> tuple[Utterance, UplinkStreamer, ManualClock]:
    clock = ManualClock()
    uplink = UplinkStreamer(RecordingBackend(), AudioSettings(codec="pcm"))
    return Utterance(Endpointer(VadSettings(), emit_quiet=True), uplink, clock), uplink, clock


def hear_all(utt: Utterance, clock: ManualClock, pcm: bytes, on_onset: bool) -> list[object]:
    seen: list[object] = []
    for pos in range(0, len(pcm), BLOCK):
        for event in utt.hear(pcm[pos : pos + BLOCK]):
            seen.append(event)
            if isinstance(event, SpeechBegan) and on_onset:
                utt.begin(event)
        clock.advance(0.02)
    return seen


def test_nothing_goes_up_unless_the_conversation_streams_the_utterance() -> None:
    utt, uplink, clock = utterance()
    seen = hear_all(utt, clock, speech_pcm() + bytes(32000), on_onset=False)
    assert [type(e) for e in seen] == [SpeechBegan, SpeechFinished]
    assert (uplink.pending(), utt.sent, utt.streaming) == (0, 0, False)


def test_a_streamed_utterance_sends_every_frame_once_and_counts_its_bytes() -> None:
    utt, uplink, clock = utterance()
    pcm = speech_pcm() + bytes(32000)
    start = clock.now()
    hear_all(utt, clock, pcm, on_onset=True)
    speech_s = len(speech_pcm()) / 32000
    assert (
        utt.streaming and start + 0.5 < utt.last_voice <= start + speech_s
    )  # within the sentence, not the silence
    sent = utt.stop()
    assert not utt.streaming and sent == utt.sent > 0
    # PCM uplink: the bytes queued are the audio itself, from the onset's pre-roll to the end.
    assert sent % 2 == 0 and sent <= len(pcm)
    # 60 ms packets, the last one padded; nothing sends here, so the bounded queue dropped the oldest.
    assert uplink.pending() + uplink.dropped == -(-sent // 1920) and uplink.pending() == 40


def test_start_now_streams_from_this_block_whatever_the_endpointer_heard() -> None:
    utt, uplink, _clock = utterance()
    utt.start_now()
    for _ in utt.hear(bytes(BLOCK * 3)):  # 60 ms of silence: no onset, but it streams
        pass
    assert utt.sent == 3 * BLOCK and uplink.pending() == 1


def test_a_stop_with_nothing_streaming_credits_no_bytes() -> None:
    utt, _uplink, _clock = utterance()
    utt.start_now()
    utt.send(bytes(BLOCK * 3))
    assert utt.stop() == 3 * BLOCK
    assert utt.stop() == 0  # a second stop (a transcript after the end of speech) sends nothing more
