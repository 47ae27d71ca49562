"""The speaker's jitter buffer: gapless, ordered, pre-buffered, flushable (property-based)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.audio.jitter import JitterBuffer

chunks = st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=40)


def ramp(start: int, n: int) -> np.ndarray:
    return (np.arange(start, start + n) % 30000 + 1).astype(np.int16)


@given(sizes=chunks, block=st.integers(min_value=1, max_value=500), prebuffer=st.integers(0, 2000))
@settings(max_examples=200, deadline=None)
def test_everything_pushed_plays_once_in_order_without_gaps(
    sizes: list[int], block: int, prebuffer: int
) -> None:
    buf = JitterBuffer(capacity=50_000, prebuffer=prebuffer)
    pos = 0
    for n in sizes:
        assert buf.push(ramp(pos, n)) == n
        pos += n
    buf.end_of_stream()
    drained = []
    buf.on_drained = lambda: drained.append(True)
    played: list[np.ndarray] = []
    out = np.zeros(block, dtype=np.int16)
    for _ in range(pos // block + 3):
        n = buf.pull(out)
        played.append(out[:n].copy())
        if drained:
            break
    audio = np.concatenate(played)
    assert np.array_equal(audio, ramp(0, pos))
    assert drained == [True]
    assert buf.underruns == 0


@given(first=st.integers(1, 5000), prebuffer=st.integers(1, 5000))
@settings(max_examples=100, deadline=None)
def test_nothing_plays_before_the_prebuffer_fills_unless_the_stream_ended(first: int, prebuffer: int) -> None:
    buf = JitterBuffer(capacity=20_000, prebuffer=prebuffer)
    buf.push(ramp(0, first))
    out = np.zeros(64, dtype=np.int16)
    n = buf.pull(out)
    assert (n > 0) == (first >= prebuffer)
    if n == 0:
        buf.end_of_stream()
        assert buf.pull(out) == min(64, first)


def test_flush_drops_unplayed_audio_at_the_next_pull_and_signals_drained() -> None:
    buf = JitterBuffer(capacity=10_000, prebuffer=0)
    drained = []
    buf.on_drained = lambda: drained.append(True)
    buf.push(ramp(0, 5000))
    out = np.zeros(100, dtype=np.int16)
    assert buf.pull(out) == 100
    buf.flush()
    assert buf.pull(out) == 0
    assert not out.any()
    assert drained == [True]
    assert buf.buffered() == 0


def test_an_underrun_is_a_gap_inside_a_reply_counted_when_audio_resumes() -> None:
    buf = JitterBuffer(capacity=10_000, prebuffer=100)
    buf.push(ramp(0, 150))
    out = np.zeros(100, dtype=np.int16)
    buf.pull(out)
    buf.pull(out)  # ran dry: a gap, or the end of the reply before its tts stop?
    assert buf.underruns == 0
    buf.push(ramp(150, 300))  # more audio: it was a gap
    assert buf.underruns == 1


def test_a_reply_whose_end_is_announced_after_it_ran_dry_has_no_underrun() -> None:
    """Real servers send `tts stop` ~0.4 s after the last packet: the buffer is empty by then."""
    buf = JitterBuffer(capacity=10_000, prebuffer=100)
    buf.push(ramp(0, 150))
    out = np.zeros(100, dtype=np.int16)
    buf.pull(out)
    buf.pull(out)
    buf.end_of_stream()
    buf.pull(out)
    buf.reset_stream()
    buf.push(ramp(0, 150))  # the next reply
    assert buf.underruns == 0


@given(sizes=chunks)
@settings(max_examples=50, deadline=None)
def test_a_full_ring_takes_only_what_fits(sizes: list[int]) -> None:
    buf = JitterBuffer(capacity=1000, prebuffer=0)
    taken = sum(buf.push(ramp(0, n)) for n in sizes)
    assert taken == min(1000, sum(sizes))
    assert buf.free() == 1000 - taken


def test_latency_is_measured_from_push_to_hand_off() -> None:
    now = [10.0]
    buf = JitterBuffer(capacity=10_000, prebuffer=0, clock=lambda: now[0])
    buf.push(ramp(0, 480))
    now[0] = 10.025
    buf.pull(np.zeros(240, dtype=np.int16))
    assert buf.latency_count == 1
    assert abs(buf.latencies[0] - 0.025) < 1e-9


def test_a_flush_from_the_loop_while_the_audio_thread_pulls_never_breaks_the_reader() -> None:
    """flush() runs on the event loop while the PortAudio thread measures latency from the same marks;
    an exception in the callback would abort the stream and leave later replies on a dead one."""
    import sys
    import threading
    import time

    buffer = JitterBuffer(capacity=48000, prebuffer=0, latency_slots=8192)
    buffer.rate = 24000
    errors: list[BaseException] = []
    stop = threading.Event()

    def audio_thread() -> None:
        out = np.zeros(4800, dtype=np.int16)  # a large block: many marks measured per pull
        try:
            while not stop.is_set():
                buffer.pull(out)
        except BaseException as exc:  # what PortAudio's callback would die of
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the two threads as finely as the interpreter allows
    reader = threading.Thread(target=audio_thread)
    reader.start()
    try:
        chunk = np.ones(2, dtype=np.int16)  # tiny pushes: one mark each
        deadline = time.monotonic() + 4.0
        i = 0
        while time.monotonic() < deadline and not errors:
            buffer.push(chunk)
            if i % 500 == 0:
                buffer.flush()
            i += 1
    finally:
        stop.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert buffer.latency_count > 0  # the reader really was measuring all along
