"""A serial cable that can be pulled: socat joins two ptys at stable paths; killing it is an unplug,
starting it again a replug (the paths come back, pointing at new ptys)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

READY = b"starting data transfer loop"


class SocatCable:
    """`host` is the end the daemon opens, `board` the end the emulator attaches to."""

    def __init__(self, directory: Path) -> None:
        self.host = directory / "host-end"
        self.board = directory / "board-end"
        self.process: asyncio.subprocess.Process | None = None
        self.plugs = 0

    @staticmethod
    def available() -> bool:
        """True when socat is installed."""
        return shutil.which("socat") is not None

    async def plug(self, timeout: float = 5.0) -> None:
        """Start socat and return once it has made both ends (it says so on stderr)."""
        assert self.process is None, "already plugged"
        self.process = await asyncio.create_subprocess_exec(
            "socat", "-d", "-d",
            f"PTY,link={self.host},raw,echo=0",
            f"PTY,link={self.board},raw,echo=0",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while READY not in await self.process.stderr.readline():
                pass
        self.plugs += 1

    async def unplug(self) -> None:
        """Kill socat (both ends vanish, like a pulled USB cable).

        SIGKILL leaves socat's symlinks behind, pointing at /dev/pts numbers that the next ptys may
        reuse (then one end would open the other's pty); udev removes /dev/serial/by-id links on a real
        unplug, so we remove them too.
        """
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        for link in (self.host, self.board):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()

    async def __aenter__(self) -> SocatCable:
        await self.plug()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unplug()
