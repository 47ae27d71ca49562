"""Client for the ESP-AI open platform: agents (超体) and devices.

Every call is a POST with a JSON body of strings and the raw open API key in `authorization` (no
"Bearer"). An agent's `config` travels as a JSON string inside the JSON: it is decoded on the way in and
encoded on the way out, so callers only ever see an object. Errors are `success: false` + `message`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from ..service.logsetup import register_secret
from .envelopes import ESPAI, unwrap_espai
from .errors import PlatformError
from .fields import RawReply, as_dict, as_list, get_bool, get_int, set_fields, wire
from .lookup import only_named, with_id
from .transport import TransportClient, TransportOptions, normalise_base_url

DEFAULT_BASE_URL = "https://api.espai2.fun"
DEFAULT_DEVICES_URL = "https://api.espai.fun"  # the device API is documented on the older host


def decode_config(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(config object, None), or (None, why) when `config` is not a JSON object in a string."""
    if value is None or value == "":
        return None, None
    if isinstance(value, dict):
        return value, None
    if not isinstance(value, str):
        return None, f"config is a {type(value).__name__}, not a JSON string"
    try:
        decoded = json.loads(value)
    except ValueError as exc:
        return None, f"config is not valid JSON: {exc}"
    if not isinstance(decoded, dict):
        return None, "config is JSON but not an object"
    return decoded, None


def encode_config(config: Mapping[str, Any]) -> str:
    """The string form the platform stores (compact, UTF-8 kept readable)."""
    return json.dumps(config, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    """ESP-AI wants every field as a string ("1", "99")."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class TextForm:
    """Mixin of the request dataclasses: `to_api` is the body of the fields that are set, each as text."""

    def to_api(self) -> dict[str, str]:
        return set_fields(self, convert=self._field_text)

    def _field_text(self, name: str, value: Any) -> str:
        """How one field is sent (a subclass changes this for a field that is not plain text)."""
        return _text(value)


@dataclass(frozen=True)
class EspAgent(RawReply):
    """An agent (超体) with its `config` decoded (None if absent or broken; see `config_error`)."""

    id: str
    name: str | None
    type: str | None
    enabled: bool | None = wire("enable", default=None)
    sort: int | None = None
    model_id: str | None = None
    model_name: str | None = None
    api_key: str | None = None
    api_limit: int | None = None
    cdkey_id: str | None = None
    cdkey_name: str | None = None
    server_id: str | None = None
    server_ip: str | None = None
    server_port: int | None = None
    create_time: int | None = None
    update_time: int | None = None
    config: dict[str, Any] | None = wire(read=lambda obj: decode_config(obj.get("config"))[0], default=None)
    config_error: str | None = wire(read=lambda obj: decode_config(obj.get("config"))[1], default=None)

    def __repr__(self) -> str:
        return f"EspAgent(id={self.id!r}, name={self.name!r})"


@dataclass(frozen=True)
class EspAgentAdd(TextForm):
    """`equipment/add`: a quota card and a name are required; `copy` clones another agent's config."""

    cdkey_id: str
    name: str
    type: str = "0"
    enable: bool | None = None
    model_id: str | None = None
    sort: int | None = None
    server_id: str | None = None
    copy: str | None = None


UPDATE_KEYS = ("name", "cdkey_id", "type", "enable", "model_id", "sort", "server_id", "config")


@dataclass(frozen=True)
class EspAgentUpdate(TextForm):
    """`equipment/update`: the id plus the fields to change; `config` is an object, sent as a string."""

    id: str
    name: str | None = None
    cdkey_id: str | None = None
    type: str | None = None
    enable: bool | None = None
    model_id: str | None = None
    sort: int | None = None
    server_id: str | None = None
    config: dict[str, Any] | None = None

    def _field_text(self, name: str, value: Any) -> str:
        return encode_config(value) if name == "config" else _text(value)

    def is_empty(self) -> bool:
        return len(self.to_api()) <= 1

    @classmethod
    def from_mapping(cls, agent_id: str, data: Mapping[str, Any], source: str = "update") -> EspAgentUpdate:
        """An update from a file's keys; `config` may be a table/object or a JSON string."""
        unknown = sorted(set(data) - set(UPDATE_KEYS) - {"id"})
        if unknown:
            raise PlatformError(
                f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(UPDATE_KEYS)}"
            )
        kwargs: dict[str, Any] = {}
        for key in UPDATE_KEYS:
            if key not in data or data[key] is None:
                continue
            value = data[key]
            if key == "config":
                if isinstance(value, str):
                    decoded, error = decode_config(value)
                    if decoded is None:
                        raise PlatformError(f"{source}: {error or 'config is empty'}")
                    value = decoded
                elif not isinstance(value, dict):
                    raise PlatformError(f"{source}: config must be a table/object or a JSON string")
            elif key == "enable":
                flag = get_bool(data, key)
                if flag is None:
                    raise PlatformError(f'{source}: enable must be true/false or "1"/"0"')
                value = flag
            elif key == "sort":
                number = get_int(data, key)
                if number is None:
                    raise PlatformError(f"{source}: sort must be an integer")
                value = number
            elif not isinstance(value, str | int) or isinstance(value, bool):
                raise PlatformError(f"{source}: {key} must be a string")
            else:
                value = str(value)
            kwargs[key] = value
        return cls(id=agent_id, **kwargs)


