"""Where each platform's secret comes from; first match wins, and the value never reaches argv or a log.

1. the environment: COMPANION_QINIU_TOKEN (a login token or an API key), COMPANION_ESPAI_KEY,
   COMPANION_TUYA_CLIENT_ID + COMPANION_TUYA_SECRET;
2. for Qiniu, the login stored by `companion qiniu login` (state directory, mode 0600, with its expiry);
3. a TOML credentials file: --credentials-file, else $COMPANION_CREDENTIALS_FILE, else
   $CREDENTIALS_DIRECTORY/platforms.toml (systemd LoadCredential=), else
   $XDG_CONFIG_HOME/companion/credentials.toml (~/.config/companion/credentials.toml).
   Sections `[qiniu] token`, `[espai] key`, `[tuya] client_id, secret`. A file others can read is refused.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..service.state_dir import state_dir, state_dir_path, write_private
from .errors import CredentialMissing

log = logging.getLogger("companion.platforms")

ENV_QINIU_TOKEN = "COMPANION_QINIU_TOKEN"
ENV_ESPAI_KEY = "COMPANION_ESPAI_KEY"
ENV_TUYA_CLIENT_ID = "COMPANION_TUYA_CLIENT_ID"
ENV_TUYA_SECRET = "COMPANION_TUYA_SECRET"
ENV_CREDENTIALS_FILE = "COMPANION_CREDENTIALS_FILE"
QINIU_LOGIN_FILE = "qiniu-login.json"
SYSTEMD_CREDENTIAL_NAME = "platforms.toml"


@dataclass(frozen=True)
class Secret:
    """A secret and a description of where it came from (the description is safe to print)."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r})"


@dataclass(frozen=True)
class StoredLogin:
    """What `companion qiniu login` keeps: the bearer token, its kind and when it stops working."""

    token: str
    kind: str  # "login" (12 h token from user/login) or "api_key" (console key, no expiry)
    expires_at: float | None
    username: str = ""
    saved_at: float = 0.0

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def __repr__(self) -> str:
        return f"StoredLogin(kind={self.kind!r}, expires_at={self.expires_at!r}, username={self.username!r})"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def qiniu_login_path() -> Path:
    """Where the Qiniu login is stored (the state directory is not created by asking)."""
    return state_dir_path() / QINIU_LOGIN_FILE


def load_qiniu_login(path: Path | None = None) -> StoredLogin | None:
    """The stored login, or None if there is none or it is unreadable (logged once, not fatal)."""
    path = path or qiniu_login_path()
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the stored Qiniu login %s: %s", path, exc)
        return None
    token = raw.get("token") if isinstance(raw, dict) else None
    if not isinstance(token, str) or not token:
        log.warning("ignoring the stored Qiniu login %s: no token in it", path)
        return None
    expires = raw.get("expires_at")
    return StoredLogin(
        token=token,
        kind=str(raw.get("kind") or "login"),
        expires_at=float(expires) if isinstance(expires, int | float) else None,
        username=str(raw.get("username") or ""),
        saved_at=float(raw.get("saved_at") or 0.0),
    )


def save_qiniu_login(login: StoredLogin) -> Path:
    """Store `login` atomically with mode 0600 in the state directory; returns the file's path."""
    path = state_dir() / QINIU_LOGIN_FILE
    data = {
        "token": login.token,
        "kind": login.kind,
        "expires_at": login.expires_at,
        "username": login.username,
        "saved_at": login.saved_at or time.time(),
    }
    try:
        write_private(path, json.dumps(data, ensure_ascii=False, indent=1).encode())
    except OSError as exc:
        raise ConfigError(f"cannot store the Qiniu login in {path}: {exc.strerror or exc}") from exc
    return path


def forget_qiniu_login() -> Path | None:
    """Delete the stored login; returns its path if there was one."""
    path = qiniu_login_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot delete the stored Qiniu login {path}: {exc.strerror or exc}") from exc
    return path


