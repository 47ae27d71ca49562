"""`companion service install|uninstall|status`: put the systemd unit, the service user and a default
config in place, or take them away. Dry-run by default: it prints every step; `--apply` does them.

`--root DIR` applies the same steps under another file-system root (an image being prepared, or a test)
and then talks to systemd offline (`systemctl --root`), never to the running manager.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import click

from ..config import default_toml
from ..errors import CompanionError, ConfigError
from ..service.notify import MINDCRAFT_KEY, XIAOZHI_TOKEN
from ..service.state_dir import write_private

UNIT_NAME = "companion.service"
SERVICE_USER = "companion"
SERVICE_GROUPS = ("audio", "dialout")
SERVICE_HOME = "/var/lib/companion"
DEFAULT_EXEC = "/opt/companion/venv/bin/companion"
BUNDLED_EXEC_LINE = f"ExecStart={DEFAULT_EXEC} run"
CREDSTORE = "/etc/credstore"
HIDDEN_FROM_SYSTEM_UNIT = ("/home", "/root", "/run/user")  # ProtectHome=yes


def bundled_unit(user_mode: bool = False) -> str:
    """The unit file shipped with the package (systemd/ in the source tree links to it)."""
    name = "companion-user.service" if user_mode else "companion.service"
    try:
        return (resources.files("companion") / "assets" / "systemd" / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompanionError(
            f"the unit file {name} is missing from the installed package; reinstall"
        ) from None


def render_unit(exec_path: str, user_mode: bool = False) -> str:
    """The bundled unit with ExecStart= pointing at `exec_path`."""
    text = bundled_unit(user_mode)
    if BUNDLED_EXEC_LINE not in text:
        raise CompanionError("the bundled unit has no ExecStart line to fill in (a broken installation?)")
    escaped = exec_path.replace("%", "%%")
    if any(c.isspace() for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text.replace(BUNDLED_EXEC_LINE, f"ExecStart={escaped} run")


def default_exec_path() -> str:
    """The `companion` next to the running interpreter (this venv), else the standard venv's."""
    here = Path(sys.executable).parent / "companion"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return DEFAULT_EXEC


def systemd_booted() -> bool:
    """True when systemd is PID 1 (sd_booted)."""
    return Path("/run/systemd/system").is_dir()


# ---------------------------------------------------------------------------------------- the plan


@dataclass
class Step:
    """One thing the command will do, described for the dry run and runnable for --apply."""

    summary: str
    action: Callable[[], None]


@dataclass
class Plan:
    """Steps in order, plus what the user should know afterwards."""

    title: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, summary: str, action: Callable[[], None]) -> None:
        self.steps.append(Step(summary, action))

    def show(self, applying: bool) -> None:
        mode = "" if applying else " — dry run: nothing is changed; add --apply to do it"
        click.echo(f"{self.title}{mode}")
        if not self.steps:
            click.echo("  nothing to do")
        for number, step in enumerate(self.steps, 1):
            click.echo(f"  {number}. {step.summary}")

    def apply(self) -> None:
        for number, step in enumerate(self.steps, 1):
            step.action()
            click.echo(f"  {number}. done")


@dataclass
class Target:
    """Where things go: the system (/etc/...) or a user's session (~/.config/...), under `root`."""

    root: Path
    user_mode: bool
    home: Path

    @property
    def offline(self) -> bool:
        return self.root != Path("/") or not systemd_booted()

    def host(self, path: str | Path) -> Path:
        """`path` (absolute, as seen on the target) under the root."""
        return self.root / str(path).lstrip("/")

    @property
    def unit_path(self) -> Path:
        if self.user_mode:
            return self.host(self.home / ".config/systemd/user" / UNIT_NAME)
        return self.host(f"/etc/systemd/system/{UNIT_NAME}")

    @property
    def wants_link(self) -> Path:
        target = "default.target" if self.user_mode else "multi-user.target"
        return self.unit_path.parent / f"{target}.wants" / UNIT_NAME

    @property
    def config_path(self) -> Path:
        if self.user_mode:
            return self.host(self.home / ".config/companion/companion.toml")
        return self.host("/etc/companion/companion.toml")

    @property
    def state_path(self) -> Path:
        if self.user_mode:
            return self.host(self.home / ".local/state/companion")
        return self.host(SERVICE_HOME)

    def systemctl(self, *args: str) -> list[str]:
        """A systemctl command line for this target (offline with --root)."""
        argv = ["systemctl"]
        if self.user_mode:
            argv.append("--user")
        if self.root != Path("/"):
            argv.append(f"--root={self.root}")
        return [*argv, *args]

    def prefix(self) -> list[str]:
        """--prefix for the shadow tools when working under another root."""
        return [] if self.root == Path("/") else ["--prefix", str(self.root)]


