"""Logging for the daemon and the CLI: journald-friendly under systemd, readable in a terminal, and
with secrets (tokens, API keys, passwords, bearer headers) masked in every record.

Under systemd ($JOURNAL_STREAM or $INVOCATION_ID set) lines carry a `<N>` syslog priority prefix and
no timestamp: journald adds its own and maps the prefix to the entry's priority. In a terminal lines
start with a timestamp. The redacting filter sits on the root handlers, so it also covers third-party
loggers (websockets prints handshake headers at debug level, httpx prints request URLs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import IO, Any

MASK = "***"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
# Chatty libraries: their debug output is every frame, headers included, shortened in the middle (which
# can cut a secret in two, past the reach of redaction). They never log below INFO; `log.wire` shows
# frames through `log_frame` instead, whole and masked.
# serial_asyncio_fast logs a traceback at DEBUG each time an unplugged port fails to close: an
# ordinary disconnect, which the bridge link reports in one line.
WIRE_LOGGERS = (
    "websockets",
    "httpx",
    "httpcore",
    "hpack",
    "aiomqtt",
    "paho",
    "asyncio",
    "serial_asyncio_fast",
)
WIRE_LOG = logging.getLogger("companion.wire")
WIRE_TEXT_LIMIT = 4096  # characters of one text frame shown; the rest is counted
MIN_REGISTERED_SECRET = 5


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0-7) journald should file a record of this level under."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return SYSLOG_PRIORITY[threshold]
    return SYSLOG_PRIORITY[logging.DEBUG]


def journal_wanted(env: Mapping[str, str] | None = None) -> bool:
    """True when started by systemd, whose journal timestamps lines itself."""
    env = os.environ if env is None else env
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


# ---------------------------------------------------------------------------------------- redaction

_LONG = r"(?:token|secret|passw(?:or)?d|api[_-]?key|apikey|authori[sz]ation|credential|signature)"
_SHORT = r"(?:key|sign|pwd)"
# A secret-bearing field name: a distinctive word anywhere in the name, or a short one standing alone
# or after a separator (api_key, wifi_pwd; but not "monkey").
_NAME = rf"(?:[A-Za-z0-9_.-]*{_LONG}[A-Za-z0-9_]*|(?:[A-Za-z0-9_.-]*[_.-])?{_SHORT}s?)"
_START = r"(?<![A-Za-z0-9_.-])"
_SCHEMES = r"(?:Bearer|Basic|Digest|Token|Qiniu)"
_TOKEN_CHARS = r"[A-Za-z0-9._~+/=:-]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "token": "abc"  'api_key': 'abc'  \"password\": \"abc\"  (JSON, dict reprs, JSON inside JSON)
    (
        re.compile(rf"(?i)(?P<pre>\\?[\"']{_NAME}\\?[\"']\s*:\s*\\?[\"'])(?P<val>[^\"'\\]+)"),
        rf"\g<pre>{MASK}",
    ),
    # token=abc (query strings, form bodies, key=value log text)
    (re.compile(rf"(?i)(?P<pre>{_START}{_NAME}\s*=\s*)(?P<val>[^\s&\"',;)\]}}>]+)"), rf"\g<pre>{MASK}"),
    # Authorization: Bearer abc / access_token: abc (header lines, websockets' handshake dump)
    (
        re.compile(
            rf"(?i)(?P<pre>{_START}{_NAME}\s*:\s*(?:{_SCHEMES}\s+)?)(?P<val>(?![\"'\\]){_TOKEN_CHARS}+)"
        ),
        rf"\g<pre>{MASK}",
    ),
    # a bare bearer credential anywhere, also URL-encoded (authorization=Bearer%20abc)
    (re.compile(rf"(?P<pre>\b{_SCHEMES}(?:\s+|%20|\+))(?P<val>{_TOKEN_CHARS}+)"), rf"\g<pre>{MASK}"),
    # prose: "token xz-9c1f0e7b5a4d": a credential-looking word (12+ characters, letters and digits)
    (
        re.compile(
            rf"(?i)(?P<pre>\b(?:{_LONG}|key)s?\s+)"
            rf"(?P<val>(?={_TOKEN_CHARS}*\d)(?={_TOKEN_CHARS}*[A-Za-z]){_TOKEN_CHARS}{{12,}})"
        ),
        rf"\g<pre>{MASK}",
    ),
    # Mindcraft API keys: MC- + 32 hex
    (re.compile(r"\bMC-[A-Za-z0-9]{8,}"), f"MC-{MASK}"),
    # user:password@host in URLs
    (re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)(?P<val>[^@/\s]+)@"), rf"\g<pre>{MASK}@"),
    # JSON web tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), f"eyJ{MASK}"),
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Mask this exact value in every later log record (values shorter than 5 characters are not
    matched literally: the field-name rules still catch them)."""
    global _secret_pattern
    value = value.strip()
    if len(value) < MIN_REGISTERED_SECRET:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop registered values (tests; a reload that changed credentials)."""
    global _secret_pattern
    with _secrets_lock:
        _secrets.clear()
        _secret_pattern = None


def redact(text: str) -> str:
    """`text` with registered secrets and anything shaped like a credential replaced by ***."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, traceback and stack before any handler formats it.

    The message is rendered once (msg % args), masked, and stored back with args cleared, so secrets
    passed as arguments are caught whatever their type.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_companion_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can show safely
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._companion_redacted = True
        return True


