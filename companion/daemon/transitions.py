"""The device's states and the only moves between them. The conversation takes a move only when this
table allows it and logs a refused one at WARNING; tests walk every pair."""

from __future__ import annotations

from ..events import DeviceState

S = DeviceState
TRANSITIONS: dict[DeviceState, frozenset[DeviceState]] = {
    S.CONNECTING: frozenset({S.IDLE, S.OFFLINE, S.ERROR, S.ACTIVATING}),
    S.ACTIVATING: frozenset({S.CONNECTING, S.IDLE, S.OFFLINE, S.ERROR}),
    S.IDLE: frozenset({S.LISTENING, S.SPEAKING, S.THINKING, S.CONNECTING, S.OFFLINE, S.ERROR}),
    S.LISTENING: frozenset({S.THINKING, S.SPEAKING, S.IDLE, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.THINKING: frozenset({S.SPEAKING, S.IDLE, S.LISTENING, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.SPEAKING: frozenset({S.IDLE, S.LISTENING, S.OFFLINE, S.ERROR, S.CONNECTING}),
    S.OFFLINE: frozenset({S.CONNECTING, S.IDLE, S.ERROR, S.ACTIVATING}),
    S.ERROR: frozenset({S.CONNECTING, S.IDLE, S.OFFLINE, S.ACTIVATING}),
}
