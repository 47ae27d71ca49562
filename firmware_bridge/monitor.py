"""Watching the link: decoded frames, both ways, one line each.

Two ways: be the host yourself (`watch_as_host`: HELLO, pings, optional state to show), or sit between
a running host and the board (`tap`: a pty for the host, the real port for the board, every byte
forwarded and decoded on the way).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

from firmware_bridge import protocol
from firmware_bridge.emulator import PtyPort
from firmware_bridge.link import BridgeLink, open_serial

TO_BOARD = "->"
FROM_BOARD = "<-"


def describe(message: protocol.Message) -> str:
    """A message in words: names instead of wire indexes."""
    if isinstance(message, protocol.Hello):
        text = f"HELLO {message.describe()}"
        return text + (" request" if message.request else "")
    if isinstance(message, protocol.State):
        return f"STATE {protocol.state_name(message.state)}" + (" voice" if message.voice else "")
    if isinstance(message, protocol.Emotion):
        name = protocol.emotion_name(message.emotion) or "none"
        return f"EMOTION {name} intensity={message.intensity}"
    if isinstance(message, protocol.Button):
        return f"BUTTON {message.kind_name()}"
    if isinstance(message, protocol.MicAudio):
        return f"MIC_AUDIO block={message.block} {len(message.pcm) // 2} samples"
    if isinstance(message, protocol.LedFrame):
        return f"LED_FRAME start={message.start} {len(message.rgb) // 3} pixels"
    if isinstance(message, protocol.Log | protocol.Error):
        return f"{message.NAME} {message.code} {message.text}"
    if isinstance(message, protocol.Volume | protocol.Brightness):
        return f"{message.NAME} {message.percent}%"
    return repr(message)


def format_line(direction: str, message: protocol.Message, started: float) -> str:
    """`  1.234 -> STATE listening  (seq 5)`."""
    return f"{time.monotonic() - started:8.3f} {direction} {describe(message)}  (seq {message.seq})"


class Printer:
    """Prints frames; MIC_AUDIO is summarised once a second unless `audio` is set."""

    def __init__(self, emit: Callable[[str], None], audio: bool = False) -> None:
        self.emit = emit
        self.audio = audio
        self.started = time.monotonic()
        self._mic_blocks = 0
        self._mic_since = self.started

    def __call__(self, direction: str, message: protocol.Message) -> None:
        if isinstance(message, protocol.MicAudio) and not self.audio:
            self._mic_blocks += 1
            now = time.monotonic()
            if now - self._mic_since >= 1.0:
                elapsed = now - self.started
                self.emit(f"{elapsed:8.3f} {direction} MIC_AUDIO x{self._mic_blocks} in the last second")
                self._mic_blocks = 0
                self._mic_since = now
            return
        self.emit(format_line(direction, message, self.started))


async def watch_as_host(
    port: str,
    baudrate: int,
    printer: Printer,
    *,
    state: str | None = None,
    emotion: str | None = None,
    brightness: int | None = None,
    want_mic: bool = False,
    seconds: float | None = None,
) -> dict[str, int]:
    """Act as the host (handshake, pings, optional things to show) and print every frame; returns
    the link counters when `seconds` have passed (or on cancellation)."""
    link = BridgeLink(port, baudrate, name="companion-monitor", want_mic=want_mic, trace=printer)
    if brightness is not None:
        link.set_brightness(brightness)
    if state is not None:
        link.set_state(state)
    if emotion is not None:
        link.set_emotion(emotion)
    task = asyncio.create_task(link.run(), name="monitor-link")
    try:
        if seconds is None:
            await task
        else:
            await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return link.stats()


async def tap(
    port: str, baudrate: int, link_path: str, printer: Printer, seconds: float | None = None
) -> None:
    """Forward bytes between a pty at `link_path` (give it to the host) and the board on `port`,
    printing what passes in both directions."""
    loop = asyncio.get_running_loop()
    host_side = PtyPort(link_path)
    host_fd = host_side.open()
    board = open_serial(port, baudrate)
    board_fd = board.fileno()
    to_board = protocol.Decoder()
    from_board = protocol.Decoder()
    done = asyncio.Event()

    def pump(src: int, dst: int, decoder: protocol.Decoder, direction: str) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        except OSError:
            done.set()
            return
        if not data:
            done.set()
            return
        with contextlib.suppress(BlockingIOError):
            os.write(dst, data)
        for message in decoder.feed(data):
            printer(direction, message)

    loop.add_reader(host_fd, pump, host_fd, board_fd, to_board, TO_BOARD)
    loop.add_reader(board_fd, pump, board_fd, host_fd, from_board, FROM_BOARD)
    printer.emit(f"tap: give the host {link_path}; the board is on {port}")
    try:
        if seconds is None:
            await done.wait()
        else:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await done.wait()
    finally:
        loop.remove_reader(host_fd)
        loop.remove_reader(board_fd)
        board.close()
        host_side.close()
