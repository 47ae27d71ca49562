"""One HTTP exchange with a platform: TLS verified, bounded time, retries only when safe, errors in one line.

A call is retried when repeating it cannot do anything twice: a connection that was never made (any
method), or a timeout, dropped connection or 502/503/504 on an idempotent call. Everything that leaves
this module is a PlatformError; no httpx exception reaches the CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from ..net.backoff import Backoff
from .errors import PlatformError, PlatformUnavailable, one_line

log = logging.getLogger("companion.platforms")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
DEFAULT_TIMEOUT_S = 20.0
USER_AGENT = "companion-platforms/0.1"

Sleep = Callable[[float], Awaitable[None]]

# Secrets some APIs put in URLs: Tuya's refresh token is a path segment, Qiniu's activation code too.
_SECRET_PATHS = (re.compile(r"(/v1\.0/token/)[^/?#]+"), re.compile(r"(/device/bind/[^/]+/)[^/?#]+"))
_SECRET_QUERY = re.compile(r"key|token|secret|sign|passw|pwd", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with the secrets some platforms carry in paths and queries masked (for logs and messages)."""
    parts = urlsplit(url)
    path = parts.path
    for pattern in _SECRET_PATHS:
        path = pattern.sub(r"\1***", path)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class _HttpxUrlRedaction(logging.Filter):
    """httpx logs each request's full URL at INFO: mask the secrets in it before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) for arg in record.args):
            record.args = tuple(
                redact_url(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _HttpxUrlRedaction) for f in _httpx_log.filters):
    _httpx_log.addFilter(_HttpxUrlRedaction())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a safe call is repeated."""

    attempts: int = 3
    initial_s: float = 0.5
    cap_s: float = 4.0


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whatever its status; the envelope rules of each platform decide what it means."""

    platform: str
    label: str
    status: int
    content_type: str
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON; a PlatformError naming the call if it is not JSON."""
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            snippet = one_line(self.content[:80].decode("utf-8", "replace"), 80) or "empty body"
            kind = f", {self.content_type}" if self.content_type else ""
            raise PlatformError(
                f"{self.platform}: {self.label} returned a non-JSON reply "
                f"(HTTP {self.status}{kind}): {snippet}"
            ) from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (a PlatformError for arrays, strings or garbage)."""
        body = self.json()
        if not isinstance(body, dict):
            raise PlatformError(
                f"{self.platform}: {self.label} returned JSON of an unexpected shape "
                f"({type(body).__name__}, HTTP {self.status})"
            )
        return body


def normalise_base_url(url: str, option: str = "--base-url") -> str:
    """`url` without a trailing slash, checked to be http(s) with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PlatformError(f"{option} must look like https://host[:port][/prefix], got {url!r}")
    return url.strip().rstrip("/")


def host_of(url: str) -> str:
    """The host[:port] of `url`, for messages."""
    return urlsplit(url).netloc or url


def _reason(exc: BaseException) -> str:
    text = one_line(exc, 160)
    return text or type(exc).__name__


class Transport:
    """An httpx client plus the retry and error rules; one per platform client, closed with it."""

    def __init__(
        self,
        platform: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.platform = platform
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        label: str | None = None,
    ) -> Reply:
        """Send one call (retrying when safe) and return the reply; PlatformError on any failure.

        `label` names the call in logs and messages; give one when the URL holds a secret.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        label = label or f"{method} {urlsplit(url).path}"
        host = host_of(url)
        backoff = Backoff(initial=self.retry.initial_s, cap=self.retry.cap_s)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            error: PlatformError
            try:
                response = await self._client.request(
                    method, url, params=params, content=content, headers=headers
                )
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise PlatformError(f"{self.platform}: invalid URL for {label}: {_reason(exc)}") from None
            except httpx.ConnectTimeout:
                error = PlatformUnavailable(f"{self.platform}: cannot reach {host}: connection timed out")
                retry = True
            except httpx.ConnectError as exc:  # nothing was sent: safe to repeat any method
                error = PlatformUnavailable(f"{self.platform}: cannot reach {host}: {_reason(exc)}")
                retry = True
            except httpx.TimeoutException:
                error = PlatformUnavailable(f"{self.platform}: {label} on {host} timed out")
                retry = idempotent
            except (httpx.HTTPError, OSError) as exc:
                error = PlatformUnavailable(
                    f"{self.platform}: connection to {host} failed during {label}: {_reason(exc)}"
                )
                retry = idempotent
            else:
                elapsed_ms = (time.monotonic() - started) * 1000
                log.debug(
                    "%s: %s -> HTTP %d in %.0f ms", self.platform, label, response.status_code, elapsed_ms
                )
                if response.status_code in RETRYABLE_STATUS and idempotent and attempt < self.retry.attempts:
                    delay = backoff.next_delay()
                    log.info(
                        "%s: %s got HTTP %d, retrying in %.1f s",
                        self.platform,
                        label,
                        response.status_code,
                        delay,
                    )
                    await self._sleep(delay)
                    continue
                if 300 <= response.status_code < 400:
                    target = response.headers.get("location", "?")
                    raise PlatformError(
                        f"{self.platform}: {label} was redirected (HTTP {response.status_code}) to "
                        f"{one_line(target, 120)}; point --base-url there"
                    )
                return Reply(
                    platform=self.platform,
                    label=label,
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    content=response.content,
                )
            if not retry or attempt >= self.retry.attempts:
                raise error
            delay = backoff.next_delay()
            log.info("%s (attempt %d of %d), retrying in %.1f s", error, attempt, self.retry.attempts, delay)
            await self._sleep(delay)


class TransportOptions(TypedDict, total=False):
    """The keyword arguments every platform client passes on to its Transport."""

    timeout_s: float
    retry: RetryPolicy | None
    sleep: Sleep


class TransportClient:
    """What every platform client shares: its Transport (made from the TransportOptions it was given),
    and `async with Client(...) as client:` closing it."""

    def __init__(self, platform: str, **options: Unpack[TransportOptions]) -> None:
        self._transport = Transport(platform, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()
