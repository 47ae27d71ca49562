"""`companion qiniu …`: the Qiniu xiaozhi platform's account, agents, devices, history and voice clones."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..platforms.credentials import (
    ENV_QINIU_TOKEN,
    StoredLogin,
    forget_qiniu_login,
    load_qiniu_login,
    qiniu_token,
    save_qiniu_login,
)
from ..platforms.errors import PlatformError
from ..platforms.qiniu import SEARCH_TYPES, AgentLookupError, QiniuClient
from ..platforms.qiniu_models import (
    Agent,
    AgentCreate,
    AgentFunction,
    AgentUpdate,
    Captcha,
    PreregisterOutcome,
    VoiceClone,
)
from ..service.state_dir import state_dir
from .platforms import (
    PlatformOptions,
    command,
    confirm,
    emit,
    emit_item,
    emit_rows,
    input_file_option,
    json_option,
    local_time,
    pairs,
    platform_group,
    read_object_file,
    read_structured_file,
    read_text_file,
    save_file,
    seconds_option,
    secret_input,
    table,
    url_option,
)

T = TypeVar("T")
ENV_PASSWORD = "COMPANION_QINIU_PASSWORD"
CAPTCHA_FILE = "qiniu-captcha.png"


def register(group: click.Group) -> None:
    group.add_command(qiniu)


QiniuOptions = PlatformOptions[QiniuClient]


def client_for(opts: QiniuOptions, *, authenticated: bool = True, token: str | None = None) -> QiniuClient:
    """A client from the group options: with `token` if given, else (when the call needs one) the
    credential found by the usual search (see credentials.py)."""
    if token is None and authenticated:
        token = qiniu_token(opts.credentials_file).value
    return QiniuClient(token, **opts.client_kwargs())


@platform_group(
    "qiniu",
    "COMPANION_QINIU",
    "management host (default https://xrobo.qiniu.com; also used for login when given)",
    client_for,
)
@url_option(
    "--login-url",
    "COMPANION_QINIU_LOGIN_URL",
    "login host (default https://xrobo.qiniuapi.com, or --base-url when that is given)",
)
def qiniu() -> None:
    """Qiniu 灵矽 xiaozhi platform: account, agents, devices, chat history, voice clones.

    Credentials: COMPANION_QINIU_TOKEN (login token or API key), else the login stored by
    `companion qiniu login`, else [qiniu] token in the credentials file.
    """


# -- account ---------------------------------------------------------------------------------------


def _fetch_captcha(opts: QiniuOptions, out: Path | None) -> tuple[Captcha, Path]:
    image = opts.call(lambda client: client.captcha(), authenticated=False)
    path = out or state_dir() / CAPTCHA_FILE
    save_file(path, image.image)
    return image, path


def _captcha_answer(opts: QiniuOptions, captcha_id: str | None, text: str | None) -> tuple[str, str]:
    """(captcha id, its text): from the options, else fetch one, show where it is and ask."""
    if captcha_id and text:
        return captcha_id, text
    if captcha_id and not text:
        return captcha_id, click.prompt("captcha text")
    image, path = _fetch_captcha(opts, None)
    click.echo(f"captcha image saved to {path}; open it and type what it shows", err=True)
    return image.captcha_id, click.prompt("captcha text")


@command(qiniu, "captcha")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"where to save the image (default: {CAPTCHA_FILE} in the state directory)",
)
def captcha_cmd(opts: QiniuOptions, out: Path | None, as_json: bool) -> None:
    """Fetch a captcha image for register/login; prints its path and its id."""
    image, path = _fetch_captcha(opts, out)
    emit(
        as_json,
        {"captcha_id": image.captcha_id, "path": str(path)},
        f"captcha image: {path}\ncaptcha id:    {image.captcha_id}\n"
        f"next: companion qiniu login --username NAME --captcha-id {image.captcha_id} --captcha TEXT",
    )


@command(qiniu, "register")
@click.option("--username", required=True)
@click.option(
    "--captcha-id", help="id printed by `companion qiniu captcha` (fetched and asked for if absent)"
)
@click.option("--captcha", "captcha_text", help="the captcha's text")
@click.option("--mobile-captcha", default="", help="SMS code, when the platform asks for one")
def register_cmd(
    opts: QiniuOptions,
    username: str,
    captcha_id: str | None,
    captcha_text: str | None,
    mobile_captcha: str,
    as_json: bool,
) -> None:
    """Create an account. The password comes from COMPANION_QINIU_PASSWORD or a hidden prompt."""
    cid, text = _captcha_answer(opts, captcha_id, captcha_text)
    password = secret_input(ENV_PASSWORD, "Password", confirm=True)

    opts.call(
        lambda client: client.register(username, password, cid, text, mobile_captcha), authenticated=False
    )
    emit(
        as_json,
        {"username": username, "registered": True},
        f"registered {username}; next: companion qiniu login --username {username}",
    )


@command(qiniu, "login")
@click.option("--username", help="account name (asked for if absent)")
@click.option("--mobile", default="", help="mobile number, for accounts that log in by phone")
@click.option("--area-code", default="+86", show_default=True)
@click.option(
    "--captcha-id", help="id printed by `companion qiniu captcha` (fetched and asked for if absent)"
)
@click.option("--captcha", "captcha_text", help="the captcha's text")
@click.option(
    "--api-key",
    "use_api_key",
    is_flag=True,
    help=f"store a console API key instead (read from {ENV_QINIU_TOKEN} or a hidden prompt)",
)
def login_cmd(
    opts: QiniuOptions,
    username: str | None,
    mobile: str,
    area_code: str,
    captcha_id: str | None,
    captcha_text: str | None,
    use_api_key: bool,
    as_json: bool,
) -> None:
    """Log in and store the token (0600, state directory) with its expiry; or store an API key.

    The password comes from COMPANION_QINIU_PASSWORD or a hidden prompt, never from the command line.
    """
    if use_api_key:
        key = secret_input(ENV_QINIU_TOKEN, "API key")

        opts.call(lambda client: client.verify_credential(), token=key)
        path = save_qiniu_login(StoredLogin(token=key, kind="api_key", expires_at=None, saved_at=time.time()))
        emit(
            as_json,
            {"kind": "api_key", "expires_at": None, "path": str(path)},
            f"API key accepted and stored in {path}",
        )
        return
    if not username:
        username = click.prompt("user name")
    cid, text = _captcha_answer(opts, captcha_id, captcha_text)
    password = secret_input(ENV_PASSWORD, "Password")

    result = opts.call(
        lambda client: client.login(username, password, cid, text, mobile=mobile, area_code=area_code),
        authenticated=False,
    )
    now = time.time()
    expires_at = now + result.expire_s if result.expire_s else None
    path = save_qiniu_login(
        StoredLogin(result.token, "login", expires_at, username=username or "", saved_at=now)
    )
    emit(
        as_json,
        {
            "kind": "login",
            "username": username,
            "expire": result.expire_s,
            "expires_at": expires_at,
            "path": str(path),
        },
        f"logged in as {username}; the token is valid until {local_time(expires_at)} (stored in {path})",
    )


@qiniu.command("logout")
@json_option
def logout_cmd(as_json: bool) -> None:
    """Forget the stored login or API key (the platform has no logout call; a login token expires in 12 h)."""
    path = forget_qiniu_login()
    text = f"removed the stored login {path}" if path else "there was no stored login"
    if os.environ.get(ENV_QINIU_TOKEN):
        text += f"; note: {ENV_QINIU_TOKEN} is still set in this environment"
    emit(as_json, {"removed": str(path) if path else None}, text)


@command(qiniu, "whoami")
def whoami_cmd(opts: QiniuOptions, as_json: bool) -> None:
    """Which credential commands would use, and until when (the secret itself is not shown)."""
    secret = qiniu_token(opts.credentials_file)
    stored = load_qiniu_login()
    expires = stored.expires_at if stored and secret.value == stored.token else None
    username = stored.username if stored and secret.value == stored.token else ""
    emit(
        as_json,
        {"source": secret.source, "username": username or None, "expires_at": expires},
        pairs([("source", secret.source), ("user", username or None), ("expires", local_time(expires))]),
    )


# -- agents ----------------------------------------------------------------------------------------


@qiniu.group("agents")
def agents() -> None:
    """List, search, show, create, update and delete agents."""


AGENT_COLUMNS = ["ID", "NAME", "ASSISTANT", "LLM", "VOICE", "DEVICES", "LAST CONNECTED"]


def _agent_row(a: Agent) -> list[Any]:
    return [
        a.id,
        a.agent_name,
        a.assistant_name,
        a.llm_model_name or a.llm_model_id,
        a.tts_voice_name or a.tts_voice_id,
        a.device_count,
        a.last_connected_at,
    ]


@command(agents, "list")
@click.option(
    "--page-size",
    type=click.IntRange(1, 100),
    default=100,
    show_default=True,
    help="agents per request; every page is fetched",
)
def agents_list(opts: QiniuOptions, page_size: int, as_json: bool) -> None:
    """All agents of the account (the cursor is followed to the end)."""
    items = opts.call(lambda client: client.list_agents(page_size))
    emit_rows(as_json, items, AGENT_COLUMNS, _agent_row)


@command(agents, "search")
@click.argument("query")
@click.option(
    "--by",
    type=click.Choice(SEARCH_TYPES),
    default="name",
    show_default=True,
    help="name prefix, a bound device's MAC, or an agent id",
)
def agents_search(opts: QiniuOptions, query: str, by: str, as_json: bool) -> None:
    """Agents whose name starts with QUERY (or bound to MAC QUERY, or with id QUERY)."""
    items = opts.call(lambda client: client.search_agents(query, by))
    emit_rows(as_json, items, AGENT_COLUMNS, _agent_row)


@command(agents, "show")
@click.argument("agent")
def agents_show(opts: QiniuOptions, agent: str, as_json: bool) -> None:
    """One agent's full configuration; AGENT is an id or an exact name."""
    _, item = opts.call(on_agent(agent, lambda client, agent_id: client.get_agent(agent_id)))
    emit_item(as_json, item)


