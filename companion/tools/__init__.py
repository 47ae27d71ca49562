"""Device tools the agent can call over MCP.

`ToolServer.for_device(controls, name=board)` answers the server's MCP requests with the built-in tools
(`device.py`); `ToolRegistry` turns a typed function into a tool; `DeviceControls` is what the runtime
provides for the tools to act on.
"""

from .controls import DeviceControls, MemoryControls
from .device import device_tools
from .registry import Range, Tool, ToolError, ToolRegistry
from .server import ToolServer

__all__ = [
    "DeviceControls",
    "MemoryControls",
    "Range",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "ToolServer",
    "device_tools",
]
