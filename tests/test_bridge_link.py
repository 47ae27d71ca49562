"""The host link against the real emulator over ptys and socat: handshake, unplug/replug, the newest
state winning, reboots, version clashes, damaged input, and auto-detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import protocol as p
from firmware_bridge.emulator import AttachedPort, Emulator, PtyPort
from firmware_bridge.link import BridgeError, BridgeLink, open_serial, probe_hello
from firmware_bridge.ports import PortFinder, SerialPortInfo, by_id_names, find_board, parse_usb_id
from tests.peers.bridge_socat import SocatCable

needs_socat = pytest.mark.skipif(not SocatCable.available(), reason="socat is not installed")


@contextlib.asynccontextmanager
async def running(
    *runnables: Callable[[], Coroutine[Any, Any, Any]],
) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Run tasks for the block; cancel them after, and fail if one ended with an exception."""
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(run()) for run in runnables]
    try:
        yield tasks
        for task in tasks:
            assert not task.done() or task.cancelled() or task.exception() is None, task.exception()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LoopLag:
    """How late a 10 ms tick runs: the daemon's voice loop must keep turning whatever the bridge does."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - start - 0.01)


async def host_hello(fd: int, timeout: float = 2.0) -> p.Hello:
    """Read the board end of a cable until the host's HELLO arrives (a hand-written board)."""
    loop = asyncio.get_running_loop()
    decoder = p.Decoder()
    found: asyncio.Future[p.Hello] = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            for message in decoder.feed(os.read(fd, 4096)):
                if isinstance(message, p.Hello) and not found.done():
                    found.set_result(message)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(found, timeout)
    finally:
        loop.remove_reader(fd)


