"""`companion qiniu …` through the real command group, against the local Qiniu server."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.peers.platform_http import Answer, isolate_platform_env, running
from tests.peers.platform_qiniu import CAPTCHA_TEXT, QiniuPeer


@pytest.fixture
def peer() -> Iterator[QiniuPeer]:
    yield from running(QiniuPeer())  # type: ignore[misc]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_platform_env(monkeypatch, tmp_path)


@pytest.fixture
def env(peer: QiniuPeer, state: Path) -> dict[str, str]:
    return {"COMPANION_QINIU_BASE_URL": peer.url}


@pytest.fixture
def authed(peer: QiniuPeer, env: dict[str, str]) -> dict[str, str]:
    return {**env, "COMPANION_QINIU_TOKEN": peer.issue_token()}


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Run `companion qiniu ARGS` through the real top-level command group."""
    from companion.cli import main

    return CliRunner().invoke(main, ["qiniu", *args], env=env, input=input)


def test_login_fetches_a_captcha_asks_for_it_and_stores_the_token_privately(
    peer: QiniuPeer, env: dict[str, str], state: Path
) -> None:
    peer.add_user("maker", "s3cret-pw")
    result = invoke(
        {**env, "COMPANION_QINIU_PASSWORD": "s3cret-pw"},
        "login",
        "--username",
        "maker",
        input=f"{CAPTCHA_TEXT}\n",
    )
    assert result.exit_code == 0, result.output
    stored = state / "qiniu-login.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    saved = json.loads(stored.read_text())
    assert saved["kind"] == "login" and saved["token"] in peer.state.tokens
    assert saved["expires_at"] > saved["saved_at"] + 43000
    assert saved["token"] not in result.output and "s3cret-pw" not in result.output
    assert (state / "qiniu-captcha.png").read_bytes().startswith(b"\x89PNG")
    assert "valid until" in result.output

    listed = invoke(env, "agents", "list")
    assert listed.exit_code == 0, listed.output
    assert peer.sent("GET", "/xiaozhi/agent/list")[0].headers["authorization"] == f"Bearer {saved['token']}"


