"""`companion report`: the turn records of a field test as one self-contained HTML page."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import CompanionError, ConfigError
from ..fieldtest.report import parse_since, render_html
from ..fieldtest.telemetry import FILE_NAME, read_turns
from ..service.state_dir import state_dir_path, write_private

SYSTEM_STATE = Path("/var/lib/companion")


def default_input() -> Path:
    """The records this user's daemon writes; else those of the system service, if it has any."""
    mine = state_dir_path() / FILE_NAME
    system = SYSTEM_STATE / FILE_NAME
    if not mine.exists():
        try:
            if system.exists():
                return system
        except PermissionError:
            return system
    return mine


@click.command()
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"turn records (default: {FILE_NAME} in the state directory; rotated copies are read too)",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="only turns from then on: a duration back (90m, 2h, 3d, 1w) or a date/time (2025-06-01T14:30)",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write",
)
@click.option("--title", default="companion field report", show_default=True, help="page title")
def report(input_path: Path | None, since: str | None, output: Path, title: str) -> None:
    """Turn the per-turn telemetry into an HTML report (latency percentiles, histograms, timeline)."""
    now = time.time()
    source = input_path or default_input()
    since_ts = None
    if since is not None:
        try:
            since_ts = parse_since(since, now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        result = read_turns(source, since=since_ts)
    except PermissionError:
        raise CompanionError(f"{source}: permission denied (the service's records: run with sudo)") from None
    except OSError as exc:
        raise CompanionError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if not result.files:
        raise ConfigError(
            f"{source}: no turn records found (is [telemetry] enabled? give a file with --input)"
        )
    page = render_html(
        result.records,
        sources=result.files,
        skipped=result.skipped,
        since=since_ts,
        generated=now,
        title=title,
    )
    try:
        write_private(output, page.encode("utf-8"))
    except OSError as exc:
        raise CompanionError(f"{output}: cannot write: {exc.strerror or exc}") from None
    extra = f" ({result.skipped} malformed lines skipped)" if result.skipped else ""
    click.echo(f"wrote {output}: {len(result.records)} turns from {len(result.files)} file(s){extra}")


def register(group: click.Group) -> None:
    """Add `companion report`."""
    group.add_command(report)
