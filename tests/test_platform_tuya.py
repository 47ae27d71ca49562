"""The Tuya client against a local OpenAPI server that checks every signature and token like the docs say."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from companion.platforms.errors import PlatformAPIError, PlatformAuthError, PlatformError
from companion.platforms.transport import RetryPolicy
from companion.platforms.tuya import ACTIONS, REGIONS, TuyaClient
from companion.platforms.tuya_models import RoleFields
from tests.peers.platform_http import isolate_platform_env, running
from tests.peers.platform_tuya import TuyaPeer

FAST = RetryPolicy(attempts=3, initial_s=0.01, cap_s=0.02)
HISTORY = "/v1.0/cloud/agent/ai/chat/b/devices/dev1/history"


@pytest.fixture
def peer() -> Iterator[TuyaPeer]:
    yield from running(TuyaPeer())  # type: ignore[misc]


def client(peer: TuyaPeer, **kwargs: object) -> TuyaClient:
    return TuyaClient(peer.state.client_id, peer.state.secret, base_url=peer.url, retry=FAST, **kwargs)  # type: ignore[arg-type]


async def test_a_token_is_granted_once_and_reused_by_signed_calls(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        first = await tuya.init_role("dev1")
        second = await tuya.bound_role("dev1")
    assert first.role_id == second.role_id == "94300002"
    assert first.bind_role_type == 1
    assert peer.state.grants == 1
    business = peer.sent(path_prefix="/v1.0/cloud/")
    assert len(business) == 2
    assert all(r.headers["access_token"] and r.headers["sign_method"] == "HMAC-SHA256" for r in business)
    assert business[0].method == "POST" and business[0].body == b""  # initialization has no body


async def test_concurrent_calls_with_an_expired_token_refresh_it_exactly_once(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")
        peer.expire_access_tokens()
        results = await asyncio.gather(*(tuya.bound_role("dev1") for _ in range(10)))
    assert all(role.role_id == "94300002" for role in results)
    assert peer.state.refreshes == 1
    assert peer.state.refused_refreshes == 0  # nobody reused the single-use refresh token
    assert peer.state.grants == 1


async def test_a_token_about_to_expire_is_refreshed_once_before_concurrent_calls(peer: TuyaPeer) -> None:
    peer.state.lifetime_s = 30  # inside the 60 s margin: every token is "about to expire"
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")
        peer.state.lifetime_s = 7200
        await asyncio.gather(*(tuya.bound_role("dev1") for _ in range(8)))
    assert peer.state.refreshes == 1
    assert peer.state.refused_refreshes == 0
    refresh = peer.sent(path_prefix="/v1.0/token/")
    assert len(refresh) == 1 and "access_token" not in refresh[0].headers


async def test_a_refused_refresh_falls_back_to_a_new_grant(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")
        peer.expire_access_tokens()
        peer.state.refuse_refresh = True
        role = await tuya.bound_role("dev1")
    assert role.role_id == "94300002"
    assert peer.state.refused_refreshes == 1
    assert peer.state.grants == 2


async def test_history_walks_back_by_gmt_end_and_returns_every_entry_once(peer: TuyaPeer) -> None:
    base = 1_753_000_000_000
    entries = [(f"r{i:02d}", base - i * 1000) for i in range(45)]
    # four entries share one millisecond across the first page boundary (positions 18-21)
    entries = [(rid, base - 18_000 if 18 <= i <= 21 else gmt) for i, (rid, gmt) in enumerate(entries)]
    peer.add_history("dev1", entries)
    async with client(peer) as tuya:
        got = await tuya.history("dev1", bind_role_type=1, role_id="94300002", before_ms=base + 1)
    ids = [e.request_id or "" for e in got]
    assert sorted(ids) == sorted(rid for rid, _ in entries)
    assert len(ids) == len(set(ids)) == 45
    times = [e.gmt_create or 0 for e in got]
    assert times == sorted(times, reverse=True)
    pages = peer.sent("GET", HISTORY)
    assert all(int(r.q("page_size") or 0) <= 20 for r in pages)
    assert pages[0].q("role_id") == "94300002" and pages[0].q("bind_role_type") == "1"
    assert int(pages[1].q("gmt_end") or 0) == base - 18_000 + 1  # oldest seen + 1 ms: the tie is not skipped


async def test_history_with_a_page_full_of_one_millisecond_still_ends(peer: TuyaPeer) -> None:
    same = 1_753_000_000_000
    peer.add_history("dev1", [(f"s{i:02d}", same) for i in range(25)] + [("older", same - 5)])
    async with client(peer) as tuya:
        got = await tuya.history("dev1", bind_role_type=2, before_ms=same + 1)
    ids = [e.request_id for e in got]
    assert len(ids) == len(set(ids))
    assert "older" in ids  # the walk stepped past the crowded millisecond
    assert len(peer.sent("GET", HISTORY)) <= 4


async def test_history_stops_at_max_items(peer: TuyaPeer) -> None:
    peer.add_history("dev1", [(f"r{i}", 1_753_000_000_000 - i) for i in range(60)])
    async with client(peer) as tuya:
        got = await tuya.history("dev1", bind_role_type=2, max_items=25)
    assert len(got) == 25
    assert len(peer.sent("GET", HISTORY)) == 2


async def test_history_delete_sends_at_most_20_ids_per_call(peer: TuyaPeer) -> None:
    ids = [f"req-{i}" for i in range(45)]
    peer.add_history("dev1", [(rid, 1_753_000_000_000 - i) for i, rid in enumerate(ids)])
    async with client(peer) as tuya:
        calls = await tuya.delete_history("dev1", ids, bind_role_type=1, role_id="94300002")
    assert calls == 3
    assert [len(batch) for batch in peer.state.deleted_batches] == [20, 20, 5]
    assert [i for batch in peer.state.deleted_batches for i in batch] == ids
    deletes = peer.sent("DELETE", HISTORY)
    assert all(r.q("clear_all_history") == "false" and r.q("bind_role_type") == "1" for r in deletes)
    assert peer.state.history["dev1"] == []


async def test_a_failed_memory_batch_says_how_many_memories_were_already_deleted(peer: TuyaPeer) -> None:
    keys = [f"sys.memory{i}" for i in range(25)]
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")  # token first, so the injected answer hits the second batch
        peer.inject(TuyaPeer.ok(True), TuyaPeer.fail(1106, "permission deny"))
        with pytest.raises(PlatformAPIError) as caught:
            await tuya.delete_memories("dev1", keys, bind_role_type=2)
    assert caught.value.code == 1106
    assert "20 of 25 memories were deleted before this failure" in str(caught.value)
    first = peer.sent("DELETE")[0]
    assert first.q("clear_all_memory") == "false" and first.q("memory_keys") == ",".join(keys[:20])


async def test_a_failed_delete_batch_says_how_many_entries_were_already_deleted(peer: TuyaPeer) -> None:
    ids = [f"req-{i}" for i in range(30)]
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")  # token first, so the injected answer hits the second batch
        peer.inject(TuyaPeer.ok(True), TuyaPeer.fail(1106, "permission deny"))
        with pytest.raises(PlatformAPIError) as caught:
            await tuya.delete_history("dev1", ids, bind_role_type=2)
    assert caught.value.code == 1106
    assert "20 of 30 entries were deleted before this failure" in str(caught.value)


async def test_custom_roles_are_created_listed_updated_and_deleted(peer: TuyaPeer) -> None:
    fields = RoleFields(
        role_name="天文学家",
        role_introduce="你是一名天文学家",
        role_img_url="https://i/2.png",
        use_lang_code="zh",
        use_timbre_id="6*",
        use_llm_id="8*",
        speed="50",
    )
    async with client(peer) as tuya:
        ids = [await tuya.create_custom_role("dev1", fields) for _ in range(23)]
        total, roles = await tuya.list_custom_roles("dev1")
        await tuya.update_custom_role("dev1", ids[0], RoleFields(role_desc="新的备注"))
        shown = await tuya.get_custom_role("dev1", ids[0])
        await tuya.delete_custom_role("dev1", ids[1])
        _, after = await tuya.list_custom_roles("dev1")
    assert total == 23 and sorted(r.role_id or "" for r in roles) == sorted(ids)
    assert shown.role_desc == "新的备注" and shown.role_name == "天文学家"
    assert len(after) == 22
    pages = peer.sent("GET", "/v1.0/cloud/agent/ai/chat/b/devices/dev1/custom-roles")
    assert {r.q("page_size") for r in pages if r.q("page_size")} == {"20"}
    put = peer.sent("PUT")[0]
    assert put.json() == {"role_desc": "新的备注"}  # only the field that was given
    post = peer.sent("POST", "/v1.0/cloud/agent/ai/chat/b/devices/dev1/custom-role")[0]
    assert post.headers["content-type"] == "application/json"
    assert post.body == json.dumps(post.json(), ensure_ascii=False, separators=(",", ":")).encode()


async def test_a_custom_role_without_its_required_fields_is_refused_before_sending(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        with pytest.raises(PlatformError, match="role_introduce"):
            await tuya.create_custom_role("dev1", RoleFields(role_name="x"))
    assert peer.requests == []


async def test_templates_from_template_and_binding(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        templates = await tuya.list_templates("dev1")
        detail = await tuya.get_template("dev1", "94300001")
        role_id = await tuya.create_role_from_template(
            "dev1", "94300001", RoleFields(role_name="我的"), need_bind=True
        )
        bound = await tuya.bound_role("dev1")
        assert await tuya.bind_role("dev1", 1, "94300001") is True
        rebound = await tuya.bound_role("dev1")
    assert [t.template_id for t in templates] == ["94300001", "94300002"]
    assert templates[1].bound is True and detail.role_name == "模板一"
    assert bound.role_id == role_id and bound.bind_role_type == 0 and bound.template_id == "94300001"
    assert rebound.bind_role_type == 1
    body = peer.sent("POST", "/v1.0/cloud/agent/ai/chat/b/devices/dev1/custom-roles/from-template")[0].json()
    assert body == {"template_id": "94300001", "role_name": "我的", "need_bind": True}


async def test_role_type_rules_are_checked_before_sending(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        with pytest.raises(PlatformError, match="need a role id"):
            await tuya.bind_role("dev1", 0)
        with pytest.raises(PlatformError, match="takes no role id"):
            await tuya.history("dev1", bind_role_type=2, role_id="x")
        with pytest.raises(PlatformError, match="needs its bind_role_type"):
            await tuya.delete_history("dev1", ["a"], role_id="x")
    assert peer.requests == []


async def test_platform_error_codes_become_clear_messages(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        with pytest.raises(PlatformAPIError) as missing:
            await tuya.bound_role("no-such-device")
    assert missing.value.code == 2010 and "--region" in str(missing.value)

    skewed = client(peer, clock=lambda: time.time() - 3600)
    async with skewed as tuya:
        with pytest.raises(PlatformAPIError) as clock:
            await tuya.bound_role("dev1")
    assert clock.value.code == 1013 and "clock" in str(clock.value)

    wrong = TuyaClient(peer.state.client_id, "not-the-secret", base_url=peer.url, retry=FAST)
    async with wrong as tuya:
        with pytest.raises(PlatformAuthError) as sign:
            await tuya.bound_role("dev1")
    assert sign.value.code == 1004 and "COMPANION_TUYA_SECRET" in str(sign.value)


async def test_a_token_the_server_keeps_refusing_is_reported_not_looped(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")
        peer.state.reject_all_tokens = True
        with pytest.raises(PlatformAuthError, match="could not be renewed"):
            await tuya.bound_role("dev1")
    assert peer.state.refreshes == 1


async def test_generic_call_uses_the_action_table(peer: TuyaPeer) -> None:
    async with client(peer) as tuya:
        assert (
            await tuya.call("aiAgent.delDeviceChatContext", "dev1", {"bind_role_type": 1, "role_id": "9"})
            is True
        )
        with pytest.raises(PlatformError, match="known actions"):
            await tuya.call("aiAgent.noSuchAction", "dev1")
    sent = peer.sent("DELETE", "/v1.0/cloud/agent/ai/chat/b/devices/dev1/chat-context")[0]
    assert sent.q("bind_role_type") == "1" and sent.q("role_id") == "9"
    assert all(name.startswith("aiAgent.") for name in ACTIONS)


def test_regions_map_to_their_documented_hosts() -> None:
    assert TuyaClient("id", "secret", region="eu").base_url == "https://openapi.tuyaeu.com"
    assert REGIONS["cn"] == "https://openapi.tuyacn.com"
    with pytest.raises(PlatformError, match="unknown Tuya region"):
        TuyaClient("id", "secret", region="mars")
    assert "not-the-secret" not in repr(TuyaClient("id", "not-the-secret"))


# -- through the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(peer: TuyaPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    isolate_platform_env(monkeypatch, tmp_path)
    return {
        "COMPANION_TUYA_CLIENT_ID": peer.state.client_id,
        "COMPANION_TUYA_SECRET": peer.state.secret,
        "COMPANION_TUYA_BASE_URL": peer.url,
    }


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Run `companion tuya ARGS` through the real top-level command group."""
    from companion.cli import main

    return CliRunner().invoke(main, ["tuya", *args], env=env, input=input)


