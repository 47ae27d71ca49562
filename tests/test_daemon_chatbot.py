"""`companion run` with backend.kind = "chatbot_v3": a spoken question in, the reply's sentences played
in z_index order although their URLs arrive shuffled, the key from the environment and never logged."""

from __future__ import annotations

import wave
from pathlib import Path

import miniaudio
import numpy as np
import pytest

from tests.audio_match import best_match
from tests.daemon_process import DaemonProcess
from tests.peers.chatbot_server import (
    API_KEY,
    DEVICE_TOKEN,
    ChatbotServer,
    Step,
    agent_stop,
    emotion,
    llm,
    tts,
)

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chatbot_v3"
NAMES = ("s0", "s1", "s2", "s3")
RATE = 24000


async def test_a_spoken_turn_plays_the_shuffled_reply_in_order(speech_wav: Path, tmp_path: Path) -> None:
    files = {name: (FIXTURES / f"{name}.mp3").read_bytes() for name in NAMES}
    out = tmp_path / "reply.wav"
    async with ChatbotServer(files) as server:
        order = [2, 0, 3, 1]
        steps = [Step(emotion("happy"))] + [Step(llm(f"sentence {i}", i, asr="hello")) for i in range(4)]
        steps += [Step(tts(server.file_url(NAMES[i]), i)) for i in order] + [Step(agent_stop())]
        server.script = lambda turn: steps
        daemon = await DaemonProcess(
            "run", "--input", str(speech_wav), "--output", str(out), "--turns", "1",
            "--set", "backend.kind=chatbot_v3", "--set", f'chatbot_v3.url="{server.ws_url}"',
            "--set", f'chatbot_v3.rest_url="{server.rest_url}"', "--set", "telemetry.enabled=false",
            state_dir=tmp_path / "state", env={"COMPANION_MINDCRAFT_KEY": API_KEY},
        ).start()  # fmt: skip
        try:
            assert await daemon.wait(60) == 0, daemon.output()
        finally:
            await daemon.stop()
    assert API_KEY not in daemon.output()
    with wave.open(str(out)) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    offsets = []
    for name in NAMES:
        reference = np.frombuffer(
            miniaudio.decode(files[name], nchannels=1, sample_rate=RATE).samples, dtype=np.int16
        )
        offset, score = best_match(reference, played)
        assert score >= 0.9, f"{name}: correlation {score:.2f}"
        offsets.append(offset)
    assert offsets == sorted(offsets), offsets


async def test_a_device_token_drives_a_turn_and_no_secret_reaches_the_debug_log(
    speech_wav: Path, tmp_path: Path
) -> None:
    """What a shipped toy runs: auth = device_token; the account key, left in the environment by
    mistake, is neither used nor logged, and neither is the token, even at debug level with every frame."""
    files = {name: (FIXTURES / f"{name}.mp3").read_bytes() for name in NAMES[:2]}
    out = tmp_path / "reply.wav"
    async with ChatbotServer(files) as server:
        steps = [Step(llm("sentence 0", 0, asr="hello")), Step(tts(server.file_url("s0"), 0))]
        steps += [Step(tts(server.file_url("s1"), 1)), Step(agent_stop())]
        server.script = lambda turn: steps
        daemon = await DaemonProcess(
            "run", "--input", str(speech_wav), "--output", str(out), "--turns", "1",
            "--set", "backend.kind=chatbot_v3", "--set", f'chatbot_v3.url="{server.ws_url}"',
            "--set", f'chatbot_v3.rest_url="{server.rest_url}"', "--set", "chatbot_v3.auth=device_token",
            "--set", "telemetry.enabled=false", "--set", "log.level=debug", "--set", "log.wire=true",
            state_dir=tmp_path / "state",
            env={"COMPANION_MINDCRAFT_DEVICE_TOKEN": DEVICE_TOKEN, "COMPANION_MINDCRAFT_KEY": API_KEY},
        ).start()  # fmt: skip
        try:
            assert await daemon.wait(60) == 0, daemon.output()
        finally:
            await daemon.stop()
        state = server.state
    log = "\n".join(daemon.lines)
    assert state.header_tokens == [DEVICE_TOKEN] and state.auth_events == [DEVICE_TOKEN]
    assert len(state.turns) == 1 and state.turns[0].stream_asr and state.turns[0].audio_bytes > 0
    assert "DEBUG" in log and "chat_bot_v3 -> " in log  # the debug and wire logs were on
    assert "is not used" in log  # the stray account key was noticed
    for secret in (DEVICE_TOKEN, API_KEY):
        assert secret not in log
        assert all(secret[i : i + 12] not in log for i in range(len(secret) - 12)), "a piece of a secret"
    with wave.open(str(out)) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    for name in NAMES[:2]:
        reference = np.frombuffer(
            miniaudio.decode(files[name], nchannels=1, sample_rate=RATE).samples, dtype=np.int16
        )
        assert best_match(reference, played)[1] >= 0.9, name
