"""`companion service install|uninstall|status`: the dry-run plan changes nothing; --apply under a
temporary root creates the user (real useradd --prefix), the unit, the config and the enable link."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion.cli import main
from companion.cli.service import render_unit
from companion.config import default_toml, load_settings

PROGRAM = "/opt/companion/venv/bin/companion"


def make_root(tmp_path: Path) -> Path:
    """A file-system root with just the account databases of a Debian system."""
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\naudio:x:29:pulse\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\naudio:*::pulse\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_dry_run_shows_every_step_and_changes_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    before = snapshot(root)
    code, out = cli("service", "install", "--root", str(root), "--exec", PROGRAM)
    assert code == 0
    assert "dry run" in out
    assert "useradd --prefix" in out and "--groups audio,dialout companion" in out
    assert f"{root}/etc/systemd/system/companion.service with ExecStart={PROGRAM} run" in out
    assert f"{root}/etc/companion/companion.toml" in out
    assert f"systemctl --root={root} enable companion.service" in out
    assert snapshot(root) == before
    assert not (root / "etc" / "systemd").exists()


def test_a_program_under_home_is_refused_for_the_system_unit(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    code, out = cli("service", "install", "--root", str(root), "--exec", "/home/pi/.venv/bin/companion")
    assert code == 78
    assert "ProtectHome" in out


needs_shadow = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("systemctl") is None,
    reason="needs root, useradd and systemctl",
)


@needs_shadow
def test_apply_installs_user_unit_config_and_enable_link_then_is_idempotent(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    code, out = cli("service", "install", "--root", str(root), "--exec", PROGRAM, "--apply")
    assert code == 0, out

    passwd = (root / "etc/passwd").read_text()
    assert "companion:x:" in passwd and ":/var/lib/companion:/usr/sbin/nologin" in passwd
    groups = {
        line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()
    }
    assert "companion" in groups["audio"].split(",") and "pulse" in groups["audio"].split(",")
    assert "companion" in groups["dialout"].split(",")

    unit = root / "etc/systemd/system/companion.service"
    assert unit.read_text() == render_unit(PROGRAM)
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    link = root / "etc/systemd/system/multi-user.target.wants/companion.service"
    assert link.is_symlink()

    config = root / "etc/companion/companion.toml"
    assert config.read_text() == default_toml()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    gid = int(
        next(
            line for line in (root / "etc/group").read_text().splitlines() if line.startswith("companion:")
        ).split(":")[2]
    )
    assert config.stat().st_gid == gid
    load_settings(config)  # the written config is valid

    code, out = cli("service", "install", "--root", str(root), "--exec", PROGRAM, "--apply")
    assert code == 0
    assert "useradd" not in out and "write" not in out  # nothing left to create
    code, out = cli("service", "status", "--root", str(root))
    assert "enabled: yes" in out and "user: companion (in audio, dialout)" in out
    assert "not installed" not in out


@needs_shadow
def test_existing_config_is_kept_and_a_missing_group_membership_is_added(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    cli("service", "install", "--root", str(root), "--exec", PROGRAM, "--apply")
    config = root / "etc/companion/companion.toml"
    config.write_text('[log]\nlevel = "debug"\n')
    group = root / "etc/group"
    group.write_text(group.read_text().replace("dialout:x:20:companion", "dialout:x:20:"))

    code, out = cli("service", "install", "--root", str(root), "--exec", PROGRAM)
    assert "usermod --prefix" in out and "--groups dialout companion" in out
    assert "kept the existing config" in out
    code, out = cli("service", "install", "--root", str(root), "--exec", PROGRAM, "--apply")
    assert code == 0, out
    assert config.read_text() == '[log]\nlevel = "debug"\n'
    assert "dialout:x:20:companion" in group.read_text()


@needs_shadow
def test_uninstall_removes_the_unit_and_purge_removes_user_and_config(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    cli("service", "install", "--root", str(root), "--exec", PROGRAM, "--apply")
    state = root / "var/lib/companion"
    state.mkdir(parents=True)
    (state / "turns.jsonl").write_text("{}\n")

    code, out = cli("service", "uninstall", "--root", str(root), "--apply")
    assert code == 0, out
    assert not (root / "etc/systemd/system/companion.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/companion.service").is_symlink()
    assert (root / "etc/companion/companion.toml").exists() and state.exists()
    assert "--purge removes them" in out

    code, out = cli("service", "uninstall", "--root", str(root), "--purge", "--apply")
    assert code == 0, out
    assert not (root / "etc/companion").exists() and not state.exists()
    assert "companion" not in (root / "etc/passwd").read_text()
    assert not any(line.startswith("companion:") for line in (root / "etc/group").read_text().splitlines())


def test_user_unit_installs_into_the_home_and_links_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("HOME", "/home/pi")
    program = "/home/pi/companion/.venv/bin/companion"  # allowed: the user unit has no ProtectHome
    code, out = cli("service", "install", "--user", "--root", str(root), "--exec", program, "--apply")
    assert code == 0, out
    unit = root / "home/pi/.config/systemd/user/companion.service"
    assert unit.read_text() == render_unit(program, user_mode=True)
    link = root / "home/pi/.config/systemd/user/default.target.wants/companion.service"
    assert os.readlink(link) == "../companion.service" and link.resolve() == unit.resolve()
    config = root / "home/pi/.config/companion/companion.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "loginctl enable-linger" in out

    code, out = cli("service", "uninstall", "--user", "--root", str(root), "--apply")
    assert code == 0
    assert not unit.exists() and not link.is_symlink()


def test_status_of_a_missing_installation_exits_3(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    code, out = cli("service", "status", "--root", str(root))
    assert code == 3
    assert "unit: not installed" in out and "user: companion does not exist" in out


def test_the_installed_command_runs_from_a_shell(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "companion", "service", "install", "--root", str(root), "--exec", PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout
