"""The ESP-AI client and `companion espai` against a local server answering as seed 003 shows."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from companion.platforms.errors import PlatformAPIError, PlatformError
from companion.platforms.espai import DeviceQuery, EspAgentAdd, EspAgentUpdate, EspAiClient, decode_config
from companion.platforms.transport import RetryPolicy
from tests.peers.platform_espai import SEED_CONFIG, EspAiPeer
from tests.peers.platform_http import isolate_platform_env, running

FAST = RetryPolicy(attempts=3, initial_s=0.01, cap_s=0.02)


@pytest.fixture
def peer() -> Iterator[EspAiPeer]:
    yield from running(EspAiPeer())  # type: ignore[misc]


def client(peer: EspAiPeer, key: str | None = None) -> EspAiClient:
    return EspAiClient(key or peer.state.key, base_url=peer.url, retry=FAST)


async def test_agents_are_listed_with_config_decoded_and_the_raw_key_header(peer: EspAiPeer) -> None:
    peer.add_agent("琳琅")
    async with client(peer) as espai:
        agents = await espai.list_agents()
    assert len(agents) == 1
    agent = agents[0]
    assert agent.config == SEED_CONFIG and agent.config_error is None
    assert agent.enabled is True and agent.api_limit == 61 and agent.server_port == 8080
    sent = peer.requests[0]
    assert sent.headers["authorization"] == peer.state.key  # raw key, no "Bearer"
    assert sent.path == "/equipment/list" and sent.json() == {}
    assert peer.state.key not in repr(espai)


async def test_list_filters_are_sent_as_strings(peer: EspAiPeer) -> None:
    peer.add_agent("a")
    peer.add_agent("b", enable="0")
    async with client(peer) as espai:
        enabled = await espai.list_agents(enable=True, page=1, limit=10, type="0")
    assert [a.name for a in enabled] == ["a"]
    assert peer.requests[0].json() == {"type": "0", "enable": "1", "page": "1", "limit": "10"}


async def test_a_broken_config_string_is_reported_not_fatal(peer: EspAiPeer) -> None:
    peer.add_agent("broken", config="{not json")
    async with client(peer) as espai:
        (agent,) = await espai.list_agents()
    assert agent.config is None and "not valid JSON" in (agent.config_error or "")


async def test_add_update_and_delete(peer: EspAiPeer) -> None:
    source = peer.add_agent("source")
    async with client(peer) as espai:
        added = await espai.add_agent(
            EspAgentAdd(
                cdkey_id="772868ead56c48d68fd1924aa5ec3aac", name="琳琅1", enable=True, sort=99, copy=source
            )
        )
        new_config = {**SEED_CONFIG, "connected_reply": "你好呀"}
        changed = await espai.update_agent(EspAgentUpdate(id=added.id, name="琳琅2", config=new_config))
        (after,) = [a for a in await espai.list_agents() if a.id == added.id]
        await espai.delete_agents([added.id])
        remaining = await espai.list_agents()
    add_body = peer.sent(path_prefix="/equipment/add")[0].json()
    assert add_body == {
        "cdkey_id": "772868ead56c48d68fd1924aa5ec3aac",
        "name": "琳琅1",
        "type": "0",
        "enable": "1",
        "sort": "99",
        "copy": source,
    }
    update_body = peer.sent(path_prefix="/equipment/update")[0].json()
    assert isinstance(update_body["config"], str)  # a JSON string inside the JSON
    assert json.loads(update_body["config"]) == new_config
    assert set(update_body) == {"id", "name", "config"}
    assert changed["name"] == "琳琅2"
    assert after.config == new_config and after.name == "琳琅2"
    assert peer.sent(path_prefix="/equipment/del")[0].json() == [{"id": added.id}]
    assert [a.id for a in remaining] == [source]


async def test_platform_refusals_carry_the_platform_message(peer: EspAiPeer) -> None:
    async with client(peer) as espai:
        with pytest.raises(PlatformAPIError, match="额度卡不存在"):
            await espai.add_agent(EspAgentAdd(cdkey_id="nope", name="x"))
    async with client(peer, "wrong-key") as espai:
        with pytest.raises(PlatformAPIError, match="open_api_key 无效"):
            await espai.list_agents()


async def test_listing_is_retried_but_adding_is_not(peer: EspAiPeer) -> None:
    from tests.peers.platform_http import Answer

    peer.inject(Answer.text("busy", 503))
    async with client(peer) as espai:
        assert await espai.list_agents() == []
        peer.inject(Answer.text("busy", 503))
        with pytest.raises(PlatformError, match="HTTP 503"):
            await espai.add_agent(EspAgentAdd(cdkey_id="772868ead56c48d68fd1924aa5ec3aac", name="x"))
    assert len(peer.sent(path_prefix="/equipment/list")) == 2
    assert len(peer.sent(path_prefix="/equipment/add")) == 1


async def test_devices_are_listed_with_filters(peer: EspAiPeer) -> None:
    agent_id = peer.add_agent("a")
    peer.add_device(agent_id, "aa:bb:cc:dd:ee:01")
    peer.add_device(agent_id, "aa:bb:cc:dd:ee:02", online=False)
    async with client(peer) as espai:
        everything = await espai.list_devices()
        online = await espai.list_devices(DeviceQuery(is_online=True))
    assert everything.total == 2 and online.total == 1
    assert online.devices[0].device_id == "aa:bb:cc:dd:ee:01" and online.devices[0].online is True
    assert peer.sent(path_prefix="/devices/list")[1].json() == {"is_online": "1"}


def test_an_update_file_takes_config_as_a_table_or_a_json_string() -> None:
    from_table = EspAgentUpdate.from_mapping(
        "id1", {"name": "n", "enable": "1", "sort": 3, "config": {"a": 1}}
    )
    assert from_table.to_api() == {"id": "id1", "name": "n", "enable": "1", "sort": "3", "config": '{"a":1}'}
    from_string = EspAgentUpdate.from_mapping("id1", {"config": '{"a": 1}'})
    assert from_string.config == {"a": 1}
    with pytest.raises(PlatformError, match="unknown field"):
        EspAgentUpdate.from_mapping("id1", {"nmae": "typo"})
    with pytest.raises(PlatformError, match="not valid JSON"):
        EspAgentUpdate.from_mapping("id1", {"config": "{oops"})
    assert decode_config("") == (None, None)


# -- through the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(peer: EspAiPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    isolate_platform_env(monkeypatch, tmp_path)
    return {"COMPANION_ESPAI_KEY": peer.state.key, "COMPANION_ESPAI_BASE_URL": peer.url}


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Run `companion espai ARGS` through the real top-level command group."""
    from companion.cli import main

    return CliRunner().invoke(main, ["espai", *args], env=env, input=input)