_system_prompt_file_option = input_file_option("--system-prompt-file", help="systemPrompt from a file")


@command(agents, "create")
@click.option("--name", required=True, help="agentName")
@click.option("--assistant-name", help="assistantName: what the agent calls itself ({{assistant_name}})")
@click.option("--lang-code", help="langCode, e.g. zh")
@click.option("--tts-voice", "tts_voice_id", help="ttsVoiceId")
@click.option("--system-prompt", help="systemPrompt (the role)")
@_system_prompt_file_option
@click.option("--llm-model", "llm_model_id", help="llmModelId")
@click.option("--memory-model", "mem_model_id", help="memModelId, e.g. Memory_nomem")
@click.option("--intent-model", "intent_model_id", help="intentModelId, e.g. Intent_function_call")
def agents_create(
    opts: QiniuOptions,
    name: str,
    assistant_name: str | None,
    lang_code: str | None,
    tts_voice_id: str | None,
    system_prompt: str | None,
    system_prompt_file: str | None,
    llm_model_id: str | None,
    mem_model_id: str | None,
    intent_model_id: str | None,
    as_json: bool,
) -> None:
    """Create an agent; prints its id. Unset fields take the platform's template."""
    if system_prompt_file:
        system_prompt = read_text_file(system_prompt_file)
    request = AgentCreate(
        name,
        assistant_name,
        lang_code,
        tts_voice_id,
        system_prompt,
        llm_model_id,
        mem_model_id,
        intent_model_id,
    )

    agent_id = opts.call(lambda client: client.create_agent(request))
    emit(as_json, agent_id, f"created agent {agent_id} ({name})")


