"""From a fresh device to one bound to a Qiniu agent: OTA check, bind or pre-register, wait for activation.

The device side (the xiaozhi OTA server) and the account side (the Qiniu management API) are two services
that only meet through the device's MAC and its activation code. `provision_qiniu` runs the OTA check as
this device, binds the code it is offered to the agent (or pre-registers the MAC when no code is offered),
then polls activation until the OTA server stops asking for it. It is idempotent: a device already bound
(or pre-registered) to the agent is reported as such and nothing is changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..backends.xiaozhi import ota
from ..backends.xiaozhi.identity import Identity
from ..config import OFFICIAL_OTA_URL, XiaozhiSettings
from ..errors import ProtocolError
from ..platforms.errors import PlatformAPIError, PlatformError
from ..platforms.mac import is_mac, normalise_mac
from ..platforms.qiniu import (
    BIND_ALREADY_BOUND,
    BIND_CODE_INVALID,
    ENDPOINT_ABSENT,
    AgentLookupError,
    QiniuClient,
)
from ..platforms.qiniu_models import Agent

log = logging.getLogger(__name__)

QINIU_OTA_URL = "https://xrobo.qiniuapi.com/v1/ota/"
ACTIVATION_TIMEOUT_S = 300.0  # Qiniu codes live ~24 h; after an API bind activation takes seconds

BOUND = "bound"
PREREGISTERED = "preregistered"
ALREADY_BOUND = "already-bound"
ALREADY_PREREGISTERED = "already-preregistered"
OUTCOMES = (BOUND, PREREGISTERED, ALREADY_BOUND, ALREADY_PREREGISTERED)

Progress = Callable[[str], None]


class ProvisioningError(PlatformError):
    """The platform and the device server disagree, or the device belongs elsewhere; the message says
    what to do."""


class ActivationTimeout(ProtocolError):
    """The binding was made but the OTA server did not confirm activation in time (run again later)."""


@dataclass(frozen=True)
class ProvisionResult:
    """What `provision_qiniu` did (`outcome`, one of OUTCOMES) and where the device stands now."""

    outcome: str
    device_id: str
    agent_id: str
    agent_name: str | None
    ota_url: str
    activation_code: str | None = None  # the code that was bound (None when none was used)
    activation_rounds: int = 0  # rounds of `<ota>/activate` polls + OTA re-check it took (0: none asked)
    transport: str | None = None  # the channel the last OTA reply offers ("websocket"/"mqtt")
    endpoint: str | None = None  # its URL or broker (never its token)

    @property
    def changed(self) -> bool:
        """Whether this run bound or pre-registered anything."""
        return self.outcome in (BOUND, PREREGISTERED)

    @property
    def agent_label(self) -> str:
        return f"{self.agent_name} ({self.agent_id})" if self.agent_name else self.agent_id

    def summary(self) -> str:
        """One sentence for the user."""
        if self.outcome == BOUND:
            return f"bound to agent {self.agent_label} with activation code {self.activation_code}"
        if self.outcome == PREREGISTERED:
            return f"pre-registered to agent {self.agent_label} by MAC (the OTA server offered no code)"
        if self.outcome == ALREADY_BOUND:
            return f"already bound to agent {self.agent_label}; nothing changed"
        return f"already pre-registered to agent {self.agent_label}; nothing changed"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "changed": self.changed,
            "device_id": self.device_id,
            "agent": {"id": self.agent_id, "name": self.agent_name},
            "ota_url": self.ota_url,
            "activation_code": self.activation_code,
            "activated": True,
            "activation_rounds": self.activation_rounds,
            "transport": self.transport,
            "endpoint": self.endpoint,
        }


def qiniu_ota_url(configured: str, override: str | None = None) -> str:
    """The OTA URL to provision with: `override`, else the configured one unless it is still the
    xiaozhi.me default (a Qiniu code cannot come from there), else Qiniu's own."""
    if override:
        return override
    if configured and configured != OFFICIAL_OTA_URL:
        return configured
    return QINIU_OTA_URL


