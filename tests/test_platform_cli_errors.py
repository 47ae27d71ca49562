"""Bad input through the real CLI: one clear line on stderr, a non-zero status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.peers.platform_espai import EspAiPeer
from tests.peers.platform_http import Answer, RecordingServer, free_port, isolate_platform_env, running
from tests.peers.platform_qiniu import QiniuPeer
from tests.peers.platform_tuya import TuyaPeer

REPO = Path(__file__).resolve().parent.parent

# one cheap read per platform, with the env its credential needs
COMMANDS = {
    "qiniu": (["qiniu", "agents", "list"], {"COMPANION_QINIU_TOKEN": "tok"}, "COMPANION_QINIU_BASE_URL"),
    "espai": (["espai", "agents", "list"], {"COMPANION_ESPAI_KEY": "key"}, "COMPANION_ESPAI_BASE_URL"),
    "tuya": (
        ["tuya", "role", "show", "dev1"],
        {"COMPANION_TUYA_CLIENT_ID": "id", "COMPANION_TUYA_SECRET": "s"},
        "COMPANION_TUYA_BASE_URL",
    ),
}


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_platform_env(monkeypatch, tmp_path)


def invoke(args: list[str], env: dict[str, str]) -> Result:
    from companion.cli import main

    return CliRunner().invoke(main, args, env=env)


def assert_one_line(result: Result, status: int, *fragments: str) -> None:
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    assert result.output.startswith("companion: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("platform", sorted(COMMANDS))
def test_an_unreachable_host_is_one_line_with_status_69(platform: str) -> None:
    args, creds, base_var = COMMANDS[platform]
    port = free_port()
    result = invoke(args, {**creds, base_var: f"http://127.0.0.1:{port}"})
    assert_one_line(result, 69, f"cannot reach 127.0.0.1:{port}")


@pytest.mark.parametrize("platform", sorted(COMMANDS))
def test_a_non_json_body_is_one_line(platform: str) -> None:
    args, creds, base_var = COMMANDS[platform]

    class HtmlPage(RecordingServer):
        def handle(self, request: object) -> Answer:
            return Answer.text("<html><body>Welcome to nginx!</body></html>")

    with HtmlPage() as server:
        result = invoke(args, {**creds, base_var: server.url})
    assert_one_line(result, 1, "non-JSON reply", "Welcome to nginx")


@pytest.mark.parametrize("platform", sorted(COMMANDS))
def test_a_missing_credential_names_the_variable_with_status_78(platform: str) -> None:
    args, creds, base_var = COMMANDS[platform]
    result = invoke(args, {base_var: "http://127.0.0.1:9"})
    assert_one_line(result, 78, *creds)


def test_an_expired_qiniu_token_is_one_line_and_the_token_is_not_shown() -> None:
    with QiniuPeer() as peer:
        stale = peer.issue_token(lifetime_s=-5)
        result = invoke(
            ["qiniu", "agents", "list"],
            {"COMPANION_QINIU_TOKEN": stale, "COMPANION_QINIU_BASE_URL": peer.url},
        )
    assert_one_line(result, 1, "未登录", "code 401", "companion qiniu login")
    assert stale not in result.output


def test_an_expired_tuya_token_that_cannot_be_renewed_is_one_line() -> None:
    with TuyaPeer() as peer:
        peer.state.reject_all_tokens = True
        env = {
            "COMPANION_TUYA_CLIENT_ID": peer.state.client_id,
            "COMPANION_TUYA_SECRET": peer.state.secret,
            "COMPANION_TUYA_BASE_URL": peer.url,
        }
        result = invoke(["tuya", "role", "show", "dev1"], env)
    assert_one_line(result, 1, "code 1010", "could not be renewed")


def test_a_wrong_espai_key_is_one_line() -> None:
    with EspAiPeer() as peer:
        result = invoke(
            ["espai", "agents", "list"], {"COMPANION_ESPAI_KEY": "nope", "COMPANION_ESPAI_BASE_URL": peer.url}
        )
    assert_one_line(result, 1, "open_api_key 无效")


def test_a_bad_base_url_is_one_line() -> None:
    result = invoke(
        ["qiniu", "agents", "list"], {"COMPANION_QINIU_TOKEN": "t", "COMPANION_QINIU_BASE_URL": "xrobo"}
    )
    assert_one_line(result, 1, "--base-url must look like")


def test_an_unreadable_update_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "agent.json"
    bad.write_text("{not json")
    with QiniuPeer() as peer:
        peer.add_agent("a")
        env = {"COMPANION_QINIU_TOKEN": peer.issue_token(), "COMPANION_QINIU_BASE_URL": peer.url}
        result = invoke(["qiniu", "agents", "update", "a", "--from-file", str(bad)], env)
    assert_one_line(result, 1, "not valid JSON")


@pytest.fixture
def qiniu_peer() -> Iterator[QiniuPeer]:
    yield from running(QiniuPeer())  # type: ignore[misc]


def test_a_real_process_prints_one_line_and_no_traceback(qiniu_peer: QiniuPeer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(
        {
            "STATE_DIRECTORY": str(tmp_path / "s"),
            "XDG_CONFIG_HOME": str(tmp_path / "c"),
            "COMPANION_QINIU_BASE_URL": qiniu_peer.url,
            "COMPANION_QINIU_TOKEN": "tok-XYZZY",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "companion", "qiniu", "agents", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "未登录" in done.stderr and "Traceback" not in done.stderr
    assert "XYZZY" not in done.stderr  # the token itself is not echoed
