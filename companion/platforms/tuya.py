"""Client for Tuya's AI agent device chat service over the signed Cloud OpenAPI.

The `aiAgent.*` action names of the vendor's list are mapped to HTTP calls in ACTIONS, the one table of
paths: an action whose path gets confirmed is added there by one line and is then callable through
`TuyaClient.call` (and `companion tuya call`). Tokens are granted once and refreshed under a lock, because
a refresh token works exactly once: two concurrent refreshes would burn it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..service.logsetup import register_secret
from .envelopes import TUYA, TUYA_TOKEN_CODES, unwrap_tuya
from .errors import PlatformAPIError, PlatformAuthError, PlatformError
from .fields import as_dict, as_list, get_int
from .transport import (
    DEFAULT_TIMEOUT_S,
    Reply,
    RetryPolicy,
    Sleep,
    Transport,
    TransportClient,
    host_of,
    normalise_base_url,
)
from .tuya_models import HistoryEntry, Role, RoleFields, TuyaToken
from .tuya_signing import query_value, signed_request_headers

log = logging.getLogger("companion.platforms")

# Data centers whose OpenAPI host is documented; others are reached with base_url.
REGIONS = {
    "cn": "https://openapi.tuyacn.com",
    "us": "https://openapi.tuyaus.com",
    "eu": "https://openapi.tuyaeu.com",
    "in": "https://openapi.tuyain.com",
}
DEFAULT_REGION = "cn"
AGENT_PREFIX = "/v1.0/cloud/agent/ai/chat/b/devices/{device_id}"
TOKEN_PATH = "/v1.0/token"
PAGE_MAX = 20  # history, custom-role pages and batch deletes all stop at 20
MAX_PAGES = 10_000


@dataclass(frozen=True)
class Action:
    """How one `aiAgent.*` action is invoked: method and path under AGENT_PREFIX ({name} from params)."""

    method: str
    path: str


# action → HTTP call; the only place that knows these paths.
ACTIONS: dict[str, Action] = {
    "aiAgent.initChatDeviceAgentBindRole": Action("POST", "/agent-roles/initialization"),
    "aiAgent.addChatDeviceCustomRole": Action("POST", "/custom-role"),
    "aiAgent.addChatCustomRoleFromTemplate": Action("POST", "/custom-roles/from-template"),
    "aiAgent.listChatDeviceCustomRolePage": Action("GET", "/custom-roles"),
    "aiAgent.getChatDeviceCustomRoleDetail": Action("GET", "/custom-roles/{role_id}"),
    "aiAgent.updateChatDeviceCustomRole": Action("PUT", "/custom-roles/{role_id}"),
    "aiAgent.delChatDeviceCustomRole": Action("DELETE", "/custom-roles/{role_id}"),
    "aiAgent.listChatDeviceRoleTemplates": Action("GET", "/role-templates"),
    "aiAgent.getChatDeviceRoleTemplateDetail": Action("GET", "/role-templates/{template_id}"),
    "aiAgent.bindChatDeviceAgentRole": Action("POST", "/role-bindings"),
    "aiAgent.getChatDeviceAgentBindRole": Action("GET", "/role-bindings"),
    "aiAgent.updateChatDeviceRoleWorkflow": Action("PUT", "/role-workflow"),
    "aiAgent.listChatDeviceHistoryPage": Action("GET", "/history"),
    "aiAgent.delChatDeviceChatHistory": Action("DELETE", "/history"),
    "aiAgent.delChatDeviceMemory": Action("DELETE", "/memories"),
    "aiAgent.delDeviceChatContext": Action("DELETE", "/chat-context"),
}


def region_url(region: str) -> str:
    """The OpenAPI host of a data center."""
    try:
        return REGIONS[region]
    except KeyError:
        raise PlatformError(
            f"unknown Tuya region {region!r}; known: {', '.join(REGIONS)} (or give --base-url)"
        ) from None


def check_role(bind_role_type: int | None, role_id: str | None) -> None:
    """Tuya's rule: a role id needs its type; type 2 (single role) has no role id."""
    if bind_role_type is not None and bind_role_type not in (0, 1, 2):
        raise PlatformError("bind_role_type must be 0 (custom), 1 (template) or 2 (single role)")
    if role_id and bind_role_type is None:
        raise PlatformError("a role id needs its bind_role_type (0 custom, 1 template)")
    if bind_role_type in (0, 1) and not role_id:
        raise PlatformError("bind_role_type 0 and 1 need a role id")
    if bind_role_type == 2 and role_id:
        raise PlatformError("bind_role_type 2 (single role) takes no role id")


