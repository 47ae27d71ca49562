"""The host's end of the serial link: open, shake hands, keep alive, and come back after an unplug.

`BridgeLink.run()` is a task that never ends by itself: it waits for the port, opens it without
resetting the board, exchanges HELLO, pings, and on any loss polls for the port again (every 0.1 s,
so a replugged board is back within a second). What the host wants shown (state, emotion, brightness,
lamp colour) is kept and re-sent after every handshake; between handshakes only the newest value of
each kind waits, so nothing queues up while the board is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import serial
from serial_asyncio_fast import SerialTransport

from firmware_bridge import protocol
from firmware_bridge.ports import PortFinder

log = logging.getLogger(__name__)
# The serial library logs a traceback at DEBUG whenever an unplugged port fails to close; for this link
# that is an ordinary disconnect, reported once as "bridge: lost …".
logging.getLogger("serial_asyncio_fast").setLevel(logging.INFO)

HELLO_RETRY_S = 0.25
HEARTBEAT_S = 1.0
TIMEOUT_S = 3.0
POLL_S = 0.1
WRITE_HIGH_WATER = 4096
NO_HELLO_WARN_S = 5.0
LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


class BridgeError(Exception):
    """The board cannot be used: wrong protocol version, port missing or busy (message for the user)."""


class _LinkLost(Exception):
    pass


class _QuietSerialTransport(SerialTransport):
    """A write error on an unplugged port is an ordinary disconnect: close, do not report a crash."""

    def _fatal_error(self, exc: BaseException, message: str = "") -> None:
        self._abort(exc)


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, link: BridgeLink) -> None:
        self.link = link
        self.lost = asyncio.Event()
        self.lost_reason: BaseException | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.link._on_bytes(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_reason = exc
        self.lost.set()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()
        self.link._schedule_flush()


def open_serial(path: str, baudrate: int) -> serial.Serial:
    """Open a serial port without toggling the ESP32's reset/boot lines.

    DTR and RTS are set low before open (pyserial then never raises them); on a pty pyserial ignores
    the ENOTTY that the modem-line ioctls give. `exclusive` keeps a second program (ModemManager, a
    second daemon) off the port.
    """
    port = serial.Serial()
    port.port = path
    port.baudrate = baudrate
    port.dtr = False
    port.rts = False
    port.exclusive = True
    port.open()
    return port


def describe_open_error(path: str, exc: BaseException) -> tuple[str, bool]:
    """A user-facing reason for a failed open, and whether it just means "not plugged in"."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return f"{path} is not there (unplugged?)", True
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return f"{path}: permission denied (add the user to the 'dialout' group)", False
    if "lock" in text:
        return f"{path} is in use by another program (a second daemon, a monitor, ModemManager?)", False
    return f"{path}: {text}", False


