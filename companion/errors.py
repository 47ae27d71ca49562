"""Error types for each boundary; each carries a message written for the user and an exit status.

Only `cli.py` turns them into exit codes and one line on stderr.
"""

from __future__ import annotations

EX_USAGE_ERROR = 1
EX_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE: a device, server or library is missing
EX_CONFIG = 78  # sysexits EX_CONFIG: systemd's RestartPreventExitStatus keys on this


class CompanionError(Exception):
    """An error the user can act on; `exit_code` is what the CLI exits with."""

    exit_code = EX_USAGE_ERROR


class ConfigError(CompanionError):
    """The configuration is wrong: the message names file, key, what was expected and what was found."""

    exit_code = EX_CONFIG


class AudioDeviceError(CompanionError):
    """A sound device is missing or cannot be opened; the message lists the devices that exist."""

    exit_code = EX_UNAVAILABLE


class ProtocolError(CompanionError):
    """A peer broke its protocol in a way that ends the session."""

    exit_code = EX_UNAVAILABLE


class PlatformError(CompanionError):
    """A platform management API refused a call or could not be reached."""

    exit_code = EX_USAGE_ERROR
