"""Every action of Tuya's device chat service, driven through `companion tuya …` against the local server.

The server (tests/peers/platform_tuya.py) checks each signature and answers each action as the vendor's
document shows; here each command's JSON output is compared with what the server holds, and the request it
sent with the method and path the document (or, where unconfirmed, the action table) names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from companion.platforms.tuya import ACTIONS
from tests.peers.platform_http import Recorded, isolate_platform_env, running
from tests.peers.platform_tuya import TuyaPeer

# the action list of the seed document (002_…, "智能体设备聊天服务"), in its order
SEED_ACTIONS = [
    "aiAgent.listChatDeviceHistoryPage",
    "aiAgent.delChatDeviceChatHistory",
    "aiAgent.getChatDeviceMemorySwitch",
    "aiAgent.delChatDeviceMemory",
    "aiAgent.listChatDeviceMemories",
    "aiAgent.updateChatDeviceMemory",
    "aiAgent.listChatDeviceSummary",
    "aiAgent.updateChatDeviceSummary",
    "aiAgent.delDeviceChatContext",
    "aiAgent.addChatDeviceCustomRole",
    "aiAgent.listChatDeviceCustomRolePage",
    "aiAgent.getChatDeviceCustomRoleDetail",
    "aiAgent.updateChatDeviceCustomRole",
    "aiAgent.delChatDeviceCustomRole",
    "aiAgent.addChatCustomRoleFromTemplate",
    "aiAgent.listChatDeviceRoleTemplates",
    "aiAgent.getChatDeviceRoleTemplateDetail",
    "aiAgent.bindChatDeviceAgentRole",
    "aiAgent.getChatDeviceAgentBindRole",
    "aiAgent.initChatDeviceAgentBindRole",
    "aiAgent.listChatDeviceAvatar",
    "aiAgent.listChatDeviceLanguage",
    "aiAgent.listChatDeviceLargeModel",
    "aiAgent.getChatDeviceWakeUpWords",
    "aiAgent.listChatDeviceAgentVariable",
    "aiAgent.updateChatDeviceAgentVariable",
    "aiAgent.listChatDeviceTimbreMarket",
]
CHAT = "/v1.0/cloud/agent/ai/chat/b/devices/dev1"
VARIABLES = "/v1.0/cloud/agent/ai/b/devices/dev1/agent-variables"
TEMPLATE_ROLE = ["--type", "template", "--role-id", "94300002"]
ROLE_KEY = "dev1|1|94300002"
CREATE = ["--name", "甲", "--introduce", "乙", "--image-url", "https://i/1.png", "--lang", "zh"]
CREATE += ["--voice", "6*", "--llm", "8*"]


@pytest.fixture
def peer() -> Iterator[TuyaPeer]:
    yield from running(TuyaPeer())  # type: ignore[misc]


@pytest.fixture
def env(peer: TuyaPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    isolate_platform_env(monkeypatch, tmp_path)
    return {
        "COMPANION_TUYA_CLIENT_ID": peer.state.client_id,
        "COMPANION_TUYA_SECRET": peer.state.secret,
        "COMPANION_TUYA_BASE_URL": peer.url,
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    """`companion tuya ARGS` through the real top-level command group."""
    from companion.cli import main

    return CliRunner().invoke(main, ["tuya", *args], env=env)


def business(peer: TuyaPeer) -> list[Recorded]:
    return peer.sent(path_prefix="/v1.0/cloud/")


def a_role(peer: TuyaPeer, **fields: Any) -> str:
    with peer.lock:
        return peer._new_role("dev1", {"role_name": "天文学家", **fields})


@dataclass
class Case:
    """One action: how to set the server up, the command, the call it must make, what must follow."""

    action: str
    args: Callable[[TuyaPeer], list[str]]
    method: str
    path: str
    check: Callable[[TuyaPeer, Any, Recorded], bool]
    setup: Callable[[TuyaPeer], None] = field(default=lambda peer: None)


def _history(peer: TuyaPeer) -> None:
    peer.add_history("dev1", [("abc", 1_753_344_939_913), ("def", 1_753_344_900_000)])


def _roles(peer: TuyaPeer, count: int) -> None:
    for _ in range(count):
        a_role(peer)


def _memories(peer: TuyaPeer) -> None:
    peer.state.memories[ROLE_KEY] = {"sys.memoryAge": "一百岁", "sys.memoryBirthday": "七月七号"}


CASES = [
    Case(
        "aiAgent.listChatDeviceHistoryPage",
        lambda p: ["history", "list", "dev1", *TEMPLATE_ROLE],
        "GET",
        f"{CHAT}/history",
        lambda p, out, r: (
            out == sorted(p.state.history["dev1"], key=lambda e: -e["gmt_create"])
            and r.q("page_size") == "20"
            and r.q("role_id") == "94300002"
        ),
        _history,
    ),
    Case(
        "aiAgent.delChatDeviceChatHistory",
        lambda p: ["history", "delete", "dev1", "abc", "--type", "single"],
        "DELETE",
        f"{CHAT}/history",
        lambda p, out, r: (
            out == {"deleted": 1, "calls": 1}
            and [e["request_id"] for e in p.state.history["dev1"]] == ["def"]
            and r.q("clear_all_history") == "false"
        ),
        _history,
    ),
    Case(
        "aiAgent.getChatDeviceMemorySwitch",
        lambda p: ["memory", "switch", "dev1"],
        "GET",
        f"{CHAT}/memory/switch",
        lambda p, out, r: out == {"memory_open": True, "summary_open": False},
        lambda p: setattr(p.state, "summary_open", False),
    ),
    Case(
        "aiAgent.delChatDeviceMemory",
        lambda p: ["memory", "delete", "dev1", "sys.memoryAge", *TEMPLATE_ROLE],
        "DELETE",
        f"{CHAT}/memories",
        lambda p, out, r: (
            out == {"deleted": 1, "calls": 1}
            and p.state.memories[ROLE_KEY] == {"sys.memoryBirthday": "七月七号"}
            and r.q("clear_all_memory") == "false"
        ),
        _memories,
    ),
    Case(
        "aiAgent.listChatDeviceMemories",
        lambda p: ["memory", "list", "dev1", *TEMPLATE_ROLE],
        "GET",
        f"{CHAT}/memories",
        lambda p, out, r: (
            [m["memory_key"] for m in out[0]["memory_list"]] == ["sys.memoryAge", "sys.memoryBirthday"]
            and out[0]["effective_scope"] == 3
        ),
        _memories,
    ),
    Case(
        "aiAgent.updateChatDeviceMemory",
        lambda p: [
            "memory",
            "update",
            "dev1",
            "sys.memoryBirthday=7月7号",
            "sys.memoryAge=22",
            *TEMPLATE_ROLE,
        ],
        "PUT",
        f"{CHAT}/memories",
        lambda p, out, r: (
            out is True
            and p.state.memories[ROLE_KEY] == {"sys.memoryAge": "22", "sys.memoryBirthday": "7月7号"}
            and r.json()["bind_role_type"] == 1
        ),
        _memories,
    ),
    Case(
        "aiAgent.listChatDeviceSummary",
        lambda p: ["summary", "list", "dev1", *TEMPLATE_ROLE],
        "GET",
        f"{CHAT}/summary",
        lambda p, out, r: out == ["用户最初介绍自己", "用户还提出了诸多问题"],
        lambda p: p.state.summaries.update({ROLE_KEY: ["用户最初介绍自己", "用户还提出了诸多问题"]}),
    ),
    Case(
        "aiAgent.updateChatDeviceSummary",
        lambda p: ["summary", "update", "dev1", "用户兴趣爱好有踢足球", "喜欢读书", *TEMPLATE_ROLE],
        "PUT",
        f"{CHAT}/summary",
        lambda p, out, r: out is True and p.state.summaries[ROLE_KEY] == ["用户兴趣爱好有踢足球", "喜欢读书"],
    ),
    Case(
        "aiAgent.delDeviceChatContext",
        lambda p: ["context", "clear", "dev1", *TEMPLATE_ROLE],
        "DELETE",
        f"{CHAT}/chat-context",
        lambda p, out, r: out is True and p.state.context_clears == [ROLE_KEY],
    ),
    Case(
        "aiAgent.addChatDeviceCustomRole",
        lambda p: ["roles", "create", "dev1", *CREATE, "--speed", "50"],
        "POST",
        f"{CHAT}/custom-role",
        lambda p, out, r: out in p.state.roles["dev1"] and r.json()["speed"] == "50",
    ),
    Case(
        "aiAgent.listChatDeviceCustomRolePage",
        lambda p: ["roles", "list", "dev1"],
        "GET",
        f"{CHAT}/custom-roles",
        lambda p, out, r: len(out) == 23 and r.q("page_size") == "20",
        lambda p: _roles(p, 23),
    ),
    Case(
        "aiAgent.getChatDeviceCustomRoleDetail",
        lambda p: ["roles", "show", "dev1", a_role(p, role_desc="备注")],
        "GET",
        f"{CHAT}/custom-roles/163000101",
        lambda p, out, r: out["role_id"] == "163000101" and out["role_desc"] == "备注",
    ),
    Case(
        "aiAgent.updateChatDeviceCustomRole",
        lambda p: ["roles", "update", "dev1", a_role(p), "--desc", "新的备注"],
        "PUT",
        f"{CHAT}/custom-roles/163000101",
        lambda p, out, r: out is True and r.json() == {"role_desc": "新的备注"},
    ),
    Case(
        "aiAgent.delChatDeviceCustomRole",
        lambda p: ["roles", "delete", "dev1", a_role(p), "--yes"],
        "DELETE",
        f"{CHAT}/custom-roles/163000101",
        lambda p, out, r: out is True and p.state.roles["dev1"] == {},
    ),
    Case(
        "aiAgent.addChatCustomRoleFromTemplate",
        lambda p: ["roles", "from-template", "dev1", "94300001", "--name", "我的", "--bind"],
        "POST",
        f"{CHAT}/custom-roles/from-template",
        lambda p, out, r: (
            p.state.bound["dev1"]["role_id"] == out
            and r.json() == {"template_id": "94300001", "role_name": "我的", "need_bind": True}
        ),
    ),
    Case(
        "aiAgent.listChatDeviceRoleTemplates",
        lambda p: ["templates", "list", "dev1"],
        "GET",
        f"{CHAT}/role-templates",
        lambda p, out, r: out == p.state.templates,
    ),
    Case(
        "aiAgent.getChatDeviceRoleTemplateDetail",
        lambda p: ["templates", "show", "dev1", "94300001"],
        "GET",
        f"{CHAT}/role-templates/94300001",
        lambda p, out, r: out["role_name"] == "模板一",
    ),
    Case(
        "aiAgent.bindChatDeviceAgentRole",
        lambda p: ["role", "bind", "dev1", "--type", "template", "--role-id", "94300001"],
        "POST",
        f"{CHAT}/role-bindings",
        lambda p, out, r: out is True and p.state.bound["dev1"]["template_id"] == "94300001",
    ),
    Case(
        "aiAgent.getChatDeviceAgentBindRole",
        lambda p: ["role", "show", "dev1"],
        "GET",
        f"{CHAT}/role-bindings",
        lambda p, out, r: out == p.state.bound["dev1"],
    ),
    Case(
        "aiAgent.initChatDeviceAgentBindRole",
        lambda p: ["role", "init", "dev1"],
        "POST",
        f"{CHAT}/agent-roles/initialization",
        lambda p, out, r: out["bind_role_type"] == 1 and r.body == b"",
    ),
    Case(
        "aiAgent.listChatDeviceAvatar",
        lambda p: ["avatars", "dev1"],
        "GET",
        f"{CHAT}/avatars",
        lambda p, out, r: [a["url"] for a in out] == p.state.avatars,
    ),
    Case(
        "aiAgent.listChatDeviceLanguage",
        lambda p: ["languages", "dev1"],
        "GET",
        f"{CHAT}/languages",
        lambda p, out, r: out == p.state.languages,
    ),
    Case(
        "aiAgent.listChatDeviceLargeModel",
        lambda p: ["models", "dev1"],
        "GET",
        f"{CHAT}/large-models",
        lambda p, out, r: out == [{"llm_name": "1.5 Pro", "llm_id": 85}],
    ),
    Case(
        "aiAgent.getChatDeviceWakeUpWords",
        lambda p: ["wake-words", "dev1"],
        "GET",
        f"{CHAT}/wake-up-words",
        lambda p, out, r: out == "你好小智",
    ),
    Case(
        "aiAgent.listChatDeviceAgentVariable",
        lambda p: ["variables", "list", "dev1"],
        "GET",
        VARIABLES,
        lambda p, out, r: {"variable_key": "custom.userName", "variable_value": "张三"} in out,
    ),
    Case(
        "aiAgent.updateChatDeviceAgentVariable",
        lambda p: ["variables", "set", "dev1", "custom.familyName=李", "--type", "custom", "--role-id", "9"],
        "PUT",
        VARIABLES,
        lambda p, out, r: (
            {"variable_key": "custom.familyName", "variable_value": "李"} in out
            and r.json() == {"bind_role_type": 0, "role_id": "9", "variable_map": {"custom.familyName": "李"}}
        ),
    ),
    Case(
        "aiAgent.listChatDeviceTimbreMarket",
        lambda p: ["voices", "dev1"],
        "GET",
        f"{CHAT}/timbres",
        lambda p, out, r: out == p.state.timbres and r.q("page_size") == "20",
    ),
]


def test_the_cases_cover_the_27_actions_of_the_seed_and_the_table_holds_each() -> None:
    assert len(SEED_ACTIONS) == len(set(SEED_ACTIONS)) == 27
    assert [case.action for case in CASES] == SEED_ACTIONS
    assert set(SEED_ACTIONS) <= set(ACTIONS)


@pytest.mark.parametrize("case", CASES, ids=[c.action.removeprefix("aiAgent.") for c in CASES])
def test_each_action_through_the_cli(peer: TuyaPeer, env: dict[str, str], case: Case) -> None:
    case.setup(peer)
    args = case.args(peer)
    result = invoke(env, *args, "--json")
    assert result.exit_code == 0, result.output
    sent = business(peer)
    assert sent, "no business call reached the server"
    last = sent[-1]
    assert (last.method, last.path) == (case.method, case.path)
    spec = ACTIONS[case.action]
    template = spec.path.replace("{device_id}", "dev1")
    assert last.method == spec.method and last.path.startswith(template.split("{")[0].rstrip("/"))
    assert all(r.headers["sign_method"] == "HMAC-SHA256" and r.headers["access_token"] for r in sent)
    out = json.loads(result.stdout)
    assert case.check(peer, out, last), out
    table = invoke(env, *args) if case.method == "GET" else None
    if table is not None:
        assert table.exit_code == 0 and table.output.strip(), table.output


@pytest.mark.parametrize("case", CASES, ids=[c.action.removeprefix("aiAgent.") for c in CASES])
def test_each_commands_help_names_its_path_and_whether_it_is_confirmed(
    peer: TuyaPeer, env: dict[str, str], case: Case
) -> None:
    words = case.args(peer)
    command = words[: words.index("dev1")]
    text = invoke(env, *command, "--help").output
    spec = ACTIONS[case.action]
    assert case.action in text and spec.path in text
    if spec.confirmed:
        assert "path confirmed: https://developer.tuya.com/" in text
    else:
        assert "path unconfirmed" in text


def test_the_action_list_marks_the_six_inferred_paths(env: dict[str, str]) -> None:
    rows = json.loads(invoke(env, "actions", "--json").stdout)
    unconfirmed = {row["action"] for row in rows if row["status"] == "unconfirmed"}
    assert unconfirmed == {
        "aiAgent.updateChatDeviceMemory",
        "aiAgent.listChatDeviceSummary",
        "aiAgent.updateChatDeviceSummary",
        "aiAgent.listChatDeviceAvatar",
        "aiAgent.getChatDeviceWakeUpWords",
        "aiAgent.listChatDeviceTimbreMarket",
    }
    assert all(
        row["source"].startswith("https://developer.tuya.com/")
        for row in rows
        if row["status"] == "confirmed"
    )
    assert "STATUS" in invoke(env, "actions").output


def test_voices_walk_every_page_of_20_and_filter_by_language(peer: TuyaPeer, env: dict[str, str]) -> None:
    result = invoke(env, "voices", "dev1", "--lang", "zh", "--json")
    assert result.exit_code == 0, result.output
    voices = json.loads(result.stdout)
    assert [v["voiceId"] for v in voices] == [str(i) for i in range(1, 46, 2)]
    pages = peer.sent("GET", f"{CHAT}/timbres")
    assert [r.q("page_no") for r in pages] == ["1", "2"] and all(r.q("lang") == "zh" for r in pages)


# -- parameter checks: one line, non-zero, nothing sent --------------------------------------------


def assert_refused(result: Result, peer: TuyaPeer, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("companion: ") and result.output.count("\n") == 1, result.output
    assert fragment in result.output
    assert peer.requests == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["memory", "delete", "dev1", *TEMPLATE_ROLE], "give memory keys or --all"),
        (["memory", "delete", "dev1", "k", "--all", "--yes", *TEMPLATE_ROLE], "not both"),
        (["memory", "list", "dev1", "--type", "single", "--role-id", "x"], "takes no role id"),
        (["memory", "update", "dev1", "novalue", *TEMPLATE_ROLE], "expected KEY=VALUE"),
        (["summary", "list", "dev1", "--type", "custom"], "need a role id"),
        (["context", "clear", "dev1", "--role-id", "9"], "needs its bind_role_type"),
        (["variables", "set", "dev1", "=x"], "expected KEY=VALUE"),
        (["history", "delete", "dev1", "--type", "single"], "give request ids or --all"),
        (
            ["call", "delChatDeviceMemory", "dev1", "--params", '{"bind_role_type": 2}'],
            "clear_all_memory is required",
        ),
        (
            ["call", "delChatDeviceMemory", "dev1", "--params", '{"clear_all_memory": false}'],
            "memory_keys is needed",
        ),
        (
            [
                "call",
                "delChatDeviceMemory",
                "dev1",
                "--params",
                json.dumps({"clear_all_memory": False, "memory_keys": ",".join("k" * 21)}),
            ],
            "at most 20",
        ),
        (
            ["call", "delChatDeviceChatHistory", "dev1", "--params", '{"clear_all_history": false}'],
            "request_ids is needed",
        ),
        (["call", "delDeviceChatContext", "dev1", "--params", '{"bind_role_type": 0}'], "need a role id"),
        (["call", "--method", "GET"], "--method and --path go together"),
        (["call", "--method", "GET", "--path", "v1.0/x"], "must start with '/'"),
        (["call", "noSuchAction", "dev1"], "no HTTP mapping"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(
    peer: TuyaPeer, env: dict[str, str], args: list[str], fragment: str
) -> None:
    assert_refused(invoke(env, *args), peer, fragment)


def test_memory_delete_sends_at_most_20_keys_per_call(peer: TuyaPeer, env: dict[str, str]) -> None:
    keys = [f"custom.k{i}" for i in range(45)]
    peer.state.memories[ROLE_KEY] = {key: "v" for key in [*keys, "sys.memoryAge"]}
    result = invoke(env, "memory", "delete", "dev1", *keys, *TEMPLATE_ROLE, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 45, "calls": 3}
    assert [len(batch) for batch in peer.state.deleted_memory_batches] == [20, 20, 5]
    assert [k for batch in peer.state.deleted_memory_batches for k in batch] == keys
    assert peer.state.memories[ROLE_KEY] == {"sys.memoryAge": "v"}


def test_memory_delete_all_asks_first_then_clears(peer: TuyaPeer, env: dict[str, str]) -> None:
    _memories(peer)
    from companion.cli import main

    refused = CliRunner().invoke(
        main, ["tuya", "memory", "delete", "dev1", "--all", *TEMPLATE_ROLE], env=env, input="n\n"
    )
    assert refused.exit_code == 1 and "cancelled" in refused.output and business(peer) == []
    done = invoke(env, "memory", "delete", "dev1", "--all", "--yes", *TEMPLATE_ROLE)
    assert done.exit_code == 0, done.output
    assert peer.state.memories[ROLE_KEY] == {}
    assert business(peer)[-1].q("clear_all_memory") == "true"


def test_history_delete_through_the_cli_sends_at_most_20_ids_per_call(
    peer: TuyaPeer, env: dict[str, str]
) -> None:
    ids = [f"req-{i}" for i in range(41)]
    peer.add_history("dev1", [(rid, 1_753_000_000_000 - i) for i, rid in enumerate(ids)])
    result = invoke(env, "history", "delete", "dev1", *ids, "--type", "single", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": 41, "calls": 3}
    assert [len(batch) for batch in peer.state.deleted_batches] == [20, 20, 1]


# -- the escape hatch ------------------------------------------------------------------------------


def test_call_with_method_and_path_reaches_a_path_the_table_lacks_signed_the_same_way(
    peer: TuyaPeer, env: dict[str, str]
) -> None:
    direct = invoke(env, "call", "--method", "get", "--path", f"{CHAT}/large-models", "--json")
    assert direct.exit_code == 0, direct.output
    assert json.loads(direct.stdout) == peer.state.models
    filled = invoke(
        env,
        "call",
        "dev1",
        "--method",
        "GET",
        "--path",
        "/v1.0/cloud/agent/ai/chat/b/devices/{device_id}/timbres",
        "--params",
        '{"page_no": 2, "page_size": 20}',
        "--json",
    )
    assert filled.exit_code == 0, filled.output
    assert [v["voiceId"] for v in json.loads(filled.stdout)["list"]] == [str(i) for i in range(21, 41)]
    unknown = invoke(env, "call", "--method", "DELETE", "--path", f"{CHAT}/no-such-thing")
    assert (
        unknown.exit_code == 1 and "uri path invalid" in unknown.output
    )  # signed and accepted, then refused
    assert [r.path for r in business(peer)] == [
        f"{CHAT}/large-models",
        f"{CHAT}/timbres",
        f"{CHAT}/no-such-thing",
    ]


def test_call_still_invokes_table_actions_by_name(peer: TuyaPeer, env: dict[str, str]) -> None:
    peer.state.memories[ROLE_KEY] = {"sys.memoryAge": "1"}
    params = json.dumps(
        {
            "bind_role_type": 1,
            "role_id": "94300002",
            "clear_all_memory": False,
            "memory_keys": "sys.memoryAge",
        }
    )
    result = invoke(env, "call", "aiAgent.delChatDeviceMemory", "dev1", "--params", params, "--json")
    assert result.exit_code == 0, result.output
    assert peer.state.memories[ROLE_KEY] == {}