class BridgeLink:
    """The supervised serial link to one board.

    Setters (`set_state`, `set_emotion`, …) are cheap and may be called any time from the event loop;
    they take effect on the board as soon as it is connected. Callbacks run on the loop; an exception
    in one is logged and the link goes on. `trace(direction, message)` sees every frame ("->" to the
    board, "<-" from it), for monitors.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 921600,
        *,
        name: str = "companion",
        want_mic: bool = False,
        on_message: Callable[[protocol.Message], None] | None = None,
        on_status: Callable[[bool], None] | None = None,
        trace: Callable[[str, protocol.Message], None] | None = None,
        usb_ids: Iterable[tuple[int, int | None]] = (),
        heartbeat_s: float = HEARTBEAT_S,
        timeout_s: float = TIMEOUT_S,
        hello_retry_s: float = HELLO_RETRY_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.name = name
        self.want_mic = want_mic
        self.on_message = on_message
        self.on_status = on_status
        self.trace = trace
        self.usb_ids = list(usb_ids)
        self._finder = PortFinder(port, self.usb_ids)
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.hello_retry_s = hello_retry_s
        self.poll_s = poll_s
        self.board: protocol.Hello | None = None
        self.path: str | None = None
        self.error = ""
        self.connects = 0
        self.disconnects = 0
        self.superseded = 0
        self.mic_lost = 0
        self.decoder = protocol.Decoder()
        self._encoder = protocol.Encoder()
        self._current: dict[int, protocol.Message] = {}
        self._pending: dict[Any, protocol.Message] = {}
        self._ready = False
        self._awaiting_hello = False
        self._last_rx = 0.0
        self._transport: asyncio.Transport | None = None
        self._protocol: _LinkProtocol | None = None
        self._flush_scheduled = False
        self._status_changed = asyncio.Event()
        self._mic_block = -1
        self._logged: set[str] = set()

    # ------------------------------------------------------------ what the host wants shown
    @property
    def connected(self) -> bool:
        """True once the board has answered HELLO with our protocol version (until it is lost)."""
        return self._ready

    def set_state(self, state: str, voice: bool = False) -> None:
        """Show a device state (one of protocol.STATES); `voice` = voice detected right now."""
        self._want(protocol.State(protocol.state_index(state), voice), keep=True)

    def set_emotion(self, name: str, intensity: int = 100) -> None:
        """Tint the speaking animation with an emotion; a name outside the canonical 21 clears it."""
        self._want(protocol.Emotion(protocol.emotion_index(name), intensity), keep=True)

    def set_brightness(self, percent: int) -> None:
        """LED brightness 0..100."""
        self._want(protocol.Brightness(percent), keep=True)

    def set_color(self, r: int, g: int, b: int) -> None:
        """Lamp colour shown while idle; 0,0,0 turns it off."""
        self._want(protocol.Color(r, g, b), keep=True)

    def set_volume(self, percent: int) -> None:
        """Show a volume change (a short bar on the LEDs); not re-sent after a reconnect."""
        self._want(protocol.Volume(percent), keep=False)

    def send_pixels(self, start: int, rgb: bytes) -> None:
        """Raw RGB for pixels from `start` (custom layouts); the board shows them until the next state."""
        self._want(protocol.LedFrame(start, rgb), keep=False, key=(protocol.LED_FRAME, start))

    def request_repl(self) -> None:
        """Ask the firmware to stop and return to the MicroPython REPL (before flashing)."""
        self._want(protocol.Repl(), keep=False)

    def _want(self, message: protocol.Message, *, keep: bool, key: Any = None) -> None:
        key = message.TYPE if key is None else key
        if keep:
            self._current[message.TYPE] = message
        if key in self._pending:
            self.superseded += 1
        self._pending[key] = message
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_scheduled or not self._ready:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not running yet: the handshake sends everything
        self._flush_scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._ready or self._transport is None or self._protocol is None:
            return
        while self._pending and self._protocol.can_write.is_set():
            key = next(iter(self._pending))
            self._write(self._pending.pop(key))

    def _write(self, message: protocol.Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._encoder.encode(message))
            if self.trace is not None:
                self.trace("->", message)

    # ------------------------------------------------------------ the supervised task
    async def run(self) -> None:
        """Keep the link up forever; returns only by cancellation."""
        waiting_logged = False
        while True:
            path = None
            try:
                path = self._finder.resolve()
            except Exception as exc:  # a broken sysfs must not end the task
                self._log_once(f"cannot list serial ports: {exc}")
            if path is None:
                if not waiting_logged:
                    log.info("bridge: waiting for a board (%s)", self._port_label())
                    waiting_logged = True
                await asyncio.sleep(self.poll_s)
                continue
            try:
                port = open_serial(path, self.baudrate)  # O_NONBLOCK: never blocks the loop
            except Exception as exc:
                reason, absent = describe_open_error(path, exc)
                if absent:
                    if not waiting_logged:
                        log.info("bridge: waiting for %s", path)
                        waiting_logged = True
                    await asyncio.sleep(self.poll_s)
                else:
                    self.error = reason
                    self._log_once(reason)
                    self._set_status()
                    await asyncio.sleep(1.0)
                continue
            waiting_logged = False
            self.error = ""
            self.path = path
            try:
                await self._session(port)
            except _LinkLost as exc:
                log.warning("bridge: lost %s (%s)", path, exc)
            except Exception as exc:
                log.warning("bridge: %s failed: %r", path, exc)
            finally:
                await self._close()

    def _port_label(self) -> str:
        return "auto-detect by USB id" if self.port == "auto" else self.port

    async def _session(self, port: serial.Serial) -> None:
        loop = asyncio.get_running_loop()
        link_protocol = _LinkProtocol(self)
        transport = _QuietSerialTransport(loop, link_protocol, port)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._transport = transport
        self._protocol = link_protocol
        self.decoder.reset()
        self._mic_block = -1
        opened = time.monotonic()
        self._last_rx = opened
        transport.write(protocol.DELIMITER)  # ends whatever partial frame the board had
        self._send_hello(request=True)
        next_hello = opened + self.hello_retry_s
        next_ping = opened + self.heartbeat_s
        warned = False
        while True:
            now = time.monotonic()
            if link_protocol.lost.is_set():
                reason = link_protocol.lost_reason
                raise _LinkLost(str(reason) if reason else "port closed")
            if self._ready:
                if now - self._last_rx > self.timeout_s:
                    raise _LinkLost(f"no answer for {self.timeout_s:g} s")
                if now >= next_ping:
                    if link_protocol.can_write.is_set():
                        self._write(protocol.Ping(int(now * 1000)))
                    next_ping = now + self.heartbeat_s
                wake = min(next_ping, self._last_rx + self.timeout_s + 0.01)
            else:
                if now >= next_hello:
                    self._send_hello(request=True)
                    next_hello = now + (self.hello_retry_s if not self.error else NO_HELLO_WARN_S)
                if not warned and not self.error and now - opened > NO_HELLO_WARN_S:
                    log.warning(
                        "bridge: no HELLO from %s after %.0f s: is the bridge firmware flashed "
                        "(companion bridge flash --port %s)?",
                        self.path,
                        NO_HELLO_WARN_S,
                        self.path,
                    )
                    warned = True
                wake = next_hello
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wake - time.monotonic())):
                    await link_protocol.lost.wait()

    async def _close(self) -> None:
        # Every change a waiter can see (not ready, the disconnect counted, what the board showed
        # forgotten) happens before the first await, so nobody observes a half-closed link.
        was_ready = self._ready
        self._ready = False
        self._awaiting_hello = False
        self.board = None
        # What the board showed is gone with it: everything kept is re-sent after the next handshake.
        self._pending = {}
        if was_ready:
            self.disconnects += 1
            self._set_status()
        transport, link_protocol = self._transport, self._protocol
        self._transport = None
        self._protocol = None
        if transport is not None and link_protocol is not None:
            if not transport.is_closing():  # a read error already started closing it
                transport.abort()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await link_protocol.lost.wait()

    def _send_hello(self, request: bool) -> None:
        hello = protocol.Hello(
            self.name, mic=self.want_mic, mic_rate=protocol.MIC_RATE if self.want_mic else 0
        )
        hello.request = request
        if request:
            self._awaiting_hello = True
        self._write(hello)

    # ------------------------------------------------------------ from the board
    def _on_bytes(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        for message in self.decoder.feed(data):
            try:
                if self.trace is not None:
                    self.trace("<-", message)
                self._on_message(message)
            except Exception:
                log.exception("bridge: handling %s failed", message.NAME)

    def _on_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Hello):
            self._on_hello(message)
            return
        if isinstance(message, protocol.Ping):
            self._write(protocol.Pong(message.token))
        elif isinstance(message, protocol.Log):
            level = message.code if message.code in LOG_LEVELS else logging.INFO
            log.log(level, "board: %s", message.text)
        elif isinstance(message, protocol.Error):
            self._log_once(f"board reports: {message.text}", level=logging.ERROR)
        elif isinstance(message, protocol.MicAudio):
            if self._mic_block >= 0:
                self.mic_lost += (message.block - self._mic_block - 1) & 0xFFFF
            self._mic_block = message.block
        if self.on_message is not None and self._ready:
            self.on_message(message)

    def _on_hello(self, hello: protocol.Hello) -> None:
        if hello.version != protocol.VERSION:
            self._ready = False
            self.board = None
            self.error = (
                f"the board on {self.path} speaks bridge protocol v{hello.version} but this host speaks "
                f"v{protocol.VERSION}: update companion, or reflash the board with "
                f"`companion bridge flash --port {self.path}`"
            )
            self._log_once(self.error, level=logging.ERROR)
            self._set_status()
            return
        if hello.request:
            self._send_hello(request=False)  # the board (re)booted and wants to know who we are
        elif not self._awaiting_hello and self._ready:
            return  # a late answer to a HELLO retry
        self._awaiting_hello = False
        self.error = ""
        first = not self._ready
        self.board = hello
        self._ready = True
        if first:
            self.connects += 1
            log.info("bridge: %s on %s", hello.describe(), self.path)
            if self.want_mic and hello.mic and hello.mic_rate != protocol.MIC_RATE:
                self._log_once(
                    f"board microphone runs at {hello.mic_rate} Hz; MIC_AUDIO must be "
                    f"{protocol.MIC_RATE} Hz: its audio is ignored",
                    level=logging.ERROR,
                )
        # Fresh board state (a new connection or a reboot): show the truth again.
        for message in self._current.values():
            self._pending.setdefault(message.TYPE, message)
        self._set_status()
        self._schedule_flush()

    def _set_status(self) -> None:
        self._status_changed.set()
        self._status_changed = asyncio.Event()
        if self.on_status is not None:
            try:
                self.on_status(self._ready)
            except Exception:
                log.exception("bridge: status callback failed")

    def _log_once(self, text: str, level: int = logging.WARNING) -> None:
        if text in self._logged:
            log.debug("bridge: %s", text)
            return
        if len(self._logged) > 100:
            self._logged.clear()
        self._logged.add(text)
        log.log(level, "bridge: %s", text)

    async def wait_connected(self, timeout: float) -> protocol.Hello:
        """The board's HELLO once connected; TimeoutError after `timeout`, BridgeError on a version clash."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.error:
                raise BridgeError(self.error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._status_changed.wait()
        assert self.board is not None
        return self.board

    def stats(self) -> dict[str, int]:
        """Counters for logs and metrics: connects, frames dropped, superseded updates, lost mic blocks."""
        counters = self.decoder.counters()
        counters.update(
            connects=self.connects,
            disconnects=self.disconnects,
            superseded=self.superseded,
            mic_lost=self.mic_lost,
        )
        return counters


async def probe_hello(port: str, baudrate: int = 921600, timeout: float = 3.0) -> protocol.Hello:
    """Open the port, exchange HELLO, close; the board's HELLO (str() of it describes the board).

    Raises BridgeError for a protocol version clash and TimeoutError when no board answers.
    """
    link = BridgeLink(port, baudrate, name="companion-probe")
    task = asyncio.create_task(link.run(), name="bridge-probe")
    try:
        return await link.wait_connected(timeout)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