_UPDATE_OPTIONS: list[tuple[str, str, type | click.ParamType, str]] = [
    ("--agent-code", "agent_code", str, "agentCode"),
    ("--name", "agent_name", str, "agentName"),
    ("--assistant-name", "assistant_name", str, "assistantName"),
    ("--asr-model", "asr_model_id", str, "asrModelId"),
    ("--vad-model", "vad_model_id", str, "vadModelId"),
    ("--llm-model", "llm_model_id", str, "llmModelId"),
    ("--vllm-model", "vllm_model_id", str, "vllmModelId"),
    ("--tts-model", "tts_model_id", str, "ttsModelId"),
    ("--tts-voice", "tts_voice_id", str, "ttsVoiceId"),
    (
        "--chat-history",
        "chat_history_conf",
        click.IntRange(0, 2),
        "chatHistoryConf: 0 off, 1 text, 2 text+audio",
    ),
    ("--memory-model", "mem_model_id", str, "memModelId"),
    ("--intent-model", "intent_model_id", str, "intentModelId"),
    ("--system-prompt", "system_prompt", str, "systemPrompt"),
    ("--summary-memory", "summary_memory", str, "summaryMemory"),
    ("--lang-code", "lang_code", str, "langCode"),
    ("--language", "language", str, "language (the name of langCode)"),
    ("--sort", "sort", int, "sort"),
]
_VOICE_OPTIONS: list[tuple[str, str, type | click.ParamType, str]] = [
    ("--voice-speed", "speed", click.FloatRange(0.5, 2.0), "extra.voice.speed (0.5-2.0)"),
    ("--voice-pitch", "pitch", click.FloatRange(0.5, 2.0), "extra.voice.pitch (0.5-2.0)"),
    ("--voice-volume", "volume", click.FloatRange(1, 100), "extra.voice.volume (1-100)"),
    ("--voice-emotion", "emotion", str, "extra.voice.emotion"),
    (
        "--voice-quality",
        "quality",
        click.Choice(["low", "medium", "high", "lossless"]),
        "extra.voice.quality",
    ),
]
_LLM_OPTIONS: list[tuple[str, str, type | click.ParamType, str]] = [
    ("--llm-temperature", "temperature", click.FloatRange(0, 2), "extra.llm.temperature"),
    ("--llm-top-p", "top_p", click.FloatRange(0, 1), "extra.llm.top_p"),
    ("--llm-frequency-penalty", "frequency_penalty", click.FloatRange(-2, 2), "extra.llm.frequency_penalty"),
    ("--llm-max-tokens", "max_tokens", click.IntRange(1, 8192), "extra.llm.max_tokens"),
]


