"""A real HTTP/1.1 server on 127.0.0.1 that records every request and answers like a platform's documents.

Subclasses implement `handle(request) -> Answer` (the document), keeping their state under the server
lock; tests read `requests` to see exactly what the client sent (headers, bodies, query).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

PLATFORM_ENV = (
    "COMPANION_QINIU_TOKEN",
    "COMPANION_QINIU_PASSWORD",
    "COMPANION_QINIU_BASE_URL",
    "COMPANION_QINIU_LOGIN_URL",
    "COMPANION_ESPAI_KEY",
    "COMPANION_ESPAI_BASE_URL",
    "COMPANION_ESPAI_DEVICES_URL",
    "COMPANION_TUYA_CLIENT_ID",
    "COMPANION_TUYA_SECRET",
    "COMPANION_TUYA_BASE_URL",
    "COMPANION_TUYA_REGION",
    "COMPANION_CREDENTIALS_FILE",
    "CREDENTIALS_DIRECTORY",
)


def isolate_platform_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The state directory to use; no platform secret from the real environment, files in tmp_path."""
    for name in PLATFORM_ENV:
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    return state


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    method: str
    raw_path: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def query_one(self) -> dict[str, str]:
        """The query with the first value of each name."""
        return {name: values[0] for name, values in self.query.items() if values}


@dataclass
class Answer:
    """What the server sends back."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json;charset=UTF-8")

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/html") -> Answer:
        return cls(status, text.encode(), content_type)


class RecordingServer:
    """Start with `with Peer() as peer:`; `peer.url` is its base URL."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.injected: list[Answer] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- subclass API ---------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Answer:
        return Answer.json({"error": "not found"}, 404)

    # -- test API -------------------------------------------------------------------------------

    def inject(self, *answers: Answer) -> None:
        """The next requests get these answers (in order) instead of the document's."""
        with self.lock:
            self.injected.extend(answers)

    def sent(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms each
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Recorded(
                    method=self.command,
                    raw_path=self.path,
                    path=unquote(parts.path),
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with owner.lock:
                    owner.requests.append(request)
                    answer = owner.injected.pop(0) if owner.injected else None
                    if answer is None:
                        try:
                            answer = owner.handle(request)
                        except Exception as exc:  # a bug in the peer must show, not hang the client
                            answer = Answer.text(f"peer error: {exc!r}", 599, "text/plain")
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A port with nothing listening (for "unreachable host" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running(peer: RecordingServer) -> Iterator[RecordingServer]:
    """Fixture body: start `peer`, yield it, stop it."""
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