@dataclass(frozen=True)
class EspDevice(RawReply):
    """A hardware device registered on the platform; `device_id` is its MAC."""

    id: str
    name: str | None
    device_id: str | None
    equipment_id: str | None
    api_key: str | None
    enabled: bool | None = wire("enable", default=None)
    online: bool | None = wire("is_online", default=None)
    version: str | None = None


@dataclass(frozen=True)
class DeviceQuery(TextForm):
    """Filters of `devices/list` (all optional); `api_key` is an agent's device key, not the open key."""

    name: str | None = None
    api_key: str | None = None
    device_id: str | None = None
    bin_id: str | None = None
    version: str | None = None
    enable: bool | None = None
    is_online: bool | None = None
    type: str | None = None
    page: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class DeviceList:
    total: int | None
    devices: list[EspDevice]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class EspAiClient(TransportClient):
    """An async client; use `async with EspAiClient(key) as client:`."""

    def __init__(
        self,
        key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        devices_url: str | None = None,
        **transport: Unpack[TransportOptions],
    ) -> None:
        if not key:
            raise PlatformError("ESP-AI: the open API key is empty")
        self.base_url = normalise_base_url(base_url)
        if devices_url is None:
            devices_url = DEFAULT_DEVICES_URL if self.base_url == DEFAULT_BASE_URL else self.base_url
        self.devices_url = normalise_base_url(devices_url, "devices URL")
        self._key = key
        register_secret(key)
        super().__init__(ESPAI, **transport)

    def __repr__(self) -> str:
        return f"EspAiClient(base_url={self.base_url!r})"

    async def _post(self, url: str, body: Any, *, idempotent: bool) -> dict[str, Any]:
        reply = await self._transport.request(
            "POST",
            url,
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={
                "authorization": self._key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            idempotent=idempotent,
        )
        return unwrap_espai(reply)

    async def list_agents(
        self,
        *,
        name: str | None = None,
        type: str | None = None,
        enable: bool | None = None,
        page: int | None = None,
        limit: int | None = None,
    ) -> list[EspAgent]:
        """Agents of the account ({} lists them all, up to the server's default of 9999)."""
        query = {"name": name, "type": type, "enable": enable, "page": page, "limit": limit}
        body = {key: _text(value) for key, value in query.items() if value is not None}
        reply = await self._post(self.base_url + "/equipment/list", body, idempotent=True)
        return [EspAgent.from_api(item) for item in as_list(reply.get("data"))]

    async def get_agent(self, agent_id: str) -> EspAgent:
        """One agent, found in the list (the platform has no detail call)."""
        return with_id(await self.list_agents(), agent_id, ESPAI)

    async def find_agent(self, ref: str) -> EspAgent:
        """The agent with id `ref`, else the one agent named exactly `ref` (from the list)."""
        agents = await self.list_agents()
        for agent in agents:
            if agent.id == ref:
                return agent
        named = only_named(agents, ref, lambda agent: agent.name, ESPAI)
        if named is None:
            raise PlatformError(f"{ESPAI}: no agent with id or name {ref!r}")
        return named

    async def add_agent(self, agent: EspAgentAdd) -> EspAgent:
        reply = await self._post(self.base_url + "/equipment/add", agent.to_api(), idempotent=False)
        return EspAgent.from_api(reply.get("data"))

    async def update_agent(self, update: EspAgentUpdate) -> dict[str, Any]:
        """Apply `update`; returns the changed fields as the server echoes them (`data`)."""
        if update.is_empty():
            raise PlatformError("nothing to update: give at least one field")
        reply = await self._post(self.base_url + "/equipment/update", update.to_api(), idempotent=True)
        return as_dict(reply.get("data"))

    async def delete_agents(self, agent_ids: Sequence[str]) -> dict[str, Any]:
        """Delete agents (the body is a list of `{id}`); returns the whole reply."""
        if not agent_ids:
            raise PlatformError("give at least one agent id")
        return await self._post(
            self.base_url + "/equipment/del", [{"id": item} for item in agent_ids], idempotent=False
        )

    async def list_devices(self, query: DeviceQuery | None = None) -> DeviceList:
        reply = await self._post(
            self.devices_url + "/devices/list", (query or DeviceQuery()).to_api(), idempotent=True
        )
        devices = [EspDevice.from_api(item) for item in as_list(reply.get("data"))]
        return DeviceList(total=get_int(reply, "totalNumber"), devices=devices, raw=reply)