# ---------------------------------------------------------------------------------------- formatting


def _short_name(name: str) -> str:
    return name.removeprefix("companion.") if name != "companion" else name


class JournalFormatter(logging.Formatter):
    """`<N>logger: message`, every line of a multi-line record prefixed so tracebacks keep the priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = f"{_short_name(record.name)}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class TextFormatter(logging.Formatter):
    """A timestamped line for terminals and files; with detail, also thread and source line."""

    def __init__(self, detail: bool = False) -> None:
        fmt = "%(asctime)s.%(msecs)03d %(levelname)-7s %(short_name)s: %(message)s"
        if detail:
            fmt = (
                "%(asctime)s.%(msecs)03d %(levelname)-7s %(short_name)s:%(lineno)d [%(threadName)s] "
                "%(message)s"
            )
        super().__init__(fmt, datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.short_name = _short_name(record.name)
        return super().format(record)


# ---------------------------------------------------------------------------------------- set-up

_handler: logging.Handler | None = None
_journal_active = False


def setup_logging(
    level: str = "info",
    *,
    debug: bool = False,
    fmt: str = "auto",
    wire: bool = False,
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    excepthook: bool = True,
) -> logging.Handler:
    """Configure the root logger once (calling again, e.g. after SIGHUP, replaces our handler).

    `level`: debug/info/warning/error; `debug=True` forces debug with thread and line detail.
    `fmt`: "auto" (journal under systemd, else text), "journal" or "text". `wire`: log every
    websocket/MQTT frame (`log_frame`), whatever the level. `secrets`: values to mask literally.
    Returns the handler it installed.
    """
    global _handler, _journal_active
    if debug:
        level = "debug"
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (expected one of {', '.join(LEVELS)})")
    for value in secrets:
        if value:
            register_secret(value)
    journal = fmt == "journal" or (fmt == "auto" and journal_wanted(env))
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JournalFormatter() if journal else TextFormatter(detail=debug))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    _journal_active = journal
    root.setLevel(LEVELS[level])
    install_redaction(root)
    quiet = max(LEVELS[level], logging.INFO)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    if not debug:
        logging.getLogger("httpx").setLevel(max(LEVELS[level], logging.WARNING))
    WIRE_LOG.setLevel(logging.DEBUG if wire else logging.CRITICAL + 1)
    if excepthook:
        _install_excepthooks()
    return handler


def log_frame(channel: str, direction: str, frame: str | bytes) -> None:
    """One frame on the wire, shown only with `log.wire = true`: text masked first and then cut at
    WIRE_TEXT_LIMIT (so no secret is ever half shown), binary as its size."""
    if not WIRE_LOG.isEnabledFor(logging.DEBUG):
        return
    if isinstance(frame, bytes | bytearray | memoryview):
        WIRE_LOG.debug("%s %s binary %d B", channel, direction, len(frame))
        return
    text = redact(frame)
    if len(text) > WIRE_TEXT_LIMIT:
        text = f"{text[:WIRE_TEXT_LIMIT]}… ({len(text) - WIRE_TEXT_LIMIT} more characters)"
    WIRE_LOG.debug("%s %s %s", channel, direction, text)


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Put the redacting filter on every handler of `logger` (root by default) that lacks one."""
    logger = logger if logger is not None else logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def write_stderr_line(levelno: int, message: str) -> None:
    """Write one line straight to fd 2, bypassing logging and its locks (for a stuck process's last words)."""
    prefix = f"<{syslog_priority(levelno)}>" if _journal_active else "companion: "
    with contextlib.suppress(OSError):
        os.write(2, (prefix + redact(message) + "\n").encode("utf-8", "replace"))


def _install_excepthooks() -> None:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        logging.getLogger("companion").critical("unhandled exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger("companion").critical(
            "unhandled exception in thread %s",
            getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = hook
    threading.excepthook = thread_hook
