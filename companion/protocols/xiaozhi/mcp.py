"""The device's MCP server without I/O: JSON-RPC 2.0 requests in, replies out, as the firmware answers (§5).

The xiaozhi server is the MCP client and the device the server. `McpServer.receive(payload)` takes the
JSON-RPC object from a `{"type":"mcp"}` message and returns what to do:

- a reply dict to send back (initialize, tools/list, errors, argument problems);
- a `ToolCall` whose arguments are already checked and completed with defaults: the caller runs the tool
  (it may take time, so it is not run here) and turns the outcome into a reply with `result()`/`error()`;
- None when the firmware sends nothing: notifications, non-integer ids, responses, malformed requests.

Replies match the firmware: key order jsonrpc, id, result|error; errors carry only `message` (no `code`);
tool results are `{"content":[{"type":"text","text":…}],"isError":false}`; each tools/list page is at most
`page_bytes` bytes of compact JSON, continued with `nextCursor` = the name of the next tool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ..numbers import whole_number
from ..oncelog import OnceLog

log = logging.getLogger(__name__)

JSONRPC = "2.0"
PROTOCOL_VERSION = "2024-11-05"
MAX_PAGE_BYTES = 8000
PARAM_TYPES = ("boolean", "integer", "string")


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()


class ArgumentError(ValueError):
    """An argument failed validation; str(error) is the exact message the firmware would send."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ToolParam:
    """One property of a tool's input schema: boolean, integer (optionally bounded) or string.

    A parameter without a default is required. `choices` restricts a string to a set of values; a value
    outside it is treated like a value of the wrong type.
    """

    name: str
    type: str
    description: str = ""
    default: Any = NO_DEFAULT
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r}: type must be one of {PARAM_TYPES}, not {self.type!r}")
        if (self.minimum is not None or self.maximum is not None) and self.type != "integer":
            raise ValueError(f"parameter {self.name!r}: range limits only apply to integers")
        if self.choices and self.type != "string":
            raise ValueError(f"parameter {self.name!r}: choices only apply to strings")
        if self.has_default:
            valid = self._accept(self.default) is not None
            if valid:
                try:
                    self.value_from({self.name: self.default})
                except ArgumentError:
                    valid = False
            if not valid:
                raise ValueError(f"parameter {self.name!r}: default {self.default!r} is not a valid value")

    @property
    def has_default(self) -> bool:
        """True for an optional parameter."""
        return self.default is not NO_DEFAULT

    def schema(self) -> dict[str, Any]:
        """The JSON schema of this property (the firmware's keys, plus description and enum when set)."""
        out: dict[str, Any] = {"type": self.type}
        if self.description:
            out["description"] = self.description
        if self.choices:
            out["enum"] = list(self.choices)
        if self.has_default:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def value_from(self, arguments: dict[str, Any]) -> Any:
        """The argument's value (or its default); raises ArgumentError with the firmware's message."""
        value = self._accept(arguments.get(self.name)) if self.name in arguments else None
        if value is None:
            if not self.has_default:
                raise ArgumentError(f"Missing valid argument: {self.name}")
            return self.default
        if self.type == "integer":
            if self.minimum is not None and value < self.minimum:
                raise ArgumentError(f"Value is below minimum allowed: {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ArgumentError(f"Value exceeds maximum allowed: {self.maximum}")
        return value

    def _accept(self, value: Any) -> Any:
        """The value converted to this type, or None when it does not have it (bounds not checked)."""
        if self.type == "boolean":
            return value if isinstance(value, bool) else None
        if self.type == "integer":
            return whole_number(value)
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            return None
        return value


@dataclass(frozen=True)
class ToolSpec:
    """What the MCP server publishes about a tool. `user_only` tools are listed only with withUserTools."""

    name: str
    description: str
    params: tuple[ToolParam, ...] = ()
    user_only: bool = False

    def to_json(self) -> dict[str, Any]:
        """The tools/list entry, in the firmware's key order."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
        }
        required = [p.name for p in self.params if not p.has_default]
        if required:
            schema["required"] = required
        out: dict[str, Any] = {"name": self.name, "description": self.description, "inputSchema": schema}
        if self.user_only:
            out["annotations"] = {"audience": ["user"]}
        return out

    def arguments(self, given: dict[str, Any]) -> dict[str, Any]:
        """Checked arguments with defaults filled in, in declaration order; raises ArgumentError."""
        return {p.name: p.value_from(given) for p in self.params}


@dataclass(frozen=True)
class ToolCall:
    """A validated tools/call for the caller to run; answer it with McpServer.result() or .error()."""

    id: int
    tool: ToolSpec
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.tool.name


McpOutcome = dict[str, Any] | ToolCall | None


def text_of(value: Any) -> str:
    """A tool's return value as the firmware writes it into a text content item.

    A bool becomes "true"/"false", an int its decimal string, a string itself, a dict or list its compact
    JSON; a tool that returns nothing (None) succeeded, as the firmware's setters answer "true".
    """
    if value is None or value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return _dumps(value)


class McpServer:
    """The device side of MCP: initialize, tools/list (paged), tools/call (validated)."""

    def __init__(
        self,
        tools: Iterable[ToolSpec],
        *,
        name: str,
        version: str,
        page_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self.tools: dict[str, ToolSpec] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"tool {tool.name!r} is registered twice")
            self.tools[tool.name] = tool
        self.name = name
        self.version = version
        self.page_bytes = page_bytes
        self.vision: dict[str, str] | None = None  # capabilities.vision from initialize, if any
        self._entries = {n: _dumps(t.to_json()) for n, t in self.tools.items()}
        self._oddities = OnceLog(log)

    # ------------------------------------------------------------------ requests
    def receive(self, payload: Any) -> McpOutcome:
        """What to do with one JSON-RPC object from the server (see the module docstring)."""
        if not isinstance(payload, dict):
            self._ignore("payload", f"MCP payload is a {type(payload).__name__}, not an object")
            return None
        if payload.get("jsonrpc") != JSONRPC:
            self._ignore("jsonrpc", f"MCP message without jsonrpc 2.0 ignored: {payload.get('jsonrpc')!r}")
            return None
        method = payload.get("method")
        if not isinstance(method, str):
            self._ignore("method", "MCP message without a method (a response?) ignored")
            return None
        if method.startswith("notifications"):
            log.debug("MCP notification %s", method)
            return None
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            self._ignore("params", f"MCP {method}: params is not an object; ignored")
            return None
        ident = payload.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool):
            self._ignore("id", f"MCP {method}: id {ident!r} is not an integer; no reply")
            return None
        params = params or {}
        if method == "initialize":
            return self._initialize(ident, params)
        if method == "tools/list":
            cursor = params.get("cursor")
            with_user = params.get("withUserTools")
            return self.tools_list(
                ident, cursor if isinstance(cursor, str) else "", with_user_tools=with_user is True
            )
        if method == "tools/call":
            return self._call(ident, payload.get("params"))
        return self.error(ident, f"Method not implemented: {method}")

    def _initialize(self, ident: int, params: dict[str, Any]) -> dict[str, Any]:
        capabilities = params.get("capabilities")
        vision = capabilities.get("vision") if isinstance(capabilities, dict) else None
        if isinstance(vision, dict) and isinstance(vision.get("url"), str):
            url = vision["url"]
            if url.startswith(("http://", "https://")):
                token = vision.get("token")
                self.vision = {"url": url, "token": token if isinstance(token, str) else ""}
                log.debug("MCP vision endpoint offered: %s (no camera here)", url)
        result = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": self.name, "version": self.version},
        }
        return self._reply(ident, result)

    def tools_list(self, ident: int, cursor: str = "", *, with_user_tools: bool = False) -> dict[str, Any]:
        """One page of tools, starting at the tool named `cursor` ("" = the first).

        A page holds as many tools as fit in `page_bytes` (the whole reply, as compact JSON); when some
        are left, `nextCursor` names the next one. An unknown cursor gives an empty last page.
        """
        names = [n for n, t in self.tools.items() if with_user_tools or not t.user_only]
        if cursor:
            if cursor not in names:
                log.info("MCP tools/list: unknown cursor %r; empty page", cursor)
                names = []
            else:
                names = names[names.index(cursor) :]
        head = len(_dumps(self._reply(ident, {"tools": []})).encode())  # the frame around the list
        used = head
        page: list[str] = []
        for i, name in enumerate(names):
            entry = len(self._entries[name].encode()) + (1 if page else 0)
            after = names[i + 1] if i + 1 < len(names) else None
            tail = len(f',"nextCursor":{_dumps(after)}'.encode()) if after is not None else 0
            if used + entry + tail > self.page_bytes:
                if not page:
                    return self.error(ident, f"Failed to add tool {name} because of payload size limit")
                break
            page.append(name)
            used += entry
        result: dict[str, Any] = {"tools": [self.tools[n].to_json() for n in page]}
        if len(page) < len(names):
            result["nextCursor"] = names[len(page)]
        return self._reply(ident, result)

    def _call(self, ident: int, params: Any) -> McpOutcome:
        if not isinstance(params, dict):
            return self.error(ident, "Missing params")
        name = params.get("name")
        if not isinstance(name, str):
            return self.error(ident, "Missing name")
        given = params.get("arguments")
        if given is not None and not isinstance(given, dict):
            return self.error(ident, "Invalid arguments")
        tool = self.tools.get(name)
        if tool is None:
            log.info("MCP call of unknown tool %r", name)
            return self.error(ident, f"Unknown tool: {name}")
        try:
            arguments = tool.arguments(given or {})
        except ArgumentError as exc:
            log.info("MCP call %s refused: %s", name, exc)
            return self.error(ident, str(exc))
        return ToolCall(ident, tool, arguments)

    # ------------------------------------------------------------------ replies
    def result(self, call: ToolCall, value: Any) -> dict[str, Any]:
        """The reply for a tool that returned `value` (see `text_of`)."""
        content = [{"type": "text", "text": text_of(value)}]
        return self._reply(call.id, {"content": content, "isError": False})

    def error(self, call: ToolCall | int, message: str) -> dict[str, Any]:
        """An error reply: only `message`, as the firmware sends it."""
        ident = call.id if isinstance(call, ToolCall) else call
        return {"jsonrpc": JSONRPC, "id": ident, "error": {"message": message}}

    @staticmethod
    def _reply(ident: int, result: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": JSONRPC, "id": ident, "result": result}

    def _ignore(self, kind: str, message: str) -> None:
        self._oddities.note(kind, message)
