"""The glue between a backend's MCP requests and the tools: request in, reply out (or nothing).

The runtime gives every `ToolRequest` event's payload to `ToolServer.handle` and sends what comes back
with `backend.send_tool_result(reply)`; `serve` does both. Tool calls run on the event loop with a time
limit, so a stuck tool answers with an error instead of leaving the server waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import __version__
from ..protocols.xiaozhi.mcp import McpServer, ToolCall
from .controls import DeviceControls
from .device import device_tools
from .registry import ToolError, ToolRegistry

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0


class ToolServer:
    """Answers MCP requests (initialize, tools/list, tools/call) with the tools of a registry."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        name: str,
        version: str = __version__,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.mcp = McpServer(registry.specs(), name=name, version=version)
        self.call_timeout_s = call_timeout_s

    @classmethod
    def for_device(
        cls, controls: DeviceControls, *, name: str, leds: bool = True, version: str = __version__
    ) -> ToolServer:
        """The server of the built-in device tools (see companion.tools.device)."""
        return cls(device_tools(controls, leds=leds), name=name, version=version)

    async def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON-RPC reply to one request, or None when none is due (notifications, string ids …)."""
        outcome = self.mcp.receive(request)
        if not isinstance(outcome, ToolCall):
            return outcome
        return await self._run(outcome)

    async def serve(self, request: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Handle `request` and send the reply, if any (e.g. `send=backend.send_tool_result`)."""
        reply = await self.handle(request)
        if reply is not None:
            await send(reply)

    async def _run(self, call: ToolCall) -> dict[str, Any]:
        tool = self.registry[call.name]
        log.info("tool call %s", call.name)
        log.debug("tool call %s arguments %s", call.name, call.arguments)
        try:
            value = await asyncio.wait_for(tool.invoke(call.arguments), self.call_timeout_s)
        except TimeoutError:
            log.warning("tool %s did not finish within %g s", call.name, self.call_timeout_s)
            return self.mcp.error(call, f"Tool {call.name} timed out after {self.call_timeout_s:g} s")
        except ToolError as exc:
            log.info("tool %s failed: %s", call.name, exc)
            return self.mcp.error(call, str(exc) or f"Tool {call.name} failed")
        except Exception as exc:
            log.warning("tool %s raised %s: %s", call.name, type(exc).__name__, exc, exc_info=True)
            return self.mcp.error(call, str(exc) or type(exc).__name__)
        return self.mcp.result(call, value)
