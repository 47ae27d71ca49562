"""The device's MCP server: spec §8 vectors 10 and 11 byte for byte, §5.2 error strings, paging."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.protocols.xiaozhi.mcp import (
    McpServer,
    ToolCall,
    ToolParam,
    ToolSpec,
    text_of,
)
from companion.protocols.xiaozhi.messages import dumps
from companion.protocols.xiaozhi.session import ClientSession, SessionConfig

VOLUME = ToolSpec(
    "self.audio_speaker.set_volume",
    "Set the volume of the audio speaker.",
    (ToolParam("volume", "integer", minimum=0, maximum=100),),
)
REBOOT = ToolSpec("self.reboot", "Reboot the system", user_only=True)


def server(*tools: ToolSpec, page_bytes: int = 8000) -> McpServer:
    return McpServer(tools or (VOLUME, REBOOT), name="<board>", version="<fw>", page_bytes=page_bytes)


def request(method: str, ident: Any = 1, params: Any = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        payload["params"] = params
    return payload


def call(name: str, arguments: Any = None, ident: int = 7) -> Any:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    return server().receive(request("tools/call", ident, params))


def error_of(reply: Any) -> str:
    assert isinstance(reply, dict) and set(reply["error"]) == {"message"}, reply  # no `code`, as [FW]
    return str(reply["error"]["message"])


# ---------------------------------------------------------------- vector 10


def test_vector_10_initialize_reply_is_byte_exact_in_its_envelope() -> None:
    session = ClientSession(SessionConfig(transport="udp", version=3))
    session.hello(0.0)
    session.receive_text('{"type":"hello","transport":"udp","session_id":"s1"}', 0.1)
    incoming = json.loads(
        '{"type":"mcp","payload":{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}}'
    )
    reply = server().receive(incoming["payload"])
    assert isinstance(reply, dict)
    assert session.mcp(reply) == (
        '{"session_id":"s1","type":"mcp","payload":{"jsonrpc":"2.0","id":1,"result":'
        '{"protocolVersion":"2024-11-05","capabilities":{"tools":{}},'
        '"serverInfo":{"name":"<board>","version":"<fw>"}}}}'
    )


def test_vector_10_string_id_gets_no_reply() -> None:
    assert server().receive(request("initialize", "1", {"capabilities": {}})) is None


def test_vector_10_notifications_get_no_reply() -> None:
    assert server().receive({"jsonrpc": "2.0", "method": "notifications/initialized"}) is None
    assert server().receive(request("notifications/cancelled", 3)) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"jsonrpc": "2.0", "method": "initialize"},  # no id
        {"jsonrpc": "2.0", "id": None, "method": "initialize"},
        {"jsonrpc": "2.0", "id": True, "method": "initialize"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "initialize"},
        {"jsonrpc": "1.0", "id": 1, "method": "initialize"},
        {"id": 1, "method": "initialize"},
        {"jsonrpc": "2.0", "id": 1, "result": {}},  # a response, not a request
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": []},
        ["not", "an", "object"],
    ],
)
def test_malformed_requests_get_no_reply(payload: Any) -> None:
    assert server().receive(payload) is None


def test_initialize_records_an_http_vision_endpoint_only() -> None:
    srv = server()
    srv.receive(request("initialize", 1, {"capabilities": {"vision": {"url": "http://h/x", "token": "t"}}}))
    assert srv.vision == {"url": "http://h/x", "token": "t"}
    srv = server()
    srv.receive(request("initialize", 1, {"capabilities": {"vision": {"url": "file:///etc/passwd"}}}))
    assert srv.vision is None


# ---------------------------------------------------------------- vector 11


def test_vector_11_set_volume_50_answers_true() -> None:
    outcome = call("self.audio_speaker.set_volume", {"volume": 50})
    assert isinstance(outcome, ToolCall) and outcome.arguments == {"volume": 50}
    reply = server().result(outcome, True)
    assert dumps(reply) == (
        '{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"true"}],"isError":false}}'
    )


def test_vector_11_volume_150_exceeds_the_maximum() -> None:
    assert error_of(call("self.audio_speaker.set_volume", {"volume": 150})) == (
        "Value exceeds maximum allowed: 100"
    )


def test_vector_11_missing_volume() -> None:
    assert error_of(call("self.audio_speaker.set_volume", {})) == "Missing valid argument: volume"


def test_vector_11_unknown_tool() -> None:
    assert error_of(call("x", {})) == "Unknown tool: x"


def test_vector_11_unknown_method() -> None:
    reply = server().receive(request("foo", 4))
    assert isinstance(reply, dict)
    assert dumps(reply) == '{"jsonrpc":"2.0","id":4,"error":{"message":"Method not implemented: foo"}}'


# ---------------------------------------------------------------- §5.2 argument rules


def test_below_minimum() -> None:
    assert (
        error_of(call("self.audio_speaker.set_volume", {"volume": -1})) == "Value is below minimum allowed: 0"
    )


@pytest.mark.parametrize("bad", ["50", True, 50.5, None, [50]])
def test_a_value_of_the_wrong_type_is_a_missing_valid_argument(bad: Any) -> None:
    assert (
        error_of(call("self.audio_speaker.set_volume", {"volume": bad})) == "Missing valid argument: volume"
    )


def test_an_integral_float_is_an_integer() -> None:
    outcome = call("self.audio_speaker.set_volume", {"volume": 30.0})
    assert isinstance(outcome, ToolCall) and outcome.arguments == {"volume": 30}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "Missing params"),
        ({"arguments": {}}, "Missing name"),
        ({"name": 5}, "Missing name"),
        ({"name": "self.audio_speaker.set_volume", "arguments": [1]}, "Invalid arguments"),
    ],
)
def test_tools_call_envelope_errors(params: Any, message: str) -> None:
    payload = request("tools/call", 2)
    if params is not None:
        payload["params"] = params
    assert error_of(server().receive(payload)) == message


def test_optional_parameters_take_their_default_when_absent_or_mistyped() -> None:
    tool = ToolSpec(
        "self.t",
        "t",
        (
            ToolParam("quality", "integer", default=80, minimum=1, maximum=100),
            ToolParam("flag", "boolean", default=False),
            ToolParam("mode", "string", default="a", choices=("a", "b")),
        ),
    )
    srv = server(tool)
    outcome = srv.receive(request("tools/call", 1, {"name": "self.t", "arguments": {"flag": "yes"}}))
    assert isinstance(outcome, ToolCall)
    assert outcome.arguments == {"quality": 80, "flag": False, "mode": "a"}
    # an optional integer out of range is still refused, as the firmware does
    reply = srv.receive(request("tools/call", 1, {"name": "self.t", "arguments": {"quality": 0}}))
    assert error_of(reply) == "Value is below minimum allowed: 1"
    reply = srv.receive(request("tools/call", 1, {"name": "self.t", "arguments": {"mode": "c"}}))
    assert isinstance(reply, ToolCall) and reply.arguments["mode"] == "a"


def test_unknown_arguments_are_ignored() -> None:
    outcome = call("self.audio_speaker.set_volume", {"volume": 5, "extra": 1})
    assert isinstance(outcome, ToolCall) and outcome.arguments == {"volume": 5}


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (None, "true"), (42, "42"), ("hi", "hi"), ({"a": "é"}, '{"a":"é"}')],
)
def test_return_values_become_text_as_the_firmware_writes_them(value: Any, text: str) -> None:
    assert text_of(value) == text


def test_error_reply_for_a_tool_failure_carries_only_the_message() -> None:
    outcome = call("self.audio_speaker.set_volume", {"volume": 1})
    assert isinstance(outcome, ToolCall)
    assert server().error(outcome, "Failed to capture photo") == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"message": "Failed to capture photo"},
    }


# ---------------------------------------------------------------- tools/list


def test_user_only_tools_are_listed_only_with_user_tools() -> None:
    plain = server().receive(request("tools/list", 2))
    assert isinstance(plain, dict)
    assert [t["name"] for t in plain["result"]["tools"]] == ["self.audio_speaker.set_volume"]
    assert "nextCursor" not in plain["result"]
    full = server().receive(request("tools/list", 2, {"cursor": "", "withUserTools": True}))
    assert isinstance(full, dict)
    assert full["result"]["tools"][1] == {
        "name": "self.reboot",
        "description": "Reboot the system",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"audience": ["user"]},
    }


def test_tool_entry_has_the_firmware_schema_shape() -> None:
    reply = server().receive(request("tools/list", 2))
    assert isinstance(reply, dict)
    assert dumps(reply["result"]["tools"][0]) == (
        '{"name":"self.audio_speaker.set_volume","description":"Set the volume of the audio speaker.",'
        '"inputSchema":{"type":"object","properties":{"volume":{"type":"integer","minimum":0,"maximum":100}},'
        '"required":["volume"]}}'
    )


def many_tools(count: int, description_len: int) -> list[ToolSpec]:
    return [
        ToolSpec(
            f"self.tool_{i:03d}", "d" * description_len, (ToolParam("v", "integer", minimum=0, maximum=9),)
        )
        for i in range(count)
    ]


def pages(srv: McpServer, ident: int = 2, with_user_tools: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        reply = srv.receive(
            request("tools/list", ident, {"cursor": cursor, "withUserTools": with_user_tools})
        )
        assert isinstance(reply, dict) and "result" in reply, reply
        out.append(reply)
        cursor = reply["result"].get("nextCursor", "")
        if not cursor:
            return out
        assert len(out) < 500


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 120),
    st.integers(0, 1500),
    st.integers(0, 2**31 - 1),
    st.integers(1800, 9000),  # room for the largest single tool drawn here
)
def test_pages_stay_within_the_limit_and_list_every_tool_once_in_order(
    count: int, description_len: int, ident: int, limit: int
) -> None:
    tools = many_tools(count, description_len)
    srv = McpServer(tools, name="b", version="v", page_bytes=limit)
    replies = pages(srv, ident)
    listed = [t["name"] for r in replies for t in r["result"]["tools"]]
    assert listed == [t.name for t in tools]
    for reply in replies:
        assert len(dumps(reply).encode()) <= limit
    for reply, following in itertools.pairwise(replies):
        assert reply["result"]["nextCursor"] == following["result"]["tools"][0]["name"]


def test_default_pages_are_at_most_8000_bytes() -> None:
    replies = pages(McpServer(many_tools(60, 400), name="b", version="v"))
    assert len(replies) > 1
    assert max(len(dumps(r).encode()) for r in replies) <= 8000


def test_pages_skip_user_only_tools_unless_asked() -> None:
    tools = [*many_tools(30, 300), REBOOT, *many_tools(0, 0)]
    srv = McpServer(tools, name="b", version="v", page_bytes=2000)
    names = [t["name"] for r in pages(srv) for t in r["result"]["tools"]]
    assert "self.reboot" not in names and len(names) == 30
    names = [t["name"] for r in pages(srv, with_user_tools=True) for t in r["result"]["tools"]]
    assert names[-1] == "self.reboot"


def test_a_tool_too_big_for_any_page_is_an_error() -> None:
    srv = McpServer(many_tools(1, 9000), name="b", version="v")
    reply = srv.receive(request("tools/list", 2))
    assert error_of(reply) == "Failed to add tool self.tool_000 because of payload size limit"


def test_an_unknown_cursor_gives_an_empty_last_page() -> None:
    reply = server().receive(request("tools/list", 2, {"cursor": "nope"}))
    assert reply == {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}


def test_duplicate_tool_names_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        McpServer([VOLUME, VOLUME], name="b", version="v")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "number"},
        {"type": "string", "minimum": 1},
        {"type": "integer", "choices": ("a",)},
        {"type": "integer", "default": 200, "maximum": 100},
        {"type": "string", "default": "c", "choices": ("a", "b")},
    ],
)
def test_impossible_parameters_are_refused_at_definition(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ToolParam("p", **kwargs)
