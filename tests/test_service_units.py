"""The unit files: `systemd-analyze verify` is clean, the sandbox scores ≤ 2.5, and the unit agrees
with the code (credential names, the config-error exit status)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from companion.cli.service import render_unit
from companion.errors import EX_CONFIG
from companion.service.notify import SECRET_ENV_VARS

REPO = Path(__file__).resolve().parent.parent
MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt install systemd)"
)


def unit_with_real_program(tmp_path: Path, user_mode: bool) -> Path:
    """The unit as `companion service install` writes it, pointing at a program that exists here."""
    program = Path(sys.executable).parent / "companion"
    if not program.exists():
        program = Path(sys.executable)
    path = tmp_path / ("companion-user.service" if user_mode else "companion.service")
    path.write_text(render_unit(str(program), user_mode))
    return path


def analyze(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "xdg-runtime"  # --user needs one, even offline
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "info"}
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output[-500:]
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_systemd_analyze_verify_passes_without_warnings(tmp_path: Path, user_mode: bool) -> None:
    unit = unit_with_real_program(tmp_path, user_mode)
    args = ["--user", "verify", str(unit)] if user_mode else ["verify", str(unit)]
    result = analyze(*args, tmp_path=tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


@needs_analyze
def test_verify_would_catch_a_broken_directive(tmp_path: Path) -> None:
    unit = unit_with_real_program(tmp_path, False)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    result = analyze("verify", str(unit), tmp_path=tmp_path)
    assert "notfy" in result.stderr


@needs_analyze
def test_system_unit_sandbox_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    unit = unit_with_real_program(tmp_path, False)
    result = analyze(
        "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit), tmp_path=tmp_path
    )
    score = exposure(result.stdout)
    assert score <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0


@needs_analyze
def test_the_score_check_fails_for_an_unsandboxed_unit(tmp_path: Path) -> None:
    unit = tmp_path / "plain.service"
    unit.write_text(f"[Service]\nExecStart={sys.executable} -c pass\n")
    result = analyze("security", "--offline=true", str(unit), tmp_path=tmp_path)
    assert exposure(result.stdout) > MAX_EXPOSURE


def unit_lines(name: str) -> list[str]:
    return (REPO / "companion" / "assets" / "systemd" / name).read_text().splitlines()


@pytest.mark.parametrize("name", ["companion.service", "companion-user.service"])
def test_config_errors_do_not_restart_loop(name: str) -> None:
    lines = unit_lines(name)
    assert f"RestartPreventExitStatus={EX_CONFIG}" in lines
    assert "Restart=on-failure" in lines
    assert "Type=notify" in lines
    assert any(line.startswith("WatchdogSec=") for line in lines)


def test_credentials_loaded_by_the_unit_are_the_ones_the_daemon_reads() -> None:
    loaded = {
        line.split("=", 1)[1].split(":", 1)[0]
        for line in unit_lines("companion.service")
        if line.startswith("LoadCredential=")
    }
    assert loaded == set(SECRET_ENV_VARS)


def test_system_unit_runs_as_the_dedicated_user_with_audio_and_serial_groups() -> None:
    lines = unit_lines("companion.service")
    assert "User=companion" in lines
    assert "SupplementaryGroups=audio dialout" in lines
    assert "StateDirectory=companion" in lines and "ConfigurationDirectory=companion" in lines


@pytest.mark.parametrize("name", ["companion.service", "companion-user.service"])
def test_systemd_directory_shows_the_bundled_units(name: str) -> None:
    assert (REPO / "systemd" / name).read_text() == "\n".join(unit_lines(name)) + "\n"


@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_the_reload_command_sends_sighup_to_the_main_pid_with_only_a_shell(
    tmp_path: Path, user_mode: bool
) -> None:
    """ExecReload= as systemd would run it: ${MAINPID} substituted, no /bin/kill (procps) needed."""
    unit = render_unit("/usr/bin/companion", user_mode).splitlines()
    command = next(line for line in unit if line.startswith("ExecReload=")).removeprefix("ExecReload=")
    assert "/bin/kill" not in command
    marker = tmp_path / "hup"
    program = (
        "import pathlib, signal, sys, time\n"
        "def on_hup(*_):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('hup')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGHUP, on_hup)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    waiter = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout is not None and waiter.stdout.readline() == "ready\n"
        argv = shlex.split(command.replace("${MAINPID}", str(waiter.pid)))
        subprocess.run(argv, check=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
        assert waiter.wait(timeout=10) == 0
    finally:
        waiter.kill()
    assert marker.read_text() == "hup"