async def test_handshake_then_state_and_emotion_show_on_the_emulator(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"), leds=6)
    link = BridgeLink(str(tmp_path / "board"))
    link.set_brightness(40)
    link.set_state("listening", voice=True)
    async with running(emulator.run, link.run):
        board = await link.wait_connected(2.0)
        assert (board.name, board.led_count, board.button) == ("emulator", 6, True)
        view = await emulator.wait_for(lambda v: v.state == "listening", 1.0)
        assert view.voice and view.brightness == 40
        link.set_state("speaking")
        link.set_emotion("loving", 70)
        view = await emulator.wait_for(lambda v: v.state == "speaking" and v.emotion == "loving", 1.0)
        assert view.intensity == 70
        link.set_color(10, 20, 30)
        link.set_state("idle")
        await emulator.wait_for(lambda v: v.state == "idle" and v.lamp == (10, 20, 30), 1.0)
        assert emulator.pixels()[:3] == bytes([4, 8, 12])  # the lamp colour at 40 % brightness


@needs_socat
async def test_fifty_unplugs_the_emulator_shows_the_current_state_within_a_second_of_replug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
    cable = SocatCable(tmp_path)
    await cable.plug()
    emulator = Emulator(AttachedPort(cable.board), leds=4)
    link = BridgeLink(str(cable.host))
    lag = LoopLag()
    looks = [("listening", ""), ("speaking", "happy"), ("thinking", ""), ("speaking", "sad"), ("error", "")]
    slowest = 0.0
    async with running(emulator.run, link.run, lag.run) as tasks:
        await link.wait_connected(2.0)
        for cycle in range(50):
            state, emotion = looks[cycle % len(looks)]
            await cable.unplug()
            await emulator.wait_for(lambda v: not v.host_connected, 1.0)
            link.set_state(state)  # the daemon moves on while the board is away
            link.set_emotion(emotion or "neutral")
            await cable.plug()
            replugged = time.monotonic()
            wanted = (state, emotion or "neutral")
            await emulator.wait_for(lambda v: (v.state, v.emotion) == wanted, 1.0)  # noqa: B023
            slowest = max(slowest, time.monotonic() - replugged)
        assert not any(task.done() for task in tasks)
        assert link.connects == 51 and link.disconnects == 50
    await cable.unplug()
    assert slowest < 1.0
    assert emulator.boots == 51  # every replug was a fresh board
    assert lag.worst < 0.25, f"the event loop stalled for {lag.worst:.3f} s"
    assert not loop_errors, loop_errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert link.decoder.bad_crc == 0


async def test_only_the_newest_state_is_sent_after_the_board_comes_back(tmp_path: Path) -> None:
    sent: list[p.Message] = []
    path = tmp_path / "board"
    link = BridgeLink(str(path), trace=lambda direction, m: sent.append(m) if direction == "->" else None)
    for i in range(100):
        link.set_state(p.STATES[i % 8])
        link.set_emotion(p.EMOTIONS[i % 21])
    emulator = Emulator(PtyPort(path))
    async with running(link.run):
        await asyncio.sleep(0.3)  # the link polls for the missing port meanwhile
        async with running(emulator.run):
            await emulator.wait_for(lambda v: v.host_state == p.STATES[99 % 8], 1.0)
            await asyncio.sleep(0.1)
    states = [m for m in sent if isinstance(m, p.State)]
    emotions = [m for m in sent if isinstance(m, p.Emotion)]
    assert states == [p.State(p.state_index(p.STATES[99 % 8]))]
    assert emotions == [p.Emotion(p.emotion_index(p.EMOTIONS[99 % 21]))]
    assert link.superseded == 198


async def test_a_board_that_reboots_gets_the_state_again(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"))
    link = BridgeLink(str(tmp_path / "board"))
    link.set_state("speaking")
    link.set_emotion("cool")
    async with running(emulator.run, link.run):
        await emulator.wait_for(lambda v: v.state == "speaking", 1.0)
        emulator.reboot()
        assert emulator.view().state == "offline"
        await emulator.wait_for(lambda v: v.state == "speaking" and v.emotion == "cool", 1.0)
        assert link.connects == 1  # same port, same connection: only the board restarted


async def test_a_board_of_another_protocol_version_is_reported_clearly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"), version=2)
    link = BridgeLink(str(tmp_path / "board"))
    link.set_state("listening")
    async with running(emulator.run, link.run):
        with pytest.raises(BridgeError) as caught:
            await link.wait_connected(2.0)
        for _ in range(3):  # the board says HELLO again and again: the host complains once
            emulator.reboot()
            await asyncio.sleep(0.05)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors.count(f"bridge: {caught.value}") == 1
        with pytest.raises(BridgeError, match="in use by another program"):
            await probe_hello(str(tmp_path / "board"), timeout=2.0)  # the link holds the port
    async with running(emulator.run):
        with pytest.raises(BridgeError, match="speaks bridge protocol v2"):
            await probe_hello(str(tmp_path / "board"), timeout=2.0)
    message = str(caught.value)
    assert "speaks bridge protocol v2" in message and "this host speaks v1" in message
    assert "companion bridge flash" in message
    assert emulator.view().state == "offline"  # nothing was shown on a board we do not understand


async def test_probe_reads_the_boards_hello(tmp_path: Path) -> None:
    emulator = Emulator(PtyPort(tmp_path / "board"), name="probe-me", leds=3, mic=b"")
    async with running(emulator.run):
        hello = await probe_hello(str(tmp_path / "board"))
    assert str(hello) == "probe-me (protocol 1, 3 LEDs ws2812, button, mic 16000 Hz)"


@needs_socat
async def test_probe_times_out_when_nothing_answers(tmp_path: Path) -> None:
    async with SocatCable(tmp_path) as cable:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await probe_hello(str(cable.host), timeout=0.5)
        assert time.monotonic() - started < 1.5


@needs_socat
async def test_garbage_from_the_board_is_counted_and_the_handshake_still_happens(tmp_path: Path) -> None:
    async with SocatCable(tmp_path) as cable:
        link = BridgeLink(str(cable.host))
        async with running(link.run):
            fd = os.open(cable.board, os.O_RDWR | os.O_NOCTTY)
            try:
                assert (await host_hello(fd)).request
                os.write(fd, os.urandom(3000).replace(b"\x00", b"\x01") + b"\x00" + b"\x42\x00")
                os.write(fd, p.encode_frame(p.HELLO, 0, p.Hello("raw", 1, request=False).payload()))
                board = await link.wait_connected(2.0)
            finally:
                os.close(fd)
        assert board.name == "raw"
        assert link.decoder.oversize + link.decoder.bad_cobs + link.decoder.bad_length >= 2


@needs_socat
async def test_a_board_that_stops_answering_is_dropped_after_the_timeout_and_retried(tmp_path: Path) -> None:
    async with SocatCable(tmp_path) as cable:
        link = BridgeLink(str(cable.host), timeout_s=1.0, heartbeat_s=0.3)
        async with running(link.run):
            fd = os.open(cable.board, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                await host_hello(fd)
                os.write(fd, p.encode_frame(p.HELLO, 0, p.Hello("mute", 1).payload()))
                await link.wait_connected(2.0)
                connected_at = time.monotonic()
                while link.connected and time.monotonic() - connected_at < 3.0:
                    await asyncio.sleep(0.05)
                assert not link.connected
                assert 0.9 < time.monotonic() - connected_at < 2.0
                assert link.disconnects == 1
            finally:
                os.close(fd)


async def test_a_missing_port_is_waited_for_quietly_without_blocking_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="firmware_bridge")
    link = BridgeLink(str(tmp_path / "nothing-here"))
    lag = LoopLag()
    async with running(link.run, lag.run):
        await asyncio.sleep(0.6)
    waits = [r for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waits) == 1
    assert lag.worst < 0.1 and not link.connected


def test_serial_port_opens_with_dtr_and_rts_low_and_a_pty_is_accepted(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        port = open_serial(os.ttyname(slave), 921600)
        try:
            assert port.is_open and port.dtr is False and port.rts is False
        finally:
            port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_auto_detect_prefers_the_users_ids_then_espressif_and_names_ports_by_id(tmp_path: Path) -> None:
    by_id_dir = tmp_path / "by-id"
    by_id_dir.mkdir()
    devices = {name: tmp_path / name for name in ("ttyACM0", "ttyUSB0", "ttyUSB1", "ttyS0")}
    for device in devices.values():
        device.touch()
    (by_id_dir / "usb-Espressif_USB_JTAG_serial_debug_unit_AA:BB-if00").symlink_to(devices["ttyACM0"])
    ports = [
        SerialPortInfo(str(devices["ttyS0"])),
        SerialPortInfo(str(devices["ttyUSB1"]), 0x1234, 0x5678),  # the user's own adapter
        SerialPortInfo(str(devices["ttyUSB0"]), 0x10C4, 0xEA60),  # CP2102
        SerialPortInfo(str(devices["ttyACM0"]), 0x303A, 0x1001),  # ESP32-S3 native USB
    ]
    names = by_id_names(by_id_dir)
    assert find_board(ports, by_id=names) == [
        str(by_id_dir / "usb-Espressif_USB_JTAG_serial_debug_unit_AA:BB-if00"),
        str(devices["ttyUSB0"]),
    ]
    assert find_board(ports, [parse_usb_id("1234:5678")], names)[0] == str(devices["ttyUSB1"])
    assert find_board(ports[:1]) == []
    assert parse_usb_id("303A") == (0x303A, None)
    with pytest.raises(ValueError, match="VID:PID"):
        parse_usb_id("espressif")


def test_auto_detect_rescans_the_system_only_when_usb_serial_nodes_come_or_go(tmp_path: Path) -> None:
    finder = PortFinder("auto", dev=str(tmp_path))
    for _ in range(20):
        assert finder.resolve() is None
    assert finder.scans == 1  # an empty /dev is looked at once, not sysfs-scanned ten times a second
    (tmp_path / "ttyACM0").touch()
    finder.resolve()
    finder.resolve()
    assert finder.scans == 2
    (tmp_path / "ttyACM0").unlink()
    assert finder.resolve() is None and finder.scans == 3
    assert PortFinder("/dev/ttyX").resolve() == "/dev/ttyX"
