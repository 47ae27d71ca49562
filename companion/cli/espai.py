"""`companion espai …`: ESP-AI open-platform agents (超体) and devices."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from ..platforms.credentials import espai_key
from ..platforms.errors import PlatformError
from ..platforms.espai import DeviceList, DeviceQuery, EspAgent, EspAgentAdd, EspAgentUpdate, EspAiClient
from ..platforms.espai_config import (
    assign,
    from_document,
    masked,
    refuse_masked,
    to_document,
)
from .platforms import (
    PlatformOptions,
    command,
    confirm,
    emit,
    emit_rows,
    input_file_option,
    local_time_ms,
    mask,
    mask_keys,
    pairs,
    platform_group,
    read_object_file,
    save_file,
    url_option,
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
@url_option(
    "--devices-url",
    "COMPANION_ESPAI_DEVICES_URL",
    "device API host (default https://api.espai.fun, or --base-url when that is given)",
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
@click.option("--type", "type", default="0", show_default=True, help='agent type ("0" = AI chat)')
@click.option(
    "--enabled/--disabled", "enable", default=None, help="enable it now (the platform default is off)"
)
@click.option("--model-id", help="avatar model id (001 = default)")
@click.option("--sort", type=int)
@click.option("--server-id", help="node that runs the agent")
@click.option("--copy", "copy", metavar="AGENT_ID", help="copy the config of this agent")
def agents_add(opts: EspAiOptions, as_json: bool, **fields: Any) -> None:
    """Add an agent; prints its id."""
    request = EspAgentAdd(**fields)  # each option is the EspAgentAdd field it is named after

    agent = opts.call(lambda client: client.add_agent(request))
    emit(as_json, agent.raw, f"added agent {agent.id} ({agent.name or request.name})")


@command(agents, "update")
@click.argument("agent_id")
@input_file_option(
    "--file", "file_path", help="TOML or JSON object: name, enable, sort, …, and `config` as a table/object"
)
@input_file_option("--config-file", help="TOML or JSON holding just the config object")
@click.option("--name")
@click.option("--cdkey-id")
@click.option("--type", "type")
@click.option("--enabled/--disabled", "enable", default=None)
@click.option("--model-id")
@click.option("--sort", type=int)
@click.option("--server-id")
def agents_update(
    opts: EspAiOptions,
    agent_id: str,
    file_path: str | None,
    config_file: str | None,
    as_json: bool,
    **given: Any,
) -> None:
    """Change an agent; `config` is encoded to the JSON string the platform stores. Options win over files."""
    data: dict[str, Any] = {}
    if file_path:
        data.update(read_object_file(file_path, "an object of agent fields"))
    if config_file:
        data["config"] = read_object_file(config_file, "the config object")
    data.update({key: value for key, value in given.items() if value is not None})  # UPDATE_KEYS names
    if "id" in data and str(data["id"]) != agent_id:
        raise PlatformError(f"{file_path}: its id {data['id']} is not {agent_id}")
    update = EspAgentUpdate.from_mapping(agent_id, data, file_path or "update")
    if update.config is not None:
        refuse_masked(update.config, config_file or file_path or "update")
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
@click.option("--enabled/--disabled", "enable", default=None)
@click.option("--online/--offline", "is_online", default=None)
@click.option("--type", "type", help='"0" chat, "1" terminal')
@click.option("--page", type=click.IntRange(1))
@click.option("--limit", type=click.IntRange(1))
def devices_list(opts: EspAiOptions, agent_id: str | None, as_json: bool, **filters: Any) -> None:
    """Devices of the account (filters are optional)."""

    async def listing(client: EspAiClient) -> DeviceList:
        device_key = None
        if agent_id:
            device_key = (await client.get_agent(agent_id)).api_key
            if not device_key:
                raise PlatformError(f"ESP-AI: agent {agent_id} has no device key")
        # each filter option is the DeviceQuery field it is named after
        return await client.list_devices(DeviceQuery(api_key=device_key, **filters))

    result = opts.call(listing)
    total = f"\n{len(result.devices)} of {result.total} devices" if result.total is not None else ""
    emit_rows(
        as_json,
        result.devices,
        ["MAC", "NAME", "ONLINE", "ENABLED", "VERSION", "AGENT", "ID"],
        lambda d: [d.device_id, d.name, d.online, d.enabled, d.version, d.equipment_id, d.id],
        footer=total,
    )


# -- config ----------------------------------------------------------------------------------------


@espai.group("config")
def config_group() -> None:
    """Read and change one agent's config (the JSON object the platform stores as a string).

    The platform replaces config whole on every update, so `set` and `edit` start from the agent's
    current config and send all of it back: keys you do not touch survive.
    """


def _current_config(agent: EspAgent) -> dict[str, Any]:
    """The agent's decoded config ({} when it has none); refused when it cannot be decoded."""
    if agent.config_error:
        raise PlatformError(
            f"ESP-AI: the config of agent {agent.id} cannot be decoded ({agent.config_error}); "
            "replace it whole with `companion espai agents update AGENT --config-file FILE`"
        )
    return dict(agent.config or {})