def _role_query(bind_role_type: int | None, role_id: str | None) -> dict[str, Any]:
    check_role(bind_role_type, role_id)
    query: dict[str, Any] = {}
    if bind_role_type is not None:
        query["bind_role_type"] = bind_role_type
    if role_id:
        query["role_id"] = role_id
    return query


def chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TuyaClient(TransportClient):
    """An async client for one cloud project; use `async with TuyaClient(client_id, secret) as c:`."""

    def __init__(
        self,
        client_id: str,
        secret: str,
        *,
        region: str = DEFAULT_REGION,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not secret:
            raise PlatformError("Tuya: the client id and the secret are both needed")
        self.base_url = normalise_base_url(base_url) if base_url else region_url(region)
        self.region = region if not base_url else "custom"
        self._client_id = client_id
        self._secret = secret
        register_secret(secret)
        self._clock = clock
        self._token: TuyaToken | None = None
        self._lock = asyncio.Lock()
        self._transport = Transport(TUYA, timeout_s=timeout_s, retry=retry, sleep=sleep)

    def __repr__(self) -> str:
        return f"TuyaClient(base_url={self.base_url!r})"

    @property
    def _region_note(self) -> str:
        return f"data center: {self.region}, {host_of(self.base_url)}"

    # -- signing and tokens -------------------------------------------------------------------------

    async def _signed(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: bytes,
        *,
        access_token: str = "",
        idempotent: bool | None = None,
        label: str | None = None,
    ) -> Reply:
        texts = {key: query_value(value) for key, value in (query or {}).items()}
        headers = signed_request_headers(
            client_id=self._client_id,
            secret=self._secret,
            t_ms=int(self._clock() * 1000),
            method=method,
            path=path,
            query=texts,
            body=body,
            access_token=access_token,
        )
        if body:
            headers["Content-Type"] = "application/json"
        return await self._transport.request(
            method,
            self.base_url + path,
            params=texts or None,
            content=body or None,
            headers=headers,
            idempotent=idempotent,
            label=label,
        )

    async def _grant(self) -> TuyaToken:
        reply = await self._signed("GET", TOKEN_PATH, {"grant_type": 1}, b"")
        return _registered(
            TuyaToken.from_api(unwrap_tuya(reply, self._region_note).get("result"), self._clock())
        )

    async def _refresh(self, token: TuyaToken) -> TuyaToken:
        # Never retried: the refresh token is single-use, a repeat after a lost reply would fail anyway.
        reply = await self._signed(
            "GET",
            f"{TOKEN_PATH}/{quote(token.refresh_token, safe='')}",
            None,
            b"",
            idempotent=False,
            label="GET /v1.0/token/<refresh token>",
        )
        return _registered(
            TuyaToken.from_api(unwrap_tuya(reply, self._region_note).get("result"), self._clock())
        )

    async def _current_token(self) -> TuyaToken:
        token = self._token
        if token is not None and not token.expiring(self._clock()):
            return token
        return await self._renew(token)

    async def _renew(self, stale: TuyaToken | None) -> TuyaToken:
        """Replace `stale` (None: no token yet) unless another task already did while we waited.

        Refresh first (single use, hence the lock); a refused refresh falls back to a new grant.
        """
        async with self._lock:
            current = self._token
            if current is not None and current is not stale and not current.expiring(self._clock()):
                return current
            if current is not None and current.refresh_token:
                try:
                    self._token = await self._refresh(current)
                    return self._token
                except PlatformAPIError as exc:
                    log.info(
                        "Tuya: the token refresh was refused (code %s); asking for a new token", exc.code
                    )
            self._token = await self._grant()
            return self._token

    async def _business(
        self, method: str, path: str, query: Mapping[str, Any] | None = None, payload: Any = None
    ) -> Any:
        """A signed business call; a token the server calls expired or invalid is renewed once."""
        body = (
            b""
            if payload is None
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        )
        for attempt in (1, 2):
            token = await self._current_token()
            reply = await self._signed(method, path, query, body, access_token=token.access_token)
            try:
                return unwrap_tuya(reply, self._region_note).get("result")
            except PlatformAuthError as exc:
                if attempt == 1 and exc.code in TUYA_TOKEN_CODES:
                    log.info("Tuya: the server refused the access token (code %s); renewing it", exc.code)
                    await self._renew(token)
                    continue
                raise
        raise PlatformError("Tuya: unreachable")  # the loop returns or raises

    # -- the action table ---------------------------------------------------------------------------

    async def call(self, action: str, device_id: str, params: Mapping[str, Any] | None = None) -> Any:
        """Invoke an `aiAgent.*` action for `device_id`; returns the reply's `result`.

        Path placeholders are filled from `params`; the rest goes in the query (GET/DELETE) or as the
        JSON body (POST/PUT). An action missing from ACTIONS is an error naming the known ones.
        """
        spec = ACTIONS.get(action)
        if spec is None:
            raise PlatformError(
                f"Tuya: no HTTP mapping for {action!r}; known actions: {', '.join(sorted(ACTIONS))}"
            )
        if not device_id:
            raise PlatformError("Tuya: a device id is needed")
        rest = dict(params or {})
        path_values = {"device_id": device_id}
        template = AGENT_PREFIX + spec.path
        for name in ("role_id", "template_id"):
            if "{" + name + "}" in template:
                value = rest.pop(name, None)
                if not value:
                    raise PlatformError(f"Tuya: {action} needs {name}")
                path_values[name] = str(value)
        path = template.format(**{key: quote(value, safe="") for key, value in path_values.items()})
        if spec.method in ("GET", "DELETE"):
            return await self._business(spec.method, path, {k: v for k, v in rest.items() if v is not None})
        return await self._business(spec.method, path, None, rest or None)

    # -- roles --------------------------------------------------------------------------------------

    async def init_role(self, device_id: str) -> Role:
        """Initialise the device's role binding (the vendor asks for this on every panel visit)."""
        return Role.from_api(await self.call("aiAgent.initChatDeviceAgentBindRole", device_id))

    async def bound_role(self, device_id: str) -> Role:
        return Role.from_api(await self.call("aiAgent.getChatDeviceAgentBindRole", device_id))

    async def bind_role(self, device_id: str, bind_role_type: int, role_id: str | None = None) -> Any:
        params = _role_query(bind_role_type, role_id)
        return await self.call("aiAgent.bindChatDeviceAgentRole", device_id, params)

    async def list_custom_roles(
        self, device_id: str, page_size: int = PAGE_MAX
    ) -> tuple[int | None, list[Role]]:
        """(total, roles): every custom role of the device, page by page."""
        page_size = max(1, min(page_size, PAGE_MAX))
        roles: list[Role] = []
        total: int | None = None
        for page_no in range(1, MAX_PAGES + 1):
            result = as_dict(
                await self.call(
                    "aiAgent.listChatDeviceCustomRolePage",
                    device_id,
                    {"page_no": page_no, "page_size": page_size},
                )
            )
            total = get_int(result, "total")
            items = as_list(result.get("list"))
            roles.extend(Role.from_api(item) for item in items)
            if not items or len(items) < page_size or (total is not None and len(roles) >= total):
                break
        return total, roles

    async def get_custom_role(self, device_id: str, role_id: str) -> Role:
        return Role.from_api(
            await self.call("aiAgent.getChatDeviceCustomRoleDetail", device_id, {"role_id": role_id})
        )

    async def create_custom_role(self, device_id: str, role: RoleFields) -> str:
        """Create a custom role; returns its id (name, introduction, image, language, voice, LLM needed)."""
        missing = role.missing(
            "role_name", "role_introduce", "role_img_url", "use_lang_code", "use_timbre_id", "use_llm_id"
        )
        if missing:
            raise PlatformError(f"a custom role needs {', '.join(missing)}")
        return str(await self.call("aiAgent.addChatDeviceCustomRole", device_id, role.to_api()))

    async def create_role_from_template(
        self, device_id: str, template_id: str, role: RoleFields, need_bind: bool | None = None
    ) -> str:
        params: dict[str, Any] = {"template_id": template_id, **role.to_api()}
        if need_bind is not None:
            params["need_bind"] = need_bind
        return str(await self.call("aiAgent.addChatCustomRoleFromTemplate", device_id, params))

    async def update_custom_role(self, device_id: str, role_id: str, role: RoleFields) -> Any:
        changes = role.to_api()
        if not changes:
            raise PlatformError("nothing to update: give at least one field")
        return await self.call(
            "aiAgent.updateChatDeviceCustomRole", device_id, {"role_id": role_id, **changes}
        )

    async def delete_custom_role(self, device_id: str, role_id: str) -> Any:
        return await self.call("aiAgent.delChatDeviceCustomRole", device_id, {"role_id": role_id})

    async def list_templates(self, device_id: str) -> list[Role]:
        return [
            Role.from_api(item)
            for item in as_list(await self.call("aiAgent.listChatDeviceRoleTemplates", device_id))
        ]

    async def get_template(self, device_id: str, template_id: str) -> Role:
        result = await self.call(
            "aiAgent.getChatDeviceRoleTemplateDetail", device_id, {"template_id": template_id}
        )
        return Role.from_api(result)

    # -- history ------------------------------------------------------------------------------------

    async def history(
        self,
        device_id: str,
        *,
        bind_role_type: int | None,
        role_id: str | None = None,
        before_ms: int | None = None,
        page_size: int = PAGE_MAX,
        max_items: int | None = None,
    ) -> list[HistoryEntry]:
        """Chat history, newest first, every entry once.

        Pages hold at most 20 and are asked for by `gmt_end` (entries strictly older). The next page
        starts at the oldest time seen plus 1 ms, so entries sharing that millisecond are not skipped,
        and the overlap is removed by `request_id`. When a whole page is already known (more entries in
        one millisecond than a page holds) the walk steps past that millisecond.
        """
        page_size = max(1, min(page_size, PAGE_MAX))
        gmt_end = before_ms if before_ms is not None else int(self._clock() * 1000) + 1
        base = _role_query(bind_role_type, role_id)
        entries: list[HistoryEntry] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            result = await self.call(
                "aiAgent.listChatDeviceHistoryPage",
                device_id,
                {**base, "gmt_end": gmt_end, "page_size": page_size},
            )
            page = [HistoryEntry.from_api(item) for item in as_list(result)]
            fresh = [entry for entry in page if _entry_key(entry) not in seen]
            for entry in fresh:
                seen.add(_entry_key(entry))
            entries.extend(fresh)
            if max_items is not None and len(entries) >= max_items:
                return entries[:max_items]
            times = [entry.gmt_create for entry in page if entry.gmt_create is not None]
            if len(page) < page_size or not times:
                return entries
            oldest = min(times)
            next_end = oldest + 1 if fresh else oldest
            if next_end >= gmt_end:
                next_end = oldest
            gmt_end = next_end
        return entries

    async def delete_history(
        self,
        device_id: str,
        request_ids: Sequence[str],
        *,
        bind_role_type: int | None = None,
        role_id: str | None = None,
    ) -> int:
        """Delete the given entries, 20 ids per call; returns how many calls were made."""
        ids = list(dict.fromkeys(item.strip() for item in request_ids if item.strip()))
        if not ids:
            raise PlatformError("give at least one request id (or clear the whole history)")
        base = _role_query(bind_role_type, role_id)
        done = 0
        calls = 0
        for batch in chunks(ids, PAGE_MAX):
            params = {**base, "clear_all_history": False, "request_ids": ",".join(batch)}
            try:
                await self.call("aiAgent.delChatDeviceChatHistory", device_id, params)
            except PlatformAPIError as exc:
                note = f"{done} of {len(ids)} entries were deleted before this failure"
                raise PlatformAPIError(
                    TUYA, exc.code, exc.message, hint=f"{exc.hint}; {note}" if exc.hint else note
                ) from exc
            done += len(batch)
            calls += 1
        return calls

    async def clear_history(
        self, device_id: str, *, bind_role_type: int | None = None, role_id: str | None = None
    ) -> Any:
        """Delete the whole history of the role (or of the device's agent)."""
        params = {**_role_query(bind_role_type, role_id), "clear_all_history": True}
        return await self.call("aiAgent.delChatDeviceChatHistory", device_id, params)


def _registered(token: TuyaToken) -> TuyaToken:
    """`token`, with its values masked in every later log record."""
    register_secret(token.access_token)
    register_secret(token.refresh_token)
    return token


def _entry_key(entry: HistoryEntry) -> str:
    if entry.request_id:
        return entry.request_id
    return f"{entry.gmt_create}|{entry.question_text}|{entry.answer_text}"
