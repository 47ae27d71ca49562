"""The one reconnect loop every backend and the OTA check use: what is news, what is a repeat, how long it
waits, and that stop and cancellation end it at once."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from companion.backends.reconnect import AuthFailed, ChannelLost, Down, ReconnectLoop
from companion.errors import ConfigError
from companion.net.backoff import Backoff

log = logging.getLogger("test.reconnect")


class Channel:
    """A scripted channel: each attempt pops the next outcome (a reason, an exception, or 'ready')."""

    def __init__(self, loop: ReconnectLoop, script: list[object]) -> None:
        self.loop = loop
        self.script = script
        self.ready = False
        self.attempts = 0
        self.closed = 0
        self.downs: list[Down] = []

    async def serve(self) -> str | None:
        self.attempts += 1
        if not self.script:
            self.loop.stop()
            return "script over"
        step = self.script.pop(0)
        if step == "ready":
            self.ready = True
            return "server closed"
        if isinstance(step, BaseException):
            raise step
        return str(step)

    def take_ready(self) -> bool:
        was, self.ready = self.ready, False
        return was

    async def close(self) -> None:
        self.closed += 1


def quick_backoff() -> Backoff:
    return Backoff(initial=0.001, cap=0.004, rng=random.Random(1))


def make(script: list[object], **kwargs: object) -> tuple[ReconnectLoop, Channel]:
    downs: list[Down] = []
    holder: dict[str, Channel] = {}

    def on_down(down: Down) -> float | None:
        downs.append(down)
        return None

    loop = ReconnectLoop(
        "test channel down",
        kwargs.pop("backoff", None) or quick_backoff(),  # type: ignore[arg-type]
        log=log,
        describe=lambda exc: f"unexpected {type(exc).__name__}",
        on_down=kwargs.pop("on_down", None) or on_down,  # type: ignore[arg-type]
        close_attempt=lambda: holder["channel"].close(),
    )
    channel = Channel(loop, script)
    channel.downs = downs
    holder["channel"] = channel
    return loop, channel


async def test_a_repeated_failure_is_news_once_then_a_reminder_every_tenth_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.reconnect")
    loop, channel = make([ChannelLost("refused")] * 21)
    await asyncio.wait_for(loop.run(channel.serve, take_ready=channel.take_ready), 5)
    refused = [d for d in channel.downs if d.reason == "refused"]
    assert len(refused) == 21 and [d.news for d in refused] == [True] + [False] * 20
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()
    ]
    assert len(warnings) == 3  # the first, then attempts 10 and 20
    assert "(attempt 10)" in warnings[1] and "(attempt 20)" in warnings[2]
    assert channel.closed == channel.attempts  # every attempt is closed, however it ended


async def test_a_healthy_session_makes_the_next_loss_news_and_resets_the_backoff() -> None:
    backoff = quick_backoff()
    loop, channel = make(["refused", "refused", "refused", "ready", "refused"], backoff=backoff)
    await asyncio.wait_for(loop.run(channel.serve, take_ready=channel.take_ready), 5)
    reasons = [(d.reason, d.was_ready, d.news) for d in channel.downs[:5]]
    assert reasons == [
        ("refused", False, True),
        ("refused", False, False),
        ("refused", False, False),
        ("server closed", True, True),
        ("refused", False, True),
    ]
    assert backoff.attempt == 2  # reset by the healthy session: one delay after it, one after the refusal


async def test_a_planned_reconnect_is_immediate_and_keeps_the_backoff() -> None:
    backoff = Backoff(initial=30.0, cap=60.0)  # any real wait would time the test out
    plans = [True]
    loop, channel = make(["ready"], backoff=backoff)
    await asyncio.wait_for(
        loop.run(channel.serve, take_ready=channel.take_ready, planned=lambda: bool(plans and plans.pop())), 2
    )
    assert channel.downs[0].planned and backoff.attempt == 0


async def test_a_delay_chosen_by_the_backend_replaces_the_backoff_and_stop_cuts_it_short() -> None:
    loop, channel = make([AuthFailed("key refused")], on_down=lambda down: 3600.0)
    task = asyncio.create_task(loop.run(channel.serve, take_ready=channel.take_ready))
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting the hour the backend asked for
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert channel.attempts == 1


async def test_auth_failures_are_errors_and_unexpected_exceptions_are_described(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.reconnect")
    loop, channel = make([AuthFailed("key refused"), KeyError("x")])
    await asyncio.wait_for(loop.run(channel.serve, take_ready=channel.take_ready), 5)
    assert [(d.reason, d.auth_failed) for d in channel.downs[:2]] == [
        ("key refused", True),
        ("unexpected KeyError", False),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "key refused" in errors[0]


async def test_a_config_error_ends_the_loop_instead_of_being_retried() -> None:
    loop, channel = make([ConfigError("bad url")])
    with pytest.raises(ConfigError):
        await asyncio.wait_for(loop.run(channel.serve, take_ready=channel.take_ready), 2)
    assert channel.attempts == 1 and channel.closed == 1


async def test_cancellation_marks_the_channel_down_and_closes_it_before_passing_on() -> None:
    started = asyncio.Event()
    loop, channel = make([])

    async def serve_forever() -> str:
        channel.ready = True
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(loop.run(serve_forever, take_ready=channel.take_ready))
    await asyncio.wait_for(started.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not channel.ready and channel.closed == 1


async def test_first_success_retries_until_the_attempt_succeeds_reporting_the_cause_once() -> None:
    downs: list[Down] = []

    def on_down(down: Down) -> None:
        downs.append(down)

    loop = ReconnectLoop("OTA check failed", quick_backoff(), log=log, describe=str, on_down=on_down)
    outcomes: list[object] = [ChannelLost("unreachable"), ChannelLost("unreachable"), "reply"]

    async def attempt() -> str:
        step = outcomes.pop(0)
        if isinstance(step, Exception):
            raise step
        return str(step)

    assert await asyncio.wait_for(loop.first_success(attempt, errors=(ChannelLost,)), 2) == "reply"
    assert [d.news for d in downs] == [True, False]


def test_backoff_doubles_up_to_the_cap_within_its_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8, 8, 8], strict=True):
        assert base * 0.5 <= delay <= base
    backoff.reset()
    assert backoff.next_delay() <= 1.0
