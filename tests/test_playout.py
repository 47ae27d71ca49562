"""The z_index sequencer: hand-picked cases and a property test over any arrival order, any
missing/duplicate set and any fetch latency or failure."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from companion.backends.playout import Decision, Finished, Play, Sequencer, Skip


def run(seq: Sequencer, now: float) -> list[Decision]:
    return seq.poll(now)


# ---------------------------------------------------------------------------- hand-picked cases


def test_index_zero_plays_as_soon_as_it_is_decodable_before_the_turn_ends() -> None:
    seq = Sequencer(max_wait_s=1.0)
    assert seq.announce(0, 0.0) == 0
    assert run(seq, 0.0) == []
    seq.ready(0)
    assert run(seq, 0.05) == [Play(0)]


def test_later_index_waits_for_the_earlier_one_to_finish() -> None:
    seq = Sequencer()
    seq.announce(1, 0.0)
    seq.announce(0, 0.0)
    seq.ready(1)
    seq.complete(1)
    assert run(seq, 0.1) == []
    seq.ready(0)
    assert run(seq, 0.2) == [Play(0)]
    seq.complete(0)
    seq.end_of_turn()
    assert run(seq, 0.3) == [Play(1), Finished(played=2, skipped=0)]


def test_missing_z_index_is_skipped_after_the_wait() -> None:
    seq = Sequencer(max_wait_s=1.0)
    for i in (0, 2):
        seq.announce(i, 0.0)
        seq.ready(i)
        seq.complete(i)
    assert run(seq, 0.0) == [Play(0)]
    assert seq.next_deadline() == 1.0
    assert run(seq, 0.99) == []
    decisions = run(seq, 1.0)
    assert decisions[0] == Skip(1, 1, "never sent (waited 1 s)")
    assert decisions[1:] == [Play(2)]


def test_a_run_of_missing_indices_is_skipped_after_one_wait() -> None:
    seq = Sequencer(max_wait_s=0.5)
    seq.announce(5, 0.0)
    seq.ready(5)
    assert run(seq, 0.0) == []
    assert run(seq, 0.5) == [Skip(0, 4, "never sent (waited 0.5 s)"), Play(5)]


def test_a_huge_z_index_does_not_make_a_huge_skip_list() -> None:
    seq = Sequencer(max_wait_s=0.0)
    seq.announce(10**9, 0.0)
    seq.ready(10**9)
    decisions = run(seq, 0.0)
    assert decisions == [Skip(0, 10**9 - 1, "never sent (waited 0 s)"), Play(10**9)]


def test_failed_download_is_skipped_at_once() -> None:
    seq = Sequencer(max_wait_s=5.0)
    seq.announce(0, 0.0)
    seq.announce(1, 0.0)
    seq.ready(1)
    seq.fail(0, "HTTP 404")
    assert run(seq, 0.1) == [Skip(0, 0, "HTTP 404"), Play(1)]


def test_duplicate_and_late_announcements_are_ignored() -> None:
    seq = Sequencer()
    assert seq.announce(0, 0.0) == 0
    assert seq.announce(0, 0.1) is None
    seq.ready(0)
    seq.complete(0)
    assert run(seq, 0.1) == [Play(0)]
    assert seq.announce(0, 0.2) is None
    assert seq.stats.duplicates == 1
    assert seq.stats.late == 1


def test_items_without_z_index_follow_arrival_order() -> None:
    seq = Sequencer()
    assert seq.announce(None, 0.0) == 0
    assert seq.announce(None, 0.0) == 1
    assert seq.announce(4, 0.0) == 4
    assert seq.announce(None, 0.0) == 5


def test_reply_without_speech_finishes_at_the_end_of_the_turn() -> None:
    seq = Sequencer()
    assert run(seq, 0.0) == []
    seq.end_of_turn()
    assert run(seq, 0.0) == [Finished(0, 0)]
    assert seq.announce(0, 0.1) is None


def test_a_download_that_fails_mid_play_moves_on_without_a_skip() -> None:
    seq = Sequencer()
    seq.announce(0, 0.0)
    seq.announce(1, 0.0)
    seq.ready(0)
    assert run(seq, 0.0) == [Play(0)]
    seq.ready(1)
    seq.fail(0, "timeout")
    assert run(seq, 0.1) == [Play(1)]


def test_flush_stops_everything_and_ignores_later_items() -> None:
    seq = Sequencer()
    seq.announce(0, 0.0)
    seq.ready(0)
    assert run(seq, 0.0) == [Play(0)]
    seq.flush()
    assert seq.current is None
    assert seq.announce(1, 0.1) is None
    assert run(seq, 0.2) == []


# ---------------------------------------------------------------------------- property test


@dataclass
class Item:
    index: int
    arrival: float
    first_audio: float  # seconds after arrival; inf = never
    finish: float  # seconds after arrival when complete or failed
    fails: bool


@dataclass
class Sim:
    """Drives a Sequencer like the backend does: poll after every input and at every deadline."""

    seq: Sequencer
    log: list[tuple[float, Decision]] = field(default_factory=list)
    ready_at: dict[int, float] = field(default_factory=dict)
    done_at: dict[int, float] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    announced_at: dict[int, float] = field(default_factory=dict)

    def poll(self, now: float) -> None:
        for decision in self.seq.poll(now):
            self.log.append((now, decision))
        deadline = self.seq.next_deadline()
        assert deadline is None or deadline > now, "a deadline in the past would make the driver spin"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Item], float, float]:
    n = draw(st.integers(0, 8))
    sent = [i for i in range(n) if draw(st.booleans()) or i == n - 1]
    dupes = draw(st.lists(st.sampled_from(sent), max_size=3)) if sent else []
    items: list[Item] = []
    for index in sent + dupes:
        fails = draw(st.integers(0, 5)) == 0
        first = draw(st.sampled_from([0.0, 0.01, 0.2, 0.7, 2.0]))
        items.append(
            Item(
                index=index,
                arrival=draw(st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.5, 3.0])),
                first_audio=float("inf") if fails and draw(st.booleans()) else first,
                finish=first + draw(st.sampled_from([0.0, 0.1, 1.0, 2.5])),
                fails=fails,
            )
        )
    end_extra = draw(st.sampled_from([0.0, 0.1, 2.0]))
    last_arrival = max((it.arrival for it in items), default=0.0)
    wait = draw(st.sampled_from([0.0, 0.25, 1.0]))
    return items, last_arrival + end_extra, wait


def simulate(items: list[Item], end_at: float, wait: float) -> Sim:
    sim = Sim(Sequencer(max_wait_s=wait))
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, item number)
    for number, item in enumerate(items):
        events.append((item.arrival, 0, "announce", number))
    events.append((end_at, 4, "end", -1))
    clock = 0.0
    while events:
        events.sort()
        deadline = sim.seq.next_deadline()
        if deadline is not None and deadline < events[0][0]:
            clock = max(clock, deadline)
            sim.poll(clock)
            continue
        clock, _, kind, number = events.pop(0)
        current = items[number] if number >= 0 else None
        if kind == "announce" and current is not None:
            index = sim.seq.announce(current.index, clock)
            if index is not None:
                sim.announced_at[index] = clock
                first = current.first_audio
                if first != float("inf") and (not current.fails or first < current.finish):
                    events.append((clock + first, 1, "ready", number))
                events.append((clock + current.finish, 2, "fail" if current.fails else "complete", number))
        elif kind == "ready" and current is not None:
            sim.seq.ready(current.index)
            sim.ready_at.setdefault(current.index, clock)
        elif kind == "complete" and current is not None:
            sim.seq.ready(current.index)
            sim.ready_at.setdefault(current.index, clock)
            sim.seq.complete(current.index)
            sim.done_at[current.index] = clock
        elif kind == "fail" and current is not None:
            sim.seq.fail(current.index, "failed")
            sim.failed.add(current.index)
            sim.done_at[current.index] = clock
        elif kind == "end":
            sim.seq.end_of_turn()
        sim.poll(clock)
    while (deadline := sim.seq.next_deadline()) is not None:
        clock = max(clock, deadline)
        sim.poll(clock)
    return sim


@settings(max_examples=600, deadline=None)
@given(scenarios())
def test_every_index_is_played_or_skipped_exactly_once_in_order(
    scenario: tuple[list[Item], float, float],
) -> None:
    items, end_at, wait = scenario
    sim = simulate(items, end_at, wait)
    decisions = [d for _, d in sim.log]
    finished = [d for d in decisions if isinstance(d, Finished)]
    assert len(finished) == 1 and decisions[-1] == finished[0]

    covered: list[int] = []
    for decision in decisions:
        if isinstance(decision, Play):
            covered.append(decision.index)
        elif isinstance(decision, Skip):
            covered.extend(range(decision.index, decision.last + 1))
    highest = max(sim.announced_at, default=-1)
    assert covered == list(range(highest + 1)), "each index once, in increasing order"

    sent = {it.index for it in items}
    for when, decision in sim.log:
        if isinstance(decision, Play):
            assert decision.index in sent
            assert sim.ready_at[decision.index] <= when, "plays only decodable audio"
        elif isinstance(decision, Skip):
            for index in range(decision.index, decision.last + 1):
                if index in sim.failed:
                    assert sim.done_at[index] <= when
                else:
                    arrivals = [it.arrival for it in items if it.index == index]
                    assert not arrivals or min(arrivals) >= when, "skipped only when failed or not yet sent"


@settings(max_examples=600, deadline=None)
@given(scenarios())
def test_nothing_waits_longer_than_it_must(scenario: tuple[list[Item], float, float]) -> None:
    """Each decision happens at the first moment the rules allow it: no needless silence."""
    items, end_at, wait = scenario
    sim = simulate(items, end_at, wait)
    previous_done = 0.0  # when the index before the cursor stopped holding playback
    for when, decision in sim.log:
        if isinstance(decision, Play):
            earliest = max(previous_done, sim.ready_at[decision.index])
            assert when == earliest
            previous_done = max(when, sim.done_at.get(decision.index, float("inf")))
        elif isinstance(decision, Skip):
            if decision.index in sim.failed:
                assert when == max(previous_done, sim.done_at[decision.index])
            else:
                # a gap: waited exactly max_wait from when it started blocking
                later = min(t for i, t in sim.announced_at.items() if i > decision.last)
                blocked = max(previous_done, later)
                assert when == blocked + wait
            previous_done = when