def test_captcha_command_saves_the_image_and_prints_its_id(
    peer: QiniuPeer, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "c.png"
    result = invoke(env, "captcha", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["path"] == str(out) and out.read_bytes().startswith(b"\x89PNG")
    assert peer.sent("GET", "/xiaozhi/user/captcha")[0].q("uuid") == shown["captcha_id"]


def test_register_then_login_with_a_given_captcha(peer: QiniuPeer, env: dict[str, str]) -> None:
    ids = []
    for _ in range(2):
        out = invoke(env, "captcha", "--json")
        ids.append(json.loads(out.output)["captcha_id"])
    registered = invoke(
        env,
        "register",
        "--username",
        "new",
        "--captcha-id",
        ids[0],
        "--captcha",
        CAPTCHA_TEXT,
        input="pw\npw\n",
    )
    assert registered.exit_code == 0, registered.output
    assert peer.state.users["new"] == "pw"
    logged = invoke(
        env, "login", "--username", "new", "--captcha-id", ids[1], "--captcha", CAPTCHA_TEXT, input="pw\n"
    )
    assert logged.exit_code == 0, logged.output


def test_api_key_login_is_checked_then_stored_and_logout_forgets_it(
    peer: QiniuPeer, env: dict[str, str], state: Path
) -> None:
    peer.state.api_keys.add("console-key-123")
    bad = invoke(env, "login", "--api-key", input="wrong-key\n")
    assert bad.exit_code == 1 and "未登录" in bad.output
    assert not (state / "qiniu-login.json").exists()
    good = invoke(env, "login", "--api-key", input="console-key-123\n")
    assert good.exit_code == 0, good.output
    assert "console-key-123" not in good.output
    assert json.loads((state / "qiniu-login.json").read_text())["kind"] == "api_key"
    who = invoke(env, "whoami")
    assert "stored API key" in who.output and "console-key-123" not in who.output
    out = invoke(env, "logout")
    assert out.exit_code == 0 and not (state / "qiniu-login.json").exists()
    after = invoke(env, "agents", "list")
    assert after.exit_code == 78 and "no Qiniu credential" in after.output


def test_an_expired_stored_login_is_one_clear_line(peer: QiniuPeer, env: dict[str, str], state: Path) -> None:
    state.mkdir(mode=0o700)
    (state / "qiniu-login.json").write_text(json.dumps({"token": "t", "kind": "login", "expires_at": 1000.0}))
    result = invoke(env, "agents", "list")
    assert result.exit_code == 78
    assert (
        result.output.count("\n") == 1
        and "expired at" in result.output
        and "companion qiniu login" in result.output
    )
    assert peer.requests == []


def test_the_environment_wins_over_the_stored_login(
    peer: QiniuPeer, authed: dict[str, str], state: Path
) -> None:
    state.mkdir(mode=0o700)
    (state / "qiniu-login.json").write_text(
        json.dumps({"token": "stored", "kind": "login", "expires_at": None})
    )
    assert invoke(authed, "agents", "list").exit_code == 0
    assert peer.requests[0].headers["authorization"] == f"Bearer {authed['COMPANION_QINIU_TOKEN']}"


def test_a_credentials_file_others_can_read_is_refused(
    peer: QiniuPeer, env: dict[str, str], tmp_path: Path
) -> None:
    creds = tmp_path / "credentials.toml"
    creds.write_text(f'[qiniu]\ntoken = "{peer.issue_token()}"\n')
    os.chmod(creds, 0o644)
    refused = invoke(env, "--credentials-file", str(creds), "agents", "list")
    assert refused.exit_code == 78 and "chmod 600" in refused.output
    os.chmod(creds, 0o600)
    used = invoke(env, "--credentials-file", str(creds), "agents", "list")
    assert used.exit_code == 0, used.output


def test_agents_list_prints_a_table_or_the_exact_json_of_every_page(
    peer: QiniuPeer, authed: dict[str, str]
) -> None:
    for i in range(130):
        peer.add_agent(f"助手{i:03d}")
    table = invoke(authed, "agents", "list")
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split() == [
        "ID",
        "NAME",
        "ASSISTANT",
        "LLM",
        "VOICE",
        "DEVICES",
        "LAST",
        "CONNECTED",
    ]
    assert len(table.output.splitlines()) == 2 + 130
    as_json = invoke(authed, "agents", "list", "--json", "--page-size", "50")
    assert json.loads(as_json.output) == list(peer.state.agents.values())


def test_agents_update_sends_only_the_options_and_file_fields_given(
    peer: QiniuPeer, authed: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("客厅")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("你是{{assistant_name}}。\n说话简短。", encoding="utf-8")
    fields = tmp_path / "agent.toml"
    fields.write_text('memModelId = "Memory_nomem"\n[extra.voice]\npitch = 1.1\n', encoding="utf-8")
    result = invoke(
        authed,
        "agents",
        "update",
        "客厅",
        "--from-file",
        str(fields),
        "--system-prompt-file",
        str(prompt),
        "--voice-speed",
        "1.2",
        "--chat-history",
        "1",
    )
    assert result.exit_code == 0, result.output
    sent = peer.sent("PUT")[0]
    assert sent.path == f"/xiaozhi/agent/{agent_id}"
    assert sent.json() == {
        "chatHistoryConf": 1,
        "memModelId": "Memory_nomem",
        "systemPrompt": "你是{{assistant_name}}。\n说话简短。",
        "extra": {"voice": {"pitch": 1.1, "speed": 1.2}},
    }
    nothing = invoke(authed, "agents", "update", agent_id)
    assert nothing.exit_code == 1 and "nothing to update" in nothing.output


def test_agents_delete_asks_unless_yes(peer: QiniuPeer, authed: dict[str, str]) -> None:
    agent_id = peer.add_agent("gone")
    refused = invoke(authed, "agents", "delete", agent_id, input="n\n")
    assert refused.exit_code == 1 and agent_id in peer.state.agents
    assert "cancelled" in refused.output
    done = invoke(authed, "agents", "delete", agent_id, "--yes")
    assert done.exit_code == 0 and agent_id not in peer.state.agents


def test_preregister_reports_each_mac_and_fails_when_one_failed(
    peer: QiniuPeer, authed: dict[str, str]
) -> None:
    agent_id = peer.add_agent("a")
    assert invoke(authed, "devices", "preregister", agent_id, "0e:8e:18:32:ec:22").exit_code == 0
    result = invoke(authed, "devices", "preregister", agent_id, "0E-8E-18-32-EC-22", "f2f1a86ac46b")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("0e:8e:18:32:ec:22") and "failed: 已存在" in line for line in lines)
    assert any(line.startswith("f2:f1:a8:6a:c4:6b") and line.rstrip().endswith("ok") for line in lines)
    assert "success_count: 1" in result.output
    as_json = invoke(authed, "devices", "preregister", agent_id, "f2f1a86ac46b", "--json")
    assert json.loads(as_json.output) == {
        "success_count": 0,
        "failed": [{"value": "f2:f1:a8:6a:c4:6b", "reason": "已存在"}],
    }


def test_bind_by_agent_name_and_list_devices(peer: QiniuPeer, authed: dict[str, str]) -> None:
    peer.add_agent("kitchen")
    code = peer.offer_code("8c:bf:ea:8f:38:28")
    bound = invoke(authed, "devices", "bind", "kitchen", code)
    assert bound.exit_code == 0, bound.output
    assert "8c:bf:ea:8f:38:28" in bound.output
    again = invoke(authed, "devices", "bind", "kitchen", code)
    assert again.exit_code == 1 and "激活码无效或已使用" in again.output
    listed = invoke(authed, "devices", "list", "kitchen", "--json")
    assert [d["macAddress"] for d in json.loads(listed.output)] == ["8c:bf:ea:8f:38:28"]


def test_voice_clone_status_waits_for_training_to_finish(peer: QiniuPeer, authed: dict[str, str]) -> None:
    created = invoke(authed, "voice-clone", "create", "--json")
    clone_id = json.loads(created.output)["id"]
    upload = invoke(
        authed,
        "voice-clone",
        "upload",
        clone_id,
        "--name",
        "我的声音",
        "--audio-url",
        "https://example.com/me.wav",
    )
    assert upload.exit_code == 0 and "Training" in upload.output
    waited = invoke(authed, "voice-clone", "status", clone_id, "--wait", "--interval", "0.01")
    assert waited.exit_code == 0, waited.output
    assert "Success" in waited.output


def test_sessions_and_history_tables(peer: QiniuPeer, authed: dict[str, str]) -> None:
    agent_id = peer.add_agent("a")
    peer.state.sessions[agent_id] = [{"sessionId": "s1", "createdAt": "2025-08-28 16:02:49", "chatCount": 2}]
    peer.state.history["s1"] = [
        {"createdAt": "2026-07-28 11:57:26", "chatType": 1, "content": "你好，请问我是谁？"},
        {"createdAt": "2026-07-28 11:57:27", "chatType": 2, "content": "哦？"},
    ]
    sessions = invoke(authed, "sessions", agent_id)
    assert "s1" in sessions.output and "1 of 1 sessions" in sessions.output
    history = invoke(authed, "history", agent_id, "s1")
    assert history.exit_code == 0
    assert "user" in history.output and "你好，请问我是谁？" in history.output and "agent" in history.output


@pytest.fixture
def bare() -> Iterator[QiniuPeer]:
    """A Qiniu server with only the calls the seeds name (no search, no agent detail, no /v1/...)."""
    yield from running(QiniuPeer(seed_only=True))  # type: ignore[misc]


def test_every_agent_command_works_with_an_id_against_a_server_with_only_the_seed_calls(
    bare: QiniuPeer, state: Path
) -> None:
    env = {"COMPANION_QINIU_BASE_URL": bare.url, "COMPANION_QINIU_TOKEN": bare.issue_token()}
    agent_id = bare.add_agent("kitchen", extra={"voice": {"pitch": 1.1}, "asr": {"lang": "zh"}})
    code = bare.offer_code("8c:bf:ea:8f:38:28")

    bound = invoke(env, "devices", "bind", agent_id, code)
    assert bound.exit_code == 0, bound.output
    assert bare.state.devices["8c:bf:ea:8f:38:28"]["agentId"] == agent_id
    prereg = invoke(env, "devices", "preregister", agent_id, "0e:8e:18:32:ec:22")
    assert prereg.exit_code == 0, prereg.output
    assert bare.state.prereg["0e:8e:18:32:ec:22"]["agent_id"] == agent_id
    updated = invoke(env, "agents", "update", agent_id, "--voice-speed", "1.3", "--name", "厨房")
    assert updated.exit_code == 0, updated.output
    assert bare.state.agents[agent_id]["agentName"] == "厨房"
    assert bare.state.agents[agent_id]["extra"] == {
        "voice": {"pitch": 1.1, "speed": 1.3},
        "asr": {"lang": "zh"},
    }
    shown = invoke(env, "agents", "show", agent_id, "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["agentName"] == "厨房"
    deleted = invoke(env, "agents", "delete", agent_id, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert agent_id not in bare.state.agents

    assert not bare.sent("GET", "/xiaozhi/agent/search")  # an id needs no lookup


def test_a_name_is_found_by_listing_when_search_is_absent(bare: QiniuPeer, state: Path) -> None:
    env = {"COMPANION_QINIU_BASE_URL": bare.url, "COMPANION_QINIU_TOKEN": bare.issue_token()}
    agent_id = bare.add_agent("kitchen")
    bound = invoke(env, "devices", "bind", "kitchen", bare.offer_code("8c:bf:ea:8f:38:28"))
    assert bound.exit_code == 0, bound.output
    assert f"to agent {agent_id}" in bound.output
    assert bare.sent("GET", "/xiaozhi/agent/list")


def test_a_search_that_answers_code_500_is_reported_as_the_lookup_and_nothing_is_bound(
    peer: QiniuPeer, authed: dict[str, str]
) -> None:
    peer.add_agent("kitchen")
    code = peer.offer_code("8c:bf:ea:8f:38:28")
    peer.inject(Answer.json({"code": 500, "msg": "服务器内部错误", "data": None}))
    result = invoke(authed, "devices", "bind", "kitchen", code)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "companion: Qiniu: could not resolve agent name 'kitchen': /xiaozhi/agent/search answered "
        "code 500 (服务器内部错误); nothing was bound"
    )
    assert not peer.sent("POST", "/xiaozhi/device/bind/")


def test_preregister_with_a_count_that_disagrees_reports_unknown_warns_and_fails(
    peer: QiniuPeer, authed: dict[str, str]
) -> None:
    agent_id = peer.add_agent("a")
    peer.inject(Answer.json({"success_count": 0, "failed": []}))
    result = invoke(authed, "devices", "preregister", agent_id, "0e:8e:18:32:ec:22", "f2:f1:a8:6a:c4:6b")
    assert result.exit_code == 1
    rows = [line for line in result.stdout.splitlines() if line[:2] in ("0e", "f2")]
    assert len(rows) == 2 and all("unknown" in row and " ok" not in row for row in rows)
    assert "warning: the reply's success_count is 0 but 2 requested item(s)" in result.stderr


def test_voice_and_llm_options_keep_the_other_extra_settings(peer: QiniuPeer, authed: dict[str, str]) -> None:
    current = {
        "voice": {"speed": 1.0, "pitch": 1.1, "volume": 50, "emotion": "default"},
        "llm": {"temperature": 0.3, "max_tokens": 512},
        "goodbye": {"enabled": True, "text": "再见"},
        "disabled_builtin_tools": ["news"],
    }
    agent_id = peer.add_agent("a", extra=current)
    result = invoke(authed, "agents", "update", agent_id, "--voice-speed", "1.2", "--llm-top-p", "0.9")
    assert result.exit_code == 0, result.output
    assert peer.state.agents[agent_id]["extra"] == {
        "voice": {"speed": 1.2, "pitch": 1.1, "volume": 50, "emotion": "default"},
        "llm": {"temperature": 0.3, "max_tokens": 512, "top_p": 0.9},
        "goodbye": {"enabled": True, "text": "再见"},
        "disabled_builtin_tools": ["news"],
    }
    helped = invoke(authed, "agents", "update", "--help")
    assert "merged into the agent's current extra" in " ".join(helped.output.split())
