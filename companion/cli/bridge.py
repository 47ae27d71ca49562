"""`companion bridge emulate|flash|monitor`: the ESP32 serial bridge without the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import EX_UNAVAILABLE, CompanionError, ConfigError

F = TypeVar("F", bound=Callable[..., Any])
BOARD_PRESETS = ("esp32s3-devkitc", "esp32-devkitc", "esp32c3-devkitm", "atoms3-lite")


class BridgeUnavailable(CompanionError):
    """The serial port or a tool the command needs is missing."""

    exit_code = EX_UNAVAILABLE


def _setup_logging(debug: bool) -> None:
    from ..service.logsetup import setup_logging

    setup_logging("debug" if debug else "info", debug=debug, excepthook=False)


def _pins(text: str | None, count: int, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        pins = tuple(int(part) for part in text.split(","))
    except ValueError:
        pins = ()
    if len(pins) != count:
        raise ConfigError(f"{option}: expected {count} comma-separated GPIO numbers, got {text!r}")
    return pins


def _tty_path_option(*param_decls: str, help: str) -> Callable[[F], F]:
    """An option naming a tty or pty by its path (a file, never a directory)."""
    return click.option(*param_decls, type=click.Path(dir_okay=False), help=help)


@click.group()
def bridge() -> None:
    """The ESP32 serial bridge: try it without hardware, flash a board, watch the link."""


@bridge.command()
@_tty_path_option(
    "--link",
    "link_path",
    help="stable path of the emulator's pty (default $XDG_RUNTIME_DIR/companion-bridge)",
)
@_tty_path_option(
    "--attach", help="use this existing tty as the board's end instead (e.g. one side of a socat pair)"
)
@click.option("--leds", default=12, show_default=True, type=click.IntRange(1, 340), help="number of LEDs")
@click.option("--name", default="emulator", show_default=True, help="board name sent in HELLO")
@click.option(
    "--mic",
    "mic_wav",
    type=click.Path(exists=True, dir_okay=False),
    help="a WAV file streamed as MIC_AUDIO in real time once a host asks for the microphone",
)
@click.option("--mic-loop", is_flag=True, help="repeat the WAV instead of going silent at its end")
@click.option("--no-button", is_flag=True, help="emulate a board without a button")
@click.option("--plain", is_flag=True, help="one line per change instead of a live LED line")
@click.option("--protocol-version", default=None, type=int, hidden=True, help="pretend another version")
@click.option("--debug", is_flag=True, help="detailed logs")
def emulate(
    link_path: str | None,
    attach: str | None,
    leds: int,
    name: str,
    mic_wav: str | None,
    mic_loop: bool,
    no_button: bool,
    plain: bool,
    protocol_version: int | None,
    debug: bool,
) -> None:
    """A virtual ESP32 on a pseudo-terminal: point [bridge] port at the printed path.

    Keys: space/Enter = press, d = double press, l = long press, r = reset the board, q = quit.
    With stdin from a pipe, lines "press", "double", "long", "reset", "quit" do the same.
    """
    from firmware_bridge import protocol
    from firmware_bridge.emulator import (
        AttachedPort,
        Emulator,
        KeyReader,
        LineDisplay,
        PtyPort,
        TerminalDisplay,
        default_link_path,
        load_wav_16k,
    )

    _setup_logging(debug)
    pcm = None
    if mic_wav is not None:
        try:
            pcm = load_wav_16k(mic_wav)
        except ValueError as exc:
            raise ConfigError(f"--mic: {exc}") from None
    port: AttachedPort | PtyPort = (
        AttachedPort(attach) if attach is not None else PtyPort(link_path or default_link_path())
    )
    live = sys.stdout.isatty() and not plain
    display = TerminalDisplay() if live else LineDisplay()
    emulator = Emulator(
        port,
        name=name,
        leds=leds,
        button=not no_button,
        mic=pcm,
        mic_loop=mic_loop,
        display=display,
        version=protocol_version or protocol.VERSION,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, emulator.stop)
        keys = KeyReader(emulator)
        task = asyncio.create_task(emulator.run())
        await asyncio.sleep(0)  # let run() open the port
        if not attach:
            click.echo(f'emulated board on {port.describe()}  (set [bridge] port = "{port.describe()}")')
        else:
            click.echo(f"emulated board attached to {port.describe()}")
        if mic_wav:
            click.echo(f"microphone: {mic_wav} ({len(pcm or b'') / 32000:.1f} s)")
        click.echo("keys: space = press, d = double, l = long, r = reset, q = quit" if live else "ready")
        reading = keys.start()
        try:
            await task
        finally:
            if reading:
                keys.stop()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise BridgeUnavailable(f"cannot create the emulated port: {exc}") from None


@bridge.command()
@click.option("--port", required=True, help="the board's serial port, e.g. /dev/ttyACM0")
@click.option(
    "--board",
    "preset",
    type=click.Choice(BOARD_PRESETS),
    default="esp32s3-devkitc",
    show_default=True,
    help="pin preset; the options below override it",
)
@click.option("--name", help="board name sent in HELLO")
@click.option("--led-pin", type=int, help="WS2812 data GPIO (-1: no LEDs)")
@click.option("--led-count", type=click.IntRange(1, 340), help="number of LEDs")
@click.option("--button-pin", type=int, help="button GPIO, to ground (-1: no button)")
@click.option("--mic", "mic_pins", metavar="SCK,WS,SD", help="I2S microphone GPIOs")
@click.option("--mic-bits", type=click.Choice(["16", "32"]), help="I2S sample width to read")
@click.option(
    "--transport", type=click.Choice(["console", "uart"]), help="the REPL's port, or a separate UART"
)
@click.option("--uart", "uart_pins", metavar="TX,RX", help="GPIOs of the separate UART")
@click.option("--baud", type=int, default=115200, show_default=True, help="baud rate to reach the REPL at")
@click.option("--compile", "compile_mpy", is_flag=True, help="precompile modules with mpy-cross (less RAM)")
@click.option("--no-stop", is_flag=True, help="do not send the REPL frame that stops a running firmware")
@click.option("--dry-run", is_flag=True, help="stage the files and print the commands, run nothing")
@click.option("--keep", type=click.Path(file_okay=False), help="stage into this directory and keep it")
def flash(
    port: str,
    preset: str,
    name: str | None,
    led_pin: int | None,
    led_count: int | None,
    button_pin: int | None,
    mic_pins: str | None,
    mic_bits: str | None,
    transport: str | None,
    uart_pins: str | None,
    baud: int,
    compile_mpy: bool,
    no_stop: bool,
    dry_run: bool,
    keep: str | None,
) -> None:
    """Copy the bridge firmware to a board that runs MicroPython (flash MicroPython first: docs/bridge.md)."""
    from firmware_bridge import flash as flashing

    mic = _pins(mic_pins, 3, "--mic")
    uart = _pins(uart_pins, 2, "--uart")
    config = flashing.with_options(
        flashing.PRESETS[preset],
        name=name,
        led_pin=led_pin,
        led_count=led_count,
        button_pin=button_pin,
        mic=mic,  # type: ignore[arg-type]
        mic_bits=int(mic_bits) if mic_bits else None,
        transport=transport,
        uart=uart,  # type: ignore[arg-type]
    )
    with contextlib.ExitStack() as stack:
        if keep:
            stage = Path(keep)
            stage.mkdir(parents=True, exist_ok=True)
        elif dry_run:  # the printed commands must still work when pasted
            stage = Path(tempfile.mkdtemp(prefix="bridge-flash-"))
        else:
            stage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bridge-flash-")))
        try:
            plan = flashing.make_plan(port, config, stage, compile_mpy=compile_mpy, stop_firmware=not no_stop)
        except RuntimeError as exc:
            raise BridgeUnavailable(str(exc)) from None
        if dry_run:
            click.echo(f"# files staged in {stage} (kept)")
            click.echo(f"# board.py for {config.name}:")
            for line in config.board_py().splitlines():
                click.echo(f"#   {line}" if line else "#")
            for line in plan.describe():
                click.echo(line)
            return
        try:
            status = flashing.run_plan(plan)
        except FileNotFoundError as exc:
            raise BridgeUnavailable(str(exc)) from None
        if status != 0:
            raise BridgeUnavailable(
                f"mpremote failed (exit {status}): is MicroPython on the board? "
                "To keep a running firmware out of the way, press RESET, then hold the board's button "
                "for a second, and try again."
            )
        click.echo(f"flashed; the board restarts. Check it with: companion bridge monitor --port {port}")


@bridge.command()
@click.option("--port", required=True, help="the board's serial port (or 'auto')")
@click.option("--baud", type=int, default=921600, show_default=True, help="UART speed")
@_tty_path_option(
    "--tap",
    "tap_link",
    help="do not talk: make a pty at this path for the daemon and show what passes both ways",
)
@click.option(
    "--state",
    type=click.Choice(
        ("idle", "connecting", "listening", "thinking", "speaking", "offline", "error", "activating")
    ),
    help="state to show",
)
@click.option("--emotion", help="emotion to show while speaking (one of the 21 names)")
@click.option("--brightness", type=click.IntRange(0, 100), help="LED brightness")
@click.option("--mic", "want_mic", is_flag=True, help="ask the board for MIC_AUDIO")
@click.option("--audio", is_flag=True, help="print every MIC_AUDIO frame instead of a summary per second")
@click.option("--seconds", type=float, help="stop after this long")
@click.option("--debug", is_flag=True, help="detailed logs")
def monitor(
    port: str,
    baud: int,
    tap_link: str | None,
    state: str | None,
    emotion: str | None,
    brightness: int | None,
    want_mic: bool,
    audio: bool,
    seconds: float | None,
    debug: bool,
) -> None:
    """Print decoded frames both ways ("->" to the board, "<-" from it)."""
    from firmware_bridge import monitor as watching
    from firmware_bridge.link import describe_open_error

    _setup_logging(debug)
    printer = watching.Printer(lambda line: click.echo(line), audio=audio)

    async def main() -> None:
        if tap_link:
            await watching.tap(port, baud, tap_link, printer, seconds)
            return
        stats = await watching.watch_as_host(
            port,
            baud,
            printer,
            state=state,
            emotion=emotion,
            brightness=brightness,
            want_mic=want_mic,
            seconds=seconds,
        )
        shown = ", ".join(f"{k}={v}" for k, v in stats.items() if v)
        click.echo(f"counters: {shown or 'none'}")

    try:
        asyncio.run(main())
    except OSError as exc:
        reason, _ = describe_open_error(port, exc)
        raise BridgeUnavailable(reason) from None


def register(group: click.Group) -> None:
    """Add `bridge`."""
    group.add_command(bridge)
