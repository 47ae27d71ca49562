"""`provision_qiniu` against a local Qiniu management server joined to the echo server's OTA endpoints.

The two local peers stand for the two halves of the real platform: the management API (tests/peers/
platform_qiniu.py) and the device-facing OTA/activation server (the echo server, tests/peers/
xiaozhi_echo.py). On the real platform they share one database; here `LinkedQiniuPeer` joins them:
codes the OTA side hands out can be bound through the API, and a bind or pre-registration through the
API is what the OTA side then sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from companion.backends.xiaozhi.identity import Identity
from companion.backends.xiaozhi.ota import OtaError
from companion.bringup.provisioning import (
    ALREADY_BOUND,
    ALREADY_PREREGISTERED,
    BOUND,
    PREREGISTERED,
    QINIU_OTA_URL,
    ActivationTimeout,
    ProvisioningError,
    ProvisionResult,
    provision_qiniu,
    qiniu_ota_url,
)
from companion.config import OFFICIAL_OTA_URL, XiaozhiSettings
from companion.errors import EX_UNAVAILABLE
from companion.platforms.errors import PlatformError
from companion.platforms.qiniu import QiniuClient
from tests.peers.platform_http import Answer, Recorded, free_port
from tests.peers.platform_qiniu import QiniuPeer
from tests.peers.xiaozhi_echo import EchoPeer

MAC = "0e:8e:18:32:ec:22"
IDENTITY = Identity(MAC, "36c98363-3656-43cb-a00f-8bced2391a90")
AGENT = "客厅"
T = TypeVar("T")


class LinkedQiniuPeer(QiniuPeer):
    """The management API of a platform whose OTA side is `echo` (running on `loop`).

    `share_codes`: codes the OTA side offers are known here (off = a code from some other server).
    `report_binds`: a successful bind or pre-registration here binds the device on the OTA side and ends
    any activation block the OTA reply carries (off = the OTA side never learns of it).
    """

    def __init__(
        self,
        echo: EchoPeer,
        loop: asyncio.AbstractEventLoop,
        *,
        share_codes: bool = True,
        report_binds: bool = True,
    ) -> None:
        super().__init__()
        self.echo = echo
        self.loop = loop
        self.share_codes = share_codes
        self.report_binds = report_binds

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the echo server's loop (it owns that state) and wait for it."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=5)

    def handle(self, request: Recorded) -> Answer:
        if self.share_codes:
            echo = self.echo
            offered = self._on_loop(lambda: {c: d for d, c in echo.codes.items() if d not in echo.bound})
            for code, device in offered.items():
                self.state.codes.setdefault(code, device)
        answer = super().handle(request)
        if self.report_binds and answer.status == 200 and request.method == "POST":
            body = json.loads(answer.body)
            if request.path.startswith("/xiaozhi/device/bind/") and body.get("code") == 0:
                code = request.path.rsplit("/", 1)[-1]
                self._on_loop(lambda: self.echo.bind(code))
            if request.path == "/xiaozhi/device/preregister" and body.get("success_count"):
                macs = [str(mac).lower() for mac in request.json()["mac_addresses"]]
                self._on_loop(lambda: self._activate_on_ota_side(macs))
        return answer

    def _activate_on_ota_side(self, macs: list[str]) -> None:
        self.echo.bound.update(macs)
        self.echo.ota_extra.pop("activation", None)


@dataclass
class Rig:
    echo: EchoPeer
    peer: LinkedQiniuPeer
    agent_id: str
    token: str

    def settings(self, **fields: Any) -> XiaozhiSettings:
        return XiaozhiSettings(ota_url=self.echo.ota_url, device_id=MAC, **fields)

    async def provision(self, agent: str = AGENT, **kwargs: Any) -> ProvisionResult:
        settings = kwargs.pop("settings", None) or self.settings()
        kwargs.setdefault("poll_s", 0.02)
        kwargs.setdefault("retry_s", 0.05)
        kwargs.setdefault("timeout_s", 10.0)
        async with QiniuClient(self.token, base_url=self.peer.url) as client:
            return await provision_qiniu(settings, IDENTITY, client, agent, **kwargs)

    def binds(self) -> list[Recorded]:
        return self.peer.sent("POST", "/xiaozhi/device/bind/")

    def preregisters(self) -> list[Recorded]:
        return self.peer.sent("POST", "/xiaozhi/device/preregister")


@contextlib.asynccontextmanager
async def rig(
    *, share_codes: bool = True, report_binds: bool = True, seed_only: bool = False, **echo_options: Any
) -> AsyncIterator[Rig]:
    """An echo server with OTA (options as EchoPeer's) and the linked platform with agent 客厅
    (`seed_only`: a platform with only the calls the seeds name)."""
    echo_options.setdefault("ota", True)
    async with EchoPeer(**echo_options) as echo:
        peer = LinkedQiniuPeer(
            echo, asyncio.get_running_loop(), share_codes=share_codes, report_binds=report_binds
        )
        peer.seed_only = seed_only
        peer.start()
        try:
            agent_id = peer.add_agent(AGENT)
            peer.add_agent("客厅灯")  # a name sharing the prefix: resolution must pick the exact one
            yield Rig(echo, peer, agent_id, peer.issue_token())
        finally:
            await asyncio.to_thread(peer.stop)


# ---------------------------------------------------------------- the happy paths


async def test_a_fresh_device_is_bound_with_its_code_and_activation_completes() -> None:
    progress: list[str] = []
    async with rig(activation=True) as r:
        result = await r.provision(on_progress=progress.append)
        code = r.echo.codes[MAC]
        assert result.outcome == BOUND and result.changed
        assert result.activation_code == code and result.agent_id == r.agent_id
        assert [b.path for b in r.binds()] == [f"/xiaozhi/device/bind/{r.agent_id}/{code}"]
        assert r.peer.state.devices[MAC]["agentId"] == r.agent_id
        assert MAC in r.echo.bound and r.echo.activation_polls >= 1
        # the last OTA check came after activation: the echo server offers a channel only to bound devices
        assert result.transport == "websocket" and result.endpoint == r.echo.websocket_url
        assert not r.preregisters()
    assert any(code in line for line in progress), progress


async def test_activation_is_polled_until_the_ota_server_confirms_it() -> None:
    # the OTA side learns of the bind only after three polls, as a slow real server would
    async with rig(activation=True, bind_after_polls=3, report_binds=False) as r:
        result = await r.provision()
        assert result.outcome == BOUND
        assert r.echo.activation_polls == 3
        assert result.activation_rounds == 1
        assert len(r.echo.ota_requests) == 2  # the first check and the one that confirmed


async def test_a_device_offered_no_code_has_its_mac_preregistered() -> None:
    async with rig(activation=False) as r:
        result = await r.provision()
        assert result.outcome == PREREGISTERED and result.changed
        assert result.activation_code is None and result.activation_rounds == 0
        assert [p.json() for p in r.preregisters()] == [
            {"agent_id": r.agent_id, "mac_addresses": [MAC], "serial_numbers": []}
        ]
        assert r.peer.state.prereg[MAC]["agent_id"] == r.agent_id
        assert not r.binds()


async def test_the_result_names_the_channel_the_daemon_will_open_without_its_secrets() -> None:
    mqtt = {"mqtt": {"endpoint": "127.0.0.1:1883", "client_id": "c", "password": "mqtt-secret-pw"}}
    async with rig(activation=False, ota_extra=mqtt) as r:
        result = await r.provision()
        assert (result.transport, result.endpoint) == ("mqtt", "127.0.0.1:1883")
        forced = await r.provision(settings=r.settings(transport="websocket"))
        assert (forced.transport, forced.endpoint) == ("websocket", r.echo.websocket_url)
        shown = json.dumps(result.to_json()) + json.dumps(forced.to_json())
        assert "mqtt-secret-pw" not in shown and "token" not in shown


async def test_an_activation_challenge_without_a_code_is_met_by_preregistering_then_waiting() -> None:
    challenge = {"activation": {"challenge": MAC, "message": "pre-register this device"}}
    async with rig(activation=False, ota_extra=challenge) as r:
        result = await r.provision()
        assert result.outcome == PREREGISTERED
        assert result.activation_rounds == 1 and r.echo.activation_polls >= 1
        assert r.peer.state.prereg[MAC]["agent_id"] == r.agent_id


async def test_a_second_run_on_a_bound_device_says_so_and_changes_nothing() -> None:
    async with rig(activation=True) as r:
        first = await r.provision()
        second = await r.provision(agent=r.agent_id)  # by id this time
        assert first.outcome == BOUND
        assert second.outcome == ALREADY_BOUND and not second.changed
        assert "already bound" in second.summary() and r.agent_id in second.summary()  # by id: no lookup
        assert len(r.binds()) == 1 and not r.preregisters()
        assert second.activation_rounds == 0


async def test_a_second_run_after_preregistration_says_so_and_changes_nothing() -> None:
    async with rig(activation=False) as r:
        await r.provision()
        again = await r.provision()
        assert again.outcome == ALREADY_PREREGISTERED and not again.changed
        assert len(r.preregisters()) == 1 and not r.binds()


async def test_a_bind_answered_already_bound_for_this_agent_counts_as_already_bound() -> None:
    # the platform has the device on this agent, but the OTA side still shows a code (it lags behind)
    async with rig(activation=True, bind_after_polls=1, report_binds=False) as r:
        r.peer.state.devices[MAC] = {"id": MAC, "macAddress": MAC, "agentId": r.agent_id}
        result = await r.provision()
        assert result.outcome == ALREADY_BOUND
        assert len(r.binds()) == 1 and result.activation_rounds == 1


# ---------------------------------------------------------------- refusals and failures


async def test_an_unknown_agent_is_refused_before_the_device_is_touched() -> None:
    async with rig(activation=True) as r:
        with pytest.raises(PlatformError, match="no agent named '卧室'") as info:
            await r.provision(agent="卧室")
        assert not r.echo.ota_requests and not r.binds() and not r.preregisters()
        assert info.value.exit_code == 1


async def test_an_unreachable_ota_server_is_one_clear_error() -> None:
    async with rig(activation=True) as r:
        url = f"http://127.0.0.1:{free_port()}/xiaozhi/ota/"
        with pytest.raises(OtaError, match="cannot reach the OTA server") as info:
            await r.provision(settings=XiaozhiSettings(ota_url=url, device_id=MAC))
        assert info.value.exit_code == EX_UNAVAILABLE
        assert not r.binds() and not r.preregisters()


async def test_an_ota_reply_that_is_not_json_is_one_clear_error() -> None:
    async with rig(ota_not_json=True) as r:
        with pytest.raises(OtaError, match="is not JSON") as info:
            await r.provision()
        assert "\n" not in str(info.value)
        assert not r.binds() and not r.preregisters()


async def test_a_refused_code_names_the_ota_server_as_the_likely_cause() -> None:
    # the platform does not know the code: it came from an OTA server that is not this platform's
    async with rig(activation=True, share_codes=False) as r:
        with pytest.raises(ProvisioningError) as info:
            await r.provision()
        message = str(info.value)
        assert "激活码无效或已使用" in message and r.echo.ota_url in message and QINIU_OTA_URL in message
        assert info.value.exit_code == 1
        assert MAC not in r.peer.state.devices and r.echo.activation_polls == 0


async def test_a_device_bound_to_another_agent_is_left_alone_with_the_move_command() -> None:
    async with rig(activation=False) as r:
        other = r.peer.add_agent("书房")
        r.peer.state.devices[MAC] = {"id": MAC, "macAddress": MAC, "agentId": other}
        with pytest.raises(ProvisioningError, match="bound to another agent, 书房") as info:
            await r.provision()
        assert f"companion qiniu devices move {MAC} {r.agent_id}" in str(info.value)
        assert r.peer.state.devices[MAC]["agentId"] == other and not r.preregisters()


async def test_a_device_preregistered_to_another_agent_is_refused() -> None:
    async with rig(activation=False) as r:
        other = r.peer.add_agent("书房")
        async with QiniuClient(r.token, base_url=r.peer.url) as client:
            await client.preregister(other, [MAC])
        with pytest.raises(ProvisioningError, match=f"pre-registered to another agent \\({other}\\)"):
            await r.provision()
        assert r.peer.state.prereg[MAC]["agent_id"] == other


async def test_a_mac_held_by_another_account_is_reported_not_hidden() -> None:
    async with rig(activation=False) as r:
        # bound to an agent this account cannot see: search finds nothing, pre-register says 已存在
        r.peer.state.devices[MAC] = {"id": MAC, "macAddress": MAC, "agentId": "f" * 32}
        with pytest.raises(ProvisioningError, match=r"已存在.*another account"):
            await r.provision()


async def test_a_bind_answered_already_bound_for_another_account_is_an_error() -> None:
    async with rig(activation=True) as r:
        r.peer.state.devices[MAC] = {"id": MAC, "macAddress": MAC, "agentId": "f" * 32}
        with pytest.raises(ProvisioningError, match="already bound, but to no agent of this account"):
            await r.provision()
        assert len(r.binds()) == 1 and r.echo.activation_polls == 0


async def test_activation_that_never_comes_ends_with_a_clear_timeout() -> None:
    async with rig(activation=True, report_binds=False) as r:
        with pytest.raises(ActivationTimeout) as info:
            await r.provision(timeout_s=0.3)
        message = str(info.value)
        assert "bound to agent 客厅" in message and "run the same command again" in message
        assert info.value.exit_code == EX_UNAVAILABLE
        assert r.peer.state.devices[MAC]["agentId"] == r.agent_id  # the binding itself stands
        # and the promised rerun then finishes once the OTA side catches up
        r.echo.bind(MAC)
        assert (await r.provision()).outcome == ALREADY_BOUND


async def test_a_device_id_that_is_not_a_mac_is_refused_before_any_call() -> None:
    async with rig(activation=True) as r:
        async with QiniuClient(r.token, base_url=r.peer.url) as client:
            with pytest.raises(ProvisioningError, match="not a MAC address"):
                await provision_qiniu(r.settings(), Identity("pi-kitchen", IDENTITY.client_id), client, AGENT)
        assert not r.peer.requests and not r.echo.ota_requests


def test_the_ota_url_is_qiniu_s_unless_the_config_or_the_option_names_another() -> None:
    assert qiniu_ota_url(OFFICIAL_OTA_URL) == QINIU_OTA_URL == "https://xrobo.qiniuapi.com/v1/ota/"
    assert qiniu_ota_url("") == QINIU_OTA_URL
    assert qiniu_ota_url("http://lab:8003/xiaozhi/ota/") == "http://lab:8003/xiaozhi/ota/"
    assert qiniu_ota_url("http://lab:8003/xiaozhi/ota/", "http://x/ota/") == "http://x/ota/"


async def test_a_device_is_bound_by_agent_id_on_a_server_with_only_the_seed_calls() -> None:
    async with rig(activation=True, seed_only=True) as r:
        result = await r.provision(agent=r.agent_id)
        assert result.outcome == BOUND and result.agent_id == r.agent_id
        assert r.peer.state.devices[MAC]["agentId"] == r.agent_id
        assert not r.peer.sent("GET", "/xiaozhi/agent/search")  # an id is used as given


async def test_a_device_is_preregistered_by_agent_id_on_a_server_with_only_the_seed_calls() -> None:
    async with rig(activation=False, seed_only=True) as r:
        result = await r.provision(agent=r.agent_id)
        assert result.outcome == PREREGISTERED
        assert r.peer.state.prereg[MAC]["agent_id"] == r.agent_id


async def test_a_failed_name_lookup_says_so_and_touches_nothing() -> None:
    async with rig(activation=True) as r:
        r.peer.inject(Answer.json({"code": 500, "msg": "服务器内部错误", "data": None}))
        with pytest.raises(PlatformError) as info:
            await r.provision()
        assert str(info.value) == (
            f"Qiniu: could not resolve agent name {AGENT!r}: /xiaozhi/agent/search answered code 500 "
            "(服务器内部错误); nothing was bound or pre-registered"
        )
        assert not r.binds() and not r.echo.ota_requests


async def test_a_preregister_reply_that_contradicts_itself_is_not_taken_for_success() -> None:
    async with rig(activation=False, report_binds=False, seed_only=True) as r:
        r.peer.handle = _answer_preregister_with(r.peer.handle, {"success_count": 0, "failed": []})  # type: ignore[method-assign,assignment]
        with pytest.raises(ProvisioningError, match="does not say whether it worked"):
            await r.provision(agent=r.agent_id)


def _answer_preregister_with(
    handle: Callable[[Recorded], Answer], body: dict[str, Any]
) -> Callable[[Recorded], Answer]:
    def answer(request: Recorded) -> Answer:
        if request.path == "/xiaozhi/device/preregister":
            return Answer.json(body)
        return handle(request)

    return answer