def test_cli_lists_history_as_a_table_and_as_exact_json(peer: TuyaPeer, cli_env: dict[str, str]) -> None:
    peer.add_history("dev1", [("abc", 1_753_344_939_913), ("def", 1_753_344_900_000)])
    table = invoke(cli_env, "history", "list", "dev1", "--type", "template", "--role-id", "94300002")
    assert table.exit_code == 0, table.output
    assert "REQUEST ID" in table.output and "q abc" in table.output and "a def" in table.output
    as_json = invoke(cli_env, "history", "list", "dev1", "--type", "1", "--role-id", "94300002", "--json")
    assert json.loads(as_json.output) == sorted(peer.state.history["dev1"], key=lambda e: -e["gmt_create"])


def test_cli_history_delete_all_asks_first(peer: TuyaPeer, cli_env: dict[str, str]) -> None:
    peer.add_history("dev1", [("abc", 1_753_344_939_913)])
    refused = invoke(cli_env, "history", "delete", "dev1", "--all", "--type", "single", input="n\n")
    assert refused.exit_code == 1 and "cancelled" in refused.output
    assert peer.state.history["dev1"]
    done = invoke(cli_env, "history", "delete", "dev1", "--all", "--type", "single", "--yes")
    assert done.exit_code == 0, done.output
    assert peer.state.history["dev1"] == []