@command(config_group, "get")
@click.argument("agent")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the config with its real secrets to this file (mode 0600) instead of printing it",
)
@click.option(
    "--show-secrets", is_flag=True, help="print keys and tokens in full (they are masked by default)"
)
def config_get(
    opts: EspAiOptions, agent: str, output: Path | None, show_secrets: bool, as_json: bool
) -> None:
    """Print AGENT's config (id or exact name) as JSON, secrets masked; or save it, real values, to a file.

    A printed masked config cannot be sent back (`config set`, `agents update --config-file` refuse
    masked values); edit the file from --output, or use `config set` / `config edit`.
    """
    found = opts.call(lambda client: client.find_agent(agent))
    config = _current_config(found)
    if output is not None:
        save_file(output, to_document(config).encode())
        emit(
            as_json,
            {"agent": found.id, "path": str(output)},
            f"wrote the config of agent {found.id} to {output} (mode 0600, real secrets)",
        )
        return
    click.echo(to_document(config if show_secrets else masked(config)), nl=False)
    if not show_secrets and masked(config) != config:
        click.echo("companion: secrets are masked; --output FILE (0600) or --show-secrets for them", err=True)


@command(config_group, "set")
@click.argument("agent")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
def config_set(opts: EspAiOptions, agent: str, assignments: tuple[str, ...], as_json: bool) -> None:
    """Set dotted KEYs in AGENT's config and send the whole config back; other keys are kept.

    \b
    VALUE is JSON when it parses, else text:
      companion espai config set 琳琅 tts_config.voice_type=zh_female_wanwanxiaohe_moon_bigtts
      companion espai config set 琳琅 llm_config.temperature=0.7 connected_reply=你好
      companion espai config set 琳琅 'llm_init_messages.0.content=你是小明同学。'
      companion espai config set 琳琅 'iat_config.clusterId="123"'     # the string "123", not a number
    Missing objects are created; a number indexes an existing list.
    """

    async def apply(client: EspAiClient) -> tuple[str, list[str]]:
        found = await client.find_agent(agent)
        new, changed = assign(_current_config(found), assignments)
        if changed:
            refuse_masked(new, "config set")
            await client.update_agent(EspAgentUpdate(id=found.id, config=new))
        return found.id, changed

    agent_id, changed = opts.call(apply)
    text = (
        f"updated the config of agent {agent_id}: {', '.join(changed)}"
        if changed
        else f"the config of agent {agent_id} already holds these values; nothing was sent"
    )
    emit(as_json, {"agent": agent_id, "changed": changed}, text)


@command(config_group, "edit")
@click.argument("agent")
def config_edit(opts: EspAiOptions, agent: str, as_json: bool) -> None:
    """Open AGENT's config in $VISUAL/$EDITOR (a 0600 file in a private temporary directory) and send it
    back whole when you save a valid JSON object. Unchanged: nothing is sent. Invalid JSON: nothing is sent;
    the error says why and where your edit is kept (the file stays until you remove it)."""
    found = opts.call(lambda client: client.find_agent(agent))
    before = _current_config(found)
    folder = Path(tempfile.mkdtemp(prefix="companion-espai-"))  # 0700
    path = folder / f"config-{found.id}.json"
    keep = False
    try:
        save_file(path, to_document(before).encode())
        try:
            click.edit(filename=str(path))
        except click.ClickException as exc:
            raise PlatformError(
                f"could not run the editor: {exc.format_message()}; nothing was sent"
            ) from None
        text = path.read_text(encoding="utf-8")
        try:
            try:
                after = from_document(text, "the edited config")
            except PlatformError as exc:
                raise PlatformError(f"{exc}; nothing was sent") from None
            if after != before:
                refuse_masked(after, "the edited config")
                opts.call(lambda client: client.update_agent(EspAgentUpdate(id=found.id, config=after)))
        except PlatformError as exc:
            keep = True  # the edit is not lost: the error says where it is
            kept = PlatformError(f"{exc}; your edit is kept in {path}")
            kept.exit_code = exc.exit_code
            raise kept from None
        if after == before:
            text = f"no change to the config of agent {found.id}; nothing was sent"
        else:
            text = f"updated the config of agent {found.id}"
        emit(as_json, {"agent": found.id, "changed": after != before}, text)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
