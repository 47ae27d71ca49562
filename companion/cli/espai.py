"""`companion espai …`: ESP-AI open-platform agents (超体) and devices."""

from __future__ import annotations

from typing import Any

import click

from ..platforms.credentials import espai_key
from ..platforms.errors import PlatformError
from ..platforms.espai import DeviceList, DeviceQuery, EspAgent, EspAgentAdd, EspAgentUpdate, EspAiClient
from .platforms import (
    PlatformOptions,
    command,
    confirm,
    emit,
    emit_rows,
    local_time_ms,
    mask,
    mask_keys,
    pairs,
    platform_group,
    read_structured_file,
)


def register(group: click.Group) -> None:
    group.add_command(espai)


EspAiOptions = PlatformOptions[EspAiClient]


def client_for(opts: EspAiOptions) -> EspAiClient:
    return EspAiClient(espai_key(opts.credentials_file).value, **opts.client_kwargs())


@platform_group(
    "espai",
    "COMPANION_ESPAI",
    "agent API host (default https://api.espai2.fun; also used for devices when given)",
    client_for,
)
@click.option(
    "--devices-url",
    envvar="COMPANION_ESPAI_DEVICES_URL",
    metavar="URL",
    help="device API host (default https://api.espai.fun, or --base-url when that is given)",
)
def espai() -> None:
    """ESP-AI open platform: agents (超体) and devices.

    Credential: COMPANION_ESPAI_KEY (the account's open API key), else [espai] key in the credentials file.
    """


def _servers(agent: EspAgent) -> tuple[Any, Any, Any]:
    config = agent.config or {}
    return config.get("iat_server"), config.get("llm_server"), config.get("tts_server")


@espai.group("agents")
def agents() -> None:
    """List, show, add, update and delete agents (超体)."""


@command(agents, "list")
@click.option("--name", help="only agents with this name")
@click.option("--type", "type_", help='agent type ("0" = AI chat)')
@click.option("--enabled/--disabled", "enabled", default=None, help="only enabled / disabled agents")
@click.option("--page", type=click.IntRange(1), help="page number (default: everything)")
@click.option("--limit", type=click.IntRange(1), help="agents per page")
def agents_list(
    opts: EspAiOptions,
    name: str | None,
    type_: str | None,
    enabled: bool | None,
    page: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """The account's agents, with the ASR/LLM/TTS services from their decoded config."""
    items = opts.call(
        lambda client: client.list_agents(name=name, type=type_, enable=enabled, page=page, limit=limit)
    )
    emit_rows(
        as_json,
        items,
        ["ID", "NAME", "ENABLED", "MODEL", "QUOTA LEFT", "ASR", "LLM", "TTS"],
        lambda a: [a.id, a.name, a.enabled, a.model_name or a.model_id, a.api_limit, *_servers(a)],
    )


def _agent_text(agent: EspAgent) -> str:
    shown = [(key, value) for key, value in agent.raw.items() if key != "config"]
    shown = [
        (key, mask(value) if key == "api_key" and isinstance(value, str) else value) for key, value in shown
    ]
    for key in ("create_time", "update_time"):
        value = agent.raw.get(key)
        if isinstance(value, int):
            shown = [(k, f"{local_time_ms(value)} ({value})" if k == key else v) for k, v in shown]
    if agent.config is not None:
        shown.append(("config", mask_keys(agent.config)))
    elif agent.config_error:
        shown.append(("config", f"(cannot decode: {agent.config_error})"))
    return pairs(shown)


@command(agents, "show")
@click.argument("agent_id")
def agents_show(opts: EspAiOptions, agent_id: str, as_json: bool) -> None:
    """One agent with its config decoded (keys masked; --json prints the server's object as is)."""
    agent = opts.call(lambda client: client.get_agent(agent_id))
    emit(as_json, agent.raw, lambda: _agent_text(agent))


@command(agents, "add")
@click.option("--name", required=True)
@click.option("--cdkey-id", required=True, help="the quota card (额度卡) id")
@click.option("--type", "type_", default="0", show_default=True, help='agent type ("0" = AI chat)')
@click.option(
    "--enabled/--disabled", "enabled", default=None, help="enable it now (the platform default is off)"
)
@click.option("--model-id", help="avatar model id (001 = default)")
@click.option("--sort", type=int)
@click.option("--server-id", help="node that runs the agent")
@click.option("--copy", "copy_from", metavar="AGENT_ID", help="copy the config of this agent")
def agents_add(
    opts: EspAiOptions,
    name: str,
    cdkey_id: str,
    type_: str,
    enabled: bool | None,
    model_id: str | None,
    sort: int | None,
    server_id: str | None,
    copy_from: str | None,
    as_json: bool,
) -> None:
    """Add an agent; prints its id."""
    request = EspAgentAdd(
        cdkey_id=cdkey_id,
        name=name,
        type=type_,
        enable=enabled,
        model_id=model_id,
        sort=sort,
        server_id=server_id,
        copy=copy_from,
    )

    agent = opts.call(lambda client: client.add_agent(request))
    emit(as_json, agent.raw, f"added agent {agent.id} ({agent.name or name})")


@command(agents, "update")
@click.argument("agent_id")
@click.option(
    "--file",
    "file_path",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML or JSON object: name, enable, sort, …, and `config` as a table/object",
)
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML or JSON holding just the config object",
)
@click.option("--name")
@click.option("--cdkey-id")
@click.option("--type", "type_")
@click.option("--enabled/--disabled", "enabled", default=None)
@click.option("--model-id")
@click.option("--sort", type=int)
@click.option("--server-id")
def agents_update(
    opts: EspAiOptions,
    agent_id: str,
    file_path: str | None,
    config_file: str | None,
    name: str | None,
    cdkey_id: str | None,
    type_: str | None,
    enabled: bool | None,
    model_id: str | None,
    sort: int | None,
    server_id: str | None,
    as_json: bool,
) -> None:
    """Change an agent; `config` is encoded to the JSON string the platform stores. Options win over files."""
    data: dict[str, Any] = {}
    if file_path:
        loaded = read_structured_file(file_path)
        if not isinstance(loaded, dict):
            raise PlatformError(f"{file_path}: expected an object of agent fields")
        data.update(loaded)
    if config_file:
        loaded = read_structured_file(config_file)
        if not isinstance(loaded, dict):
            raise PlatformError(f"{config_file}: expected the config object")
        data["config"] = loaded
    given = {
        "name": name,
        "cdkey_id": cdkey_id,
        "type": type_,
        "enable": enabled,
        "model_id": model_id,
        "sort": sort,
        "server_id": server_id,
    }
    data.update({key: value for key, value in given.items() if value is not None})
    if "id" in data and str(data["id"]) != agent_id:
        raise PlatformError(f"{file_path}: its id {data['id']} is not {agent_id}")
    update = EspAgentUpdate.from_mapping(agent_id, data, file_path or "update")
    if update.is_empty():
        raise PlatformError("nothing to update: give --file, --config-file or a field option")

    changed = opts.call(lambda client: client.update_agent(update))
    sent = ", ".join(key for key in update.to_api() if key != "id")
    emit(as_json, changed, f"updated agent {agent_id}: {sent}")


