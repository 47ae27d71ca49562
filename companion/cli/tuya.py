"""`companion tuya …`: Tuya AI agent device chat service (roles, templates, bindings, chat history)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..platforms.credentials import tuya_keys
from ..platforms.errors import PlatformError
from ..platforms.tuya import ACTIONS, AGENT_PREFIX, DEFAULT_REGION, REGIONS, TuyaClient
from ..platforms.tuya_models import BIND_ROLE_TYPES, Role, RoleFields
from .platforms import (
    PlatformOptions,
    command,
    confirm,
    emit,
    emit_rows,
    json_option,
    local_time_ms,
    pairs,
    platform_group,
    read_structured_file,
    table,
)

ROLE_TYPE_NAMES = {name: number for number, name in BIND_ROLE_TYPES.items()}


def register(group: click.Group) -> None:
    group.add_command(tuya)


TuyaOptions = PlatformOptions[TuyaClient]


def client_for(opts: TuyaOptions) -> TuyaClient:
    client_id, secret = tuya_keys(opts.credentials_file)
    return TuyaClient(
        client_id.value,
        secret.value,
        region=opts.extra["region"],
        base_url=opts.base_url,
        timeout_s=opts.timeout_s,
    )


@platform_group(
    "tuya",
    "COMPANION_TUYA",
    "OpenAPI host; overrides --region (for data centers not listed there)",
    client_for,
)
@click.option(
    "--region",
    type=click.Choice(sorted(REGIONS)),
    default=DEFAULT_REGION,
    show_default=True,
    envvar="COMPANION_TUYA_REGION",
    help="data center of the cloud project",
)
def tuya() -> None:
    """Tuya AI agent device chat service over the signed Cloud OpenAPI.

    Credentials: COMPANION_TUYA_CLIENT_ID and COMPANION_TUYA_SECRET (the cloud project's Access ID and
    Secret), else [tuya] client_id and secret in the credentials file.
    """


def role_type(value: str | None) -> int | None:
    """'custom'/'template'/'single' or 0/1/2 as the number Tuya wants."""
    if value is None:
        return None
    if value in ROLE_TYPE_NAMES:
        return ROLE_TYPE_NAMES[value]
    return int(value)


ROLE_TYPE_CHOICE = click.Choice(["custom", "template", "single", "0", "1", "2"])


def _role_text(role: Role) -> str:
    return pairs(role.raw.items())


ROLE_COLUMNS = ["NAME", "LANGUAGE", "VOICE", "LLM", "BOUND", "TEMPLATE"]


def _role_row(r: Role) -> list[Any]:
    return [
        r.role_id or r.template_id,
        r.role_name,
        r.use_lang_name or r.use_lang_code,
        r.use_timbre_name or r.use_timbre_id,
        r.use_llm_name or r.use_llm_id,
        r.bound,
        r.template_id,
    ]


# -- role binding ----------------------------------------------------------------------------------


@tuya.group("role")
def role() -> None:
    """The device's bound role: initialise, show, bind."""


