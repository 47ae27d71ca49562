"""sd_notify, the watchdog and credentials, against a real AF_UNIX datagram socket like systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.errors import ConfigError
from companion.service.logsetup import forget_secrets, redact
from companion.service.notify import Notifier, Watchdog, read_secret, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for the service manager's notify socket."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_and_stopping_arrive_as_key_value_lines(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier(path)
    assert notifier.ready("connected to xiaozhi")
    assert receive(sock) == ["READY=1", "STATUS=connected to xiaozhi"]
    assert notifier.status("listening\nfor speech")
    assert receive(sock) == ["STATUS=listening for speech"]
    assert notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]
    assert notifier.reloading()
    lines = receive(sock)
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    notifier.close()


def test_abstract_namespace_socket_is_reached() -> None:
    name = f"companion-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert Notifier("@" + name).ready()
        assert receive(sock) == ["READY=1"]


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_a_vanished_notify_socket_is_reported_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert sum("cannot notify" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # inherited from someone else
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_and_only_for_our_pid(
    env: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(env, pid=4242) == interval


async def test_watchdog_pings_only_while_healthy(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    healthy = False
    checks = 0
    checked = asyncio.Event()

    def health() -> bool:
        nonlocal checks
        checks += 1
        checked.set()
        return healthy

    dog = Watchdog(health, Notifier(path), interval=0.01)
    task = asyncio.create_task(dog.run())
    try:
        while checks < 3:
            checked.clear()
            await asyncio.wait_for(checked.wait(), 2)
        with pytest.raises(BlockingIOError):
            sock.recv(64)  # three failed checks, no ping
        assert dog.withheld >= 3 and dog.pings == 0
        healthy = True
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(sock, 64), 2)
        assert data == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_health_check_that_raises_counts_as_unhealthy(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    calls = asyncio.Event()

    def broken() -> bool:
        calls.set()
        raise RuntimeError("capture thread died")

    dog = Watchdog(broken, Notifier(path), interval=0.01)
    task = asyncio.create_task(dog.run())
    await asyncio.wait_for(calls.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(BlockingIOError):
        sock.recv(64)


async def test_watchdog_without_systemd_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    dog = Watchdog(lambda: True)
    assert not dog.enabled
    await asyncio.wait_for(dog.run(), 1)


# ---------------------------------------------------------------------------------------- credentials


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def test_credential_file_wins_over_environment_and_loses_its_newline(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "xiaozhi-token").write_text("tok-from-systemd-123\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "COMPANION_XIAOZHI_TOKEN": "tok-from-env-456"}
    assert read_secret("xiaozhi-token", env=env) == "tok-from-systemd-123"


def test_environment_is_used_when_no_credential_exists(tmp_path: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "COMPANION_MINDCRAFT_KEY": "MC-" + "AB12" * 8}
    assert read_secret("mindcraft-key", env=env) == "MC-" + "AB12" * 8
    assert read_secret("mindcraft-key", "OTHER_VAR", env={}) is None


def test_a_secret_read_is_masked_in_logs_even_without_a_telltale_name(tmp_path: Path) -> None:
    (tmp_path / "xiaozhi-token").write_text("plainvalue-9f8e7d")
    read_secret("xiaozhi-token", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert redact("sent plainvalue-9f8e7d to the server") == "sent *** to the server"


def test_an_unreadable_credential_names_the_file_not_the_value(tmp_path: Path) -> None:
    (tmp_path / "xiaozhi-token").mkdir()  # unreadable as a file, even for root
    with pytest.raises(ConfigError, match="xiaozhi-token: cannot read"):
        read_secret("xiaozhi-token", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_a_binary_credential_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "xiaozhi-token").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_secret("xiaozhi-token", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
