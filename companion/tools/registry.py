"""Tools registered as plain typed functions; the MCP input schema is derived from the signature.

    registry = ToolRegistry()

    @registry.tool("self.audio_speaker.set_volume")
    async def set_volume(volume: Annotated[int, Range(0, 100), "The new volume"]) -> bool:
        '''Set the volume of the audio speaker.'''
        ...

- The tool's description is the docstring (without its `Args:` section).
- Each parameter becomes a property: `bool` → boolean, `int` → integer, `str` → string, a `Literal` of
  strings → string with an enum. `Annotated[...]` adds `Range(min, max)` for integers and a plain string
  for the description; otherwise the docstring's `Args:` line `name: text` describes it.
- A parameter with a default is optional; one without is required.
- The function may be sync or async and returns a bool, int, str, dict/list (sent as JSON) or None
  (success, sent as "true"). Raising ToolError sends its message as the MCP error.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ..protocols.xiaozhi.mcp import NO_DEFAULT, ToolParam, ToolSpec

__all__ = ["Annotated", "Range", "Tool", "ToolError", "ToolRegistry"]

_TYPES: dict[Any, str] = {bool: "boolean", int: "integer", str: "string"}
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_LIST_ITEM = re.compile(r"^(\d+[.)]|[-*•])\s")
_ARG_LINE = re.compile(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


class ToolError(Exception):
    """A tool could not do what was asked; the message goes to the server as the MCP error text."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an integer parameter, for `Annotated[int, Range(0, 100)]`."""

    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Tool:
    """A registered tool: what MCP publishes (`spec`) and the function that runs it."""

    spec: ToolSpec
    func: Callable[..., Any]

    @property
    def name(self) -> str:
        """The MCP tool name."""
        return self.spec.name

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Run the function with checked arguments, awaiting it when it is a coroutine function."""
        result = self.func(**arguments)
        if inspect.isawaitable(result):
            result = await result
        return result


class ToolRegistry:
    """Tools in registration order (the firmware lists common tools first, for the LLM's prompt cache)."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def tool(
        self, name: str, *, user_only: bool = False, description: str = ""
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the function as the tool `name` (`user_only`: hidden from the LLM)."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add(func, name, user_only=user_only, description=description)
            return func

        return register

    def add(
        self, func: Callable[..., Any], name: str, *, user_only: bool = False, description: str = ""
    ) -> Tool:
        """Register `func` as the tool `name`; raises TypeError for a signature MCP cannot describe."""
        if name in self._tools:
            raise ValueError(f"tool {name!r} is already registered")
        spec = spec_from_function(func, name, user_only=user_only, description=description)
        tool = Tool(spec, func)
        self._tools[name] = tool
        return tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def specs(self) -> list[ToolSpec]:
        """What the MCP server publishes, in order."""
        return [t.spec for t in self._tools.values()]


def spec_from_function(
    func: Callable[..., Any], name: str, *, user_only: bool = False, description: str = ""
) -> ToolSpec:
    """The ToolSpec of a typed function (see the module docstring for the rules)."""
    summary, arg_docs = _split_docstring(inspect.getdoc(func) or "")
    hints = typing.get_type_hints(func, include_extras=True)
    params: list[ToolParam] = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args/**kwargs cannot be described to MCP")
        if p.name not in hints:
            raise TypeError(f"tool {name!r}: parameter {p.name!r} needs a type annotation")
        params.append(_param(name, p, hints[p.name], arg_docs.get(p.name, "")))
    text = description or _reflow(summary)
    if not text:
        raise TypeError(f"tool {name!r}: give the function a docstring (the LLM reads it)")
    return ToolSpec(name, text, tuple(params), user_only)


def _param(tool: str, p: inspect.Parameter, hint: Any, doc: str) -> ToolParam:
    bounds = Range()
    description = doc
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Range):
                bounds = extra
            elif isinstance(extra, str):
                description = extra
        hint = base
    choices: tuple[str, ...] = ()
    if typing.get_origin(hint) is Literal:
        values = typing.get_args(hint)
        if not all(isinstance(v, str) for v in values):
            raise TypeError(f"tool {tool!r}: parameter {p.name!r}: only Literal strings are supported")
        choices, kind = tuple(values), "string"
    elif hint in _TYPES:
        kind = _TYPES[hint]
    else:
        raise TypeError(
            f"tool {tool!r}: parameter {p.name!r} has type {hint!r}; MCP tools take bool, int, str or Literal"
        )
    default = NO_DEFAULT if p.default is inspect.Parameter.empty else p.default
    try:
        return ToolParam(p.name, kind, description, default, bounds.minimum, bounds.maximum, choices)
    except ValueError as exc:
        raise TypeError(f"tool {tool!r}: {exc}") from None


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description without the Args section, {parameter: description}) of a Google-style docstring."""
    lines = doc.splitlines()
    kept: list[str] = []
    args: dict[str, str] = {}
    i = 0
    while i < len(lines):
        if not _ARGS_HEADER.match(lines[i]):
            kept.append(lines[i])
            i += 1
            continue
        i += 1
        base: int | None = None
        current = ""
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > 0):
            line = lines[i]
            i += 1
            if not line.strip():
                continue
            if base is None:
                base = _indent(line)
            match = _ARG_LINE.match(line)
            if match and _indent(line) == base:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current:
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(kept).strip(), args


def _reflow(text: str) -> str:
    """Join the lines a docstring wraps for width; keep paragraph breaks, list items and lines ending ':'."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        starts_item = bool(_LIST_ITEM.match(line))
        if out and line and out[-1] and not starts_item and not out[-1].endswith(":"):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return "\n".join(out).strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
