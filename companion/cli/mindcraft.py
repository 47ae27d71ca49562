"""`companion mindcraft session new|list|clear`: the chat_bot_v3 conversation (memory) the daemon uses.

The credential and the REST host come from the [chatbot_v3] config (auth, api_key or device_token,
rest_url) or COMPANION_MINDCRAFT_KEY / COMPANION_MINDCRAFT_DEVICE_TOKEN, as for the daemon. `new`
creates a conversation and makes it the daemon's (remembered in the state directory); `clear` deletes a
conversation's messages so the agent forgets it.
"""

from __future__ import annotations

import socket

import click

from ..backends.chatbot_v3.sessions import (
    Credential,
    MindcraftRest,
    forget_session,
    remember_session,
    remembered_session,
    resolve_credential,
)
from ..config import ChatbotV3Settings, load_settings
from ..errors import CompanionError
from ..net.tls import client_context
from .platforms import call_with


def register(group: click.Group) -> None:
    """Add `mindcraft`."""
    group.add_command(mindcraft)


def _settings(ctx: click.Context) -> ChatbotV3Settings:
    config_path, overrides = ctx.obj
    return load_settings(config_path, overrides).chatbot_v3


def _rest(settings: ChatbotV3Settings, credential: Credential) -> MindcraftRest:
    return MindcraftRest(
        settings.rest_url,
        credential.value,
        verify=client_context("", setting="chatbot_v3"),
        label=credential.label,
        where=credential.where,
    )


@click.group("mindcraft")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.pass_context
def mindcraft(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Mindcraft chat_bot_v3: the conversation sessions the agent remembers.

    The credential is the one chatbot_v3.auth names: chatbot_v3.api_key or COMPANION_MINDCRAFT_KEY, or
    chatbot_v3.device_token or COMPANION_MINDCRAFT_DEVICE_TOKEN.
    """
    ctx.obj = (config_path, overrides)


@mindcraft.group("session")
def session() -> None:
    """Conversations (session tokens): the agent's memory."""


@session.command("new")
@click.option("--name", default="", help="a name for it (default: companion <hostname>)")
@click.option("--no-remember", is_flag=True, help="only print the token; the daemon keeps its own")
@click.pass_context
def session_new(ctx: click.Context, name: str, no_remember: bool) -> None:
    """Start a new conversation and make it the daemon's (it takes effect at the next connect)."""
    settings = _settings(ctx)
    credential = resolve_credential(settings)

    title = name or f"companion {socket.gethostname()}"
    token = call_with(
        lambda: _rest(settings, credential), lambda rest: rest.create_session(title, settings.llm_model)
    )
    click.echo(token)
    if no_remember:
        return
    try:
        path = remember_session(token, credential.account)
    except OSError as exc:
        raise CompanionError(f"created {token}, but could not remember it: {exc.strerror or exc}") from None
    click.echo(f"remembered in {path}", err=True)
    if settings.session_token:
        click.echo(
            "note: chatbot_v3.session_token is set in the config and wins over the remembered session",
            err=True,
        )


@session.command("list")
@click.pass_context
def session_list(ctx: click.Context) -> None:
    """The account's conversations; `*` marks the one the daemon uses."""
    settings = _settings(ctx)
    credential = resolve_credential(settings)

    sessions = call_with(lambda: _rest(settings, credential), lambda rest: rest.list_sessions())
    rows = [(s.token, s.name, s.created) for s in sessions]
    current = settings.session_token or remembered_session(credential.account)
    if not rows:
        click.echo("no sessions", err=True)
    for token, name, created in rows:
        mark = "*" if token == current else " "
        click.echo(f"{mark} {token}  {created[:19]:19}  {name}")


@session.command("clear")
@click.option("--session", "token", default="", metavar="TOKEN", help="which one (default: the daemon's)")
@click.option(
    "--forget", is_flag=True, help="also forget the remembered session (a new one is made next time)"
)
@click.pass_context
def session_clear(ctx: click.Context, token: str, forget: bool) -> None:
    """Delete a conversation's messages, so the agent starts afresh."""
    settings = _settings(ctx)
    credential = resolve_credential(settings)
    token = token or settings.session_token or remembered_session(credential.account)
    if not token:
        raise CompanionError("no session to clear: none is configured or remembered (give --session TOKEN)")

    call_with(lambda: _rest(settings, credential), lambda rest: rest.clear_messages(token))
    click.echo(f"cleared the messages of {token}")
    if forget and forget_session():
        click.echo("forgot the remembered session", err=True)
