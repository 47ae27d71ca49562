"""`companion run`, `companion demo`, `companion say` and `companion devices`: the voice loop commands."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Settings, load_settings
from ..daemon.conversation import Turn
from ..daemon.runtime import RunOptions, Runtime
from ..errors import CompanionError
from ..events import DeviceState
from ..service.allocator import fix_mmap_threshold

log = logging.getLogger("companion")
F = TypeVar("F", bound=Callable[..., Any])

TIMELINE = (
    ("speech_start", "speech detected"),
    ("speech_end", "end of speech"),
    ("listen_sent", "listen sent"),
    ("stt", "stt (transcript)"),
    ("emotion", "emotion"),
    ("first_reply_audio", "first reply audio received"),
    ("first_sample_played", "first sample played"),
    ("turn_end", "turn finished"),
)


def configure_logging(settings: Settings | None, debug: bool) -> None:
    """Log setup for the daemon commands (journald-aware, secrets redacted)."""
    from ..service.logsetup import setup_logging

    if settings is None:
        setup_logging("info", debug=debug)
    else:
        setup_logging(settings.log.level, debug=debug, fmt=settings.log.format, wire=settings.log.wire)


def _settings_options(func: F) -> F:
    """The options every voice-loop command shares."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file"),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="SECTION.KEY=VALUE",
            help="override one setting (repeatable), e.g. --set vad.aggressiveness=3",
        ),
        click.option("--input", "input_", metavar="SRC", help="microphone: device name/index or a .wav path"),
        click.option("--output", metavar="DST", help="speaker: device name/index or a .wav path to write"),
        click.option("--debug", is_flag=True, help="detailed logs and tracebacks"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_for_command(
    config_path: str | None, overrides: tuple[str, ...], input_: str | None, output: str | None
) -> Settings:
    """Settings from the file, --set and the --input/--output shortcuts."""
    extra = list(overrides)
    if input_ is not None:
        extra.append(f"audio.input={_toml_string(input_)}")
    if output is not None:
        extra.append(f"audio.output={_toml_string(output)}")
    return load_settings(config_path, extra)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_timeline(turn: Turn) -> str:
    """A readable timeline of one turn, in milliseconds from its start."""
    offsets = turn.offsets_ms()
    lines = [f"turn {turn.number} ({turn.trigger}, {turn.outcome})"]
    for key, label in sorted(TIMELINE, key=lambda item: offsets.get(item[0], float("inf"))):
        if key in offsets:
            detail = ""
            if key == "stt":
                detail = f"  “{turn.transcript}”"
            elif key == "emotion":
                detail = f"  {turn.emotion}"
            lines.append(f"  {offsets[key]:8.0f} ms  {label}{detail}")
        else:
            lines.append(f"  {'—':>8}     {label} (did not happen)")
    lines.append(f"  uplink {turn.bytes_up} B, downlink {turn.bytes_down} B")
    return "\n".join(lines)


@click.command()
@_settings_options
@click.option("--turns", type=click.IntRange(min=1), help="exit 0 after N completed turns")
def run(
    config_path: str | None,
    overrides: tuple[str, ...],
    input_: str | None,
    output: str | None,
    debug: bool,
    turns: int | None,
) -> None:
    """Run the voice companion daemon (SIGTERM stops it, SIGHUP reloads the configuration)."""
    click.get_current_context().meta["companion.debug"] = debug
    settings = load_for_command(config_path, overrides, input_, output)
    configure_logging(settings, debug)
    reload = lambda: load_for_command(config_path, overrides, input_, output)  # noqa: E731
    fix_mmap_threshold()
    raise SystemExit(asyncio.run(_run(settings, turns, reload)))


async def _run(settings: Settings, turns: int | None, reload: Callable[[], Settings]) -> int:
    """Run until stopped; on SIGHUP load the configuration again and start over with it.

    The new file is loaded while the old run goes on: a file that does not load is refused with one
    line and the run (and the turn in progress) is left alone.
    """
    loaded: list[Settings] = []

    def check_reload() -> bool:
        try:
            loaded[:] = [reload()]
        except CompanionError as exc:
            log.error("the new configuration is not valid, keeping the old one: %s", exc)
            return False
        return True

    while True:
        log.info(
            "config: %s; backend %s; input %s; output %s",
            settings.source,
            settings.backend.kind,
            settings.audio.input,
            settings.audio.output,
        )
        runtime = Runtime(settings, RunOptions(turns=turns, service=True, check_reload=check_reload))
        code = await runtime.run()
        if not runtime.reload_requested:
            return code
        # The old parts hold reference cycles (tasks, callbacks): free them now, before the new parts
        # are built, or each restart's garbage waits for a rare full collection and the heap grows.
        del runtime
        gc.collect()
        # SIGHUP already loaded the new file; a restart the server asked for reads it now
        if loaded or check_reload():
            settings = loaded.pop()


@click.command()
@_settings_options
@click.option(
    "--mode",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="xiaozhi listening mode for the turn",
)
def demo(
    config_path: str | None,
    overrides: tuple[str, ...],
    input_: str | None,
    output: str | None,
    debug: bool,
    mode: str,
) -> None:
    """One turn through the built-in echo server: no sound card, network or account needed."""
    click.get_current_context().meta["companion.debug"] = debug
    sample = resources.files("companion") / "assets" / "demo_hello.wav"
    out = output or str(Path.cwd() / "companion-demo.wav")
    with (
        resources.as_file(sample) as sample_path,
        tempfile.TemporaryDirectory(prefix="companion-demo-") as tmp,
    ):
        settings = load_for_command(config_path, overrides, input_ or str(sample_path), out)
        configure_logging(settings, debug)
        code = asyncio.run(_demo(settings, mode, Path(tmp)))
    click.echo(f"\nwhat the speaker played: {out}")
    raise SystemExit(code)


async def _demo(settings: Settings, mode: str, state: Path) -> int:
    from ..fieldtest.echo_server import EchoServer

    server = EchoServer(host="127.0.0.1", port=0)
    await server.start()
    try:
        xiaozhi = dataclasses.replace(
            settings.xiaozhi, websocket_url=server.websocket_url, listen_mode=mode, ota_url=""
        )
        settings = dataclasses.replace(settings, xiaozhi=xiaozhi)
        click.echo(f"echo server on {server.websocket_url}; microphone {settings.audio.input}")

        shown: list[Turn] = []

        def show_turn(turn: Turn) -> None:
            shown.append(turn)
            click.echo("\n" + format_timeline(turn))

        def show_state(old: DeviceState, new: DeviceState) -> None:
            if not shown:  # after the one turn the demo is ending: what follows is not news
                click.echo(f"  [{new.value}]")

        runtime = Runtime(
            settings, RunOptions(turns=1, on_turn=show_turn, on_state=show_state, console_button=False)
        )
        try:
            return await asyncio.wait_for(runtime.run(), 60)
        except TimeoutError:
            raise CompanionError("the demo turn did not finish within 60 s (see the log above)") from None
    finally:
        await server.stop()


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.option("--debug", is_flag=True)
@click.argument("text")
def say(config_path: str | None, overrides: tuple[str, ...], debug: bool, text: str) -> None:
    """Run one text turn: TEXT is handled as if the user had said it; the reply is played."""
    click.get_current_context().meta["companion.debug"] = debug
    settings = load_settings(config_path, overrides)
    configure_logging(settings, debug)
    raise SystemExit(asyncio.run(_say(settings, text)))


async def _say(settings: Settings, text: str) -> int:
    runtime = Runtime(settings, RunOptions(turns=1, console_button=False, capture=False))

    async def send_text() -> None:
        conv = runtime.conversation  # built before the extra tasks start
        assert conv is not None
        try:
            await asyncio.wait_for(conv.wait_for_state(DeviceState.IDLE), 30)
        except TimeoutError:
            log.error("not connected after 30 s; giving up")
            runtime.stop(69)
            return
        await conv.say(text)

    runtime.options.extra_tasks.append(send_text)
    return await runtime.run()


@click.command()
def devices() -> None:
    """List sound devices (choose one by name or index with --input/--output).

    For each: its input and output channels, the standard rates it opens at, and which one `default` is.
    """
    from ..audio.portaudio import default_index, list_devices, supported_rates

    found = list_devices()
    if not found:
        click.echo("no sound devices found")
        return
    defaults = {"in": default_index("input"), "out": default_index("output")}
    click.echo(f"{'index':>5}  {'in':>3}  {'out':>3}  {'default':<7}  {'rates (kHz)':<28}  name")
    for dev in found:
        marks = [kind for kind, index in defaults.items() if index == dev.index]
        kinds = [k for k, n in (("input", dev.max_input_channels), ("output", dev.max_output_channels)) if n]
        rates = sorted({rate for kind in kinds for rate in supported_rates(dev, kind)})
        shown = ", ".join(f"{rate / 1000:g}" for rate in rates) or "-"
        click.echo(
            f"{dev.index:>5}  {dev.max_input_channels:>3}  {dev.max_output_channels:>3}  "
            f"{'+'.join(marks) or '':<7}  {shown:<28}  {dev.name}"
        )


def register(group: click.Group) -> None:
    """Add the voice-loop commands."""
    for command in (run, demo, say, devices):
        group.add_command(command)
