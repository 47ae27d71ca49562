"""The hand-moved clock and the one-timer alarm the conversation's timeouts are built on."""

from __future__ import annotations

import asyncio
import time

from companion.daemon.clock import Alarm, LoopClock, ManualClock


def test_timers_fire_in_due_order_at_their_due_time() -> None:
    clock = ManualClock(start=10.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    clock.call_later(2.0, lambda: fired.append(("c", clock.now())))  # same time: in the order set
    clock.advance(1.5)
    assert fired == [("a", 11.0)] and clock.now() == 11.5
    clock.advance(0.5)
    assert fired == [("a", 11.0), ("b", 12.0), ("c", 12.0)]


def test_a_cancelled_timer_never_fires_and_a_timer_set_by_a_timer_can_fire_in_the_same_advance() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("cancelled")).cancel()

    def set_another() -> None:
        clock.call_later(1.0, lambda: fired.append("second"))

    clock.call_later(1.0, set_another)
    assert clock.pending() == 1
    clock.advance(5.0)
    assert fired == ["second"] and clock.pending() == 0


def test_wall_time_moves_with_monotonic_time() -> None:
    clock = ManualClock(start=5.0, wall_start=100.0)
    clock.advance(2.5)
    assert (clock.now(), clock.wall()) == (7.5, 102.5)


def test_setting_an_alarm_again_replaces_the_pending_one() -> None:
    clock = ManualClock()
    alarm = Alarm(clock)
    fired: list[str] = []
    alarm.set(15.0, lambda: fired.append("reply timeout"))
    alarm.set(8.0, lambda: fired.append("follow-up"))
    clock.advance(20.0)
    assert fired == ["follow-up"] and not alarm.pending
    alarm.set(1.0, lambda: fired.append("late"))
    alarm.cancel()
    clock.advance(2.0)
    assert fired == ["follow-up"]


async def test_the_loop_clock_runs_timers_on_the_event_loop() -> None:
    clock = LoopClock()
    done = asyncio.Event()
    start = clock.now()
    clock.call_later(0.01, done.set)
    await asyncio.wait_for(done.wait(), 1.0)
    assert clock.now() - start >= 0.005
    assert abs(clock.wall() - time.time()) < 1.0
