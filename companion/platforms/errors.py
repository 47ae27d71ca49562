"""The errors a platform client raises; every one carries a one-line message written for the user."""

from __future__ import annotations

from ..errors import EX_CONFIG, EX_UNAVAILABLE, PlatformError

__all__ = [
    "CredentialMissing",
    "PlatformAPIError",
    "PlatformAuthError",
    "PlatformError",
    "PlatformUnavailable",
    "one_line",
]


def one_line(text: object, limit: int = 300) -> str:
    """`text` flattened to one line and cut at `limit` characters (server messages can be pages long)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class PlatformUnavailable(PlatformError):
    """The platform could not be reached (DNS, refused, TLS, timeout, 5xx after retries)."""

    exit_code = EX_UNAVAILABLE


class CredentialMissing(PlatformError):
    """No credential for the platform was found in the environment, the stored login or the file."""

    exit_code = EX_CONFIG


class PlatformAPIError(PlatformError):
    """The platform answered and refused the call: `code` and `message` are the platform's own."""

    def __init__(self, platform: str, code: int | str | None, message: str, *, hint: str = "") -> None:
        self.platform = platform
        self.code = code
        self.message = one_line(message) if message else ""
        self.hint = hint
        text = f"{platform}: {self.message or 'request refused'}"
        if code is not None:
            text += f" (code {code})"
        if hint:
            text += f"; {hint}"
        super().__init__(text)


class PlatformAuthError(PlatformAPIError):
    """The platform rejected the credential (expired login, wrong key, token that could not be renewed)."""
