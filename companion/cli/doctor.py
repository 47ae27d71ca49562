"""`companion doctor`: one line per check with the fix; the exit status is the worst result."""

from __future__ import annotations

import asyncio
import sys

import click

from ..bringup.doctor import CheckResult, run_checks


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
def doctor(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Check libraries, config, microphone, speaker, bridge, server, clock, state directory and CPU.

    Exit status: 0 all passed, 1 warnings, 2 a check failed.
    """

    def emit(result: CheckResult) -> None:
        colour = {0: "green", 1: "yellow", 2: "red"}[int(result.status)]
        click.echo(click.style(result.line(), fg=colour) if sys.stdout.isatty() else result.line())

    worst = asyncio.run(run_checks(config_path, overrides, emit))
    raise SystemExit(int(worst))


def register(group: click.Group) -> None:
    """Add `doctor`."""
    group.add_command(doctor)