async def provision_qiniu(
    settings: XiaozhiSettings,
    identity: Identity,
    client: QiniuClient,
    agent_ref: str,
    *,
    http: httpx.AsyncClient | None = None,
    timeout_s: float = ACTIVATION_TIMEOUT_S,
    poll_s: float = ota.ACTIVATION_POLL_S,
    retry_s: float = ota.ACTIVATION_RETRY_S,
    on_progress: Progress | None = None,
) -> ProvisionResult:
    """Bind this device (`identity`, checked at `settings.ota_url`) to the Qiniu agent `agent_ref`.

    Raises PlatformError (unknown agent, refused code, device owned by another agent or account),
    OtaError (OTA server unreachable or unusable) or ActivationTimeout (bound, but the OTA server still
    asks for activation after `timeout_s`).
    """
    say = on_progress or (lambda _text: None)
    try:
        mac = normalise_mac(identity.device_id)
    except PlatformError:
        raise ProvisioningError(
            f"Device-Id {identity.device_id!r} is not a MAC address, and Qiniu binds devices by MAC: "
            "set xiaozhi.device_id to one (aa:bb:cc:dd:ee:ff) or leave it empty to use this machine's"
        ) from None
    try:
        agent = await client.resolve_agent(agent_ref)
    except AgentLookupError as exc:
        raise exc.nothing("bound or pre-registered") from exc.cause
    label = f"{agent.agent_name} ({agent.id})" if agent.agent_name else agent.id
    own = http is None
    http = http or ota.make_client(settings)
    try:
        say(f"device {mac}: OTA check at {settings.ota_url}")
        reply = await ota.check(settings, identity, client=http)
        code = reply.activation.code if reply.activation is not None else ""
        if code:
            say(f"the OTA server offers activation code {code}; binding it to agent {label}")
            outcome = await _bind(client, agent, mac, code, settings.ota_url)
        else:
            outcome = await _bound_or_preregister(client, agent, label, mac, say)
        rounds = 0
        if reply.activation is not None:
            say("waiting for the OTA server to confirm activation")
            reply, rounds = await _wait_activation(
                settings, identity, http, outcome, label, timeout_s=timeout_s, poll_s=poll_s, retry_s=retry_s
            )
    finally:
        if own:
            await http.aclose()
    transport = endpoint = None
    if reply.websocket is not None or reply.mqtt is not None:
        transport = reply.transport(settings.transport)  # the channel `companion run` will open
        if transport == "mqtt":
            endpoint = reply.mqtt.endpoint if reply.mqtt else None
        else:
            endpoint = reply.websocket.url if reply.websocket else None
    return ProvisionResult(
        outcome=outcome,
        device_id=mac,
        agent_id=agent.id,
        agent_name=agent.agent_name,
        ota_url=settings.ota_url,
        activation_code=code if outcome == BOUND else None,
        activation_rounds=rounds,
        transport=transport,
        endpoint=endpoint,
    )


async def _bind(client: QiniuClient, agent: Agent, mac: str, code: str, ota_url: str) -> str:
    """BOUND, or ALREADY_BOUND when the platform says the device is bound already (to this agent)."""
    try:
        await client.bind_device(agent.id, code)
    except PlatformAPIError as exc:
        if exc.code == BIND_ALREADY_BOUND:
            if await _bound_here(client, agent, mac):
                return ALREADY_BOUND
            raise ProvisioningError(
                f"Qiniu says {mac} is already bound, but to no agent of this account: another account "
                "probably holds it (unbind it there)"
            ) from None
        if exc.code == BIND_CODE_INVALID:
            raise ProvisioningError(
                f"Qiniu refused activation code {code} from {ota_url}: {exc.message or 'invalid code'}; "
                "the code was fresh, so that OTA server is probably not Qiniu's "
                f"(use --ota-url {QINIU_OTA_URL} or check xiaozhi.ota_url)"
            ) from None
        raise
    return BOUND


