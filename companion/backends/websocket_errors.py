"""What a websocket's end means, in words a user can act on: shared by the xiaozhi, chat_bot_v3 and
ESP-AI drivers so that a failed connect, a refused upgrade or a close reads the same whichever backend
saw it."""

from __future__ import annotations

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..net.tls import find_verify_error
from .reconnect import AuthFailed, ChannelLost

# Close codes we may send ourselves, and what they mean here.
_OWN_CLOSES = {
    1009: "the server sent a message larger than we accept ({limit}); we closed the connection",
    1011: "the server stopped answering pings (keepalive timeout); we closed the connection",
}


def connect_failure(exc: BaseException) -> str:
    """Why a connection attempt raised `exc`: a refused certificate, a socket error, or the exception."""
    verify = find_verify_error(exc)
    if verify is not None:
        return f"TLS certificate refused ({verify.verify_message or verify.reason})"
    if isinstance(exc, OSError):  # TimeoutError included: it is an OSError
        return f"cannot connect ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}"


def upgrade_failure(exc: InvalidHandshake, url: str, credentials: str = "our credentials") -> ChannelLost:
    """The error to raise for a failed websocket upgrade: 401/403 are refused credentials."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return AuthFailed(f"{url} refused {credentials} (HTTP {status})")
        return ChannelLost(f"{url} refused the websocket upgrade (HTTP {status})")
    return ChannelLost(f"{url}: websocket handshake failed ({exc})")


def close_reason(exc: ConnectionClosed, max_message: int) -> str:
    """Why the connection ended: the server's close frame, or the close we sent, or neither."""
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        reason = f": {exc.rcvd.reason}" if exc.rcvd.reason else ""
        return f"server closed the connection (code {exc.rcvd.code}{reason})"
    if exc.sent is not None:
        known = _OWN_CLOSES.get(exc.sent.code)
        if known:
            return known.format(limit=f"{max_message // 1024} KiB")
        return f"we closed the connection (code {exc.sent.code})"
    return "the connection dropped without a close frame (server gone or network lost)"


# A channel that stayed up this long and then was closed normally while the device was idle was retired
# by the server, not refused: shorter-lived ones are failures the user must hear about.
RETIRED_AFTER_S = 5.0


def retired_idle(exc: ConnectionClosed, ready_for_s: float, busy: bool) -> bool:
    """True when the server closed a healthy, idle channel with a normal close (code 1000), as
    xiaozhi-esp32-server does 180 s after the last speech: a reconnect is due, not an outage."""
    received = exc.rcvd
    return (
        not busy
        and ready_for_s >= RETIRED_AFTER_S
        and received is not None
        and received.code == 1000
        and (exc.sent is None or bool(exc.rcvd_then_sent))
    )
