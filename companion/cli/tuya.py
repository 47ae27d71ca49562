"""`companion tuya …`: Tuya AI agent device chat service, one command per action of the vendor's list."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ..platforms.credentials import tuya_keys
from ..platforms.errors import PlatformError
from ..platforms.tuya import ACTIONS, DEFAULT_REGION, METHODS, REGIONS, TuyaClient
from ..platforms.tuya_models import BIND_ROLE_TYPES, Role, RoleFields, Variable
from .platforms import (
    PlatformOptions,
    command,
    confirm,
    emit,
    emit_item,
    emit_rows,
    input_file_option,
    json_option,
    local_time_ms,
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


def _kind(value: str) -> int:
    kind = role_type(value)
    assert kind is not None  # --type is required where this is used
    return kind


def api_command(
    group: click.Group, name: str, *actions: str
) -> Callable[[Callable[..., None]], click.Command]:
    """`command(group, name)` whose --help ends with the HTTP call behind it and whether its path is
    confirmed (and where), straight from the action table."""

    def decorate(func: Callable[..., None]) -> click.Command:
        cmd = command(group, name)(func)
        lines = []
        for action in actions:
            spec = ACTIONS[action]
            lines += [f"{action}: {spec.method} {spec.path}", f"  path {spec.status}"]
        cmd.epilog = "\b\n" + "\n".join(lines)
        return cmd

    return decorate


def role_options(
    *, required: bool, role_help: str = "the custom role or template id (not for single)"
) -> Callable[[Any], Any]:
    """--type (custom/template/single) and --role-id, the role a call is about."""

    def decorate(func: Any) -> Any:
        func = click.option("--role-id", help=role_help)(func)
        return click.option(
            "--type",
            "type_",
            type=ROLE_TYPE_CHOICE,
            required=required,
            help="custom (0), template (1), single (2)",
        )(func)

    return decorate


def key_values(items: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE arguments as a mapping (the value may be empty, the key may not)."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PlatformError(f"expected KEY=VALUE, got {item!r}")
        values[key.strip()] = value
    return values


def _ids_or_all(ids: tuple[str, ...], clear_all: bool, noun: str) -> None:
    if clear_all == bool(ids):
        raise PlatformError(f"give {noun} or --all (not both)")


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
    """The device's bound role: initialise, show, bind, set its workflow."""


