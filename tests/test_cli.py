"""The command line: every command is found, and loading one does not load the others."""

from __future__ import annotations

import subprocess
import sys

import click

from companion.cli import COMMAND_HOMES, CompanionGroup, main


def test_every_command_has_a_home_module() -> None:
    ctx = click.Context(main)
    commands = main.list_commands(ctx)
    assert set(commands) == set(COMMAND_HOMES), set(commands) ^ set(COMMAND_HOMES)
    for name, home in COMMAND_HOMES.items():
        group = CompanionGroup(name="probe")
        group._load(home)  # the home alone must provide the command
        assert name in group.commands, (name, home)


def test_the_daemon_command_loads_no_platform_client_or_http_library() -> None:
    code = (
        "import sys, click\n"
        "from companion.cli import main\n"
        "main.get_command(click.Context(main), 'run')\n"
        "print(sorted(m for m in ('httpx', 'aiomqtt', 'companion.platforms.qiniu', 'prometheus_client')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
