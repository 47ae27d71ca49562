"""The three platforms' reply envelopes, and the rule for each that decides success or a clear error.

- Qiniu: `{code, msg|message, data}`; `code != 0` is an error even on HTTP 200 (an expired login is HTTP
  200 with code 401). `preregister` answers a bare `{success_count, failed}`.
- ESP-AI: `{success, message, data}`; `success: false` is an error whatever the HTTP status.
- Tuya: `{success, result, t, tid}` or `{success: false, code, msg}` with numeric codes.
Pure functions over a Reply; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import PlatformAPIError, PlatformAuthError, PlatformError, PlatformUnavailable
from .transport import Reply

QINIU = "Qiniu"
ESPAI = "ESP-AI"
TUYA = "Tuya"

QINIU_AUTH_HINT = (
    "the login token expired or the API key is wrong: run `companion qiniu login` "
    "or set COMPANION_QINIU_TOKEN to an API key"
)
ESPAI_AUTH_HINT = "check COMPANION_ESPAI_KEY (the account's 32-character open API key, not a device key)"

# Tuya error codes worth explaining; the platform's own text is kept in front of ours.
TUYA_CODES: dict[int, str] = {
    1004: "the signature was refused: check that COMPANION_TUYA_SECRET belongs to COMPANION_TUYA_CLIENT_ID",
    1010: "the access token expired and could not be renewed",
    1011: "the access token is invalid and could not be renewed",
    1012: "the access token is no longer valid and could not be renewed",
    1013: "the request time is off: this machine's clock is wrong; sync it (timedatectl set-ntp true)",
    1100: "a required parameter is empty",
    1101: "a parameter is out of range (history and role pages hold at most 20)",
    1102: "a required parameter is missing",
    1106: "permission denied: the cloud project cannot act on this device (is it linked to the project, "
    "and in this data center? see --region)",
    1109: "a parameter is invalid",
    1110: "too many requests: slow down and retry later",
    1199: "too many concurrent requests: retry later",
    2010: "device not found (is it in this data center? see --region)",
    28841105: "the cloud project is not authorised for this API: subscribe it to the AI agent service",
}
TUYA_TOKEN_CODES = frozenset({1010, 1011, 1012})


def _code(value: Any) -> int | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        return text or None
    return None


def _message(body: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _body_or_http_error(reply: Reply, platform: str) -> dict[str, Any]:
    """The JSON object, or an error named after the HTTP status when an error page is not JSON."""
    try:
        return reply.json_object()
    except PlatformError:
        if reply.status >= 500:
            raise PlatformUnavailable(f"{platform}: {reply.label} failed with HTTP {reply.status}") from None
        if reply.status >= 400:
            raise PlatformAPIError(
                platform, reply.status, f"{reply.label} failed with HTTP {reply.status}"
            ) from None
        raise


def unwrap_qiniu(reply: Reply, hints: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The whole Qiniu body (for `data` and siblings such as `nextCursor`) once `code` is 0.

    `hints` adds advice per code for this call (e.g. 409 on bind: already bound).
    """
    body = _body_or_http_error(reply, QINIU)
    code = _code(body.get("code"))
    message = _message(body, "msg", "message", "error")
    if code is None:
        if reply.status >= 400:
            raise PlatformAPIError(
                QINIU, reply.status, message or f"{reply.label} failed with HTTP {reply.status}"
            )
        raise PlatformError(f"{QINIU}: {reply.label} returned a reply without a `code` field")
    if code == 0 and reply.status < 400:
        return body
    if code == 0:
        code = reply.status
    hints = hints or {}
    if code == 401:
        raise PlatformAuthError(QINIU, code, message or "未登录", hint=hints.get(401, QINIU_AUTH_HINT))
    hint = hints.get(code, "") if isinstance(code, int) else ""
    raise PlatformAPIError(QINIU, code, message, hint=hint)


def unwrap_qiniu_bare(reply: Reply, marker: str) -> dict[str, Any]:
    """A reply documented without envelope (`preregister`): the bare object when it holds `marker`.

    An enveloped reply is accepted too: its errors are raised as usual and its `data` returned, so a
    server that starts enveloping the call keeps working.
    """
    body = _body_or_http_error(reply, QINIU)
    if marker in body:
        return body
    enveloped = unwrap_qiniu(reply)
    data = enveloped.get("data")
    if isinstance(data, dict) and marker in data:
        return data
    raise PlatformError(f"{QINIU}: {reply.label} returned a reply without `{marker}`")


def unwrap_espai(reply: Reply) -> dict[str, Any]:
    """The whole ESP-AI body once `success` is true."""
    body = _body_or_http_error(reply, ESPAI)
    if body.get("success") is True and reply.status < 400:
        return body
    message = _message(body, "message", "msg")
    code = _code(body.get("code"))
    if reply.status in (401, 403):
        raise PlatformAuthError(
            ESPAI, code if code is not None else reply.status, message, hint=ESPAI_AUTH_HINT
        )
    if "success" not in body and reply.status < 400:
        raise PlatformError(f"{ESPAI}: {reply.label} returned a reply without a `success` field")
    raise PlatformAPIError(ESPAI, code, message or f"{reply.label} failed with HTTP {reply.status}")


def tuya_error_code(body: Mapping[str, Any]) -> int | str | None:
    """The error code of a failed Tuya body (`code`, or `error_code` on the enterprise endpoints)."""
    code = _code(body.get("code"))
    return code if code is not None else _code(body.get("error_code"))


def unwrap_tuya(reply: Reply, region_note: str = "") -> dict[str, Any]:
    """The whole Tuya body once `success` is true; known codes get an explanation.

    `region_note` (e.g. "data center: eu") is added to the codes a wrong region causes.
    """
    body = _body_or_http_error(reply, TUYA)
    if body.get("success") is True and reply.status < 400:
        return body
    code = tuya_error_code(body)
    message = _message(body, "msg", "error_msg", "message")
    if "success" not in body and reply.status < 400:
        raise PlatformError(f"{TUYA}: {reply.label} returned a reply without a `success` field")
    hint = TUYA_CODES.get(code, "") if isinstance(code, int) else ""
    if region_note and code in (1106, 2010):
        hint = f"{hint} ({region_note})"
    if code in TUYA_TOKEN_CODES or code == 1004:
        raise PlatformAuthError(TUYA, code, message, hint=hint)
    raise PlatformAPIError(TUYA, code, message or f"{reply.label} failed with HTTP {reply.status}", hint=hint)
