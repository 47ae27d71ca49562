"""Where machine state (client ids, logins, tokens) lives, and how it is written: atomically, mode 0600.

Under systemd the unit's `StateDirectory=` gives `$STATE_DIRECTORY`; elsewhere the XDG state home is used.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError

APP_NAME = "companion"


def state_dir_path() -> Path:
    """The state directory's path, without touching the file system.

    `$STATE_DIRECTORY` (first entry if systemd lists several) wins, then `$XDG_STATE_HOME/companion`,
    then `~/.local/state/companion`. A relative XDG_STATE_HOME is ignored, as the XDG spec asks.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "")
    first = systemd.split(":")[0].strip()
    if first:
        return Path(first)
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_NAME
    return Path.home() / ".local" / "state" / APP_NAME


def state_dir() -> Path:
    """The state directory, created with mode 0700 if it does not exist yet.

    An existing directory keeps its mode (systemd or the admin chose it). Raises ConfigError with the
    path and the reason when it cannot be created.
    """
    path = state_dir_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir():
                raise ConfigError(f"state directory {path} exists but is not a directory") from None
        else:
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise ConfigError(
            f"cannot create the state directory {path}: {exc.strerror or exc}; "
            "set STATE_DIRECTORY or XDG_STATE_HOME to a writable place"
        ) from exc
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; the file is mode 0600 from its first byte.

    A reader sees either the old content or the new, never a torn file, even across a power cut
    (the data and the directory entry are fsynced). Raises OSError; callers turn it into their error.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems (e.g. certain FUSE mounts) refuse fsync on directories
    finally:
        os.close(dir_fd)
