"""`companion mindcraft session new|list|clear` against the REST peer on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion.backends.chatbot_v3.sessions import SESSION_FILE, remembered_session
from companion.cli import main
from tests.peers.chatbot_server import API_KEY, ChatbotServer, ThreadedServer


@pytest.fixture
def peer() -> Iterator[ChatbotServer]:
    with ThreadedServer().running() as server:
        yield server


@pytest.fixture
def env(peer: ChatbotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "companion.toml"
    config.write_text(f'[chatbot_v3]\nrest_url = "{peer.rest_url}"\n')
    state = tmp_path / "state"
    monkeypatch.setenv("COMPANION_CONFIG", str(config))
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    monkeypatch.setenv("COMPANION_MINDCRAFT_KEY", API_KEY)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return state


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["mindcraft", *args])
    return result.exit_code, result.stdout, result.stderr


def test_session_new_creates_and_remembers_it(peer: ChatbotServer, env: Path) -> None:
    code, out, err = cli("session", "new", "--name", "kitchen")
    assert code == 0, err
    token = out.strip()
    (created,) = peer.state.sessions
    assert created["session_token"] == token and created["session_name"] == "kitchen"
    assert remembered_session(API_KEY, env) == token
    assert stat.S_IMODE(os.stat(env / SESSION_FILE).st_mode) == 0o600
    method, _, headers, _ = peer.state.http_requests[-1]
    assert method == "POST" and headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"].startswith("multipart/form-data")


def test_session_list_marks_the_daemons_session(peer: ChatbotServer, env: Path) -> None:
    _, first, _ = cli("session", "new", "--no-remember")
    _, second, _ = cli("session", "new")
    code, out, err = cli("session", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"  {first.strip()}")
    assert lines[1].startswith(f"* {second.strip()}")


def test_session_clear_posts_the_token_as_json(peer: ChatbotServer, env: Path) -> None:
    _, out, _ = cli("session", "new")
    token = out.strip()
    code, out, err = cli("session", "clear", "--forget")
    assert code == 0, err
    assert peer.state.cleared == [token]
    _, target, headers, body = peer.state.http_requests[-1]
    assert target == "/v1/message/clear/" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"session_token": token}
    assert not (env / SESSION_FILE).exists()


def test_clear_without_a_session_says_what_to_do(peer: ChatbotServer, env: Path) -> None:
    code, _, err = cli("session", "clear")
    assert code == 1
    assert "--session TOKEN" in err and "Traceback" not in err


def test_a_wrong_key_is_one_clear_line(
    peer: ChatbotServer, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_MINDCRAFT_KEY", "MC-" + "F" * 32)
    code, _, err = cli("session", "list")
    assert code == 1
    assert err.startswith("companion: Mindcraft refused the API key (HTTP 401")
    assert "F" * 32 not in err  # the key is never printed


def test_no_key_is_a_config_error(peer: ChatbotServer, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPANION_MINDCRAFT_KEY")
    code, _, err = cli("session", "new")
    assert code == 78
    assert "COMPANION_MINDCRAFT_KEY" in err
