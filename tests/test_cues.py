"""Cues remember what they played for tests and diagnostics, but only the latest: a daemon that
runs for months must not keep one entry per turn forever."""

from __future__ import annotations

from companion.audio.endpointer import Endpointer
from companion.config import AudioSettings, VadSettings
from companion.daemon.clock import ManualClock
from companion.daemon.conversation import Conversation
from companion.daemon.cues import PLAYED_KEPT, Cues
from companion.events import DeviceState
from tests.conversation_edges import RecordingBackend, RecordingSink


async def test_only_the_latest_cues_are_remembered() -> None:
    conv = Conversation(
        RecordingBackend(),
        RecordingSink(),
        Endpointer(VadSettings(), emit_quiet=True),
        AudioSettings(codec="pcm"),
        clock=ManualClock(),
    )
    cues = Cues(conv)
    for _ in range(3 * PLAYED_KEPT):  # a "thinking" earcon per turn, turn after turn
        cues.on_state(DeviceState.LISTENING, DeviceState.THINKING)
    assert len(cues.played) == PLAYED_KEPT and set(cues.played) == {"thinking"}