def _update_options(func: Any) -> Any:
    """The field options of `agents update`, in help order: top-level fields, extra.voice, extra.llm."""
    func = click.option(
        "--llm-search/--no-llm-search", "llm_enable_search", default=None, help="extra.llm.enable_search"
    )(func)
    for flag, dest, kind, doc in reversed(_LLM_OPTIONS):
        func = click.option(flag, f"llm_{dest}", type=kind, help=doc)(func)
    func = click.option(
        "--voice-tts-emotion/--no-voice-tts-emotion",
        "voice_enable_tts_emotion",
        default=None,
        help="extra.voice.enable_tts_emotion",
    )(func)
    for flag, dest, kind, doc in reversed(_VOICE_OPTIONS):
        func = click.option(flag, f"voice_{dest}", type=kind, help=doc)(func)
    for flag, dest, kind, doc in reversed(_UPDATE_OPTIONS):
        func = click.option(flag, dest, type=kind, help=doc)(func)
    return func


def build_agent_update(
    file_path: str | None, prompt_file: str | None, functions_file: str | None, options: dict[str, Any]
) -> AgentUpdate:
    """The update from a JSON/TOML file (API field names) overlaid with the command-line options."""
    base = AgentUpdate()
    if file_path:
        data = read_object_file(file_path, "an object of agent fields")
        base = AgentUpdate.from_api_fields(data, file_path)
    changes: dict[str, Any] = {}
    for _, dest, _, _ in _UPDATE_OPTIONS:
        if options.get(dest) is not None:
            changes[dest] = options[dest]
    if prompt_file:
        changes["system_prompt"] = read_text_file(prompt_file)
    if functions_file:
        loaded = read_structured_file(functions_file)
        items = loaded.get("functions") if isinstance(loaded, dict) else loaded
        if not isinstance(items, list):
            raise PlatformError(
                f"{functions_file}: expected a list of {{pluginId, paramInfo}} (or [[functions]])"
            )
        changes["functions"] = [AgentFunction.from_api(item) for item in items]
    extra = dict(base.extra or {})
    for section, prefix in (("voice", "voice_"), ("llm", "llm_")):
        given = {
            key[len(prefix) :]: value
            for key, value in options.items()
            if key.startswith(prefix) and value is not None
        }
        if given:
            extra[section] = {**(extra.get(section) or {}), **given}
    if extra:
        changes["extra"] = extra
    return dataclasses.replace(base, **changes)