def credentials_file(explicit: str | Path | None = None) -> Path | None:
    """The credentials file to read, or None when none is configured or present.

    An explicitly named file (option or COMPANION_CREDENTIALS_FILE) must exist.
    """
    named = str(explicit) if explicit else _env(ENV_CREDENTIALS_FILE)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"credentials file {path} does not exist")
        return path
    candidates: list[Path] = []
    systemd_dir = _env("CREDENTIALS_DIRECTORY")
    if systemd_dir:
        candidates.append(Path(systemd_dir) / SYSTEMD_CREDENTIAL_NAME)
    xdg = _env("XDG_CONFIG_HOME")
    config_home = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    candidates.append(config_home / "companion" / "credentials.toml")
    return next((path for path in candidates if path.is_file()), None)


def read_credentials_file(path: Path) -> dict[str, Any]:
    """The parsed TOML; refuses a file that group or others can read (like ssh does with keys)."""
    try:
        info = path.stat()
        systemd_dir = _env("CREDENTIALS_DIRECTORY")
        managed = systemd_dir is not None and path.parent == Path(systemd_dir)
        if not managed and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"credentials file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc}") from None


def _from_file(path: Path | None, section: str, key: str) -> Secret | None:
    if path is None:
        return None
    table = read_credentials_file(path).get(section)
    value = table.get(key) if isinstance(table, dict) else None
    if isinstance(value, str) and value.strip():
        return Secret(value.strip(), f"credentials file {path} [{section}] {key}")
    return None


def qiniu_token(credentials_path: str | Path | None = None, *, now: float | None = None) -> Secret:
    """The Qiniu bearer token: env, then a stored login that has not expired, then the credentials file."""
    env = _env(ENV_QINIU_TOKEN)
    if env:
        return Secret(env, f"environment {ENV_QINIU_TOKEN}")
    now = time.time() if now is None else now
    stored = load_qiniu_login()
    expired_note = ""
    if stored is not None:
        if not stored.expired(now):
            what = "stored API key" if stored.kind == "api_key" else "stored login"
            return Secret(stored.token, f"{what} ({qiniu_login_path()})")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(stored.expires_at or 0))
        expired_note = f"the stored Qiniu login expired at {when}; "
    found = _from_file(credentials_file(credentials_path), "qiniu", "token")
    if found is not None:
        return found
    raise CredentialMissing(
        f"{expired_note or 'no Qiniu credential: '}run `companion qiniu login` "
        f"(or `login --api-key`), set {ENV_QINIU_TOKEN}, or put `token` under [qiniu] in the credentials file"
    )


def espai_key(credentials_path: str | Path | None = None) -> Secret:
    """The ESP-AI open API key: env, then the credentials file."""
    env = _env(ENV_ESPAI_KEY)
    if env:
        return Secret(env, f"environment {ENV_ESPAI_KEY}")
    found = _from_file(credentials_file(credentials_path), "espai", "key")
    if found is not None:
        return found
    raise CredentialMissing(
        f"no ESP-AI key: set {ENV_ESPAI_KEY} to the account's open API key "
        "or put `key` under [espai] in the credentials file"
    )


def tuya_keys(credentials_path: str | Path | None = None) -> tuple[Secret, Secret]:
    """The Tuya cloud project's client id (access id) and secret: env, then the credentials file."""
    client_id = _env(ENV_TUYA_CLIENT_ID)
    secret = _env(ENV_TUYA_SECRET)
    path = credentials_file(credentials_path) if not (client_id and secret) else None
    id_secret = Secret(client_id, f"environment {ENV_TUYA_CLIENT_ID}") if client_id else None
    key_secret = Secret(secret, f"environment {ENV_TUYA_SECRET}") if secret else None
    id_secret = id_secret or _from_file(path, "tuya", "client_id")
    key_secret = key_secret or _from_file(path, "tuya", "secret")
    if id_secret is None or key_secret is None:
        missing = [
            name
            for name, got in ((ENV_TUYA_CLIENT_ID, id_secret), (ENV_TUYA_SECRET, key_secret))
            if got is None
        ]
        raise CredentialMissing(
            f"no Tuya credential: set {' and '.join(missing)} (the cloud project's Access ID and Secret) "
            "or put `client_id` and `secret` under [tuya] in the credentials file"
        )
    return id_secret, key_secret
