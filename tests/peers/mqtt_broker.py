"""A real Mosquitto broker for tests: private config, loopback only, no persistence, stopped by PID.

    broker = Mosquitto(tmp_path); broker.start(); … broker.stop()

`users` turns on password authentication (mosquitto_passwd writes the hashed file); `tls` adds a TLS
listener with the given certificate. `start()` returns once the broker logs that it is running.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class TlsFiles:
    """PEM files of the broker's TLS listener."""

    certfile: Path
    keyfile: Path
    port: int = 8883


@dataclass
class Mosquitto:
    """One mosquitto process with its own config in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)
    _logged: threading.Condition = field(default_factory=threading.Condition)

    @staticmethod
    def available() -> bool:
        """True when the mosquitto package is installed."""
        return os.access(MOSQUITTO, os.X_OK)

    def start(self) -> None:
        """Write the config, start the broker and wait until it is running."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        lines = [
            f"user {getpass.getuser()}",
            "persistence false",
            "log_dest stderr",  # unbuffered, unlike stdout into a pipe
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls.port} 127.0.0.1",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
        if self.users:
            passwd = self.directory / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_running()

    def _wait_running(self) -> None:
        """Read the broker's log on a thread (so its pipe never fills) until it says it is running."""
        assert self.process is not None and self.process.stderr is not None
        settled = threading.Event()  # set on the "running" line, or when the broker exits
        out = self.process.stderr

        def drain() -> None:
            for raw in out:
                line = raw.decode(errors="replace").rstrip()
                with self._logged:
                    self.log.append(line)
                    self._logged.notify_all()
                if " running" in line:
                    settled.set()
            settled.set()

        threading.Thread(target=drain, name="mosquitto-log", daemon=True).start()
        settled.wait(START_TIMEOUT_S)
        if not any(" running" in line for line in self.log):
            self.stop()
            raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.log))

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The first log line containing `text`, waiting (bounded) for it; raises TimeoutError."""
        with self._logged:
            found = self._logged.wait_for(lambda: any(text in line for line in self.log), timeout)
            if not found:
                raise TimeoutError(f"mosquitto never logged {text!r}")
            return next(line for line in self.log if text in line)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def cleanup(self) -> None:
        """Stop and remove the config directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
