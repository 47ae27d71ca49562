"""What the `qiniu`, `espai` and `tuya` command groups share: options, tables, --json, file input.

Every command prints a table (or `key: value` lines) by default and, with --json, the platform's own
payload exactly as received. User mistakes and platform refusals are CompanionErrors, which the top-level
group turns into one line on stderr and an exit status.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import tomllib
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import click

from ..errors import CompanionError
from ..platforms.errors import PlatformError
from ..service.state_dir import write_private

T = TypeVar("T")
CELL_WIDTH = 40
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=AbstractAsyncContextManager[Any])


@dataclass(frozen=True)
class PlatformOptions(Generic[C]):
    """The group options every command of one platform sees, and how they make that platform's client."""

    base_url: str | None
    timeout_s: float
    credentials_file: str | None
    extra: Mapping[str, Any]
    connect: Callable[..., C] | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """timeout_s, plus base_url and the group's other hosts (`extra`) where given; the client's own
        defaults stand for the rest."""
        given = {"base_url": self.base_url, **self.extra}
        return {"timeout_s": self.timeout_s, **{key: value for key, value in given.items() if value}}

    def call(self, action: Callable[[C], Awaitable[T]], **connect_args: Any) -> T:
        """Open a client (`connect(self, **connect_args)`), run `action` on it, close it: one command's
        whole conversation with the platform."""
        if self.connect is None:
            raise TypeError("this platform group gives no way to connect")
        connect = self.connect
        return call_with(lambda: connect(self, **connect_args), action)


def call_with(client: Callable[[], C], action: Callable[[C], Awaitable[T]]) -> T:
    """Run `action` on a client made by `client()` inside `async with`, on a fresh event loop."""

    async def go() -> T:
        async with client() as opened:
            return await action(opened)

    return asyncio.run(go())


def command(group: click.Group, name: str) -> Callable[[Callable[..., None]], click.Command]:
    """A platform command of `group`: it receives the group's PlatformOptions first and has --json.

    Its own options are declared below this decorator as usual; --json is listed after them.
    """

    def decorate(func: Callable[..., None]) -> click.Command:
        cmd = group.command(name)(click.pass_obj(func))
        cmd.params.append(click.Option(["--json", "as_json"], is_flag=True, help=JSON_HELP))
        return cmd

    return decorate


def group_options(env_prefix: str, base_help: str) -> Callable[[F], F]:
    """--base-url, --timeout and --credentials-file for a platform group."""

    def decorate(func: F) -> F:
        func = click.option(
            "--credentials-file",
            type=click.Path(dir_okay=False),
            envvar="COMPANION_CREDENTIALS_FILE",
            help="TOML file with the platform's secret (mode 0600); see docs/platforms.md",
        )(func)
        func = seconds_option(
            "--timeout", "timeout_s", low=1, high=600, default=20.0, help="seconds before a call is given up"
        )(func)
        return url_option("--base-url", f"{env_prefix}_BASE_URL", base_help)(func)

    return decorate


def seconds_option(
    *param_decls: str, low: float, high: float | None = None, default: float, help: str
) -> Callable[[F], F]:
    """A duration in seconds between `low` and `high` (no upper bound when None); --help shows the default."""
    return click.option(
        *param_decls, type=click.FloatRange(low, high), default=default, show_default=True, help=help
    )


def url_option(flag: str, envvar: str, help: str) -> Callable[[F], F]:
    """A host option of a platform group (`URL`), also read from the environment variable `envvar`."""
    return click.option(flag, envvar=envvar, metavar="URL", help=help)


JSON_HELP = "print the platform's JSON payload"


def platform_group(
    name: str, env_prefix: str, base_help: str, connect: Callable[..., Any]
) -> Callable[[Callable[..., None]], click.Group]:
    """A platform's command group, from a function that holds only its help text.

    The group takes --base-url, --timeout, --credentials-file and any options declared below this
    decorator; its commands receive a PlatformOptions (those other options in `extra`) that makes
    clients with `connect`.
    """

    def decorate(func: Callable[..., None]) -> click.Group:
        def callback(
            base_url: str | None, timeout_s: float, credentials_file: str | None, **extra: Any
        ) -> None:
            click.get_current_context().obj = PlatformOptions(
                base_url, timeout_s, credentials_file, extra, connect
            )

        functools.update_wrapper(callback, func)
        return click.group(name)(group_options(env_prefix, base_help)(callback))

    return decorate


def input_file_option(*param_decls: str, help: str) -> Callable[[F], F]:
    """An option naming an existing file to read (click refuses a missing file or a directory)."""
    return click.option(*param_decls, type=click.Path(exists=True, dir_okay=False), help=help)


