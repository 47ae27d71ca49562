"""The one shape of every long-running connection: connect → work → on error log once, close, back off,
retry. Written once here and used by each backend's `run()` and by the OTA check.

A backend gives the loop one attempt (`serve`: connect and work until the channel ends, returning or
raising why), a way to close what the attempt left open, and what to do when the channel is down
(`on_down`: usually a `Disconnected` event). The loop decides, the same way for all of them, when a
failure is news (the first time, or after a healthy session) and when it is a repeat (logged at DEBUG,
with a WARNING reminder every tenth attempt), how long to wait, and that a `close()` cuts the wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict, TypeVar

from ..errors import CompanionError, ConfigError
from ..events import Alert, Disconnected, EventSink
from ..net.backoff import Backoff

T = TypeVar("T")
REMIND_EVERY = 10  # a repeated failure is logged at WARNING once per this many attempts


class ReconnectOptions(TypedDict, total=False):
    """How the runtime (or a test) sets a backend's reconnect wait: a cap for the shared backoff, or a
    Backoff of its own."""

    reconnect_max_s: float
    backoff: Backoff | None


def backoff_for(options: ReconnectOptions) -> Backoff:
    """The Backoff given, else the shared policy capped at `reconnect_max_s` (60 s when not given)."""
    return options.get("backoff") or Backoff(cap=options.get("reconnect_max_s", 60.0))


class Latch:
    """A mark read once: `set()` when something happens, `take()` says whether it did and clears it
    (a planned reconnect, credentials to refresh: each is about the next attempt only)."""

    def __init__(self) -> None:
        self._marked = False

    def set(self) -> None:
        self._marked = True

    def take(self) -> bool:
        marked, self._marked = self._marked, False
        return marked


class ChannelLost(Exception):
    """The channel ended; the message is the reason for the log and the Disconnected event."""


class AuthFailed(ChannelLost):
    """The server refused our credentials."""


@dataclass(frozen=True)
class Down:
    """Why the channel is down, and what the loop decided about it."""

    reason: str
    auth_failed: bool = False
    was_ready: bool = False  # the channel had been healthy (a lost connection, not a failed one)
    news: bool = True  # first failure with this reason, or the first after a healthy session
    planned: bool = False  # the server asked for the reconnect: at once, logged at INFO


def report_down(sink: EventSink, down: Down, *, fix: str, auth_retry_s: float) -> float | None:
    """The usual `on_down` of a backend with a key: a refused key becomes a fatal alert saying what
    to check (`fix`) and the next try waits `auth_retry_s` (retrying at once only hammers the server);
    any other loss is a Disconnected when it is news."""
    if down.auth_failed:
        sink(Alert("auth", f"{down.reason}. {fix}", "", True))
        sink(Disconnected(down.reason, auth_failed=True, retry=False))
        return auth_retry_s
    if down.was_ready or down.news:
        sink(Disconnected(down.reason))
    return None


class ReconnectLoop:
    """Runs attempts until `stop()`; a cancellation closes the attempt and is passed on."""

    def __init__(
        self,
        what: str,
        backoff: Backoff,
        *,
        log: logging.Logger,
        describe: Callable[[Exception], str],
        on_down: Callable[[Down], float | None] = lambda down: None,
        close_attempt: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`what` starts the log line of a failure ("xiaozhi channel down"); `describe` turns an
        unexpected exception into a reason; `on_down` may return a delay that replaces the backoff's
        (e.g. after a refused key)."""
        self.what = what
        self.backoff = backoff
        self._log = log
        self._describe = describe
        self._on_down = on_down
        self._close_attempt = close_attempt
        self._wake = asyncio.Event()
        self._stopped = False
        self.last_reason = ""
        self.failures = 0  # consecutive failures with the same reason

    @property
    def stopped(self) -> bool:
        """True once `stop()` was called."""
        return self._stopped

    def stop(self) -> None:
        """End the loop: the current wait ends now and no attempt follows."""
        self._stopped = True
        self._wake.set()

    def wake(self) -> None:
        """Cut the current wait short (the next attempt starts now)."""
        self._wake.set()

    async def run(
        self,
        serve: Callable[[], Awaitable[str | None]],
        *,
        take_ready: Callable[[], bool],
        planned: Callable[[], bool] = lambda: False,
    ) -> None:
        """Attempt, and after each end wait and attempt again, until `stop()`.

        `serve` returns (or raises ChannelLost/AuthFailed with) the reason the channel ended;
        `take_ready` says whether it had been ready and marks it not ready (called before the close is
        awaited, so nobody sees a lost channel as ready); `planned` whether the end was asked for.
        """
        while not self._stopped:
            auth_failed = False
            try:
                reason = await serve() or "closed"
            except (asyncio.CancelledError, ConfigError):  # not a channel failure: close and pass it on
                take_ready()
                await self._close()
                raise
            except AuthFailed as exc:
                reason, auth_failed = str(exc), True
            except (ChannelLost, CompanionError) as exc:  # messages written for the user, as they are
                reason = str(exc)
            except Exception as exc:  # every failure is retried; the cause is logged
                reason = self._describe(exc)
            was_ready = take_ready()
            await self._close()
            if self._stopped:
                break
            await self._after(reason, auth_failed=auth_failed, was_ready=was_ready, planned=planned())

    async def first_success(
        self, attempt: Callable[[], Awaitable[T]], *, errors: tuple[type[Exception], ...]
    ) -> T:
        """`attempt()`'s result, retried with the same policy while it raises one of `errors`."""
        while True:
            try:
                return await attempt()
            except errors as exc:
                reason = str(exc)
            await self._after(reason, auth_failed=False, was_ready=False, planned=False)

    async def _after(self, reason: str, *, auth_failed: bool, was_ready: bool, planned: bool) -> None:
        repeated = reason == self.last_reason and not was_ready
        self.failures = self.failures + 1 if repeated else 1
        self.last_reason = reason
        down = Down(reason, auth_failed, was_ready, news=not repeated, planned=planned)
        if was_ready and not planned:
            self.backoff.reset()  # a healthy session earns a fresh start
        override = self._on_down(down)
        delay = override if override is not None else (0.0 if planned else self.backoff.next_delay())
        if planned:
            level = logging.INFO
        elif repeated:
            level = logging.WARNING if self.failures % REMIND_EVERY == 0 else logging.DEBUG
        else:
            level = logging.ERROR if auth_failed else logging.WARNING  # a refused credential needs the user
        attempt = f" (attempt {self.failures})" if repeated else ""
        self._log.log(level, "%s: %s; retrying in %.1f s%s", self.what, reason, delay, attempt)
        if delay > 0 and not self._stopped:
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
            # the wait ends, and this loop would then run on after being cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _close(self) -> None:
        if self._close_attempt is not None:
            await self._close_attempt()
