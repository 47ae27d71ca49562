"""TLS for wss://, https:// and MQTT over TLS: verification always on, optionally trusting a private CA.

A self-hosted server with a self-signed certificate is refused with a message that says how to trust it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import ConfigError


def client_context(ca_file: str = "", *, setting: str = "xiaozhi.tls_ca") -> ssl.SSLContext:
    """A verifying client context: the system's CAs, plus `ca_file` (PEM) when given."""
    context = ssl.create_default_context()
    if ca_file:
        path = Path(ca_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{setting}: CA file {ca_file!r} not found (give your server's CA as a PEM file)"
            )
        try:
            context.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{setting}: {ca_file!r} is not a PEM certificate ({exc})") from None
    return context


def find_verify_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification error somewhere in an exception's cause chain, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# OpenSSL verify codes whose cause is not the CA: the clock, or the name in the URL.
_CLOCK_CODES = {9, 10}  # certificate not yet valid / expired
_NAME_CODES = {62, 64}  # host name / IP address mismatch


def explain_verify_error(
    url: str, exc: ssl.SSLCertVerificationError, ca_file: str = "", *, setting: str = "xiaozhi.tls_ca"
) -> str:
    """One line saying why the server's certificate was refused and what to do about that cause."""
    reason = exc.verify_message or exc.reason or str(exc)
    code = exc.verify_code
    if code in _CLOCK_CODES:
        hint = (
            "check this device's clock (a Pi without network time or a clock battery starts in the past), "
            "then the server's certificate dates"
        )
    elif code in _NAME_CODES:
        hint = "the certificate is for another name: put the name or address it was issued for in the URL"
    elif ca_file:
        hint = f"the CA in {setting} ({ca_file}) did not sign it"
    else:
        hint = f"if this is your own server, set {setting} to the PEM file of the CA that signed it"
    return f"TLS certificate of {url} refused ({reason}); {hint}"
