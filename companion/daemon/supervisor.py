"""Every long-running part of the daemon (microphone, bridge, backend, conversation) runs under one
supervisor: a part that fails is logged once with its cause, shown in the device state, and restarted
with backoff; a fatal error (a wrong configuration) ends the daemon with one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import CompanionError, ConfigError
from ..net.backoff import Backoff

log = logging.getLogger(__name__)

RESTART_CAP_S = 10.0  # a part is retried at least this often: a replugged microphone is found quickly
HEALTHY_S = 30.0  # a part that ran this long before failing starts its backoff afresh


class Supervisor:
    """`run(name, start)` keeps `start()` running; `on_down` and `up()` keep the device state true."""

    def __init__(
        self,
        *,
        on_fatal: Callable[[ConfigError], None],
        on_down: Callable[[str, str], None] = lambda name, reason: None,
        on_up: Callable[[str], None] = lambda name: None,
        cap_s: float = RESTART_CAP_S,
    ) -> None:
        self._on_fatal = on_fatal
        self._on_down = on_down
        self._on_up = on_up
        self._cap_s = cap_s
        self.down: dict[str, str] = {}  # part → why it is down
        self.restarts: dict[str, int] = {}

    async def run(self, name: str, start: Callable[[], Awaitable[None]]) -> None:
        """Run `start()` until cancelled, restarting it after a failure or after it returns."""
        backoff = Backoff(initial=0.5, cap=self._cap_s)
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await start()
                reason = "stopped by itself"
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:
                self._on_fatal(exc)
                return
            except CompanionError as exc:  # a message written for the user: no traceback
                reason = str(exc)
            except OSError as exc:
                reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            except Exception as exc:  # a bug: the traceback, once, and the part goes on
                reason = f"{type(exc).__name__}: {exc}"
                if self.down.get(name) != reason:
                    log.exception("%s failed", name)
            if loop.time() - began >= HEALTHY_S:
                backoff.reset()
            delay = backoff.next_delay()
            if self.down.get(name) != reason:
                log.error("%s failed: %s; restarting it (every %.0f s at most while it fails)", name, reason,
                          self._cap_s)  # fmt: skip
                first = name not in self.down
                self.down[name] = reason
                if first:
                    self._on_down(name, reason)
            else:
                log.debug("%s failed again: %s; restarting in %.1f s", name, reason, delay)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            await asyncio.sleep(delay)

    def up(self, name: str) -> None:
        """A restarted part works again (e.g. the microphone's first block): said once."""
        if self.down.pop(name, None) is not None:
            log.warning("%s works again", name)
            self._on_up(name)
