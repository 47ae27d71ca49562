"""Mindcraft conversation sessions: the REST calls (create, list, clear messages) and the remembered token.

chat_bot_v3 keeps the conversation's memory under a `session_token`. The daemon creates one when the
config names none and remembers it in the state directory, so the agent remembers across restarts; the
CLI (`companion mindcraft session …`) manages them by hand. Spec A.1: REST auth is `Authorization:
Bearer <api_key>`; session create is a multipart form answered with `data.session_token` [S]; the list
answers `results[]` [G]; message clear takes JSON `{session_token}` [C].
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ...config import ChatbotV3Settings
from ...errors import ConfigError, PlatformError
from ...service.logsetup import register_secret
from ...service.notify import MINDCRAFT_DEVICE_TOKEN, MINDCRAFT_KEY, read_secret
from ...service.state_dir import state_dir, write_private

log = logging.getLogger(__name__)

SESSION_FILE = "mindcraft_session.json"
KEY_ENV = "COMPANION_MINDCRAFT_KEY"
DEVICE_TOKEN_ENV = "COMPANION_MINDCRAFT_DEVICE_TOKEN"
API_KEY = "api_key"
DEVICE_TOKEN = "device_token"
# A device token is renewed every 7 days (spec A.2): the session this device made is remembered under
# this fixed tag instead of the token's, so the agent's memory survives a renewal.
DEVICE_ACCOUNT = "device-token"


@dataclass(frozen=True)
class Credential:
    """What authenticates this device to Mindcraft (`chatbot_v3.auth`): the account's API key, or a
    device token. Both are sent the same ways (Bearer header, `token` query parameter, `auth_token`)."""

    kind: str
    value: str = field(repr=False)

    @property
    def label(self) -> str:
        return "API key" if self.kind == API_KEY else "device token"

    @property
    def where(self) -> str:
        """Where the user fixes it, for messages."""
        if self.kind == API_KEY:
            return f"chatbot_v3.api_key or {KEY_ENV}"
        return f"chatbot_v3.device_token or {DEVICE_TOKEN_ENV} (a device token lives 7 days; issue a new one)"

    @property
    def account(self) -> str:
        """What a remembered session is filed under (see `remembered_session`)."""
        return self.value if self.kind == API_KEY else DEVICE_ACCOUNT


def resolve_credential(settings: ChatbotV3Settings) -> Credential:
    """The credential `chatbot_v3.auth` names, from the config, the systemd credential or the environment.

    With a device token, an account API key found anywhere is not used, and a warning says it should
    not be on the device. Raises ConfigError when the chosen secret is missing.
    """
    if settings.auth != DEVICE_TOKEN:
        return Credential(API_KEY, resolve_api_key(settings.api_key))
    token = (
        settings.device_token.strip() or (read_secret(MINDCRAFT_DEVICE_TOKEN, DEVICE_TOKEN_ENV) or "").strip()
    )
    if not token:
        raise ConfigError(
            f"chatbot_v3.auth = 'device_token' but chatbot_v3.device_token is empty: set {DEVICE_TOKEN_ENV} "
            f"(or the systemd credential '{MINDCRAFT_DEVICE_TOKEN}') to this device's access token"
        )
    register_secret(token)
    if settings.api_key.strip() or read_secret(MINDCRAFT_KEY, KEY_ENV):
        log.warning(
            "chatbot_v3.auth = 'device_token': the account API key also configured (chatbot_v3.api_key, "
            "%s or the '%s' credential) is not used; remove it from the device",
            KEY_ENV,
            MINDCRAFT_KEY,
        )
    return Credential(DEVICE_TOKEN, token)


def resolve_api_key(configured: str) -> str:
    """The API key: `chatbot_v3.api_key`, else the systemd credential or $COMPANION_MINDCRAFT_KEY.

    Raises ConfigError when there is none.
    """
    key = configured.strip() or (read_secret(MINDCRAFT_KEY, KEY_ENV) or "").strip()
    if key:
        register_secret(key)  # masked in every log line, even inside a library's error message
    else:
        raise ConfigError(
            f"chatbot_v3.api_key is empty: set {KEY_ENV} (or the systemd credential "
            f"'{MINDCRAFT_KEY}') to your Mindcraft API key (MC-…)"
        )
    return key


def _account(api_key: str) -> str:
    """A short one-way tag of the key (or `Credential.account`): a remembered session is only reused with
    the same account."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def session_path(directory: Path | None = None) -> Path:
    """Where the remembered session token lives."""
    return (directory or state_dir()) / SESSION_FILE


