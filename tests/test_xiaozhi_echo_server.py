"""The echo server on the wire, seen by a plain websockets client: what a device (or ESP32 firmware) gets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from companion.events import EMOTIONS
from companion.fieldtest.echo_server import EMOJI, EchoServer, emotion_for
from companion.protocols.xiaozhi import messages
from tests.peers.xiaozhi_echo import EchoPeer
from tests.xiaozhi_harness import IDENTITY, opus_frames, speech_pcm

HEADERS = {"Device-Id": IDENTITY.device_id, "Client-Id": IDENTITY.client_id, "Protocol-Version": "1"}
HELLO = messages.client_hello()


async def open_client(server: EchoServer, hello: str = HELLO) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(server.websocket_url, additional_headers=HEADERS, compression=None)
    await ws.send(hello)
    reply = json.loads(await asyncio.wait_for(ws.recv(), 2))
    return ws, reply


async def collect_turn(ws: ClientConnection, timeout: float = 15.0) -> list[tuple[float, Any]]:
    """Everything the server sends until `tts stop`, with arrival times."""
    got: list[tuple[float, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await asyncio.wait_for(ws.recv(), deadline - loop.time())
        item = json.loads(message) if isinstance(message, str) else message
        got.append((loop.time(), item))
        if isinstance(item, dict) and item.get("type") == "tts" and item.get("state") == "stop":
            return got


async def test_hello_reply_carries_a_session_and_24k_downlink_then_mcp_initialize() -> None:
    async with EchoServer() as server:
        ws, reply = await open_client(server)
        init = json.loads(await asyncio.wait_for(ws.recv(), 2))
        await ws.close()
    assert reply["type"] == "hello" and reply["transport"] == "websocket" and reply["session_id"]
    assert reply["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }
    assert init["type"] == "mcp" and init["payload"]["method"] == "initialize" and init["payload"]["id"] == 1


async def test_no_mcp_initialize_when_the_hello_does_not_offer_mcp() -> None:
    hello = messages.client_hello(features={"mcp": False})
    async with EchoServer() as server:
        ws, _reply = await open_client(server, hello)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        await ws.close()


async def test_xinnan_variant_echoes_the_client_audio_params() -> None:
    async with EchoPeer(variant="xinnan") as server:
        ws, reply = await open_client(server)
        await ws.close()
    assert reply["audio_params"]["sample_rate"] == 16000 and reply["version"] == 1


async def test_missing_device_id_gets_the_plain_text_line_and_a_close() -> None:
    async with EchoServer() as server:
        ws = await connect(server.websocket_url, compression=None)
        text = await asyncio.wait_for(ws.recv(), 2)
        await asyncio.wait_for(ws.wait_closed(), 2)
    assert isinstance(text, str) and text.startswith("端口正常")


async def test_manual_turn_reply_is_paced_five_ahead_then_real_time() -> None:
    async with EchoServer() as server:
        ws, reply = await open_client(server)
        sid = reply["session_id"]
        await asyncio.wait_for(ws.recv(), 2)  # mcp initialize, unanswered
        await ws.send(messages.listen_start(sid, "manual"))
        frames = opus_frames(speech_pcm(1.2))
        for frame in frames:
            await ws.send(frame)
        sent_stop = asyncio.get_running_loop().time()
        await ws.send(messages.listen_stop(sid))
        got = await collect_turn(ws)
        await ws.close()
    texts = [item for _, item in got if isinstance(item, dict)]
    kinds = [(m["type"], m.get("state")) for m in texts]
    assert kinds == [
        ("stt", None),
        ("tts", "start"),
        ("llm", None),
        ("tts", "sentence_start"),
        ("tts", "stop"),
    ]
    assert all(m["session_id"] == sid for m in texts)
    llm = texts[2]
    assert llm["emotion"] in EMOTIONS and llm["text"] == EMOJI[llm["emotion"]]
    audio = [(t, item) for t, item in got if isinstance(item, bytes)]
    assert len(audio) == len(frames)  # the utterance, re-encoded 60 ms for 60 ms
    times = [t for t, _ in audio]
    assert times[4] - times[0] < 0.05  # five packets at once
    paced = times[-1] - times[4]
    assert paced == pytest.approx((len(audio) - 5) * 0.06, abs=0.15)
    stop_at = got[-1][0]
    assert 0.2 <= stop_at - times[-1] <= 0.5  # about when the client's playback of the lead ends
    assert times[0] - sent_stop < 0.5


async def test_auto_mode_ends_the_utterance_after_wall_clock_silence() -> None:
    async with EchoServer() as server:
        ws, reply = await open_client(server)
        sid = reply["session_id"]
        await asyncio.wait_for(ws.recv(), 2)
        await ws.send(messages.listen_start(sid, "auto"))
        for frame in opus_frames(speech_pcm(1.0)):  # speech cut mid-word, then nothing at all
            await ws.send(frame)
        last_frame = asyncio.get_running_loop().time()
        got = await collect_turn(ws)
        await ws.close()
    stt_at, first = got[0]
    assert first["type"] == "stt"
    assert 0.45 <= stt_at - last_frame <= 1.5  # the 500 ms hangover, counted on the wall clock
    assert any(isinstance(item, bytes) for _, item in got)


async def test_wake_word_detect_gets_stt_and_stop_and_text_turn_gets_a_reply() -> None:
    async with EchoServer() as server:
        ws, reply = await open_client(server)
        sid = reply["session_id"]
        await asyncio.wait_for(ws.recv(), 2)
        await ws.send(messages.listen_detect(sid, "你好小智"))
        wake = await collect_turn(ws)
        await ws.send(messages.listen_detect(sid, "play me something"))
        text_turn = await collect_turn(ws)
        await ws.close()
    assert [item["type"] for _, item in wake] == ["stt", "tts"]
    assert text_turn[0][1] == {"type": "stt", "text": "play me something", "session_id": sid}
    assert sum(isinstance(item, bytes) for _, item in text_turn) == 10  # a 0.6 s tone


async def test_call_tool_reaches_the_client_and_returns_its_reply() -> None:
    async with EchoPeer() as server:
        ws, reply = await open_client(server)
        await asyncio.wait_for(ws.recv(), 2)  # initialize

        async def device() -> None:
            request = json.loads(await ws.recv())["payload"]
            result = {"content": [{"type": "text", "text": "true"}], "isError": False}
            await ws.send(
                messages.mcp(reply["session_id"], {"jsonrpc": "2.0", "id": request["id"], "result": result})
            )

        task = asyncio.create_task(device())
        answer = await server.call_tool("self.audio_speaker.set_volume", {"volume": 50})
        await task
        await ws.close()
    assert answer["result"]["content"][0]["text"] == "true"


async def test_bind_endpoint_binds_by_code_as_a_console_would() -> None:
    async with EchoServer(activation=True) as server:
        headers = {"Device-Id": IDENTITY.device_id, "Client-Id": IDENTITY.client_id}
        async with httpx.AsyncClient() as http:
            first = (await http.post(server.ota_url, headers=headers, content=b"{}")).json()
            code = first["activation"]["code"]
            pending = await http.post(server.ota_url + "activate", headers=headers, content=b"{}")
            bound = await http.get(f"{server.ota_url}bind?code={code}")
            done = await http.post(server.ota_url + "activate", headers=headers, content=b"{}")
            after = (await http.post(server.ota_url, headers=headers, content=b"{}")).json()
    assert "websocket" not in first and first["activation"]["challenge"] == IDENTITY.device_id
    assert (pending.status_code, bound.status_code, done.status_code) == (202, 200, 200)
    assert "activation" not in after and after["websocket"]["url"] == server.websocket_url


def test_cli_echo_server_serves_and_reports_its_urls(tmp_path: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion", "echo-server", "--port", "0", "--ota-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for _ in range(20):
            line = proc.stdout.readline()
            lines.append(line)
            if "--set xiaozhi.ota_url=" in line:
                break
        url = lines[-1].split("=", 1)[1].strip()
        response = httpx.post(url, headers={"Device-Id": IDENTITY.device_id}, content=b"{}", timeout=5)
        assert response.json()["websocket"]["url"].startswith("ws://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(5)


def test_emotion_comes_from_the_first_emoji_or_defaults_to_happy() -> None:
    assert emotion_for("好的😆我们走") == "laughing"
    assert emotion_for("no emoji here") is None


async def test_text_turn_llm_message_carries_the_emoji_and_its_emotion() -> None:
    async with EchoServer() as server:
        ws, reply = await open_client(server)
        await asyncio.wait_for(ws.recv(), 2)
        await ws.send(messages.listen_detect(reply["session_id"], "好的😆我们走"))
        laughing = await collect_turn(ws)
        await ws.send(messages.listen_detect(reply["session_id"], "plain words"))
        plain = await collect_turn(ws)
        await ws.close()
    llm = [m for _, m in laughing if isinstance(m, dict) and m["type"] == "llm"]
    assert [(m["text"], m["emotion"]) for m in llm] == [("😆", "laughing")]
    llm = [m for _, m in plain if isinstance(m, dict) and m["type"] == "llm"]
    assert [(m["text"], m["emotion"]) for m in llm] == [("🙂", "happy")]


async def test_realtime_mode_talking_over_the_reply_stops_it() -> None:
    async with EchoPeer() as server:
        ws, reply = await open_client(server)
        sid = reply["session_id"]
        await asyncio.wait_for(ws.recv(), 2)
        await ws.send(messages.listen_start(sid, "realtime"))
        for frame in opus_frames(speech_pcm(2.5), silence_s=0.8):
            await ws.send(frame)
        while not isinstance(await asyncio.wait_for(ws.recv(), 5), bytes):
            pass  # stt, tts start, llm, sentence_start, then the first audio packet
        for frame in opus_frames(speech_pcm(1.0)):  # the user talks over the reply
            await ws.send(frame)
        rest = await collect_turn(ws, timeout=2.0)
        await ws.close()
    audio_after = sum(isinstance(item, bytes) for _, item in rest)
    assert audio_after < 2.5 / 0.06 - 5  # cut short, not played to the end
    assert server.records[0].uplink_while_speaking > 0