@api_command(role, "init", "aiAgent.initChatDeviceAgentBindRole")
@click.argument("device_id")
def role_init(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Initialise the role binding of DEVICE_ID (syncs changes made on the developer platform)."""
    item = opts.call(lambda client: client.init_role(device_id))
    emit_item(as_json, item)


@api_command(role, "show", "aiAgent.getChatDeviceAgentBindRole")
@click.argument("device_id")
def role_show(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """The role DEVICE_ID is bound to."""
    item = opts.call(lambda client: client.bound_role(device_id))
    emit_item(as_json, item)


@api_command(role, "bind", "aiAgent.bindChatDeviceAgentRole")
@click.argument("device_id")
@role_options(required=True)
def role_bind(opts: TuyaOptions, device_id: str, type_: str, role_id: str | None, as_json: bool) -> None:
    """Bind DEVICE_ID to a role."""
    kind = _kind(type_)
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


@api_command(roles, "list", "aiAgent.listChatDeviceCustomRolePage")
@click.argument("device_id")
def roles_list(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Every custom role of DEVICE_ID (all pages)."""
    _total, items = opts.call(lambda client: client.list_custom_roles(device_id))
    emit_rows(as_json, items, ["ROLE ID", *ROLE_COLUMNS], _role_row)


@api_command(roles, "show", "aiAgent.getChatDeviceCustomRoleDetail")
@click.argument("device_id")
@click.argument("role_id")
def roles_show(opts: TuyaOptions, device_id: str, role_id: str, as_json: bool) -> None:
    """One custom role."""
    item = opts.call(lambda client: client.get_custom_role(device_id, role_id))
    emit_item(as_json, item)


@api_command(roles, "create", "aiAgent.addChatDeviceCustomRole")
@click.argument("device_id")
@_role_field_options
def roles_create(opts: TuyaOptions, device_id: str, as_json: bool, **options: Any) -> None:
    """Create a custom role (--name, --introduce, --image-url, --lang, --voice and --llm are required;
    `tuya avatars`, `languages`, `voices` and `models` list the values DEVICE_ID accepts)."""
    fields = _fields(options)

    role_id = opts.call(lambda client: client.create_custom_role(device_id, fields))
    emit(as_json, role_id, f"created role {role_id}")


@api_command(roles, "from-template", "aiAgent.addChatCustomRoleFromTemplate")
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


@api_command(roles, "update", "aiAgent.updateChatDeviceCustomRole")
@click.argument("device_id")
@click.argument("role_id")
@_role_field_options
def roles_update(opts: TuyaOptions, device_id: str, role_id: str, as_json: bool, **options: Any) -> None:
    """Change a custom role; only the fields given are sent."""
    fields = _fields(options)

    result = opts.call(lambda client: client.update_custom_role(device_id, role_id, fields))
    emit(as_json, result, f"updated role {role_id}: {', '.join(fields.to_api())}")


@api_command(roles, "delete", "aiAgent.delChatDeviceCustomRole")
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


@api_command(templates, "list", "aiAgent.listChatDeviceRoleTemplates")
@click.argument("device_id")
def templates_list(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Role templates available to DEVICE_ID."""
    items = opts.call(lambda client: client.list_templates(device_id))
    emit_rows(as_json, items, ["TEMPLATE ID", *ROLE_COLUMNS], _role_row)


@api_command(templates, "show", "aiAgent.getChatDeviceRoleTemplateDetail")
@click.argument("device_id")
@click.argument("template_id")
def templates_show(opts: TuyaOptions, device_id: str, template_id: str, as_json: bool) -> None:
    """One role template."""
    item = opts.call(lambda client: client.get_template(device_id, template_id))
    emit_item(as_json, item)


# -- history ---------------------------------------------------------------------------------------


@tuya.group("history")
def history() -> None:
    """Chat history of a device's role: list, delete."""


@api_command(history, "list", "aiAgent.listChatDeviceHistoryPage")
@click.argument("device_id")
@role_options(required=True, role_help="the role (not for single)")
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


@api_command(history, "delete", "aiAgent.delChatDeviceChatHistory")
@click.argument("device_id")
@click.argument("request_ids", nargs=-1)
@role_options(required=False, role_help="the role (not for single)")
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
    _ids_or_all(request_ids, clear_all, "request ids")
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


# -- memory, summary, context ---------------------------------------------------------------------


@tuya.group("memory")
def memory() -> None:
    """What a device's role remembers: switch, list, update, delete."""


@api_command(memory, "switch", "aiAgent.getChatDeviceMemorySwitch")
@click.argument("device_id")
def memory_switch(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Whether DEVICE_ID's agent keeps memories and chat summaries."""
    item = opts.call(lambda client: client.memory_switch(device_id))
    emit_item(as_json, item)


@api_command(memory, "list", "aiAgent.listChatDeviceMemories")
@click.argument("device_id")
@role_options(required=True)
def memory_list(opts: TuyaOptions, device_id: str, type_: str, role_id: str | None, as_json: bool) -> None:
    """The role's memories, with the scope each applies to."""
    groups = opts.call(
        lambda client: client.memories(device_id, bind_role_type=_kind(type_), role_id=role_id)
    )
    rows = [
        [m.memory_key, m.memory_name, m.memory_value, m.effective_scope_name or g.effective_scope_name]
        for g in groups
        for m in g.memory_list
    ]
    emit(as_json, [g.raw for g in groups], lambda: table(["KEY", "NAME", "VALUE", "SCOPE"], rows))


@api_command(memory, "update", "aiAgent.updateChatDeviceMemory")
@click.argument("device_id")
@click.argument("memories", nargs=-1, required=True, metavar="KEY=VALUE...")
@role_options(required=True)
def memory_update(
    opts: TuyaOptions,
    device_id: str,
    memories: tuple[str, ...],
    type_: str,
    role_id: str | None,
    as_json: bool,
) -> None:
    """Set memories, e.g. sys.memoryBirthday=七月七号 (the keys `memory list` shows)."""
    values = key_values(memories)
    result = opts.call(
        lambda client: client.update_memories(device_id, values, bind_role_type=_kind(type_), role_id=role_id)
    )
    emit(as_json, result, f"updated {', '.join(values)}")


@api_command(memory, "delete", "aiAgent.delChatDeviceMemory")
@click.argument("device_id")
@click.argument("memory_keys", nargs=-1)
@role_options(required=True)
@click.option("--all", "clear_all", is_flag=True, help="delete every memory of the role")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def memory_delete(
    opts: TuyaOptions,
    device_id: str,
    memory_keys: tuple[str, ...],
    type_: str,
    role_id: str | None,
    clear_all: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete memories by MEMORY_KEYS (sent 20 per call), or --all of them."""
    kind = _kind(type_)
    _ids_or_all(memory_keys, clear_all, "memory keys")
    if clear_all:
        confirm(f"Delete every memory of the role on {device_id}? This cannot be undone.", yes)
        result = opts.call(
            lambda client: client.clear_memories(device_id, bind_role_type=kind, role_id=role_id)
        )
        emit(as_json, result, f"deleted every memory of the role on {device_id}")
        return
    calls = opts.call(
        lambda client: client.delete_memories(device_id, memory_keys, bind_role_type=kind, role_id=role_id)
    )
    count = len(set(memory_keys))
    emit(as_json, {"deleted": count, "calls": calls}, f"deleted {count} memories in {calls} call(s)")


@tuya.group("summary")
def summary() -> None:
    """The chat summary a device's role keeps: list, update."""


@api_command(summary, "list", "aiAgent.listChatDeviceSummary")
@click.argument("device_id")
@role_options(required=True)
def summary_list(opts: TuyaOptions, device_id: str, type_: str, role_id: str | None, as_json: bool) -> None:
    """The role's chat summary, one text per line."""
    items = opts.call(
        lambda client: client.summaries(device_id, bind_role_type=_kind(type_), role_id=role_id)
    )
    emit(as_json, items, lambda: "\n".join(items) or "(none)")


@api_command(summary, "update", "aiAgent.updateChatDeviceSummary")
@click.argument("device_id")
@click.argument("items", nargs=-1, required=True, metavar="TEXT...")
@role_options(required=True)
def summary_update(
    opts: TuyaOptions, device_id: str, items: tuple[str, ...], type_: str, role_id: str | None, as_json: bool
) -> None:
    """Replace the role's chat summary with the TEXTs given."""
    result = opts.call(
        lambda client: client.update_summaries(device_id, items, bind_role_type=_kind(type_), role_id=role_id)
    )
    emit(as_json, result, f"the summary now holds {len(items)} item(s)")


@tuya.group("context")
def context() -> None:
    """The conversation context of a device's role."""


@api_command(context, "clear", "aiAgent.delDeviceChatContext")
@click.argument("device_id")
@role_options(required=False)
def context_clear(
    opts: TuyaOptions, device_id: str, type_: str | None, role_id: str | None, as_json: bool
) -> None:
    """Forget the conversation so far: the next chat starts without the earlier messages."""
    result = opts.call(
        lambda client: client.clear_context(device_id, bind_role_type=role_type(type_), role_id=role_id)
    )
    emit(as_json, result, f"cleared the chat context of {device_id}")


@api_command(role, "workflow", "aiAgent.updateChatDeviceRoleWorkflow")
@click.argument("device_id")
@click.argument("workflow")
@role_options(required=True)
def role_workflow(
    opts: TuyaOptions, device_id: str, workflow: str, type_: str, role_id: str | None, as_json: bool
) -> None:
    """Set the role's WORKFLOW type, e.g. asr-llm-tts."""
    result = opts.call(
        lambda client: client.update_workflow(
            device_id, workflow, bind_role_type=_kind(type_), role_id=role_id
        )
    )
    emit(as_json, result, f"the role's workflow is now {workflow}")


# -- what a role can be made of (the ids `roles create` asks for) ---------------------------------


@api_command(tuya, "avatars", "aiAgent.listChatDeviceAvatar")
@click.argument("device_id")
def avatars_cmd(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Images a role may use (roles create --image-url)."""
    items = opts.call(lambda client: client.avatars(device_id))
    emit_rows(as_json, items, ["URL"], lambda a: [a.url], width=100)


@api_command(tuya, "languages", "aiAgent.listChatDeviceLanguage")
@click.argument("device_id")
def languages_cmd(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Languages a role may speak (roles create --lang)."""
    items = opts.call(lambda client: client.languages(device_id))
    emit_rows(
        as_json, items, ["CODE", "NAME", "DEFAULT"], lambda x: [x.lang_code, x.lang_name, x.has_default]
    )


@api_command(tuya, "models", "aiAgent.listChatDeviceLargeModel")
@click.argument("device_id")
def models_cmd(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """Large language models a role may use (roles create --llm)."""
    items = opts.call(lambda client: client.large_models(device_id))
    emit_rows(as_json, items, ["LLM ID", "NAME"], lambda m: [m.llm_id, m.llm_name])


@api_command(tuya, "voices", "aiAgent.listChatDeviceTimbreMarket")
@click.argument("device_id")
@click.option("--lang", help="only voices for this language, e.g. zh")
def voices_cmd(opts: TuyaOptions, device_id: str, lang: str | None, as_json: bool) -> None:
    """Voices a role may use (roles create --voice); every page, 20 per page."""
    _total, items = opts.call(lambda client: client.voices(device_id, lang=lang))
    emit_rows(
        as_json,
        items,
        ["VOICE ID", "NAME", "LANGUAGES", "TAGS", "SPEED"],
        lambda v: [v.voice_id, v.voice_name, ",".join(v.support_langs), ",".join(v.desc_tags), v.speed],
    )


@api_command(tuya, "wake-words", "aiAgent.getChatDeviceWakeUpWords")
@click.argument("device_id")
def wake_words_cmd(opts: TuyaOptions, device_id: str, as_json: bool) -> None:
    """The words that wake DEVICE_ID."""
    words = opts.call(lambda client: client.wake_words(device_id))
    emit(as_json, words, words or "(none)")


# -- variables -------------------------------------------------------------------------------------


@tuya.group("variables")
def variables() -> None:
    """Agent variables of a device (custom.* ones are defined on the developer platform): list, set."""


def _variable_rows(as_json: bool, items: list[Variable]) -> None:
    emit_rows(as_json, items, ["KEY", "VALUE"], lambda v: [v.variable_key, v.variable_value], width=60)


@api_command(variables, "list", "aiAgent.listChatDeviceAgentVariable")
@click.argument("device_id")
@role_options(required=False)
def variables_list(
    opts: TuyaOptions, device_id: str, type_: str | None, role_id: str | None, as_json: bool
) -> None:
    """The agent's variables (of the given role, else of the bound one)."""
    items = opts.call(
        lambda client: client.variables(device_id, bind_role_type=role_type(type_), role_id=role_id)
    )
    _variable_rows(as_json, items)


@api_command(variables, "set", "aiAgent.updateChatDeviceAgentVariable")
@click.argument("device_id")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@role_options(required=False)
def variables_set(
    opts: TuyaOptions,
    device_id: str,
    assignments: tuple[str, ...],
    type_: str | None,
    role_id: str | None,
    as_json: bool,
) -> None:
    """Set variables, e.g. custom.familyName=张; role-scoped ones go to --role-id, else to the bound role.
    Prints the variables as they are afterwards."""
    values = key_values(assignments)
    items = opts.call(
        lambda client: client.update_variables(
            device_id, values, bind_role_type=role_type(type_), role_id=role_id
        )
    )
    _variable_rows(as_json, items)


# -- the action table ------------------------------------------------------------------------------


@tuya.command("actions")
@json_option
def actions_cmd(as_json: bool) -> None:
    """The aiAgent actions this client can invoke, their HTTP calls, and whether each path is confirmed."""
    rows = [
        (name, spec.method, spec.path, "confirmed" if spec.confirmed else "unconfirmed", spec.source or "-")
        for name, spec in sorted(ACTIONS.items())
    ]
    emit(
        as_json,
        [{"action": n, "method": m, "path": p, "status": st, "source": src} for n, m, p, st, src in rows],
        lambda: table(["ACTION", "METHOD", "PATH", "STATUS", "SOURCE"], rows, width=100),
    )


@command(tuya, "call")
@click.argument("action", required=False)
@click.argument("device_id", required=False)
@click.option("--params", help="JSON object of the action's parameters (snake_case, as documented)")
@input_file_option("--params-file", help="the parameters from a JSON/TOML file")
@click.option(
    "--method", type=click.Choice(METHODS, case_sensitive=False), help="with --path: the HTTP method"
)
@click.option(
    "--path",
    "path",
    metavar="PATH",
    help="call this OpenAPI path instead of the action's ({device_id} is filled)",
)
def call_cmd(
    opts: TuyaOptions,
    action: str | None,
    device_id: str | None,
    params: str | None,
    params_file: str | None,
    method: str | None,
    path: str | None,
    as_json: bool,
) -> None:
    """Invoke any action listed by `companion tuya actions` (e.g. delDeviceChatContext DEVICE_ID), or with
    --method and --path any OpenAPI path the table lacks (signed the same way); prints its result."""
    values = _call_params(params, params_file)
    if (method is None) != (path is None):
        raise PlatformError("--method and --path go together")
    if path is not None and method is not None:
        where = device_id or (action if action and not action.startswith("aiAgent.") else None)
        result = opts.call(lambda client: client.request(method, path, values, device_id=where, label=path))
    else:
        if not action or not device_id:
            raise PlatformError("give ACTION and DEVICE_ID, or --method and --path")
        name = action if action.startswith("aiAgent.") else f"aiAgent.{action}"
        result = opts.call(lambda client: client.call(name, device_id, values))
    emit(as_json, result, lambda: json.dumps(result, ensure_ascii=False, indent=2))


def _call_params(params: str | None, params_file: str | None) -> dict[str, Any]:
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
    return values