def remembered_session(api_key: str, directory: Path | None = None) -> str:
    """The session token remembered for this API key, or ''."""
    try:
        data = json.loads(session_path(directory).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:
        log.warning("ignoring the remembered Mindcraft session (%s)", exc)
        return ""
    if not isinstance(data, dict) or data.get("account") != _account(api_key):
        return ""
    token = data.get("session_token")
    return token if isinstance(token, str) else ""


def remember_session(token: str, api_key: str, directory: Path | None = None) -> Path:
    """Store `token` as this account's session (atomically, mode 0600); returns the file."""
    path = session_path(directory)
    record = {
        "session_token": token,
        "account": _account(api_key),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_private(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


def forget_session(directory: Path | None = None) -> bool:
    """Remove the remembered session; True when there was one."""
    try:
        session_path(directory).unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class SessionInfo:
    """One session as listed by the server."""

    token: str
    name: str = ""
    created: str = ""


class MindcraftRest:
    """The few REST calls the chat_bot_v3 client needs; every failure is a PlatformError.

    `api_key` is the bearer secret: the API key, or a device token (`where` then names its setting).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        label: str = "API key",
        where: str = f"chatbot_v3.api_key or {KEY_ENV}",
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._label = label
        self._where = where
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> MindcraftRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def create_session(
        self, name: str, model: str, *, prompt: str = "#", temperature: float = 0.2, history_length: int = 8
    ) -> str:
        """Create a conversation; returns its session token."""
        form = {
            "session_name": name,
            "model": model,
            "prompt": prompt,
            "temperature": str(temperature),
            "history_length": str(history_length),
        }
        files = {key: (None, value) for key, value in form.items()}  # multipart/form-data, as the MCU client
        body = await self._call("POST", "session/", files=files)
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        token = data.get("session_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise PlatformError("Mindcraft created a session but sent no session_token back")
        return token

    async def list_sessions(self) -> list[SessionInfo]:
        """The account's conversations, as the server lists them."""
        body = await self._call("GET", "session/")
        rows: Any = body.get("results")
        if rows is None:
            data = body.get("data")
            rows = data.get("results") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise PlatformError("Mindcraft answered the session list without a list of results")
        sessions = []
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("session_token"), str):
                sessions.append(
                    SessionInfo(
                        row["session_token"],
                        str(row.get("session_name") or ""),
                        str(row.get("created_at") or ""),
                    )
                )
        return sessions

    async def clear_messages(self, session_token: str) -> None:
        """Delete the conversation's messages (the agent forgets it)."""
        await self._call("POST", "message/clear/", json={"session_token": session_token})

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise PlatformError(f"Mindcraft {method} {url}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise PlatformError(f"Mindcraft {method} {url}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in (401, 403):
            raise PlatformError(
                f"Mindcraft refused the {self._label} (HTTP {response.status_code}{_vendor_message(body)}); "
                f"check {self._where}"
            )
        if response.status_code >= 400:
            raise PlatformError(
                f"Mindcraft {method} {url}: HTTP {response.status_code}{_vendor_message(body)}"
            )
        if not isinstance(body, dict):
            raise PlatformError(f"Mindcraft {method} {url}: the answer is not a JSON object")
        status = body.get("status")
        if isinstance(status, int) and status >= 400:
            raise PlatformError(f"Mindcraft {method} {url}: status {status}{_vendor_message(body)}")
        return body


def _vendor_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return f": {value}"
    return ""
