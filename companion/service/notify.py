"""Running under systemd: readiness and watchdog notifications, credentials, and SIGTERM/SIGHUP handling.

The notify protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by $NOTIFY_SOCKET;
it needs no library. Everything here is a no-op when the daemon is not started by systemd, so the same
code runs in a terminal, in tests and in the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from ..errors import ConfigError
from .logsetup import register_secret, write_stderr_line

log = logging.getLogger(__name__)

# Credential IDs (LoadCredential= in systemd/companion.service) and the environment variables that
# stand in for them outside systemd.
XIAOZHI_TOKEN = "xiaozhi-token"
MINDCRAFT_KEY = "mindcraft-key"
MINDCRAFT_DEVICE_TOKEN = "mindcraft-device-token"
ESPAI_DEVICE_KEY = "espai-device-key"
SECRET_ENV_VARS: dict[str, str] = {
    XIAOZHI_TOKEN: "COMPANION_XIAOZHI_TOKEN",
    MINDCRAFT_KEY: "COMPANION_MINDCRAFT_KEY",
    MINDCRAFT_DEVICE_TOKEN: "COMPANION_MINDCRAFT_DEVICE_TOKEN",
    ESPAI_DEVICE_KEY: "COMPANION_ESPAI_DEVICE_KEY",
}

SHUTDOWN_GRACE_S = 2.0
EX_SHUTDOWN_STUCK = 70  # sysexits EX_SOFTWARE: the clean shutdown did not finish in time
MAX_SECRET_BYTES = 64 * 1024


# ------------------------------------------------------------------------------------------ sd_notify


class Notifier:
    """Sends sd_notify messages to the service manager; does nothing when $NOTIFY_SOCKET is unset.

    Sending never raises and never blocks: a lost notification must not take the daemon down (the
    watchdog will tell if the manager stopped hearing from us).
    """

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = address
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening."""
        return bool(self.address)

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram; True when it was delivered."""
        if not self.address or not assignments:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # abstract namespace socket
        elif not target.startswith("/"):
            self._warn_once(f"NOTIFY_SOCKET {self.address!r} is neither a path nor an abstract socket")
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, target)
        except OSError as exc:
            self._warn_once(f"cannot notify the service manager at {self.address}: {exc}")
            return False
        return True

    def _warn_once(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            log.warning("%s", message)

    def ready(self, status: str = "") -> bool:
        """READY=1: startup finished (Type=notify units count as started from here)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by `systemctl status`."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the keep-alive ping."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """RELOADING=1 (with MONOTONIC_USEC for newer managers); send ready() when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Release the socket (it is reopened on the next send)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------ watchdog


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings (half of $WATCHDOG_USEC), or None when the watchdog is off or not ours."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None  # the variable was inherited from a parent that owns the watchdog
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    if usec <= 0:
        return None
    return usec / 1e6 / 2


class Watchdog:
    """Pings the systemd watchdog every half period, but only while `health()` says all is well.

    The ping runs on the event loop, so a blocked loop stops it by itself; `health` adds what the loop
    cannot see, e.g. audio callbacks that stopped arriving (`Runtime.healthy`). When pings stop,
    systemd kills the process after WatchdogSec= and `Restart=on-failure` starts it again.
    """

    def __init__(
        self,
        health: Callable[[], bool],
        notifier: Notifier | None = None,
        interval: float | None = None,
    ) -> None:
        self.health = health
        self.notifier = notifier if notifier is not None else Notifier()
        self.interval = interval if interval is not None else watchdog_interval()
        self.pings = 0
        self.withheld = 0

    @property
    def enabled(self) -> bool:
        """True when the service manager expects pings."""
        return self.interval is not None and self.notifier.enabled

    async def run(self) -> None:
        """Ping until cancelled; returns at once when no watchdog is configured."""
        if not self.enabled:
            return
        assert self.interval is not None
        unhealthy_since: float | None = None
        while True:
            try:
                ok = bool(self.health())
            except Exception:
                log.exception("watchdog health check failed")
                ok = False
            now = time.monotonic()
            if ok:
                if unhealthy_since is not None:
                    log.info("healthy again after %.1f s; watchdog pings resumed", now - unhealthy_since)
                    unhealthy_since = None
                self.notifier.watchdog()
                self.pings += 1
            else:
                if unhealthy_since is None:
                    unhealthy_since = now
                    log.warning("health check failed: withholding watchdog pings (systemd restarts us soon)")
                self.withheld += 1
            await asyncio.sleep(self.interval)


# --------------------------------------------------------------------------------------- credentials


def read_secret(name: str, env_var: str | None = None, *, env: Mapping[str, str] | None = None) -> str | None:
    """The secret `name` from $CREDENTIALS_DIRECTORY, else from `env_var`; None when neither has it.

    A trailing newline (as left by `echo` or an editor) is stripped. The value is registered with the
    log redactor so it can never appear in a log line. Raises ConfigError, naming the file but never
    the value, when a credential exists but cannot be read.
    """
    env = os.environ if env is None else env
    if env_var is None:
        env_var = SECRET_ENV_VARS.get(name)
    value: str | None = None
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if directory:
        path = Path(directory) / name
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise ConfigError(f"credential {path}: cannot read: {exc.strerror or exc}") from None
        if data is not None:
            if len(data) > MAX_SECRET_BYTES:
                raise ConfigError(f"credential {path}: larger than {MAX_SECRET_BYTES} bytes")
            try:
                value = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ConfigError(f"credential {path}: not UTF-8 text") from None
    if value is None and env_var:
        value = env.get(env_var) or None
    if value:
        register_secret(value)
        return value
    return None


# ------------------------------------------------------------------------------------------- signals

Callback = Callable[[], object]


class SignalHandlers:
    """SIGTERM/SIGINT → a clean stop with a hard deadline; SIGHUP → a config reload.

    `on_term` and `on_hup` may be plain functions or return an awaitable (run as a task on the loop).
    After the first SIGTERM a watchdog thread ends the process with status 70 if it is still alive
    `deadline_s` later, so a shutdown stuck in a driver or a blocked loop cannot outlive its promise.
    A second SIGTERM or Ctrl-C ends the process at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_term: Callback,
        on_hup: Callback | None = None,
        *,
        notifier: Notifier | None = None,
        deadline_s: float | None = SHUTDOWN_GRACE_S,
        on_deadline: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.on_term = on_term
        self.on_hup = on_hup
        self.notifier = notifier if notifier is not None else Notifier()
        self.deadline_s = deadline_s
        self.on_deadline = on_deadline if on_deadline is not None else _hard_exit
        self.terminating = False
        self.reloads = 0
        self._timer: threading.Timer | None = None
        self._installed: list[int] = []
        self._tasks: set[asyncio.Task[object]] = set()

    def install(self) -> SignalHandlers:
        """Register with the loop (must be the main thread's loop)."""
        for signum, handler in (
            (signal.SIGTERM, self._terminate),
            (signal.SIGINT, self._terminate),
            (signal.SIGHUP, self._reload),
        ):
            self.loop.add_signal_handler(signum, handler, signum)
            self._installed.append(signum)
        return self

    def remove(self) -> None:
        """Unregister, and cancel the shutdown deadline (the process is exiting normally)."""
        for signum in self._installed:
            with contextlib.suppress(Exception):
                self.loop.remove_signal_handler(signum)
        self._installed.clear()
        self.cancel_deadline()

    def cancel_deadline(self) -> None:
        """Disarm the hard-exit timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _terminate(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.terminating:
            log.warning("%s again: exiting now", name)
            self.on_deadline()
            return
        self.terminating = True
        log.info("%s: finishing the current turn and shutting down", name)
        self.notifier.stopping("shutting down")
        if self.deadline_s is not None:
            self._timer = threading.Timer(self.deadline_s, self._deadline_passed)
            self._timer.daemon = True
            self._timer.start()
        self._call(self.on_term, "shutdown")

    def _deadline_passed(self) -> None:
        # Not through logging: a stuck main thread may hold a handler's lock.
        write_stderr_line(
            logging.ERROR, f"shutdown did not finish within {self.deadline_s or 0.0:.1f} s; exiting anyway"
        )
        self.on_deadline()

    def _reload(self, signum: int) -> None:
        if self.on_hup is None or self.terminating:
            return
        self.reloads += 1
        log.info("SIGHUP: reloading the configuration")
        self.notifier.reloading()
        self._call(self.on_hup, "reload", after=lambda: self.notifier.ready("running"))

    def _call(self, callback: Callback, what: str, after: Callable[[], object] | None = None) -> None:
        try:
            result = callback()
        except Exception:
            log.exception("%s handler failed", what)
            if after is not None:
                after()
            return
        if inspect.isawaitable(result):
            task = self.loop.create_task(_finish(result, what, after))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif after is not None:
            after()


async def _finish(awaitable: Awaitable[object], what: str, after: Callable[[], object] | None) -> None:
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s handler failed", what)
    if after is not None:
        after()


def _hard_exit() -> None:
    os._exit(EX_SHUTDOWN_STUCK)
