"""The supervisor of the daemon's parts: failures restarted with backoff and said once, recovery said
once, and a configuration error ends the daemon instead of being retried."""

from __future__ import annotations

import asyncio
import logging

import pytest

from companion.daemon.supervisor import Supervisor
from companion.errors import AudioDeviceError, ConfigError


async def test_a_failing_part_is_restarted_said_once_and_its_recovery_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    downs: list[tuple[str, str]] = []
    ups: list[str] = []
    supervisor = Supervisor(on_fatal=lambda exc: None, on_down=lambda *d: downs.append(d), on_up=ups.append,
                            cap_s=0.01)  # fmt: skip
    attempts = 0
    working = asyncio.Event()

    async def microphone() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 5:
            raise AudioDeviceError("input device 'USB' stopped delivering audio")
        supervisor.up("microphone")
        working.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.DEBUG, logger="companion.daemon.supervisor"):
        task = asyncio.create_task(supervisor.run("microphone", microphone))
        await asyncio.wait_for(working.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert downs == [("microphone", "input device 'USB' stopped delivering audio")] and ups == ["microphone"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info  # a user's error: no traceback
    assert supervisor.restarts["microphone"] == 5 and supervisor.down == {}


async def test_a_configuration_error_is_fatal_not_retried() -> None:
    fatal: list[ConfigError] = []
    supervisor = Supervisor(on_fatal=fatal.append, cap_s=0.01)

    async def bridge() -> None:
        raise ConfigError("bridge.port: /dev/ttyUSB9 is not a serial port")

    await asyncio.wait_for(supervisor.run("bridge", bridge), 2)
    assert [str(e) for e in fatal] == ["bridge.port: /dev/ttyUSB9 is not a serial port"]
    assert supervisor.restarts == {}


async def test_a_bug_in_a_part_is_logged_with_its_traceback_once_and_the_part_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(on_fatal=lambda exc: None, cap_s=0.01)
    calls = 0
    running = asyncio.Event()

    async def part() -> None:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise KeyError("oops")
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervisor.run("conversation", part))
    await asyncio.wait_for(running.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
