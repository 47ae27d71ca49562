"""Logging a peer's oddities without letting the peer flood the log: each kind of oddity once at
WARNING and at DEBUG after that, a bounded number of kinds remembered (kinds can come from the peer,
like an unknown message type), and the peer's text never shown at length."""

from __future__ import annotations

import logging

MAX_KINDS = 64  # kinds remembered; past this every new kind goes to DEBUG
MAX_TEXT = 300  # characters of a message shown


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class OnceLog:
    """`note(kind, message)`: WARNING the first time a kind is seen, DEBUG after."""

    def __init__(self, logger: logging.Logger, max_kinds: int = MAX_KINDS) -> None:
        self._log = logger
        self._max = max_kinds
        self._seen: set[str] = set()

    def note(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        message = shorten(message)
        kind = kind[:80]
        if kind in self._seen or len(self._seen) >= self._max:
            self._log.debug("%s", message)
            return
        self._seen.add(kind)
        self._log.log(level, "%s", message)