@command(agents, "update")
@click.argument("agent")
@input_file_option(
    "--from-file",
    "file_path",
    help="JSON or TOML object of agent fields (API names, e.g. systemPrompt, extra); options win",
)
@_system_prompt_file_option
@input_file_option(
    "--functions-file", help="functions: JSON list (or TOML [[functions]]) of {pluginId, paramInfo}"
)
@_update_options
def agents_update(
    opts: QiniuOptions,
    agent: str,
    file_path: str | None,
    system_prompt_file: str | None,
    functions_file: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Change an agent; only the fields given are sent. AGENT is an id or an exact name.

    \b
    extra (the --voice-*/--llm-* options and `extra` in --from-file) is merged into the agent's
    current extra, read first, and sent whole: the platform may replace extra as a whole, so the
    settings not named here are sent back unchanged and survive.
    """
    update = build_agent_update(file_path, system_prompt_file, functions_file, options)
    if update.is_empty():
        raise PlatformError("nothing to update: give at least one field option or --from-file")

    agent_id, data = opts.call(
        on_agent(agent, lambda client, agent_id: client.update_agent(agent_id, update), "updated")
    )
    sent = ", ".join(update.to_api())
    emit(as_json, data, f"updated agent {agent_id}: {sent}")


@command(agents, "delete")
@click.argument("agent")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def agents_delete(opts: QiniuOptions, agent: str, yes: bool, as_json: bool) -> None:
    """Delete an agent for good (asks first unless --yes). AGENT is an id or an exact name."""
    found, _ = opts.call(on_agent(agent, lambda _client, _agent_id: asyncio.sleep(0), "deleted"))
    confirm(f"Delete agent {found}{'' if found == agent else f' ({agent})'}? This cannot be undone.", yes)

    data = opts.call(lambda client: client.delete_agent(found))
    emit(as_json, data, f"deleted agent {found}")


# -- devices ---------------------------------------------------------------------------------------


@qiniu.group("devices")
def devices() -> None:
    """Bound devices: list, bind by activation code, pre-register by MAC, unbind, move."""


def on_agent(
    ref: str, step: Callable[[QiniuClient, str], Awaitable[T]], done: str = "sent"
) -> Callable[[QiniuClient], Awaitable[tuple[str, T]]]:
    """An action that first finds AGENT (an id, used as given, or an exact name), then runs `step` with
    its id. A failed name lookup says so, and that nothing was `done`."""

    async def action(client: QiniuClient) -> tuple[str, T]:
        try:
            agent_id = (await client.resolve_agent(ref)).id
        except AgentLookupError as exc:
            raise exc.nothing(done) from exc.cause
        return agent_id, await step(client, agent_id)

    return action


@command(devices, "list")
@click.argument("agent")
def devices_list(opts: QiniuOptions, agent: str, as_json: bool) -> None:
    """Devices bound to AGENT (an id or an exact name)."""
    _, items = opts.call(on_agent(agent, lambda client, agent_id: client.list_devices(agent_id)))
    emit_rows(
        as_json,
        items,
        ["MAC", "BOARD", "ALIAS", "APP VERSION", "AUTO UPDATE", "LAST CONNECTED"],
        lambda d: [d.mac, d.board, d.alias, d.app_version, d.auto_update, d.last_connected_at],
    )


@command(devices, "bind")
@click.argument("agent")
@click.argument("code")
def devices_bind(opts: QiniuOptions, agent: str, code: str, as_json: bool) -> None:
    """Bind the device showing activation CODE (6 digits, spoken/shown by the device) to AGENT."""
    agent_id, result = opts.call(
        on_agent(agent, lambda client, agent_id: client.bind_device(agent_id, code), "bound")
    )
    what = f"device {result.mac}" if result.mac else "the device"
    emit(as_json, result.raw, f"bound {what} to agent {agent_id}")


@command(devices, "preregister")
@click.argument("agent")
@click.argument("macs", nargs=-1)
@click.option("--serial", "serials", multiple=True, help="a serial number to pre-register (repeatable)")
def devices_preregister(
    opts: QiniuOptions, agent: str, macs: tuple[str, ...], serials: tuple[str, ...], as_json: bool
) -> None:
    """Pre-register devices by MAC to AGENT; reports each MAC. Exit status 1 if any failed.

    The reply lists only the failures. A MAC it does not list is reported ok only when its
    success_count agrees; otherwise each such MAC is reported "unknown", a warning line goes to
    stderr and the exit status is 1 (check them with `companion qiniu prereg show MAC`).
    """
    if not macs and not serials:
        raise PlatformError("give at least one MAC address (or --serial)")

    _, result = opts.call(
        on_agent(
            agent, lambda client, agent_id: client.preregister(agent_id, macs, serials), "pre-registered"
        )
    )
    outcomes = result.outcomes(macs, serials)
    emit(
        as_json,
        result.raw,
        lambda: (
            table(["MAC", "RESULT"], [[o.mac, _prereg_status(o)] for o in outcomes])
            + f"\nsuccess_count: {result.success_count}"
        ),
    )
    problem = result.inconsistency(macs, serials)
    if problem:
        click.echo(
            f"companion: warning: {problem}; the MACs it does not name may or may not be registered", err=True
        )
    if result.failed or problem:
        click.get_current_context().exit(1)


def _prereg_status(outcome: PreregisterOutcome) -> str:
    if outcome.ok:
        return "ok"
    if outcome.unknown:
        return "unknown (success_count disagrees with the failed list)"
    return f"failed: {outcome.reason or 'no reason given'}"


@command(devices, "unbind")
@click.argument("mac")
def devices_unbind(opts: QiniuOptions, mac: str, as_json: bool) -> None:
    """Unbind the device with this MAC."""
    opts.call(lambda client: client.unbind_device(mac))
    emit(as_json, None, f"unbound {mac}")


@command(devices, "move")
@click.argument("mac")
@click.argument("agent")
def devices_move(opts: QiniuOptions, mac: str, agent: str, as_json: bool) -> None:
    """Switch the device with this MAC to AGENT (its chat history follows)."""
    agent_id, _ = opts.call(
        on_agent(agent, lambda client, agent_id: client.move_device(mac, agent_id), "moved")
    )
    emit(as_json, None, f"moved {mac} to agent {agent_id}")


# -- pre-registrations -----------------------------------------------------------------------------


@qiniu.group("prereg")
def prereg() -> None:
    """Pre-registered devices: list, show, delete."""


@command(prereg, "list")
@click.argument("agent")
def prereg_list(opts: QiniuOptions, agent: str, as_json: bool) -> None:
    """Devices pre-registered to AGENT (every page)."""
    _, items = opts.call(on_agent(agent, lambda client, agent_id: client.list_preregistered(agent_id)))
    emit_rows(
        as_json,
        items,
        ["MAC", "SERIAL", "STATUS", "CREATED", "ID"],
        lambda d: [d.mac_address, d.serial_number, d.status, d.created_at, d.id],
    )


@command(prereg, "show")
@click.argument("mac")
def prereg_show(opts: QiniuOptions, mac: str, as_json: bool) -> None:
    """The pre-registration of MAC."""
    device = opts.call(lambda client: client.get_preregistered(mac))
    if device is None:
        raise PlatformError(f"Qiniu: {mac} is not pre-registered")
    emit_item(as_json, device)


@command(prereg, "delete")
@click.argument("mac")
def prereg_delete(opts: QiniuOptions, mac: str, as_json: bool) -> None:
    """Remove the pre-registration of MAC."""
    opts.call(lambda client: client.delete_preregistered(mac))
    emit(as_json, None, f"removed the pre-registration of {mac}")


# -- chat history ----------------------------------------------------------------------------------


@command(qiniu, "sessions")
@click.argument("agent")
@click.option("--max", "max_items", type=click.IntRange(1), help="stop after this many sessions")
@click.option("--page-size", type=click.IntRange(1, 100), default=20, show_default=True)
def sessions_cmd(
    opts: QiniuOptions, agent: str, max_items: int | None, page_size: int, as_json: bool
) -> None:
    """Chat sessions of AGENT, newest first (every page unless --max)."""
    _, (total, items) = opts.call(
        on_agent(agent, lambda client, agent_id: client.list_sessions(agent_id, page_size, max_items))
    )
    emit_rows(
        as_json,
        items,
        ["SESSION", "CREATED", "MESSAGES"],
        lambda s: [s.session_id, s.created_at, s.chat_count],
        footer=f"\n{len(items)} of {total} sessions" if total is not None else "",
    )


@command(qiniu, "history")
@click.argument("agent")
@click.argument("session")
def history_cmd(opts: QiniuOptions, agent: str, session: str, as_json: bool) -> None:
    """The messages of one SESSION of AGENT."""
    _, items = opts.call(on_agent(agent, lambda client, agent_id: client.chat_history(agent_id, session)))
    emit_rows(
        as_json, items, ["TIME", "WHO", "CONTENT"], lambda m: [m.created_at, m.speaker, m.content], width=80
    )


# -- voice clones ----------------------------------------------------------------------------------


@qiniu.group("voice-clone")
def voice_clone() -> None:
    """Voice clones: create a slot, train it from an audio URL, follow its state, list, delete."""


def _emit_clone(as_json: bool, clone: VoiceClone) -> None:
    """A voice clone as the platform sent it (with --json), or its id, name, state, language, tier, demo."""
    fields = [
        ("id", clone.id),
        ("name", clone.name),
        ("state", clone.state),
        ("language", clone.language),
        ("tier", clone.tier),
        ("demo", clone.demo_url),
    ]
    emit(as_json, clone.raw, lambda: pairs(fields))


@command(voice_clone, "create")
@click.option("--language", default="zh", show_default=True, help="fixed for good; free tier: zh or en")
@click.option("--tier", type=click.Choice(["free", "pro"]), default="free", show_default=True)
def clone_create(opts: QiniuOptions, language: str, tier: str, as_json: bool) -> None:
    """Create an empty voice-clone slot (state Init)."""
    clone = opts.call(lambda client: client.create_voice_clone(language, tier))
    _emit_clone(as_json, clone)


@command(voice_clone, "upload")
@click.argument("clone_id")
@click.option("--name", required=True, help="voice name, at most 20 characters")
@click.option("--audio-url", help="URL of 10-60 s of clean speech; without it only the name changes")
def clone_upload(opts: QiniuOptions, clone_id: str, name: str, audio_url: str | None, as_json: bool) -> None:
    """Give the slot its recording (by URL) and start training; a paid slot uses quota each time."""
    clone = opts.call(lambda client: client.train_voice_clone(clone_id, name, audio_url))
    _emit_clone(as_json, clone)


@command(voice_clone, "status")
@click.argument("clone_id")
@click.option("--wait", is_flag=True, help="poll until the state is Success or Failed")
@seconds_option("--interval", low=0.01, high=600, default=10.0, help="seconds between polls with --wait")
@seconds_option("--wait-timeout", low=1, default=1800.0, help="give up waiting after this many seconds")
def clone_status(
    opts: QiniuOptions, clone_id: str, wait: bool, interval: float, wait_timeout: float, as_json: bool
) -> None:
    """A voice clone's state (Init, Training, Success, Failed)."""

    async def follow(client: QiniuClient) -> VoiceClone:
        clone = await client.get_voice_clone(clone_id)
        if not wait:
            return clone
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_timeout
        while not clone.finished:
            if loop.time() + interval > deadline:
                raise PlatformError(
                    f"Qiniu: voice clone {clone_id} is still {clone.state} after {wait_timeout:.0f} s"
                )
            await asyncio.sleep(interval)
            clone = await client.get_voice_clone(clone_id)
        return clone

    clone = opts.call(follow)
    _emit_clone(as_json, clone)
    if wait and clone.state == "Failed":
        click.get_current_context().exit(1)


@command(voice_clone, "list")
def clone_list(opts: QiniuOptions, as_json: bool) -> None:
    """All voice clones of the account."""
    items = opts.call(lambda client: client.list_voice_clones())
    emit_rows(
        as_json,
        items,
        ["ID", "NAME", "STATE", "LANGUAGE", "TIER"],
        lambda c: [c.id, c.name, c.state, c.language, c.tier],
    )


@command(voice_clone, "delete")
@click.argument("clone_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def clone_delete(opts: QiniuOptions, clone_id: str, yes: bool, as_json: bool) -> None:
    """Delete a voice clone for good (paid slots cannot be deleted)."""
    confirm(f"Delete voice clone {clone_id}? This cannot be undone.", yes)

    opts.call(lambda client: client.delete_voice_clone(clone_id))
    emit(as_json, None, f"deleted voice clone {clone_id}")
