"""The Qiniu client against a local server that answers as the seeds and the vendor's API docs show."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from companion.platforms.errors import PlatformAPIError, PlatformAuthError, PlatformError, PlatformUnavailable
from companion.platforms.qiniu import (
    BIND_AGENT_NOT_FOUND,
    BIND_ALREADY_BOUND,
    BIND_CODE_INVALID,
    AgentLookupError,
    QiniuClient,
)
from companion.platforms.qiniu_models import AgentCreate, AgentFunction, AgentUpdate
from companion.platforms.transport import RetryPolicy
from tests.peers.platform_http import Answer, running
from tests.peers.platform_qiniu import CAPTCHA_TEXT, QiniuPeer, QiniuState

FAST = RetryPolicy(attempts=3, initial_s=0.01, cap_s=0.02)


@pytest.fixture
def peer() -> Iterator[QiniuPeer]:
    yield from running(QiniuPeer())  # type: ignore[misc]


@pytest.fixture
def token(peer: QiniuPeer) -> str:
    return peer.issue_token()


def client(peer: QiniuPeer, token: str | None) -> QiniuClient:
    return QiniuClient(token, base_url=peer.url, retry=FAST)


async def test_register_and_login_with_a_captcha_then_use_the_token(peer: QiniuPeer) -> None:
    async with client(peer, None) as qiniu:
        image = await qiniu.captcha()
        await qiniu.register("maker", "pw-1", image.captcha_id, CAPTCHA_TEXT)
        second = await qiniu.captcha()
        login = await qiniu.login("maker", "pw-1", second.captcha_id, CAPTCHA_TEXT)
        agents = await qiniu.list_agents()
    assert image.image.startswith(b"\x89PNG") and uuid.UUID(image.captcha_id).version == 4
    assert login.expire_s == 43200 and login.token in peer.state.tokens
    assert "pw-1" not in repr(login) and login.token not in repr(login)
    assert agents == []
    sent = peer.sent("POST", "/xiaozhi/user/login")[0].json()
    assert sent == {
        "areaCode": "+86",
        "captcha": CAPTCHA_TEXT,
        "captchaId": second.captcha_id,
        "mobile": "",
        "password": "pw-1",
        "username": "maker",
    }
    assert "authorization" not in peer.sent("POST", "/xiaozhi/user/login")[0].headers
    assert peer.sent("GET", "/xiaozhi/agent/list")[0].headers["authorization"] == f"Bearer {login.token}"


async def test_login_goes_to_the_login_host_and_the_rest_to_the_management_host() -> None:
    shared = QiniuState(users={"maker": "pw"})
    with QiniuPeer(shared) as management, QiniuPeer(shared) as login_host:
        async with QiniuClient(None, base_url=management.url, login_url=login_host.url, retry=FAST) as qiniu:
            image = await qiniu.captcha()
            await qiniu.login("maker", "pw", image.captcha_id, CAPTCHA_TEXT)
            await qiniu.list_agents()
        assert [r.path for r in login_host.requests] == ["/xiaozhi/user/login"]
        assert "/xiaozhi/user/login" not in [r.path for r in management.requests]


async def test_wrong_password_and_wrong_captcha_say_so(peer: QiniuPeer) -> None:
    peer.add_user("maker", "right")
    async with client(peer, None) as qiniu:
        image = await qiniu.captcha()
        with pytest.raises(PlatformAuthError, match="wrong user name or password"):
            await qiniu.login("maker", "wrong", image.captcha_id, CAPTCHA_TEXT)
        image = await qiniu.captcha()
        with pytest.raises(PlatformAPIError, match="wrong captcha") as bad:
            await qiniu.login("maker", "right", image.captcha_id, "zzzz")
    assert bad.value.code == 403


async def test_an_expired_token_is_http_200_with_code_401_and_is_an_error(peer: QiniuPeer) -> None:
    stale = peer.issue_token(lifetime_s=-1)
    async with client(peer, stale) as qiniu:
        with pytest.raises(PlatformAuthError) as caught:
            await qiniu.list_agents()
    assert caught.value.code == 401 and "未登录" in str(caught.value)
    assert "companion qiniu login" in str(caught.value)
    assert stale not in str(caught.value)


async def test_the_agent_list_follows_the_cursor_to_the_end(peer: QiniuPeer, token: str) -> None:
    ids = [peer.add_agent(f"agent-{i:03d}") for i in range(250)]
    async with client(peer, token) as qiniu:
        agents = await qiniu.list_agents(page_size=100)
    assert [a.id for a in agents] == ids
    pages = peer.sent("GET", "/xiaozhi/agent/list")
    assert [(r.q("limit"), r.q("cursor")) for r in pages] == [
        ("100", None),
        ("100", ids[99]),
        ("100", ids[199]),
    ]


async def test_an_invalid_cursor_reply_is_an_error_even_on_http_200(peer: QiniuPeer, token: str) -> None:
    peer.add_agent("a")
    peer.inject(Answer.json({"code": 500, "msg": "无效的游标参数", "data": None}))
    async with client(peer, token) as qiniu:
        with pytest.raises(PlatformAPIError, match="无效的游标参数"):
            await qiniu.list_agents()


async def test_a_server_that_repeats_its_cursor_is_stopped(peer: QiniuPeer, token: str) -> None:
    agent = {"id": "a" * 32, "agentName": "x"}
    loop = Answer.json({"code": 0, "msg": "success", "data": [agent], "nextCursor": "a" * 32})
    peer.inject(loop, loop)
    async with client(peer, token) as qiniu:
        with pytest.raises(PlatformError, match="repeated cursor"):
            await qiniu.list_agents()


async def test_a_preregister_list_that_repeats_its_cursor_is_stopped(peer: QiniuPeer, token: str) -> None:
    device = {"id": "p1", "mac_address": "02:00:00:00:00:01"}
    loop = Answer.json({"code": 0, "msg": "success", "data": {"devices": [device], "next_cursor": "c1"}})
    peer.inject(loop, loop)
    async with client(peer, token) as qiniu:
        with pytest.raises(PlatformError, match="the pre-register list repeated cursor c1"):
            await qiniu.list_preregistered("a" * 32)
    assert [r.q("cursor") for r in peer.sent("GET", "/v1/pre-register/agents/")] == [None, "c1"]


async def test_search_by_mac_sends_the_normalised_mac(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("kitchen")
    peer.state.devices["aa:bb:cc:dd:ee:0f"] = {"id": "aa:bb:cc:dd:ee:0f", "agentId": agent_id}
    async with client(peer, token) as qiniu:
        found = await qiniu.search_agents("AA-BB-CC-DD-EE-0F", by="mac")
    assert [a.id for a in found] == [agent_id]
    assert peer.sent("GET", "/xiaozhi/agent/search")[0].q("q") == "aa:bb:cc:dd:ee:0f"


async def test_agents_are_resolved_by_id_or_exact_name(peer: QiniuPeer, token: str) -> None:
    one = peer.add_agent("客厅")
    peer.add_agent("客厅助手")
    peer.add_agent("twin")
    peer.add_agent("twin")
    async with client(peer, token) as qiniu:
        assert (await qiniu.resolve_agent("客厅")).id == one
        assert (await qiniu.resolve_agent(one.upper())).id == one
        with pytest.raises(PlatformError, match="several agents"):
            await qiniu.resolve_agent("twin")
        with pytest.raises(PlatformError, match="no agent named 'tw'"):
            await qiniu.resolve_agent("tw")
        unknown = await qiniu.resolve_agent("F" * 32)  # an id is used as given: the call it is for will say
    assert unknown.id == "f" * 32 and unknown.agent_name is None
    assert [r.q("q") for r in peer.sent("GET", "/xiaozhi/agent/search")] == ["客厅", "twin", "tw"]


async def test_a_name_is_resolved_by_listing_when_the_server_has_no_search(token: str) -> None:
    with QiniuPeer(seed_only=True) as bare:
        wanted = bare.add_agent("kitchen")
        bare.add_agent("kitchen lamp")
        bare.state.tokens[token] = 2e9
        async with QiniuClient(token, base_url=bare.url, retry=FAST) as qiniu:
            found = await qiniu.resolve_agent("kitchen")
            with pytest.raises(PlatformError, match=r"no agent named 'kit' \(names starting so: 'kitchen'"):
                await qiniu.resolve_agent("kit")
        assert found.id == wanted
        assert [r.path for r in bare.requests[:2]] == ["/xiaozhi/agent/search", "/xiaozhi/agent/list"]


async def test_a_failed_search_is_reported_as_a_failed_lookup(peer: QiniuPeer, token: str) -> None:
    peer.add_agent("kitchen")
    peer.inject(Answer.json({"code": 500, "msg": "服务器内部错误", "data": None}))
    async with client(peer, token) as qiniu:
        with pytest.raises(AgentLookupError) as caught:
            await qiniu.resolve_agent("kitchen")
    assert str(caught.value) == (
        "Qiniu: could not resolve agent name 'kitchen': "
        "/xiaozhi/agent/search answered code 500 (服务器内部错误)"
    )


async def test_agent_details_and_unknown_ids(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("a", chatHistoryConf=2, langCode="zh")
    async with client(peer, token) as qiniu:
        agent = await qiniu.get_agent(agent_id)
        with pytest.raises(PlatformAPIError, match="智能体不存在") as missing:
            await qiniu.get_agent("0" * 32)
    assert agent.chat_history_conf == 2 and agent.lang_code == "zh" and agent.raw["createdAt"]
    assert missing.value.code == 500


async def test_create_and_update_send_only_the_fields_given(peer: QiniuPeer, token: str) -> None:
    async with client(peer, token) as qiniu:
        agent_id = await qiniu.create_agent(
            AgentCreate("客服助手", assistant_name="阿伟", intent_model_id="Intent_function_call")
        )
        update = AgentUpdate(
            system_prompt="*新的角色介绍",
            chat_history_conf=0,
            functions=[AgentFunction("SYSTEM_PLUGIN_WEATHER", {"default_location": "广州"})],
            extra={"voice": {"speed": 1.2, "volume": 50}},
        )
        assert await qiniu.update_agent(agent_id, update) is None
        with pytest.raises(PlatformError, match="nothing to update"):
            await qiniu.update_agent(agent_id, AgentUpdate())
    assert peer.sent("POST", "/xiaozhi/agent")[0].json() == {
        "agentName": "客服助手",
        "assistantName": "阿伟",
        "intentModelId": "Intent_function_call",
    }
    assert peer.sent("PUT")[0].json() == {
        "chatHistoryConf": 0,
        "systemPrompt": "*新的角色介绍",
        "functions": [{"pluginId": "SYSTEM_PLUGIN_WEATHER", "paramInfo": {"default_location": "广州"}}],
        "extra": {"voice": {"speed": 1.2, "volume": 50}},
    }
    assert peer.state.agents[agent_id]["systemPrompt"] == "*新的角色介绍"


def test_an_update_file_with_an_unknown_field_is_refused_with_the_known_ones() -> None:
    with pytest.raises(PlatformError, match=r"unknown agent field.*systemPromt.*systemPrompt"):
        AgentUpdate.from_api_fields({"systemPromt": "typo"}, "agent.toml")
    with pytest.raises(PlatformError, match="chatHistoryConf must be 0, 1 or 2"):
        AgentUpdate.from_api_fields({"chatHistoryConf": 5})
    update = AgentUpdate.from_api_fields(
        {"agentName": "x", "functions": [{"pluginId": "P"}], "extra": {"llm": {}}}
    )
    assert update.to_api() == {
        "agentName": "x",
        "functions": [{"pluginId": "P", "paramInfo": {}}],
        "extra": {"llm": {}},
    }


async def test_delete_is_not_retried_after_a_gateway_error(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("gone")
    peer.inject(Answer.text("<html>bad gateway</html>", 502))
    async with client(peer, token) as qiniu:
        with pytest.raises(PlatformUnavailable, match="HTTP 502"):
            await qiniu.delete_agent(agent_id)
    assert len(peer.sent("DELETE")) == 1
    assert agent_id in peer.state.agents


async def test_reads_are_retried_after_a_gateway_error(peer: QiniuPeer, token: str) -> None:
    peer.add_agent("a")
    peer.inject(Answer.text("busy", 503))
    async with client(peer, token) as qiniu:
        agents = await qiniu.list_agents()
    assert len(agents) == 1 and len(peer.sent("GET")) == 2


async def test_bind_by_activation_code_and_its_documented_refusals(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("a")
    code = peer.offer_code("8C:BF:EA:8F:38:28")
    async with client(peer, token) as qiniu:
        bound = await qiniu.bind_device(agent_id, code)
        with pytest.raises(PlatformAPIError) as used:
            await qiniu.bind_device(agent_id, code)
        with pytest.raises(PlatformAPIError) as no_agent:
            await qiniu.bind_device("0" * 32, peer.offer_code("11:22:33:44:55:66", "111111"))
        with pytest.raises(PlatformAPIError) as twice:
            await qiniu.bind_device(agent_id, peer.offer_code("8c:bf:ea:8f:38:28", "222222"))
        devices = await qiniu.list_devices(agent_id)
    assert bound.mac == "8c:bf:ea:8f:38:28"
    assert used.value.code == BIND_CODE_INVALID and "changes after every OTA check" in str(used.value)
    assert no_agent.value.code == BIND_AGENT_NOT_FOUND
    assert twice.value.code == BIND_ALREADY_BOUND and "already bound" in str(twice.value)
    assert [d.mac for d in devices] == ["8c:bf:ea:8f:38:28"] and devices[0].board == "companion-pi"
    binds = peer.sent("POST", "/xiaozhi/device/bind/")
    assert binds[0].path == f"/xiaozhi/device/bind/{agent_id}/{code}" and binds[0].json() == {}
    assert len(binds) == 4  # a refused bind is not repeated


async def test_preregister_reports_partial_success_per_mac(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("a")
    async with client(peer, token) as qiniu:
        first = await qiniu.preregister(agent_id, ["0E-8E-18-32-EC-22"])
        result = await qiniu.preregister(agent_id, ["0e:8e:18:32:ec:22", "F2F1A86AC46B", "f2:f1:a8:6a:c4:6b"])
    assert first.success_count == 1 and first.failed == []
    assert result.success_count == 1
    outcomes = result.outcomes(["0e:8e:18:32:ec:22", "F2F1A86AC46B", "f2:f1:a8:6a:c4:6b"])
    assert [(o.mac, o.ok, o.reason) for o in outcomes] == [
        ("0e:8e:18:32:ec:22", False, "已存在"),
        ("f2:f1:a8:6a:c4:6b", True, ""),
    ]
    body = peer.sent("POST", "/xiaozhi/device/preregister")[1].json()
    assert body == {
        "agent_id": agent_id,
        "mac_addresses": ["0e:8e:18:32:ec:22", "f2:f1:a8:6a:c4:6b"],
        "serial_numbers": [],
    }


async def test_preregister_refused_by_the_envelope_is_an_error(peer: QiniuPeer, token: str) -> None:
    async with client(peer, "not-a-token") as qiniu:
        with pytest.raises(PlatformAuthError):
            await qiniu.preregister("0" * 32, ["0e:8e:18:32:ec:22"])
    async with client(peer, token) as qiniu:
        with pytest.raises(PlatformError, match="not a MAC address"):
            await qiniu.preregister("0" * 32, ["0e:8e:18"])


async def test_unbind_move_and_replies_that_say_message_instead_of_msg(peer: QiniuPeer, token: str) -> None:
    a, b = peer.add_agent("a"), peer.add_agent("b")
    peer.state.devices["aa:bb:cc:dd:ee:ff"] = {"id": "aa:bb:cc:dd:ee:ff", "agentId": a}
    peer.state.foreign_macs.add("11:11:11:11:11:11")
    async with client(peer, token) as qiniu:
        await qiniu.move_device("AA:BB:CC:DD:EE:FF", b)
        with pytest.raises(PlatformAPIError, match=r"无权限操作该设备.*does not own"):
            await qiniu.move_device("11:11:11:11:11:11", b)
        await qiniu.unbind_device("AA-BB-CC-DD-EE-FF")
        with pytest.raises(PlatformAPIError, match="设备不存在"):
            await qiniu.unbind_device("AA-BB-CC-DD-EE-FF")
    assert peer.sent("PUT")[0].path == f"/v1/devices/aa:bb:cc:dd:ee:ff/agent/{b}"
    assert peer.sent("POST", "/xiaozhi/device/unbind")[0].json() == {"deviceId": "aa:bb:cc:dd:ee:ff"}
    assert peer.state.devices == {}


async def test_preregistrations_are_listed_page_by_page_shown_and_deleted(
    peer: QiniuPeer, token: str
) -> None:
    agent_id = peer.add_agent("a")
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(230)]
    async with client(peer, token) as qiniu:
        await qiniu.preregister(agent_id, macs)
        listed = await qiniu.list_preregistered(agent_id)
        one = await qiniu.get_preregistered("02-00-00-00-00-05")
        await qiniu.delete_preregistered("02:00:00:00:00:05")
        gone = await qiniu.get_preregistered("02:00:00:00:00:05")
    assert len(listed) == 230 and len({d.id for d in listed}) == 230
    assert [r.q("cursor") is None for r in peer.sent("GET", "/v1/pre-register/agents/")] == [
        True,
        False,
        False,
    ]
    assert one is not None and one.mac_address == "02:00:00:00:00:05".upper()
    assert gone is None


async def test_sessions_follow_pages_and_history_names_the_speaker(peer: QiniuPeer, token: str) -> None:
    agent_id = peer.add_agent("a")
    peer.state.sessions[agent_id] = [
        {"sessionId": f"s{i}", "createdAt": "2025-08-28 16:02:49", "chatCount": i} for i in range(45)
    ]
    peer.state.history["s1"] = [
        {"createdAt": "2026-07-28 11:57:26", "chatType": 1, "content": "你好，请问我是谁？", "audioId": None},
        {"createdAt": "2026-07-28 11:57:27", "chatType": 2, "content": "哦？", "toolDuration": 0},
        {"createdAt": "2026-07-28 11:57:28", "chatType": 3, "content": "{}", "toolInfo": "weather"},
    ]
    async with client(peer, token) as qiniu:
        total, sessions = await qiniu.list_sessions(agent_id)
        _, some = await qiniu.list_sessions(agent_id, max_items=5)
        messages = await qiniu.chat_history(agent_id, "s1")
    assert total == 45 and [s.session_id for s in sessions] == [f"s{i}" for i in range(45)]
    assert len(some) == 5
    assert [m.speaker for m in messages] == ["user", "agent", "tool"]


async def test_voice_clone_lifecycle(peer: QiniuPeer, token: str) -> None:
    async with client(peer, token) as qiniu:
        slot = await qiniu.create_voice_clone("zh", "free")
        with pytest.raises(PlatformError, match="1-20 characters"):
            await qiniu.train_voice_clone(slot.id, "x" * 21, "https://example.com/a.wav")
        training = await qiniu.train_voice_clone(slot.id, "我的专属音色", "https://example.com/a.wav")
        states = [(await qiniu.get_voice_clone(slot.id)).state for _ in range(2)]
        listed = await qiniu.list_voice_clones()
        pro = await qiniu.create_voice_clone("ja", "pro")
        with pytest.raises(PlatformAPIError, match=r"付费音色栏位不可删除.*cannot be deleted"):
            await qiniu.delete_voice_clone(pro.id)
        await qiniu.delete_voice_clone(slot.id)
    assert slot.state == "Init" and training.state == "Training"
    assert states == ["Training", "Success"]
    assert {c.id for c in listed} == {slot.id}
    assert peer.sent("PUT")[0].json() == {"name": "我的专属音色", "key": "https://example.com/a.wav"}
    assert set(peer.state.clones) == {pro.id}


async def test_a_training_call_is_not_retried_after_a_gateway_error(peer: QiniuPeer, token: str) -> None:
    async with client(peer, token) as qiniu:
        slot = await qiniu.create_voice_clone()
        peer.inject(Answer.text("bad gateway", 502))
        with pytest.raises(PlatformUnavailable):
            await qiniu.train_voice_clone(slot.id, "v", "https://example.com/a.wav")
    assert len(peer.sent("PUT")) == 1  # a paid slot would be charged twice


async def test_tokens_and_codes_stay_out_of_the_logs(
    peer: QiniuPeer, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    agent_id = peer.add_agent("a")
    code = peer.offer_code("8c:bf:ea:8f:38:28", "918273")
    peer.inject(Answer.text("busy", 503))
    async with client(peer, token) as qiniu:
        await qiniu.list_agents()
        await qiniu.bind_device(agent_id, code)
    assert "retrying" in caplog.text and "GET /xiaozhi/agent/list" in caplog.text
    assert token not in caplog.text and "918273" not in caplog.text


async def test_a_preregister_reply_whose_count_disagrees_leaves_the_unnamed_macs_unknown(
    peer: QiniuPeer, token: str
) -> None:
    agent_id = peer.add_agent("a")
    macs = ["0e:8e:18:32:ec:22", "f2:f1:a8:6a:c4:6b"]
    peer.inject(Answer.json({"success_count": 0, "failed": [{"value": macs[0], "reason": "已存在"}]}))
    async with client(peer, token) as qiniu:
        result = await qiniu.preregister(agent_id, macs)
    assert not result.consistent(macs)
    assert [(o.mac, o.status) for o in result.outcomes(macs)] == [(macs[0], "failed"), (macs[1], "unknown")]
    assert "success_count is 0 but 1 requested" in result.inconsistency(macs)
    counted = type(result).from_api({"success_count": 1, "failed": [{"value": "SN-9", "reason": "已存在"}]})
    assert counted.consistent([macs[0]], ["SN-9"]) and counted.outcomes([macs[0]], ["SN-9"])[0].ok


async def test_an_update_of_extra_merges_into_the_current_extra_which_the_server_replaces_whole(
    peer: QiniuPeer, token: str
) -> None:
    current = {
        "voice": {"speed": 1.0, "pitch": 1.1, "emotion": "happy"},
        "llm": {"temperature": 0.3},
        "goodbye": {"enabled": True},
    }
    agent_id = peer.add_agent("a", extra=current)
    async with client(peer, token) as qiniu:
        await qiniu.update_agent(agent_id, AgentUpdate(extra={"voice": {"speed": 1.4}}))
    assert peer.state.agents[agent_id]["extra"] == {
        "voice": {"speed": 1.4, "pitch": 1.1, "emotion": "happy"},
        "llm": {"temperature": 0.3},
        "goodbye": {"enabled": True},
    }
    assert [r.method for r in peer.requests] == ["GET", "PUT"]