def test_cli_list_shows_the_services_from_the_decoded_config(
    peer: EspAiPeer, cli_env: dict[str, str]
) -> None:
    agent_id = peer.add_agent("琳琅")
    table = invoke(cli_env, "agents", "list")
    assert table.exit_code == 0, table.output
    assert (
        agent_id in table.output and "esp-ai-asr-volcengine" in table.output and "esp-ai-llm" in table.output
    )
    as_json = invoke(cli_env, "agents", "list", "--json")
    assert json.loads(as_json.output) == [peer.state.agents[agent_id]]  # exactly what the server sent


def test_cli_show_decodes_config_and_masks_keys(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    agent_id = peer.add_agent("琳琅")
    shown = invoke(cli_env, "agents", "show", agent_id)
    assert shown.exit_code == 0, shown.output
    assert '"llm_server": "esp-ai-llm"' in shown.output  # decoded, not a quoted string
    assert "7b131bi418f94c788033i225dc00i1d0" not in shown.output
    assert peer.state.agents[agent_id]["api_key"] not in shown.output


def test_cli_update_from_a_toml_file_encodes_the_config(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    update = tmp_path / "agent.toml"
    update.write_text(
        'name = "小明"\nenable = "1"\n[config]\niat_server = "esp-ai-asr-volcengine"\n'
        'llm_server = "esp-ai-llm"\n'
        '[[config.llm_init_messages]]\nrole = "system"\ncontent = "你是小明同学。"\n',
        encoding="utf-8",
    )
    result = invoke(cli_env, "agents", "update", agent_id, "--file", str(update), "--sort", "5")
    assert result.exit_code == 0, result.output
    stored = peer.state.agents[agent_id]
    assert stored["name"] == "小明" and stored["sort"] == "5"
    assert json.loads(stored["config"])["llm_init_messages"][0]["content"] == "你是小明同学。"


CARD = "772868ead56c48d68fd1924aa5ec3aac"  # the quota card the peer knows


def test_cli_add_sends_each_option_as_the_field_it_names(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    source = peer.add_agent("source")
    result = invoke(
        cli_env,
        "agents",
        "add",
        "--name",
        "琳琅",
        "--cdkey-id",
        CARD,
        "--type",
        "1",
        "--enabled",
        "--model-id",
        "001",
        "--sort",
        "7",
        "--server-id",
        "node2",
        "--copy",
        source,
    )
    assert result.exit_code == 0, result.output
    assert peer.sent(path_prefix="/equipment/add")[0].json() == {
        "cdkey_id": CARD,
        "name": "琳琅",
        "type": "1",
        "enable": "1",
        "model_id": "001",
        "sort": "7",
        "server_id": "node2",
        "copy": source,
    }
    assert result.output.startswith("added agent ") and "(琳琅)" in result.output


def test_cli_devices_list_sends_each_filter_option_as_the_field_it_names(
    peer: EspAiPeer, cli_env: dict[str, str]
) -> None:
    result = invoke(
        cli_env,
        "devices",
        "list",
        "--name",
        "kitchen",
        "--mac",
        "aa:bb:cc:dd:ee:01",
        "--bin-id",
        "b1",
        "--version",
        "1.2",
        "--disabled",
        "--offline",
        "--type",
        "0",
        "--page",
        "2",
        "--limit",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert peer.sent(path_prefix="/devices/list")[0].json() == {
        "name": "kitchen",
        "device_id": "aa:bb:cc:dd:ee:01",
        "bin_id": "b1",
        "version": "1.2",
        "enable": "0",
        "is_online": "0",
        "type": "0",
        "page": "2",
        "limit": "5",
    }


def test_cli_update_refuses_a_file_that_holds_no_object_and_sends_nothing(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("a")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    as_fields = invoke(cli_env, "agents", "update", agent_id, "--file", str(listed))
    as_config = invoke(cli_env, "agents", "update", agent_id, "--config-file", str(listed))
    assert as_fields.exit_code == 1 and as_config.exit_code == 1
    assert as_fields.output == f"companion: {listed}: expected an object of agent fields\n"
    assert as_config.output == f"companion: {listed}: expected the config object\n"
    assert peer.sent(path_prefix="/equipment/update") == []


def test_cli_delete_asks_unless_yes(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    agent_id = peer.add_agent("a")
    refused = invoke(cli_env, "agents", "delete", agent_id, input="n\n")
    assert refused.exit_code == 1 and agent_id in peer.state.agents
    done = invoke(cli_env, "agents", "delete", agent_id, "--yes")
    assert done.exit_code == 0 and agent_id not in peer.state.agents


def test_cli_devices_of_one_agent_look_up_its_device_key(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    a, b = peer.add_agent("a"), peer.add_agent("b")
    peer.add_device(a, "aa:bb:cc:dd:ee:01")
    peer.add_device(b, "aa:bb:cc:dd:ee:02")
    result = invoke(cli_env, "devices", "list", "--agent", a)
    assert result.exit_code == 0, result.output
    assert "aa:bb:cc:dd:ee:01" in result.output and "aa:bb:cc:dd:ee:02" not in result.output
    sent = peer.sent(path_prefix="/devices/list")[0].json()
    assert sent == {"api_key": peer.state.agents[a]["api_key"]}


def test_cli_platform_error_is_one_line(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    result = invoke({**cli_env, "COMPANION_ESPAI_KEY": "wrong"}, "agents", "list")
    assert result.exit_code == 1
    assert result.output == "companion: ESP-AI: open_api_key 无效\n"


# -- companion espai config ------------------------------------------------------------------------

SECRET = "7b131bi418f94c788033i225dc00i1d0"  # llm_config.api_key in SEED_CONFIG


def stored_config(peer: EspAiPeer, agent_id: str) -> dict[str, Any]:
    return dict(json.loads(peer.state.agents[agent_id]["config"]))


def test_config_get_prints_the_decoded_json_with_secrets_masked(
    peer: EspAiPeer, cli_env: dict[str, str]
) -> None:
    peer.add_agent("琳琅")
    shown = invoke(cli_env, "config", "get", "琳琅")
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert printed["llm_config"] == {"model": "qwen2.5:7b", "api_key": "7b13…"}
    assert {k: v for k, v in printed.items() if k != "llm_config"} == {
        k: v for k, v in SEED_CONFIG.items() if k != "llm_config"
    }
    assert SECRET not in shown.output and "secrets are masked" in shown.stderr
    full = invoke(cli_env, "config", "get", "琳琅", "--show-secrets")
    assert json.loads(full.stdout) == SEED_CONFIG


def test_config_get_output_writes_the_real_values_to_a_0600_file(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    out = tmp_path / "config.json"
    result = invoke(cli_env, "config", "get", agent_id, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text(encoding="utf-8")) == SEED_CONFIG
    assert SECRET not in result.output


def test_config_set_changes_dotted_keys_and_keeps_the_rest(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    agent_id = peer.add_agent("琳琅")
    result = invoke(
        cli_env,
        "config",
        "set",
        agent_id,
        "tts_config.voice_type=zh_female_wanwanxiaohe_moon_bigtts",
        "llm_config.temperature=0.7",
        "llm_init_messages.0.content=你是小明同学。",
        "intention_config.sleep.enabled=true",
        'iat_config.clusterId="123"',
    )
    assert result.exit_code == 0, result.output
    expected = json.loads(json.dumps(SEED_CONFIG))
    expected["tts_config"]["voice_type"] = "zh_female_wanwanxiaohe_moon_bigtts"
    expected["llm_config"]["temperature"] = 0.7
    expected["llm_init_messages"][0]["content"] = "你是小明同学。"
    expected["intention_config"] = {"sleep": {"enabled": True}}
    expected["iat_config"]["clusterId"] = "123"
    assert stored_config(peer, agent_id) == expected  # the api_key and every other key survived
    sent = peer.sent(path_prefix="/equipment/update")
    assert len(sent) == 1 and isinstance(sent[0].json()["config"], str)
    again = invoke(cli_env, "config", "set", agent_id, "llm_config.temperature=0.7")
    assert again.exit_code == 0 and "nothing was sent" in again.output
    assert len(peer.sent(path_prefix="/equipment/update")) == 1


def test_config_set_refuses_bad_paths_and_masked_secrets(peer: EspAiPeer, cli_env: dict[str, str]) -> None:
    agent_id = peer.add_agent("琳琅")
    through = invoke(cli_env, "config", "set", agent_id, "connected_reply.text=x")
    assert through.exit_code == 1 and "connected_reply holds" in through.output
    index = invoke(cli_env, "config", "set", agent_id, "llm_init_messages.3.content=x")
    assert index.exit_code == 1 and "the list has 1 item(s)" in index.output
    no_equals = invoke(cli_env, "config", "set", agent_id, "tts_config.voice_type")
    assert no_equals.exit_code == 1 and "expected KEY=VALUE" in no_equals.output
    pasted = invoke(cli_env, "config", "set", agent_id, "llm_config.api_key=7b13…")
    assert pasted.exit_code == 1 and "masked value" in pasted.output
    assert not peer.sent(path_prefix="/equipment/update")
    assert stored_config(peer, agent_id) == SEED_CONFIG


def test_agents_update_refuses_a_config_file_of_masked_output(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    masked = tmp_path / "masked.json"
    masked.write_text(invoke(cli_env, "config", "get", agent_id).stdout, encoding="utf-8")
    refused = invoke(cli_env, "agents", "update", agent_id, "--config-file", str(masked))
    assert refused.exit_code == 1 and "llm_config.api_key" in refused.output and "masked" in refused.output
    assert stored_config(peer, agent_id) == SEED_CONFIG


def editor_script(tmp_path: Path, body: str) -> dict[str, str]:
    """An $EDITOR that runs `body` (Python, with `path` the file to edit) and notes the file's mode."""
    script = tmp_path / "editor.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, stat, sys\n"
        "path = sys.argv[1]\n"
        f"open({str(tmp_path / 'seen.json')!r}, 'w').write(json.dumps({{'path': path, "
        "'mode': stat.S_IMODE(os.stat(path).st_mode), "
        "'dir_mode': stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)}))\n" + body + "\n",
        encoding="utf-8",
    )
    script.chmod(0o700)
    return {"EDITOR": str(script), "VISUAL": ""}


def test_config_edit_opens_a_private_file_and_sends_the_edit_back_whole(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    editor = editor_script(
        tmp_path,
        "config = json.load(open(path, encoding='utf-8'))\n"
        "assert config['llm_config']['api_key'] == " + repr(SECRET) + "  # real values to edit\n"
        "config['connected_reply'] = '你好呀'\n"
        "config['tts_config']['speed'] = 1.2\n"
        "json.dump(config, open(path, 'w', encoding='utf-8'), ensure_ascii=False)",
    )
    result = invoke({**cli_env, **editor}, "config", "edit", agent_id)
    assert result.exit_code == 0, result.output
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert not Path(seen["path"]).exists()  # removed once sent
    expected = json.loads(json.dumps(SEED_CONFIG))
    expected["connected_reply"] = "你好呀"
    expected["tts_config"]["speed"] = 1.2
    assert stored_config(peer, agent_id) == expected
    assert SECRET not in result.output


def test_config_edit_sends_nothing_when_the_file_is_unchanged(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    result = invoke({**cli_env, **editor_script(tmp_path, "pass")}, "config", "edit", agent_id)
    assert result.exit_code == 0, result.output
    assert "no change" in result.output and "nothing was sent" in result.output
    assert not peer.sent(path_prefix="/equipment/update")


def test_config_edit_refuses_invalid_json_and_keeps_the_edit(
    peer: EspAiPeer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = peer.add_agent("琳琅")
    editor = editor_script(tmp_path, "open(path, 'w').write('{\"connected_reply\": \"hi\",}')")
    result = invoke({**cli_env, **editor}, "config", "edit", agent_id)
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith("companion: the edited config: not valid JSON:") and "\n" not in line
    assert "nothing was sent" in line
    kept = Path(json.loads((tmp_path / "seen.json").read_text())["path"])
    assert f"your edit is kept in {kept}" in line
    assert kept.read_text() == '{"connected_reply": "hi",}'
    assert not peer.sent(path_prefix="/equipment/update")
    assert stored_config(peer, agent_id) == SEED_CONFIG
    kept.unlink()
    kept.parent.rmdir()
