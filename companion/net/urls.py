"""URLs as they may be shown in logs."""

from __future__ import annotations

from urllib.parse import urlsplit


def display_url(url: str) -> str:
    """A URL fit for logs: no query string (it may carry a signature) and no user info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
