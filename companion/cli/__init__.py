"""The `companion` command: one group, subcommands registered from the modules of this package.

Only this package parses argv. Errors the user can act on (CompanionError) become one line on stderr
and an exit status (78 config, 69 unavailable, 1 other); tracebacks appear only with --debug.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import CompanionError

# Each module defines click commands/groups and a `register(group)` function.
COMMAND_MODULES = (
    "companion.cli.daemon",
    "companion.cli.doctor",
)


class CompanionGroup(click.Group):
    """A click group that turns CompanionError into one clear line and an exit status."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except CompanionError as exc:
            if ctx.meta.get("companion.debug"):
                raise
            click.echo(f"companion: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("companion: interrupted", err=True)
            sys.exit(130)


@click.group(cls=CompanionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="companion")
def main() -> None:
    """companion: an edge voice runtime for a Pi or an ESP32-tethered Linux box."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)
