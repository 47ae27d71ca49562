"""Tuya Cloud OpenAPI request signing (HMAC-SHA256), sans I/O: strings and bytes in, headers out.

    stringToSign = METHOD \n sha256_hex(body) \n headers-block \n url
    url          = path [? k=v&k=v sorted by key]
    token call   : sign = HEX_UPPER(HMAC_SHA256(secret, client_id + t + nonce + stringToSign))
    business call: sign = HEX_UPPER(HMAC_SHA256(secret, client_id + access_token + t + nonce + stringToSign))

The headers block lists `name:value\n` for each name in `Signature-Headers` (none by default, leaving an
empty line). The body hash is over the exact bytes sent, so callers serialise once and send those bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

SIGN_METHOD = "HMAC-SHA256"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def query_value(value: object) -> str:
    """How a query value is written, both in the URL and in the string to sign."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical_url(path: str, query: Mapping[str, str] | None = None) -> str:
    """`path` plus the query sorted by key, values unescaped, as Tuya signs it."""
    if not query:
        return path
    return path + "?" + "&".join(f"{key}={query[key]}" for key in sorted(query))


def string_to_sign(
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    body: bytes = b"",
    signed_headers: Sequence[tuple[str, str]] = (),
) -> str:
    """The string Tuya signs for one request."""
    body_hash = hashlib.sha256(body).hexdigest()
    headers_block = "".join(f"{name}:{value}\n" for name, value in signed_headers)
    return f"{method.upper()}\n{body_hash}\n{headers_block}\n{canonical_url(path, query)}"


def sign(
    client_id: str, secret: str, t_ms: int, to_sign: str, *, access_token: str = "", nonce: str = ""
) -> str:
    """The `sign` header: upper-case hex HMAC-SHA256; pass `access_token` for business calls only."""
    message = f"{client_id}{access_token}{t_ms}{nonce}{to_sign}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


def signed_request_headers(
    *,
    client_id: str,
    secret: str,
    t_ms: int,
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    body: bytes = b"",
    access_token: str = "",
    nonce: str = "",
    signed_headers: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """Every header a signed call needs (client_id, sign, sign_method, t, and access_token if given)."""
    to_sign = string_to_sign(method, path, query, body, signed_headers)
    headers = {
        "client_id": client_id,
        "sign": sign(client_id, secret, t_ms, to_sign, access_token=access_token, nonce=nonce),
        "sign_method": SIGN_METHOD,
        "t": str(t_ms),
    }
    if access_token:
        headers["access_token"] = access_token
    if nonce:
        headers["nonce"] = nonce
    if signed_headers:
        headers["Signature-Headers"] = ":".join(name for name, _ in signed_headers)
        headers.update({name: value for name, value in signed_headers})
    return headers