@command(role, "init")
@click.argument("device_id")
def role_init(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Initialise the role binding of DEVICE_ID (syncs changes made on the developer platform)."""
    item = opts.call(lambda client: client.init_role(device_id))
    emit(as_json, item.raw, lambda: _role_text(item))


@command(role, "show")
@click.argument("device_id")
def role_show(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """The role DEVICE_ID is bound to."""
    item = opts.call(lambda client: client.bound_role(device_id))
    emit(as_json, item.raw, lambda: _role_text(item))


@command(role, "bind")
@click.argument("device_id")
@click.option(
    "--type", "type_", type=ROLE_TYPE_CHOICE, required=True, help="custom (0), template (1), single (2)"
)
@click.option("--role-id", help="the custom role or template id (not for single)")
def role_bind(opts: TuyaOptions, device_id: str, type_: str, role_id: str | None, as_json: bool) -> None:
    """Bind DEVICE_ID to a role."""
    kind = ROLE_TYPE_NAMES.get(type_)
    kind = int(type_) if kind is None else kind

    result = opts.call(lambda client: client.bind_role(device_id, kind, role_id))
    emit(as_json, result, f"bound {device_id} to {BIND_ROLE_TYPES[kind]} role {role_id or ''}".rstrip())


# -- custom roles ----------------------------------------------------------------------------------


@tuya.group("roles")
def roles() -> None:
    """Custom roles of a device: list, show, create, from-template, update, delete."""


def _role_field_options(func: Any) -> Any:
    options = [
        click.option("--name", "role_name", help="role_name"),
        click.option("--desc", "role_desc", help="role_desc (a note)"),
        click.option("--introduce", "role_introduce", help="role_introduce (the persona prompt)"),
        click.option("--image-url", "role_img_url", help="role_img_url"),
        click.option("--lang", "use_lang_code", help="use_lang_code, e.g. zh"),
        click.option("--voice", "use_timbre_id", help="use_timbre_id"),
        click.option("--llm", "use_llm_id", help="use_llm_id"),
        click.option("--speed", help="speech speed (depends on the voice)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _fields(options: dict[str, Any]) -> RoleFields:
    return RoleFields(**{key: options.get(key) for key in RoleFields.__dataclass_fields__})


@command(roles, "list")
@click.argument("device_id")
def roles_list(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Every custom role of DEVICE_ID (all pages)."""
    _total, items = opts.call(lambda client: client.list_custom_roles(device_id))
    emit_rows(as_json, items, ["ROLE ID", *ROLE_COLUMNS], _role_row)


@command(roles, "show")
@click.argument("device_id")
@click.argument("role_id")
def roles_show(opts: TuyaOptions, device_id: str, role_id: str, as_json: bool) -> None:
    """One custom role."""
    item = opts.call(lambda client: client.get_custom_role(device_id, role_id))
    emit(as_json, item.raw, lambda: _role_text(item))


@command(roles, "create")
@click.argument("device_id")
@_role_field_options
def roles_create(opts: TuyaOptions, device_id: str, as_json: bool, **options: Any) -> None:
    """Create a custom role (--name, --introduce, --image-url, --lang, --voice and --llm are required)."""
    fields = _fields(options)

    role_id = opts.call(lambda client: client.create_custom_role(device_id, fields))
    emit(as_json, role_id, f"created role {role_id}")


@command(roles, "from-template")
@click.argument("device_id")
@click.argument("template_id")
@_role_field_options
@click.option("--bind/--no-bind", "need_bind", default=None, help="bind the device to the new role")
def roles_from_template(
    opts: TuyaOptions,
    device_id: str,
    template_id: str,
    need_bind: bool | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Create a custom role from TEMPLATE_ID, overriding the fields given."""
    fields = _fields(options)

    role_id = opts.call(
        lambda client: client.create_role_from_template(device_id, template_id, fields, need_bind)
    )
    emit(as_json, role_id, f"created role {role_id} from template {template_id}")


@command(roles, "update")
@click.argument("device_id")
@click.argument("role_id")
@_role_field_options
def roles_update(opts: TuyaOptions, device_id: str, role_id: str, as_json: bool, **options: Any) -> None:
    """Change a custom role; only the fields given are sent."""
    fields = _fields(options)

    result = opts.call(lambda client: client.update_custom_role(device_id, role_id, fields))
    emit(as_json, result, f"updated role {role_id}: {', '.join(fields.to_api())}")


@command(roles, "delete")
@click.argument("device_id")
@click.argument("role_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def roles_delete(opts: TuyaOptions, device_id: str, role_id: str, yes: bool, as_json: bool) -> None:
    """Delete a custom role (asks first unless --yes)."""
    confirm(f"Delete role {role_id} of {device_id}? This cannot be undone.", yes)

    result = opts.call(lambda client: client.delete_custom_role(device_id, role_id))
    emit(as_json, result, f"deleted role {role_id}")


# -- templates -------------------------------------------------------------------------------------


@tuya.group("templates")
def templates() -> None:
    """Role templates offered to a device."""


@command(templates, "list")
@click.argument("device_id")
def templates_list(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Role templates available to DEVICE_ID."""
    items = opts.call(lambda client: client.list_templates(device_id))
    emit_rows(as_json, items, ["TEMPLATE ID", *ROLE_COLUMNS], _role_row)


@command(templates, "show")
@click.argument("device_id")
@click.argument("template_id")
def templates_show(opts: TuyaOptions, device_id: str, template_id: str, as_json: bool) -> None:
    """One role template."""
    item = opts.call(lambda client: client.get_template(device_id, template_id))
    emit(as_json, item.raw, lambda: _role_text(item))


# -- history ---------------------------------------------------------------------------------------


@tuya.group("history")
def history() -> None:
    """Chat history of a device's role: list, delete."""


@command(history, "list")
@click.argument("device_id")
@click.option(
    "--type", "type_", type=ROLE_TYPE_CHOICE, required=True, help="custom (0), template (1), single (2)"
)
@click.option("--role-id", help="the role (not for single)")
@click.option(
    "--before", "before_ms", type=int, help="only entries older than this time (ms since the epoch)"
)
@click.option("--max", "max_items", type=click.IntRange(1), help="stop after this many entries")
def history_list(
    opts: TuyaOptions,
    device_id: str,
    type_: str,
    role_id: str | None,
    before_ms: int | None,
    max_items: int | None,
    as_json: bool,
) -> None:
    """Chat history, newest first, every entry once (pages of 20 are walked back in time)."""
    kind = role_type(type_)
    items = opts.call(
        lambda client: client.history(
            device_id, bind_role_type=kind, role_id=role_id, before_ms=before_ms, max_items=max_items
        )
    )
    emit_rows(
        as_json,
        items,
        ["TIME", "QUESTION", "ANSWER", "REQUEST ID"],
        lambda e: [local_time_ms(e.gmt_create), e.question_text, e.answer_text, e.request_id],
    )


@command(history, "delete")
@click.argument("device_id")
@click.argument("request_ids", nargs=-1)
@click.option("--type", "type_", type=ROLE_TYPE_CHOICE, help="custom (0), template (1), single (2)")
@click.option("--role-id", help="the role (not for single)")
@click.option("--all", "clear_all", is_flag=True, help="delete the whole history of the role")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def history_delete(
    opts: TuyaOptions,
    device_id: str,
    request_ids: tuple[str, ...],
    type_: str | None,
    role_id: str | None,
    clear_all: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete entries by REQUEST_IDS (sent 20 per call), or --all of them."""
    if clear_all == bool(request_ids):
        raise PlatformError("give request ids or --all (not both)")
    kind = role_type(type_)
    if clear_all:
        confirm(f"Delete the whole chat history of {device_id}? This cannot be undone.", yes)

    result = opts.call(
        lambda client: (
            client.clear_history(device_id, bind_role_type=kind, role_id=role_id)
            if clear_all
            else client.delete_history(device_id, request_ids, bind_role_type=kind, role_id=role_id)
        )
    )
    if clear_all:
        emit(as_json, result, f"deleted the chat history of {device_id}")
    else:
        emit(
            as_json,
            {"deleted": len(set(request_ids)), "calls": result},
            f"deleted {len(set(request_ids))} entries in {result} call(s)",
        )


# -- the action table ------------------------------------------------------------------------------


@tuya.command("actions")
@json_option
def actions_cmd(as_json: bool) -> None:
    """The aiAgent actions this client can invoke, and their HTTP calls."""
    rows = [(name, spec.method, AGENT_PREFIX + spec.path) for name, spec in sorted(ACTIONS.items())]
    emit(
        as_json,
        [{"action": n, "method": m, "path": p} for n, m, p in rows],
        lambda: table(["ACTION", "METHOD", "PATH"], rows, width=90),
    )


@command(tuya, "call")
@click.argument("action")
@click.argument("device_id")
@click.option("--params", help="JSON object of the action's parameters (snake_case, as documented)")
@click.option(
    "--params-file", type=click.Path(exists=True, dir_okay=False), help="the parameters from a JSON/TOML file"
)
def call_cmd(
    opts: TuyaOptions,
    action: str,
    device_id: str,
    params: str | None,
    params_file: str | None,
    as_json: bool,
) -> None:
    """Invoke any action listed by `companion tuya actions` (e.g. delDeviceChatContext); prints its result."""
    values: Any = {}
    if params:
        try:
            values = json.loads(params)
        except ValueError as exc:
            raise PlatformError(f"--params is not valid JSON: {exc}") from None
    elif params_file:
        values = read_structured_file(params_file)
    if not isinstance(values, dict):
        raise PlatformError("the parameters must be a JSON object")
    name = action if action.startswith("aiAgent.") else f"aiAgent.{action}"

    result = opts.call(lambda client: client.call(name, device_id, values))
    emit(as_json, result, lambda: json.dumps(result, ensure_ascii=False, indent=2))
