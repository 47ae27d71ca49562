"""Device tools: schemas derived from typed functions, the built-in tools, and the MCP glue."""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Annotated, Any, Literal

import pytest

from companion.events import EMOTIONS
from companion.tools import (
    MemoryControls,
    Range,
    ToolError,
    ToolRegistry,
    ToolServer,
    device_tools,
)
from companion.tools.device import Emotion


def call(name: str, arguments: dict[str, Any] | None = None, ident: int = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}


def text(reply: dict[str, Any] | None) -> str:
    assert reply is not None and reply["result"]["isError"] is False, reply
    return str(reply["result"]["content"][0]["text"])


def error(reply: dict[str, Any] | None) -> str:
    assert reply is not None and "error" in reply, reply
    return str(reply["error"]["message"])


# ---------------------------------------------------------------- the registry


def test_a_typed_function_becomes_a_tool_with_its_schema() -> None:
    registry = ToolRegistry()

    @registry.tool("self.demo.move")
    def move(
        steps: Annotated[int, Range(1, 10), "How far to go"],
        direction: Literal["left", "right"],
        fast: bool = False,
        label: str = "",
    ) -> bool:
        """Move the demo thing.

        Args:
            direction: which way
                to go
            fast: hurry up
        """
        return True

    assert registry["self.demo.move"].spec.to_json() == {
        "name": "self.demo.move",
        "description": "Move the demo thing.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "steps": {"type": "integer", "description": "How far to go", "minimum": 1, "maximum": 10},
                "direction": {"type": "string", "description": "which way to go", "enum": ["left", "right"]},
                "fast": {"type": "boolean", "description": "hurry up", "default": False},
                "label": {"type": "string", "default": ""},
            },
            "required": ["steps", "direction"],
        },
    }


def test_wrapped_docstring_lines_are_joined_but_list_items_kept() -> None:
    registry = ToolRegistry()

    @registry.tool("self.t")
    def tool() -> None:
        """First sentence that the docstring
        wraps. Use it for:
        1. one thing
        2. another"""

    assert registry["self.t"].spec.description == (
        "First sentence that the docstring wraps. Use it for:\n1. one thing\n2. another"
    )


@pytest.mark.parametrize(
    "annotation",
    ["float", "list[int]", "dict[str, int]", "Literal[1, 2]", "int | None"],
)
def test_types_mcp_cannot_describe_are_refused_at_registration(annotation: str) -> None:
    namespace: dict[str, Any] = {"Literal": Literal}
    exec(f"def f(x: {annotation}) -> None:\n    '''Doc.'''\n", namespace)
    with pytest.raises(TypeError, match="parameter 'x'"):
        ToolRegistry().add(namespace["f"], "self.bad")


def test_a_tool_needs_a_docstring_and_annotations() -> None:
    def undocumented(x: int) -> None:
        pass

    def unannotated(x) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="docstring"):
        ToolRegistry().add(undocumented, "self.a")
    with pytest.raises(TypeError, match="annotation"):
        ToolRegistry().add(unannotated, "self.b")


def test_a_default_outside_the_range_is_refused_at_registration() -> None:
    def f(level: Annotated[int, Range(0, 10)] = 11) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="default 11"):
        ToolRegistry().add(f, "self.f")


def test_registering_a_name_twice_is_refused() -> None:
    def first() -> bool:
        """One."""
        return True

    def second() -> bool:
        """Two."""
        return False

    registry = ToolRegistry()
    registry.add(first, "self.x")
    with pytest.raises(ValueError, match="already registered"):
        registry.add(second, "self.x")
    assert registry["self.x"].func is first


# ---------------------------------------------------------------- the built-in tools


def test_builtin_tools_are_listed_in_firmware_order() -> None:
    names = [t.name for t in device_tools(MemoryControls())]
    assert names == [
        "self.get_device_status",
        "self.audio_speaker.set_volume",
        "self.audio_speaker.mute",
        "self.led.set_emotion",
        "self.led.set_color",
        "self.led.set_brightness",
        "self.reboot",
    ]
    assert [t.name for t in device_tools(MemoryControls(), leds=False) if ".led." in t.name] == []


def test_the_emotion_enum_is_the_canonical_21_names() -> None:
    assert typing.get_args(Emotion) == EMOTIONS