def json_option(func: F) -> F:
    """--json: print the platform's payload exactly instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(func)


def emit(as_json: bool, payload: Any, text: str | Callable[[], str]) -> None:
    """The JSON payload (with --json) or the readable text."""
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        click.echo(text() if callable(text) else text)


class Described(Protocol):
    """A reply model: it keeps the object the platform sent."""

    @property
    def raw(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Described)


def emit_rows(
    as_json: bool,
    items: Sequence[R],
    columns: Sequence[str],
    row: Callable[[R], Sequence[Any]],
    *,
    width: int = CELL_WIDTH,
    footer: str = "",
) -> None:
    """The items as the platform sent them (with --json), or a table of one `row(item)` per item."""
    emit(
        as_json,
        [item.raw for item in items],
        lambda: table(columns, [row(item) for item in items], width=width) + footer,
    )


def emit_item(as_json: bool, item: Described) -> None:
    """One object as the platform sent it (with --json), or as `key: value` lines of that object."""
    emit(as_json, item.raw, lambda: pairs(item.raw.items()))


# -- readable output -------------------------------------------------------------------------------


def char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns `text` takes (CJK characters take two)."""
    return sum(char_width(char) for char in text)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` columns, with an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = char_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def cell(value: Any) -> str:
    """A value as one line of text: '-' for nothing, yes/no, compact JSON for objects."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(str(value).split())


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, width: int = CELL_WIDTH) -> str:
    """A plain text table; long cells are clipped to `width` columns (use --json for everything)."""
    body = [[clip(cell(value), width) for value in row] for row in rows]
    if not body:
        return "(none)"
    widths = [
        max([display_width(col)] + [display_width(row[i]) for row in body]) for i, col in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [value + " " * (widths[i] - display_width(value)) for i, value in enumerate(values)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in body)])


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """`key: value` lines; multi-line values continue indented under their key."""
    items = list(items)
    if not items:
        return "(nothing)"
    key_width = max(display_width(key) for key, _ in items)
    lines: list[str] = []
    for key, value in items:
        pad = " " * (key_width - display_width(key))
        if isinstance(value, str) and "\n" in value:
            first, *rest = value.splitlines()
            lines.append(f"{key}:{pad} {first}")
            lines.extend(" " * (key_width + 2) + more for more in rest)
        elif isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, indent=2)
            first, *rest = text.splitlines()
            lines.append(f"{key}:{pad} {first}")
            lines.extend(" " * (key_width + 2) + more for more in rest)
        else:
            lines.append(f"{key}:{pad} {cell(value)}")
    return "\n".join(lines)


def mask(secret: str | None) -> str:
    """A secret shown by its first four characters only."""
    if not secret:
        return "-"
    return secret[:4] + "…" if len(secret) > 6 else "…"


def mask_keys(value: Any, keys: tuple[str, ...] = ("api_key", "apiKey", "secret", "token")) -> Any:
    """A copy of a JSON value with secret-looking fields masked, for readable output only."""
    if isinstance(value, dict):
        return {
            k: (mask(v) if k in keys and isinstance(v, str) else mask_keys(v, keys)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_keys(item, keys) for item in value]
    return value


def local_time(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def local_time_ms(epoch_ms: int | None) -> str:
    return "-" if epoch_ms is None else local_time(epoch_ms / 1000)


# -- input -----------------------------------------------------------------------------------------


def read_structured_file(path: str | Path) -> Any:
    """A TOML (.toml) or JSON (anything else) file's content; one clear error when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlatformError(f"{path}: not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PlatformError(f"{path}: not valid JSON: {exc}") from None


def read_object_file(path: str | Path, expected: str) -> dict[str, Any]:
    """A TOML or JSON file that must hold one object; else the error says it `expected` (what it wants)."""
    data = read_structured_file(path)
    if not isinstance(data, dict):
        raise PlatformError(f"{path}: expected {expected}")
    return data


def read_text_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformError(f"cannot read {path}: {exc}") from None


def save_file(path: Path, data: bytes) -> None:
    """Write a file the user asked for (atomically, 0600); one clear error if that fails."""
    try:
        write_private(path, data)
    except OSError as exc:
        raise PlatformError(f"cannot write {path}: {exc.strerror or exc}") from None


def secret_input(env_name: str, prompt: str, *, confirm: bool = False) -> str:
    """A secret from the environment, else typed at a hidden prompt (never from argv)."""
    value = os.environ.get(env_name, "").strip()
    if value:
        return value
    try:
        typed = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    except click.Abort:
        raise CompanionError(f"no {prompt.lower()} given (set {env_name} or type it at the prompt)") from None
    text = str(typed).strip()
    if not text:
        raise CompanionError(f"the {prompt.lower()} is empty")
    return text


def confirm(question: str, yes: bool) -> None:
    """Ask before something irreversible unless --yes; refusing ends the command with status 1."""
    if yes:
        return
    try:
        agreed = click.confirm(question, default=False)
    except click.Abort:
        agreed = False
    if not agreed:
        raise CompanionError("cancelled; nothing was changed (pass --yes to skip the question)")
