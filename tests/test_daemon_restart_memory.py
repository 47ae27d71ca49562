"""A restart asked by the agent (`self.reboot`) frees the old runtime before the new one runs.

The old parts hold reference cycles (tasks, callbacks, listeners). Left to the cyclic collector they
linger until a rare full collection, and the heap of a daemon restarted often climbs by tens of MB
(`python -m bench.faults restarts` measures it). Automatic collection is turned off in this test, so
only the daemon's own collection can free the old runtime.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.cli import daemon
from companion.config import Settings, load_settings
from companion.daemon.runtime import Runtime
from tests.peers.xiaozhi_echo import EchoPeer


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def test_the_old_runtime_is_freed_when_the_agent_restarts_the_daemon(
    speech_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_automatic_gc: None
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    built: list[weakref.ref[Runtime]] = []

    class WatchedRuntime(Runtime):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            built.append(weakref.ref(self))

    monkeypatch.setattr(daemon, "Runtime", WatchedRuntime)
    async with EchoPeer(port=0) as server:

        def settings() -> Settings:
            return load_settings(
                None,
                [
                    f'xiaozhi.websocket_url="{server.websocket_url}"',
                    "telemetry.enabled=false",
                    f'audio.output="{tmp_path / "out.wav"}"',
                    f'audio.input="{speech_wav}"',
                    "backend.trigger=button",
                ],
            )

        def live_sessions() -> int:
            return sum(1 for r in server.records if r.mcp_initialized and not r.closed)

        task = asyncio.create_task(daemon._run(settings(), None, settings))
        try:
            await server.wait_until(lambda: live_sessions() == 1, 15)
            await server.call_tool("self.reboot", {})
            await server.wait_until(lambda: len(built) == 2 and live_sessions() == 1, 15)
            assert built[0]() is None, "the first runtime is still alive after the restart"
            assert built[1]() is not None
        finally:
            current = built[-1]()
            if current is not None:
                current.stop()
            await asyncio.wait_for(task, 10)