def test_only_reboot_is_user_only() -> None:
    assert [t.name for t in device_tools(MemoryControls()) if t.spec.user_only] == ["self.reboot"]


async def test_tools_act_on_the_controls() -> None:
    controls = MemoryControls()
    tools = ToolServer.for_device(controls, name="companion-pi")
    assert text(await tools.handle(call("self.audio_speaker.set_volume", {"volume": 35}))) == "true"
    assert text(await tools.handle(call("self.audio_speaker.mute", {}))) == "true"
    assert text(await tools.handle(call("self.led.set_emotion", {"emotion": "laughing"}))) == "true"
    assert text(await tools.handle(call("self.led.set_color", {"red": 255, "green": 128, "blue": 0})))
    assert text(await tools.handle(call("self.led.set_brightness", {"brightness": 20}))) == "true"
    status = json.loads(text(await tools.handle(call("self.get_device_status"))))
    assert status == {
        "audio_speaker": {"volume": 35, "muted": True},
        "led": {"emotion": "laughing", "color": "#ff8000", "brightness": 20},
    }
    assert controls.reboots == 0
    assert text(await tools.handle(call("self.reboot"))) == "true"
    assert controls.reboots == 1


async def test_unmute_with_false() -> None:
    controls = MemoryControls(muted=True)
    tools = ToolServer.for_device(controls, name="b")
    await tools.handle(call("self.audio_speaker.mute", {"muted": False}))
    assert controls.muted is False


async def test_argument_errors_never_reach_the_controls() -> None:
    controls = MemoryControls()
    tools = ToolServer.for_device(controls, name="b")
    assert error(await tools.handle(call("self.led.set_color", {"red": 256, "green": 0, "blue": 0}))) == (
        "Value exceeds maximum allowed: 255"
    )
    assert error(await tools.handle(call("self.led.set_emotion", {"emotion": "grumpy"}))) == (
        "Missing valid argument: emotion"
    )
    assert controls.color == (255, 255, 255) and controls.emotion == "neutral"


# ---------------------------------------------------------------- the glue (ToolServer)


class BridgeGone(MemoryControls):
    async def set_emotion(self, emotion: str) -> None:
        raise ToolError("LED bridge not connected")

    async def set_brightness(self, brightness: int) -> None:
        raise OSError(5, "Input/output error")

    async def set_volume(self, volume: int) -> None:
        await asyncio.Event().wait()  # never returns


async def test_a_tool_error_is_sent_as_the_error_message() -> None:
    tools = ToolServer.for_device(BridgeGone(), name="b")
    assert error(await tools.handle(call("self.led.set_emotion", {"emotion": "happy"}))) == (
        "LED bridge not connected"
    )


async def test_an_unexpected_exception_is_an_error_reply_not_a_crash() -> None:
    tools = ToolServer.for_device(BridgeGone(), name="b")
    assert "Input/output error" in error(
        await tools.handle(call("self.led.set_brightness", {"brightness": 1}))
    )


async def test_a_stuck_tool_answers_with_a_timeout_error() -> None:
    tools = ToolServer.for_device(BridgeGone(), name="b")
    tools.call_timeout_s = 0.05
    assert error(await tools.handle(call("self.audio_speaker.set_volume", {"volume": 1}))) == (
        "Tool self.audio_speaker.set_volume timed out after 0.05 s"
    )


async def test_serve_sends_replies_and_nothing_for_notifications() -> None:
    sent: list[dict[str, Any]] = []

    async def send(reply: dict[str, Any]) -> None:
        sent.append(reply)

    tools = ToolServer.for_device(MemoryControls(), name="companion-pi", version="1.2.3")
    await tools.serve({"jsonrpc": "2.0", "method": "notifications/initialized"}, send)
    await tools.serve({"jsonrpc": "2.0", "id": "1", "method": "initialize"}, send)
    await tools.serve({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, send)
    assert sent == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {
                "protocolVersion": "2024-11-05",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "companion-pi", "version": "1.2.3"},
            },
        }
    ]


async def test_sync_tools_work_too() -> None:
    registry = ToolRegistry()

    @registry.tool("self.add")
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    tools = ToolServer(registry, name="b")
    assert text(await tools.handle(call("self.add", {"a": 2, "b": 40}))) == "42"