def run_command(argv: list[str]) -> None:
    """Run a command, raising CompanionError with its stderr when it fails."""
    if shutil.which(argv[0]) is None:
        raise CompanionError(f"{argv[0]} is not installed (needed for: {' '.join(argv)})")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise CompanionError(f"{' '.join(argv)}: no answer within 120 s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise CompanionError(f"{' '.join(argv)} failed ({done.returncode}): {detail[-1] if detail else ''}")


def _read_db(path: Path) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group as name → fields."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    return {parts[0]: parts for line in lines if (parts := line.split(":")) and parts[0]}


def _group_members(target: Target) -> dict[str, set[str]]:
    groups = _read_db(target.host("/etc/group"))
    return {
        name: set(filter(None, fields[3].split(","))) if len(fields) > 3 else set()
        for name, fields in groups.items()
    }


def _group_id(target: Target, name: str) -> int | None:
    fields = _read_db(target.host("/etc/group")).get(name)
    if fields and len(fields) > 2 and fields[2].isdigit():
        return int(fields[2])
    return None


def _write_file(path: Path, data: str, mode: int, group: Callable[[], int | None] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data.encode("utf-8"))
    gid = group() if group is not None else None
    if gid is not None:
        os.chown(path, 0, gid)
    os.chmod(path, mode)


def _link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def install_plan(target: Target, exec_path: str, now: bool) -> Plan:
    """What `companion service install` does for this target."""
    plan = Plan(f"companion service install: {'user' if target.user_mode else 'system'} unit")
    if not os.path.isabs(exec_path):
        raise ConfigError(f"--exec {exec_path}: give an absolute path")
    if not target.user_mode and exec_path.startswith(HIDDEN_FROM_SYSTEM_UNIT):
        raise ConfigError(
            f"{exec_path}: the system unit cannot run a program under /home or /root (ProtectHome=yes). "
            f"Install into {Path(DEFAULT_EXEC).parent.parent} (COMPANION_VENV=/opt/companion/venv "
            "./scripts/install.sh --no-run), or use --user for a user unit"
        )
    if target.root == Path("/") and not Path(exec_path).is_file():
        plan.notes.append(f"warning: {exec_path} does not exist yet; the service will fail until it does")

    if not target.user_mode:
        _plan_user(plan, target)

    unit = render_unit(exec_path, target.user_mode)
    current = target.unit_path.read_text(encoding="utf-8") if target.unit_path.is_file() else None
    if current != unit:
        verb = "write" if current is None else "replace (it differs; keep local changes in a drop-in)"
        plan.add(
            f"{verb} {target.unit_path} with ExecStart={exec_path} run",
            lambda: _write_file(target.unit_path, unit, 0o644),
        )

    if not target.config_path.exists():
        if target.user_mode:
            plan.add(
                f"write {target.config_path} (the commented defaults), mode 0600",
                lambda: _write_file(target.config_path, default_toml(), 0o600),
            )
        else:
            plan.add(
                f"write {target.config_path} (the commented defaults), mode 0640, group {SERVICE_USER}",
                lambda: _write_file(
                    target.config_path, default_toml(), 0o640, lambda: _group_id(target, SERVICE_USER)
                ),
            )
    else:
        plan.notes.append(f"kept the existing config {target.config_path}")

    _plan_enable(plan, target, now)
    _install_notes(plan, target)
    return plan


def _plan_user(plan: Plan, target: Target) -> None:
    users = _read_db(target.host("/etc/passwd"))
    members = _group_members(target)
    groups = [g for g in SERVICE_GROUPS if g in members]
    for missing in sorted(set(SERVICE_GROUPS) - set(groups)):
        plan.notes.append(f"warning: group {missing} does not exist; the service will lack its devices")
    if SERVICE_USER not in users:
        argv = ["useradd", *target.prefix(), "--system", "--user-group", "--home-dir", SERVICE_HOME]
        argv += ["--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "companion voice agent"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        argv.append(SERVICE_USER)
        plan.add(
            f"create the system user {SERVICE_USER} (groups {', '.join(groups) or 'none'}): "
            + shlex.join(argv),
            lambda: run_command(argv),
        )
        return
    lacking = [g for g in groups if SERVICE_USER not in members[g]]
    if lacking:
        argv = ["usermod", *target.prefix(), "--append", "--groups", ",".join(lacking), SERVICE_USER]
        plan.add(f"add {SERVICE_USER} to {', '.join(lacking)}: {shlex.join(argv)}", lambda: run_command(argv))


def _plan_enable(plan: Plan, target: Target, now: bool) -> None:
    if target.user_mode and target.root != Path("/"):
        link = target.wants_link
        plan.add(f"enable: link {link} → ../{UNIT_NAME}", lambda: _link(link, f"../{UNIT_NAME}"))
        return
    if target.user_mode and not _user_manager_running():
        link = target.wants_link
        plan.add(
            f"enable (no user manager is running): link {link} → ../{UNIT_NAME}",
            lambda: _link(link, f"../{UNIT_NAME}"),
        )
        return
    if not target.offline:
        reload = target.systemctl("daemon-reload")
        plan.add(shlex.join(reload), lambda: run_command(reload))
    enable = target.systemctl("enable", *(["--now"] if now and not target.offline else []), UNIT_NAME)
    plan.add(shlex.join(enable), lambda: run_command(enable))
    if now and target.offline:
        plan.notes.append("--now ignored: systemd is not running here; the service starts at the next boot")


def _user_manager_running() -> bool:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    return bool(runtime) and Path(runtime, "systemd", "private").exists()


def _install_notes(plan: Plan, target: Target) -> None:
    if target.user_mode:
        plan.notes += [
            f"secrets: put COMPANION_XIAOZHI_TOKEN=... / COMPANION_MINDCRAFT_KEY=... in "
            f"{target.config_path.parent}/secrets.env (chmod 600)",
            'start at boot without logging in: loginctl enable-linger "$USER"',
            "start: systemctl --user start companion; logs: journalctl --user -u companion -f",
        ]
        return
    plan.notes += [
        f"secrets: printf %s TOKEN | sudo install -m 0600 /dev/stdin {CREDSTORE}/companion.{XIAOZHI_TOKEN}"
        f"  (and companion.{MINDCRAFT_KEY} for Mindcraft)",
        "start: sudo systemctl start companion; logs: journalctl -u companion -f",
    ]


def uninstall_plan(target: Target, purge: bool) -> Plan:
    """What `companion service uninstall` does for this target."""
    plan = Plan(f"companion service uninstall: {'user' if target.user_mode else 'system'} unit")
    installed = target.unit_path.exists() or target.wants_link.is_symlink()
    if installed:
        if target.user_mode and (target.root != Path("/") or not _user_manager_running()):
            link = target.wants_link
            if link.is_symlink():
                plan.add(f"disable: remove {link}", link.unlink)
        else:
            disable = target.systemctl("disable", *([] if target.offline else ["--now"]), UNIT_NAME)
            plan.add(shlex.join(disable), lambda: run_command(disable))
        if target.unit_path.exists():
            plan.add(f"remove {target.unit_path}", target.unit_path.unlink)
        if not target.offline and not (target.user_mode and not _user_manager_running()):
            reload = target.systemctl("daemon-reload")
            plan.add(shlex.join(reload), lambda: run_command(reload))
    if purge:
        for path in (target.config_path.parent, target.state_path):
            if path.exists():
                plan.add(
                    f"delete {path} (config, state and turn records)", functools.partial(shutil.rmtree, path)
                )
        if not target.user_mode and SERVICE_USER in _read_db(target.host("/etc/passwd")):
            argv = ["userdel", *target.prefix(), SERVICE_USER]
            plan.add(shlex.join(argv), lambda: _remove_user(target, argv))
    else:
        kept = [str(target.config_path.parent), str(target.state_path)]
        if not target.user_mode:
            kept.append(f"the user {SERVICE_USER}")
        plan.notes.append(f"kept {', '.join(kept)}; --purge removes them")
    return plan


def _remove_user(target: Target, argv: list[str]) -> None:
    run_command(argv)
    if SERVICE_USER in _read_db(target.host("/etc/group")):  # USERGROUPS_ENAB=no or no login.defs
        run_command(["groupdel", *target.prefix(), SERVICE_USER])


# ---------------------------------------------------------------------------------------- status


def status_lines(target: Target) -> tuple[list[str], bool]:
    """Human-readable state of the installation, and whether it is installed and not failed."""
    lines: list[str] = []
    ok = True
    unit = target.unit_path
    if unit.is_file():
        text = unit.read_text(encoding="utf-8")
        exec_line = next((ln for ln in text.splitlines() if ln.startswith("ExecStart=")), "ExecStart=?")
        body = exec_line.removeprefix("ExecStart=").strip('"').split(" run")[0]
        same = text == render_unit(body, target.user_mode)
        lines.append(f"unit: {unit} ({'as bundled' if same else 'locally modified'})")
        exists = target.host(body).is_file() if target.root != Path("/") else Path(body).is_file()
        lines.append(f"program: {body}{'' if exists else ' (MISSING)'}")
        ok = ok and exists
    else:
        lines.append(f"unit: not installed ({unit} is absent)")
        ok = False
    lines.append(f"enabled: {'yes' if target.wants_link.is_symlink() else 'no'}")
    if target.offline:
        lines.append(
            "active: unknown (systemd is not running here)"
            if target.root == Path("/")
            else "active: not checked (--root)"
        )
    else:
        state = _query(target.systemctl("is-active", UNIT_NAME)) or "unknown"
        lines.append(f"active: {state}")
        ok = ok and state in ("active", "activating", "reloading")
    if not target.user_mode:
        passwd = _read_db(target.host("/etc/passwd"))
        if SERVICE_USER in passwd:
            members = _group_members(target)
            missing = [g for g in SERVICE_GROUPS if SERVICE_USER not in members.get(g, set())]
            extra = f" (not in {', '.join(missing)})" if missing else f" (in {', '.join(SERVICE_GROUPS)})"
            lines.append(f"user: {SERVICE_USER}{extra}")
        else:
            lines.append(f"user: {SERVICE_USER} does not exist")
            ok = False
        found = [
            n for n in (XIAOZHI_TOKEN, MINDCRAFT_KEY) if target.host(f"{CREDSTORE}/companion.{n}").exists()
        ]
        lines.append(f"credentials in {CREDSTORE}: {', '.join('companion.' + n for n in found) or 'none'}")
    lines.append(
        f"config: {target.config_path}{'' if target.config_path.exists() else ' (absent: defaults)'}"
    )
    if unit.is_file() and not target.user_mode and shutil.which("systemd-analyze"):
        score = _query(["systemd-analyze", "security", "--offline=true", str(unit)], tail=True)
        if score:
            lines.append(f"sandbox: {score.removeprefix('→ ').strip()}")
    return lines, ok


def _query(argv: list[str], tail: bool = False) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    out = done.stdout.strip().splitlines()
    if not out:
        return ""
    return out[-1] if tail else out[0]


# ---------------------------------------------------------------------------------------- commands


def _target(user: bool, root: Path | None) -> Target:
    return Target(root=(root or Path("/")).resolve(), user_mode=user, home=Path.home())


def _needs_root(target: Target) -> None:
    if not target.user_mode and target.root == Path("/") and os.geteuid() != 0:
        raise CompanionError("installing the system service needs root: run it with sudo (or use --user)")


def _carry_out(plan: Plan, target: Target, apply: bool) -> None:
    """Show the plan; with --apply (and root where the target needs it) do it; then its notes."""
    plan.show(apply)
    if apply:
        _needs_root(target)
        plan.apply()
    for note in plan.notes:
        click.echo(f"  - {note}")


_user_option = click.option("--user", "user", is_flag=True, help="a user unit (sound server in the session)")
_root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="work under this directory instead of / (an image being prepared; systemd is used offline)",
)
_apply_option = click.option("--apply", is_flag=True, help="do it (without: only show what would be done)")


@click.group()
def service() -> None:
    """Install, remove or inspect the systemd service."""


@service.command()
@_user_option
@_root_option
@_apply_option
@click.option("--exec", "exec_path", metavar="PATH", help="the companion program the unit runs")
@click.option("--now", is_flag=True, help="also start it")
def install(user: bool, root: Path | None, apply: bool, exec_path: str | None, now: bool) -> None:
    """Create the service user, install the unit and a default config, and enable the service."""
    target = _target(user, root)
    _carry_out(install_plan(target, exec_path or default_exec_path(), now), target, apply)


@service.command()
@_user_option
@_root_option
@_apply_option
@click.option("--purge", is_flag=True, help="also delete the config, the state (turn records) and the user")
def uninstall(user: bool, root: Path | None, apply: bool, purge: bool) -> None:
    """Disable the service and remove its unit."""
    target = _target(user, root)
    _carry_out(uninstall_plan(target, purge), target, apply)


@service.command()
@_user_option
@_root_option
def status(user: bool, root: Path | None) -> None:
    """Show what is installed; exit 0 when installed (and running, where that can be checked), else 3."""
    lines, ok = status_lines(_target(user, root))
    for line in lines:
        click.echo(line)
    raise SystemExit(0 if ok else 3)


def register(group: click.Group) -> None:
    """Add `companion service`."""
    group.add_command(service)