async def _bound_or_preregister(
    client: QiniuClient, agent: Agent, label: str, mac: str, say: Progress
) -> str:
    """No code was offered: the device is bound or pre-registered already, or it gets pre-registered."""
    if await _bound_here(client, agent, mac):
        return ALREADY_BOUND
    existing = await client.get_preregistered(mac)
    if existing is not None:
        return _own_preregistration(existing.agent_id, agent, mac)
    say(f"the OTA server offers no activation code; pre-registering {mac} to agent {label}")
    result = await client.preregister(agent.id, [mac])
    outcome = result.outcomes([mac])[0]
    if outcome.ok:
        return PREREGISTERED
    # e.g. 已存在: someone pre-registered or bound it since we looked, or another account holds it
    existing = await client.get_preregistered(mac)
    if existing is not None:
        return _own_preregistration(existing.agent_id, agent, mac)
    if await _bound_here(client, agent, mac):
        return ALREADY_BOUND
    if outcome.unknown:
        raise ProvisioningError(
            f"Qiniu's reply to pre-registering {mac} does not say whether it worked ({outcome.reason}), "
            "and this account cannot see it bound or pre-registered; check with "
            f"`companion qiniu prereg show {mac}` and run this again"
        )
    raise ProvisioningError(
        f"Qiniu refused to pre-register {mac}: {outcome.reason or 'no reason given'}; this account sees "
        "it neither bound nor pre-registered, so another account probably holds it (unbind it there)"
    )


def _own_preregistration(owner: str | None, agent: Agent, mac: str) -> str:
    if owner and owner != agent.id:
        raise ProvisioningError(
            f"{mac} is pre-registered to another agent ({owner}); remove that with "
            f"`companion qiniu prereg delete {mac}` and run this again"
        )
    return ALREADY_PREREGISTERED


async def _bound_here(client: QiniuClient, agent: Agent, mac: str) -> bool:
    """True if the device is bound to `agent`, False if to no agent of this account; raises if to another.

    Without `agent/search` (HTTP 404) only `agent`'s own devices can be listed: True or False then.
    """
    try:
        owners = await client.search_agents(mac, by="mac")
    except PlatformAPIError as exc:
        if exc.code != ENDPOINT_ABSENT:
            raise
        log.info("the server has no agent search; looking for %s among the agent's devices", mac)
        try:
            devices = await client.list_devices(agent.id)
        except PlatformAPIError as listing:
            if listing.code != ENDPOINT_ABSENT:
                raise
            return False
        return any(normalise_mac(device.mac) == mac for device in devices if is_mac(device.mac))
    if any(owner.id == agent.id for owner in owners):
        return True
    if owners:
        other = owners[0]
        name = other.agent_name or other.id
        raise ProvisioningError(
            f"{mac} is bound to another agent, {name} ({other.id}); move it with "
            f"`companion qiniu devices move {mac} {agent.id}`"
        )
    return False


async def _wait_activation(
    settings: XiaozhiSettings,
    identity: Identity,
    http: httpx.AsyncClient,
    outcome: str,
    label: str,
    *,
    timeout_s: float,
    poll_s: float,
    retry_s: float,
) -> tuple[ota.OtaReply, int]:
    """Poll `<ota>/activate` and re-check until an OTA reply carries no `activation`; (reply, rounds)."""
    rounds = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                rounds += 1
                await ota.wait_activated(settings, identity, client=http, poll_s=poll_s, retry_s=retry_s)
                reply = await ota.check(settings, identity, client=http)
                if reply.activation is None:
                    return reply, rounds
                log.info("the OTA server still asks for activation (round %d)", rounds)
    except TimeoutError:
        what = "pre-registered to" if outcome in (PREREGISTERED, ALREADY_PREREGISTERED) else "bound to"
        raise ActivationTimeout(
            f"the device is {what} agent {label}, but {settings.ota_url} still asks for activation after "
            f"{timeout_s:g} s; run the same command again later (it picks up where it stopped)"
        ) from None