@command(agents, "delete")
@click.argument("agent_ids", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def agents_delete(opts: EspAiOptions, agent_ids: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete agents for good (asks first unless --yes)."""
    confirm(f"Delete {len(agent_ids)} agent(s) ({', '.join(agent_ids)})? This cannot be undone.", yes)

    reply = opts.call(lambda client: client.delete_agents(agent_ids))
    emit(as_json, reply, f"deleted {', '.join(agent_ids)}")


@espai.group("devices")
def devices() -> None:
    """Hardware devices registered on the platform."""


@command(devices, "list")
@click.option("--agent", "agent_id", help="only devices of this agent (its device key is looked up)")
@click.option("--name")
@click.option("--mac", "device_id", help="only the device with this MAC (device_id)")
@click.option("--bin-id")
@click.option("--version")
@click.option("--enabled/--disabled", "enabled", default=None)
@click.option("--online/--offline", "online", default=None)
@click.option("--type", "type_", help='"0" chat, "1" terminal')
@click.option("--page", type=click.IntRange(1))
@click.option("--limit", type=click.IntRange(1))
def devices_list(
    opts: EspAiOptions,
    agent_id: str | None,
    name: str | None,
    device_id: str | None,
    bin_id: str | None,
    version: str | None,
    enabled: bool | None,
    online: bool | None,
    type_: str | None,
    page: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Devices of the account (filters are optional)."""

    async def listing(client: EspAiClient) -> DeviceList:
        device_key = None
        if agent_id:
            device_key = (await client.get_agent(agent_id)).api_key
            if not device_key:
                raise PlatformError(f"ESP-AI: agent {agent_id} has no device key")
        query = DeviceQuery(
            name=name,
            api_key=device_key,
            device_id=device_id,
            bin_id=bin_id,
            version=version,
            enable=enabled,
            is_online=online,
            type=type_,
            page=page,
            limit=limit,
        )
        return await client.list_devices(query)

    result = opts.call(listing)
    total = f"\n{len(result.devices)} of {result.total} devices" if result.total is not None else ""
    emit_rows(
        as_json,
        result.devices,
        ["MAC", "NAME", "ONLINE", "ENABLED", "VERSION", "AGENT", "ID"],
        lambda d: [d.device_id, d.name, d.online, d.enabled, d.version, d.equipment_id, d.id],
        footer=total,
    )
