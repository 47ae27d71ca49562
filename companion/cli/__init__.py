"""The `companion` command: one group, subcommands registered from the modules of this package.

Only this package parses argv. Errors the user can act on (CompanionError) become one line on stderr
and an exit status (78 config, 69 unavailable, 1 other); tracebacks appear only with --debug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ..errors import CompanionError, ConfigError

# Each module defines click commands/groups and a `register(group)` function.
COMMAND_MODULES = (
    "companion.cli.daemon",
    "companion.cli.qiniu",
    "companion.cli.espai",
    "companion.cli.tuya",
    "companion.cli.doctor",
    "companion.cli.bridge",
    "companion.cli.report",
    "companion.cli.service",
    "companion.cli.echo_server",
    "companion.cli.provision",
    "companion.cli.mindcraft",
)


# Where each command lives, so that `companion run` imports only what the daemon needs (start-up time
# and memory on a Pi Zero 2). A command missing here is still found: every module is then imported.
COMMAND_HOMES = {
    "run": "companion.cli.daemon",
    "demo": "companion.cli.daemon",
    "say": "companion.cli.daemon",
    "devices": "companion.cli.daemon",
    "doctor": "companion.cli.doctor",
    "echo-server": "companion.cli.echo_server",
    "activate": "companion.cli.echo_server",
    "qiniu": "companion.cli.qiniu",
    "espai": "companion.cli.espai",
    "tuya": "companion.cli.tuya",
    "report": "companion.cli.report",
    "service": "companion.cli.service",
    "provision": "companion.cli.provision",
    "bridge": "companion.cli.bridge",
    "mindcraft": "companion.cli.mindcraft",
}


class CompanionGroup(click.Group):
    """A click group that loads command modules on demand and turns CompanionError into one clear
    line and an exit status."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            importlib.import_module(module).register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        home = COMMAND_HOMES.get(cmd_name)
        if home is not None:
            self._load(home)
        if cmd_name not in self.commands:
            for module in COMMAND_MODULES:
                self._load(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in COMMAND_MODULES:
            self._load(module)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except CompanionError as exc:
            if ctx.meta.get("companion.debug"):
                raise
            click.echo(f"companion: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.BadParameter as exc:
            if exc.param is None or exc.param.name != "config_path":
                raise
            # a --config that is a directory is a configuration error like any other: 78, one line
            click.echo(f"companion: {exc.format_message()}", err=True)
            sys.exit(ConfigError.exit_code)
        except KeyboardInterrupt:
            click.echo("companion: interrupted", err=True)
            sys.exit(130)


@click.group(cls=CompanionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="companion")
def main() -> None:
    """companion: an edge voice runtime for a Pi or an ESP32-tethered Linux box."""