def test_cli_role_commands_and_the_action_list(peer: TuyaPeer, cli_env: dict[str, str]) -> None:
    shown = invoke(cli_env, "role", "show", "dev1")
    assert shown.exit_code == 0 and "94300002" in shown.output
    created = invoke(
        cli_env,
        "roles",
        "create",
        "dev1",
        "--name",
        "甲",
        "--introduce",
        "乙",
        "--image-url",
        "https://i/1.png",
        "--lang",
        "zh",
        "--voice",
        "6*",
        "--llm",
        "8*",
        "--json",
    )
    assert created.exit_code == 0, created.output
    role_id = json.loads(created.output)
    bound = invoke(cli_env, "role", "bind", "dev1", "--type", "custom", "--role-id", role_id)
    assert bound.exit_code == 0, bound.output
    assert peer.state.bound["dev1"]["role_id"] == role_id
    listed = invoke(cli_env, "actions")
    assert "aiAgent.delChatDeviceChatHistory" in listed.output and "/history" in listed.output


def test_cli_region_and_secret_errors_are_one_line(peer: TuyaPeer, cli_env: dict[str, str]) -> None:
    result = invoke({**cli_env, "COMPANION_TUYA_SECRET": "nope"}, "role", "show", "dev1")
    assert result.exit_code == 1
    assert (
        result.output.count("\n") == 1
        and "sign invalid" in result.output
        and "Traceback" not in result.output
    )
    assert "nope" not in result.output
    missing = invoke(cli_env, "role", "show", "ghost")
    assert missing.exit_code == 1 and "device not exist" in missing.output and "--region" in missing.output


async def test_tokens_stay_out_of_the_logs(peer: TuyaPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with client(peer) as tuya:
        await tuya.bound_role("dev1")
        peer.expire_access_tokens()
        await tuya.bound_role("dev1")
    assert "/v1.0/token/<refresh token>" in caplog.text
    for token in [*peer.state.tokens.values(), *peer.state.refresh_tokens.values()]:
        assert token.access not in caplog.text and token.refresh not in caplog.text
    for used in peer.state.used_refresh:
        assert used not in caplog.text
    assert peer.state.secret not in caplog.text
