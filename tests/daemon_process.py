"""Running `companion` as a real subprocess in tests, reading its log lines as they come."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path


class DaemonProcess:
    """`python -m companion ARGS` with its stderr collected line by line."""

    def __init__(self, *args: str, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = dict(os.environ, STATE_DIRECTORY=str(state_dir), **(env or {}))
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> DaemonProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "companion", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()

    async def wait_for_line(self, needle: str, timeout: float = 20.0) -> str:
        """The first log line containing `needle` (waits for it)."""

        async def scan() -> str:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if needle in line:
                        return line
                seen = len(self.lines)
                self._new_line.clear()
                if self._reader is not None and self._reader.done():  # output closed: the process ended
                    raise AssertionError(f"daemon exited before logging {needle!r}:\n" + self.output())
                await asyncio.wait_for(self._new_line.wait(), timeout)

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise AssertionError(f"no log line with {needle!r} in {timeout} s:\n" + self.output()) from None

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"daemon did not exit in {timeout} s:\n" + self.output()) from None
        if self._reader is not None:
            await self._reader
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
