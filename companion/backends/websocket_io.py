"""Sending on and closing a backend's websocket: the same few rules for every backend.

A send on a lost channel is not an error here: the receive loop is the one that notices the loss and
reports it, so a send just says it did not happen. A close never raises and never waits long, so a
shutdown or a reconnect cannot hang on a peer that stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..service.logsetup import log_frame


async def send_frame(ws: ClientConnection | None, protocol: str, data: str | bytes) -> bool:
    """Send one frame (shown in the wire log under `protocol`); False when there is no open channel."""
    if ws is None:
        return False
    log_frame(protocol, "->", data)
    try:
        await ws.send(data)
    except ConnectionClosed:
        return False
    return True


async def close_quietly(ws: ClientConnection | None, timeout_s: float) -> None:
    """Close `ws` if there is one, waiting at most `timeout_s` for the peer; errors are ignored."""
    if ws is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), timeout_s)
