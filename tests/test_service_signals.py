"""SIGTERM and SIGHUP in a real child process: clean stop within 2 s, a hard deadline when the stop
hangs, a reload on SIGHUP, and the matching notifications to the service manager."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.service.notify import EX_SHUTDOWN_STUCK, SHUTDOWN_GRACE_S

CHILD = """
import asyncio, sys
from companion.service.notify import SignalHandlers

mode = sys.argv[1]

async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_term():
        print("term", flush=True)
        if mode == "clean":
            stop.set()

    async def on_hup():
        print("hup", flush=True)

    handlers = SignalHandlers(loop, on_term, on_hup).install()
    print("ready", flush=True)
    await stop.wait()
    handlers.remove()
    print("bye", flush=True)

asyncio.run(main())
"""


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(3.0)
    yield sock, path
    sock.close()


def start(mode: str, notify_path: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    env.pop("INVOCATION_ID", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert read_line(proc) == "ready"
    return proc


def read_line(proc: subprocess.Popen[str], timeout: float = 5.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child printed nothing in time"
    return proc.stdout.readline().strip()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=5)


def test_sigterm_stops_cleanly_well_within_two_seconds(notify: tuple[socket.socket, str]) -> None:
    sock, path = notify
    proc = start("clean", path)
    try:
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SHUTDOWN_GRACE_S) == 0
        assert time.monotonic() - sent < SHUTDOWN_GRACE_S
        assert read_line(proc) == "term"
        assert read_line(proc) == "bye"
        assert sock.recv(256).decode().split("\n")[0] == "STOPPING=1"
    finally:
        stop(proc)


def test_a_hung_shutdown_is_cut_off_at_the_deadline(notify: tuple[socket.socket, str]) -> None:
    _, path = notify
    proc = start("stuck", path)
    try:
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=SHUTDOWN_GRACE_S + 3)
        elapsed = time.monotonic() - sent
        assert code == EX_SHUTDOWN_STUCK
        assert SHUTDOWN_GRACE_S - 0.1 <= elapsed < SHUTDOWN_GRACE_S + 1.5
        _, err = proc.communicate(timeout=5)
        assert "did not finish within 2.0 s" in err
    finally:
        stop(proc)


def test_a_second_sigterm_exits_at_once(notify: tuple[socket.socket, str]) -> None:
    _, path = notify
    proc = start("stuck", path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert read_line(proc) == "term"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SHUTDOWN_GRACE_S) == EX_SHUTDOWN_STUCK
        assert time.monotonic() - sent < 1.0
    finally:
        stop(proc)


def test_sighup_reloads_and_tells_the_manager(notify: tuple[socket.socket, str]) -> None:
    sock, path = notify
    proc = start("clean", path)
    try:
        proc.send_signal(signal.SIGHUP)
        assert read_line(proc) == "hup"
        assert sock.recv(256).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert sock.recv(256).decode().split("\n")[0] == "READY=1"
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SHUTDOWN_GRACE_S) == 0
    finally:
        stop(proc)
