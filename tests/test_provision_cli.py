"""`companion provision qiniu` through the real command group (and once as a real process).

The CLI runs in a worker thread (it starts its own event loop) while the echo server's OTA endpoints and
the linked Qiniu peer answer on this test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.peers.platform_http import free_port, isolate_platform_env
from tests.test_provision import AGENT, MAC, Rig, rig


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_platform_env(monkeypatch, tmp_path)


def config_file(tmp_path: Path, r: Rig, ota_url: str | None = None) -> Path:
    path = tmp_path / "companion.toml"
    path.write_text(f'[xiaozhi]\nota_url = "{ota_url or r.echo.ota_url}"\ndevice_id = "{MAC.upper()}"\n')
    return path


async def invoke(r: Rig, *args: str, token: bool = True) -> Result:
    """`companion provision qiniu ARGS` with the peer as management host, in a worker thread."""
    from companion.cli import main

    env = {"COMPANION_QINIU_BASE_URL": r.peer.url}
    if token:
        env["COMPANION_QINIU_TOKEN"] = r.token
    argv = ["provision", "qiniu", "--poll-interval", "0.05", *args]
    return await asyncio.to_thread(CliRunner().invoke, main, argv, env=env)


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed run (there must be exactly one, and no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("companion: "), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    return lines[0]


async def test_provision_binds_then_a_second_run_says_already_bound_and_exits_0(
    state: Path, tmp_path: Path
) -> None:
    async with rig(activation=True) as r:
        config = config_file(tmp_path, r)
        first = await invoke(r, "--agent", AGENT, "--config", str(config))
        assert first.exit_code == 0, first.output
        code = r.echo.codes[MAC]
        assert f"bound to agent {AGENT} ({r.agent_id}) with activation code {code}" in first.stdout
        assert f"websocket {r.echo.websocket_url}" in first.stdout
        assert f"activation code {code}" in first.stderr  # progress goes to stderr
        assert r.peer.state.devices[MAC]["agentId"] == r.agent_id

        second = await invoke(r, "--agent", AGENT, "--config", str(config), "--json")
        assert second.exit_code == 0, second.output
        shown = json.loads(second.stdout)
        assert shown["outcome"] == "already-bound" and shown["changed"] is False
        assert shown["agent"] == {"id": r.agent_id, "name": AGENT} and shown["device_id"] == MAC
        assert len(r.binds()) == 1
        # the device identity was created in the state directory and the config's MAC was used
        assert (state / "xiaozhi-identity.json").exists()


async def test_provision_preregisters_when_no_code_is_offered_using_ota_url_and_set(state: Path) -> None:
    async with rig(activation=False) as r:
        result = await invoke(
            r, "--agent", r.agent_id, "--ota-url", r.echo.ota_url, "--set", f'xiaozhi.device_id="{MAC}"', "-q"
        )
        assert result.exit_code == 0, result.output
        assert "pre-registered to agent" in result.stdout and result.stderr == ""
        assert r.peer.state.prereg[MAC]["agent_id"] == r.agent_id


@pytest.mark.parametrize(
    ("case", "status", "expected"),
    [
        ("unknown agent", 1, "no agent named '卧室'"),
        ("OTA unreachable", 69, "cannot reach the OTA server"),
        ("OTA not JSON", 69, "is not JSON"),
        ("code refused", 1, "激活码无效或已使用"),
        ("no credential", 78, "no Qiniu credential"),
        ("bad OTA URL", 78, "--ota-url must be an http(s) URL"),
    ],
)
async def test_every_failure_is_one_line_on_stderr_and_a_nonzero_exit(
    state: Path, tmp_path: Path, case: str, status: int, expected: str
) -> None:
    options: dict[str, object] = {"activation": True}
    if case == "OTA not JSON":
        options = {"ota_not_json": True}
    if case == "code refused":
        options["share_codes"] = False
    async with rig(**options) as r:  # type: ignore[arg-type]
        config = config_file(tmp_path, r)
        args = ["--agent", "卧室" if case == "unknown agent" else AGENT, "--config", str(config), "-q"]
        if case == "OTA unreachable":
            args += ["--ota-url", f"http://127.0.0.1:{free_port()}/xiaozhi/ota/"]
        if case == "bad OTA URL":
            args += ["--ota-url", "xrobo.qiniuapi.com/v1/ota/"]
        result = await invoke(r, *args, token=case != "no credential")
        assert result.exit_code == status, result.output
        assert expected in one_error_line(result)
        assert result.stdout == ""
        assert MAC not in r.peer.state.devices and MAC not in r.peer.state.prereg


async def test_the_real_command_provisions_this_device(state: Path, tmp_path: Path) -> None:
    """`python -m companion provision qiniu …` as a separate process, as a user runs it."""
    async with rig(activation=True) as r:
        config = config_file(tmp_path, r)
        env = {
            **os.environ,
            "COMPANION_QINIU_BASE_URL": r.peer.url,
            "COMPANION_QINIU_TOKEN": r.token,
        }
        argv = ["-m", "companion", "provision", "qiniu", "--agent", AGENT, "--config", str(config)]
        runs = []
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            runs.append((proc.returncode, out.decode(), err.decode()))
        (rc1, out1, err1), (rc2, out2, err2) = runs
        assert rc1 == 0, err1
        assert f"activation code {r.echo.codes[MAC]}" in out1
        assert rc2 == 0, err2
        assert "already bound" in out2
        assert r.token not in out1 + err1 + out2 + err2
