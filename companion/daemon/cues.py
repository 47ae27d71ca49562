"""Spoken prompts and earcons that follow the state machine: listening, thinking, offline,
reconnected, error, and the activation code. They play through the conversation's playback writer and
never block the loop; a reply that starts interrupts them.
"""

from __future__ import annotations

import logging
from collections import deque

from ..events import DeviceState
from . import prompts
from .conversation import Conversation

log = logging.getLogger(__name__)

S = DeviceState
PLAYED_KEPT = 100


class Cues:
    """Listens to state changes and asks the conversation to play the matching clip."""

    def __init__(self, conversation: Conversation, language: str = "en", enabled: bool = True) -> None:
        self.conversation = conversation
        self.language = language
        self.enabled = enabled
        self._was_connected = False
        self.played: deque[str] = deque(maxlen=PLAYED_KEPT)  # the latest: a daemon runs for months

    def on_state(self, old: DeviceState, new: DeviceState) -> None:
        """The state-listener hook."""
        if not self.enabled:
            return
        if new is S.OFFLINE and self._was_connected and old is not S.OFFLINE:
            self._play("offline", spoken=True)
        elif new is S.IDLE and old is S.OFFLINE and self._was_connected:
            self._play("reconnected", spoken=True)
        elif new is S.ERROR:
            self._play("error", spoken=True)
        elif new is S.LISTENING and self._button_turn():
            # A hands-free turn starts while the user is already talking: no beep over their voice.
            self._play("listening")
        elif new is S.THINKING:
            self._play("thinking")
        if new in (S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING):
            self._was_connected = True

    def _button_turn(self) -> bool:
        turn = self.conversation.turn
        return turn is not None and turn.trigger == "button"

    def activation_code(self, code: str) -> None:
        """Speak "activation code" and the digits."""
        try:
            clips = prompts.digits_sequence(code, self.language)
        except prompts.PromptError as exc:
            log.warning("cannot speak the activation code: %s", exc)
            return
        self.played.append(f"activation:{code}")
        self.conversation.playback.play_cue(b"".join(clips), prompts.RATE)

    def _play(self, key: str, spoken: bool = False) -> None:
        pcm = prompts.spoken(key, self.language) if spoken else prompts.earcon(key)
        log.debug("cue: %s", key)
        self.played.append(key)
        self.conversation.playback.play_cue(pcm, prompts.RATE)
