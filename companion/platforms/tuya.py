"""Client for Tuya's AI agent device chat service over the signed Cloud OpenAPI.

The `aiAgent.*` action names of the vendor's list are mapped to HTTP calls in ACTIONS, the one table of
paths, each with the page where the path was confirmed or marked unconfirmed (inferred from its name and
its neighbours). Every action has a typed method here; `TuyaClient.call` invokes any action by name and
`TuyaClient.request` any path the table lacks, signed the same way. Tokens are granted once and refreshed
under a lock, because a refresh token works exactly once: two concurrent refreshes would burn it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar, Unpack
from urllib.parse import quote

from ..service.logsetup import register_secret
from .envelopes import TUYA, TUYA_TOKEN_CODES, unwrap_tuya
from .errors import PlatformAPIError, PlatformAuthError, PlatformError
from .fields import as_dict, as_list, get_int
from .transport import (
    Reply,
    TransportClient,
    TransportOptions,
    host_of,
    normalise_base_url,
)
from .tuya_models import (
    Avatar,
    HistoryEntry,
    Language,
    LargeModel,
    MemoryScope,
    MemorySwitch,
    Role,
    RoleFields,
    Timbre,
    TuyaToken,
    Variable,
)
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
VARIABLES_PREFIX = "/v1.0/cloud/agent/ai/b/devices/{device_id}"  # the variables live outside /chat
TOKEN_PATH = "/v1.0/token"
PAGE_MAX = 20  # history, custom-role and voice pages and batch deletes all stop at 20
MAX_PAGES = 10_000
DOCS = "https://developer.tuya.com/en/docs/cloud/"
KIT = "https://developer.tuya.com/en/docs/iot/device-panel-intelligent-agent-development-kit?id=Kfee4uarzooc5"
M = TypeVar("M")
METHODS = ("GET", "POST", "PUT", "DELETE")
Check = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class Action:
    """How one `aiAgent.*` action is invoked: method, full path ({name} from params), and where the path
    was confirmed (None: inferred from the action's name and the neighbouring paths, never seen documented).

    `check` refuses parameters the action's document forbids before anything is sent.
    """

    method: str
    path: str
    source: str | None = None
    check: Check | None = field(default=None, compare=False)

    @property
    def confirmed(self) -> bool:
        return self.source is not None

    @property
    def status(self) -> str:
        return (
            f"confirmed: {self.source}" if self.source else "unconfirmed: inferred, not yet seen documented"
        )


def _chat(method: str, tail: str, page: str | None, check: Check | None = None) -> Action:
    """An action under AGENT_PREFIX; `page` is its API page under DOCS, "kit", or None (unconfirmed)."""
    source = None if page is None else (KIT if page == "kit" else DOCS + page)
    return Action(method, AGENT_PREFIX + tail, source, check)


def check_role_params(params: Mapping[str, Any]) -> None:
    check_role(_int_or_none(params.get("bind_role_type")), _text_or_none(params.get("role_id")))


def _check_batch(ids_key: str, all_key: str) -> Check:
    """`all_key` true or false, `ids_key` (comma-separated, at most 20) unless it is true, the role rule."""

    def check(params: Mapping[str, Any]) -> None:
        check_role_params(params)
        if not isinstance(params.get(all_key), bool):
            raise PlatformError(f"{all_key} is required: true (delete all) or false (delete {ids_key})")
        if params[all_key]:
            return
        ids = [item for item in str(params.get(ids_key) or "").split(",") if item.strip()]
        if not ids:
            raise PlatformError(f"{ids_key} is needed unless {all_key} is true")
        if len(ids) > PAGE_MAX:
            raise PlatformError(
                f"{ids_key} holds {len(ids)} items, at most {PAGE_MAX} per call "
                "(the typed command sends them 20 at a time)"
            )

    return check


# action → HTTP call; the only place that knows these paths. Sources: per-API pages under DOCS, or the
# device panel kit's endpoint list (KIT). The 27 actions of the seed, then the one Tuya added since.
ACTIONS: dict[str, Action] = {
    "aiAgent.listChatDeviceHistoryPage": _chat(
        "GET", "/history", "93f6ff38f5?id=Kfee4z3q83c67", check_role_params
    ),
    "aiAgent.delChatDeviceChatHistory": _chat(
        "DELETE", "/history", "d412b14856?id=Kfee4zfh2wjdz", _check_batch("request_ids", "clear_all_history")
    ),
    "aiAgent.getChatDeviceMemorySwitch": _chat("GET", "/memory/switch", "6f108226f4?id=Kfee4zr5usvew"),
    "aiAgent.delChatDeviceMemory": _chat(
        "DELETE", "/memories", "4792233651?id=Kfee502v1of9b", _check_batch("memory_keys", "clear_all_memory")
    ),
    "aiAgent.listChatDeviceMemories": _chat(
        "GET", "/memories", "85b35f1e7e?id=Kfee50evw33fu", check_role_params
    ),
    "aiAgent.updateChatDeviceMemory": _chat("PUT", "/memories", None, check_role_params),
    "aiAgent.listChatDeviceSummary": _chat("GET", "/summary", None, check_role_params),
    "aiAgent.updateChatDeviceSummary": _chat("PUT", "/summary", None, check_role_params),
    "aiAgent.delDeviceChatContext": _chat(
        "DELETE", "/chat-context", "6c9b695fae?id=Kfee50qhr3imt", check_role_params
    ),
    "aiAgent.addChatDeviceCustomRole": _chat("POST", "/custom-role", "kit"),
    "aiAgent.listChatDeviceCustomRolePage": _chat("GET", "/custom-roles", "kit"),
    "aiAgent.getChatDeviceCustomRoleDetail": _chat("GET", "/custom-roles/{role_id}", "kit"),
    "aiAgent.updateChatDeviceCustomRole": _chat("PUT", "/custom-roles/{role_id}", "kit"),
    "aiAgent.delChatDeviceCustomRole": _chat(
        "DELETE", "/custom-roles/{role_id}", "15025b2084?id=Kfee4vric0rpp"
    ),
    "aiAgent.addChatCustomRoleFromTemplate": _chat(
        "POST", "/custom-roles/from-template", "4698d647ed?id=Kfee4ue9h31n7"
    ),
    "aiAgent.listChatDeviceRoleTemplates": _chat("GET", "/role-templates", "34f484e064?id=Kfee4w3fal1c5"),
    "aiAgent.getChatDeviceRoleTemplateDetail": _chat(
        "GET", "/role-templates/{template_id}", "157cae5510?id=Kfee4wfbhof9y"
    ),
    "aiAgent.bindChatDeviceAgentRole": _chat("POST", "/role-bindings", "ec5e61a192?id=Kfee4wr2mh7x3"),
    "aiAgent.getChatDeviceAgentBindRole": _chat("GET", "/role-bindings", "kit"),
    "aiAgent.initChatDeviceAgentBindRole": _chat(
        "POST", "/agent-roles/initialization", "98119c326f?id=Kfee4xeugosv9"
    ),
    "aiAgent.listChatDeviceAvatar": _chat("GET", "/avatars", None),
    "aiAgent.listChatDeviceLanguage": _chat("GET", "/languages", "a604a280d9?id=Kfee5142s7vpj"),
    "aiAgent.listChatDeviceLargeModel": _chat("GET", "/large-models", "d5c4e42c12?id=Kfee51g7pyh4d"),
    "aiAgent.getChatDeviceWakeUpWords": _chat("GET", "/wake-up-words", None),
    "aiAgent.listChatDeviceAgentVariable": Action(
        "GET", VARIABLES_PREFIX + "/agent-variables", DOCS + "d85d3df167?id=Kfehufqduu6tn", check_role_params
    ),
    "aiAgent.updateChatDeviceAgentVariable": Action(
        "PUT", VARIABLES_PREFIX + "/agent-variables", DOCS + "1fc3d6a772?id=Kfehugbssi0ox", check_role_params
    ),
    "aiAgent.listChatDeviceTimbreMarket": _chat("GET", "/timbres", None),
    "aiAgent.updateChatDeviceRoleWorkflow": _chat(
        "PUT", "/role-workflow", "b317570a8c?id=Kfee4xqs47yvu", check_role_params
    ),
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


def _role_query(bind_role_type: int | None, role_id: str | None, *, required: bool = False) -> dict[str, Any]:
    if required and bind_role_type is None:
        raise PlatformError("this call needs the role type: custom (0), template (1) or single (2)")
    check_role(bind_role_type, role_id)
    query: dict[str, Any] = {}
    if bind_role_type is not None:
        query["bind_role_type"] = bind_role_type
    if role_id:
        query["role_id"] = role_id
    return query


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PlatformError(f"bind_role_type must be 0, 1 or 2, not {value!r}") from None


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class BatchDelete(NamedTuple):
    """An action that deletes items by a comma-separated list of ids, or all of them with a flag."""

    action: str
    ids_key: str
    all_key: str
    noun: str
    plural: str


HISTORY_DELETE = BatchDelete(
    "aiAgent.delChatDeviceChatHistory", "request_ids", "clear_all_history", "request id", "entries"
)
MEMORY_DELETE = BatchDelete(
    "aiAgent.delChatDeviceMemory", "memory_keys", "clear_all_memory", "memory key", "memories"
)


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
        clock: Callable[[], float] = time.time,
        **transport: Unpack[TransportOptions],
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
        super().__init__(TUYA, **transport)

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
        JSON body (POST/PUT). The action's own check runs first, so a refused call sends nothing. An
        action missing from ACTIONS is an error naming the known ones (use `request` for those).
        """
        spec = ACTIONS.get(action)
        if spec is None:
            raise PlatformError(
                f"Tuya: no HTTP mapping for {action!r}; known actions: {', '.join(sorted(ACTIONS))} "
                "(or give the method and path yourself)"
            )
        if not device_id:
            raise PlatformError("Tuya: a device id is needed")
        rest = dict(params or {})
        if spec.check is not None:
            spec.check(rest)
        return await self.request(spec.method, spec.path, rest, device_id=device_id, label=action)

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        device_id: str | None = None,
        label: str = "the call",
    ) -> Any:
        """A signed business call to any OpenAPI path (for paths the action table lacks).

        `{device_id}`, `{role_id}` and `{template_id}` in `path` are filled from `device_id` and `params`;
        the remaining params go in the query (GET/DELETE) or as the JSON body (POST/PUT).
        """
        method = method.upper()
        if method not in METHODS:
            raise PlatformError(f"Tuya: the method must be one of {', '.join(METHODS)}, not {method!r}")
        if not path.startswith("/"):
            raise PlatformError(f"Tuya: the path must start with '/': {path!r}")
        rest = dict(params or {})
        values = {"device_id": device_id} if device_id else {}
        for name in ("device_id", "role_id", "template_id"):
            if "{" + name + "}" in path and name not in values:
                value = rest.pop(name, None)
                if not value:
                    raise PlatformError(f"Tuya: {label} needs {name}")
                values[name] = str(value)
        try:
            filled = path.format(**{key: quote(value, safe="") for key, value in values.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise PlatformError(
                f"Tuya: the path {path!r} has a placeholder that cannot be filled: {exc}"
            ) from None
        if method in ("GET", "DELETE"):
            return await self._business(method, filled, {k: v for k, v in rest.items() if v is not None})
        return await self._business(method, filled, None, rest or None)

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
        return await self._numbered_pages(
            "aiAgent.listChatDeviceCustomRolePage", device_id, {}, page_size, Role.from_api
        )

    async def _numbered_pages(
        self,
        action: str,
        device_id: str,
        params: Mapping[str, Any],
        page_size: int,
        decode: Callable[[Any], M],
    ) -> tuple[int | None, list[M]]:
        """(total, items) of a list paged by `page_no` (pages of at most 20): pages are fetched until one
        comes back short or empty, or `total` items are in hand."""
        page_size = max(1, min(page_size, PAGE_MAX))
        found: list[M] = []
        total: int | None = None
        for page_no in range(1, MAX_PAGES + 1):
            page_params = {"page_no": page_no, "page_size": page_size, **params}
            result = as_dict(await self.call(action, device_id, page_params))
            total = get_int(result, "total")
            items = as_list(result.get("list"))
            found.extend(decode(item) for item in items)
            if not items or len(items) < page_size or (total is not None and len(found) >= total):
                break
        return total, found

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
        base = _role_query(bind_role_type, role_id)
        return await self._delete_in_batches(HISTORY_DELETE, device_id, request_ids, base)

    async def clear_history(
        self, device_id: str, *, bind_role_type: int | None = None, role_id: str | None = None
    ) -> Any:
        """Delete the whole history of the role (or of the device's agent)."""
        params = {**_role_query(bind_role_type, role_id), "clear_all_history": True}
        return await self.call("aiAgent.delChatDeviceChatHistory", device_id, params)

    async def _delete_in_batches(
        self, spec: BatchDelete, device_id: str, items: Sequence[str], base: Mapping[str, Any]
    ) -> int:
        """Send `items` 20 per call under `spec.ids_key` (with `spec.all_key` false); returns the call
        count.

        A failed batch says how many items the earlier batches already removed.
        """
        ids = list(dict.fromkeys(item.strip() for item in items if item.strip()))
        if not ids:
            raise PlatformError(f"give at least one {spec.noun} (or clear them all)")
        done = 0
        calls = 0
        for batch in chunks(ids, PAGE_MAX):
            params = {**base, spec.all_key: False, spec.ids_key: ",".join(batch)}
            try:
                await self.call(spec.action, device_id, params)
            except PlatformAPIError as exc:
                note = f"{done} of {len(ids)} {spec.plural} were deleted before this failure"
                raise PlatformAPIError(
                    TUYA, exc.code, exc.message, hint=f"{exc.hint}; {note}" if exc.hint else note
                ) from exc
            done += len(batch)
            calls += 1
        return calls

    # -- memory, summary, context -------------------------------------------------------------------

    async def memory_switch(self, device_id: str) -> MemorySwitch:
        """Whether the agent keeps memories and chat summaries at all."""
        return MemorySwitch.from_api(await self.call("aiAgent.getChatDeviceMemorySwitch", device_id))

    async def memories(
        self, device_id: str, *, bind_role_type: int, role_id: str | None = None
    ) -> list[MemoryScope]:
        """The role's memories, grouped by the scope they apply to."""
        result = await self.call(
            "aiAgent.listChatDeviceMemories", device_id, _role_query(bind_role_type, role_id, required=True)
        )
        return [MemoryScope.from_api(item) for item in as_list(result)]

    async def update_memories(
        self,
        device_id: str,
        memory_map: Mapping[str, str],
        *,
        bind_role_type: int,
        role_id: str | None = None,
    ) -> Any:
        """Set the values of the given memory keys (e.g. sys.memoryBirthday)."""
        if not memory_map:
            raise PlatformError("give at least one memory as KEY=VALUE")
        params = {**_role_query(bind_role_type, role_id, required=True), "memory_map": dict(memory_map)}
        return await self.call("aiAgent.updateChatDeviceMemory", device_id, params)

    async def delete_memories(
        self, device_id: str, memory_keys: Sequence[str], *, bind_role_type: int, role_id: str | None = None
    ) -> int:
        """Delete the given memory keys, 20 per call; returns how many calls were made."""
        base = _role_query(bind_role_type, role_id, required=True)
        return await self._delete_in_batches(MEMORY_DELETE, device_id, memory_keys, base)

    async def clear_memories(self, device_id: str, *, bind_role_type: int, role_id: str | None = None) -> Any:
        params = {**_role_query(bind_role_type, role_id, required=True), "clear_all_memory": True}
        return await self.call("aiAgent.delChatDeviceMemory", device_id, params)

    async def summaries(
        self, device_id: str, *, bind_role_type: int, role_id: str | None = None
    ) -> list[str]:
        """The role's chat summary, one text per item."""
        result = await self.call(
            "aiAgent.listChatDeviceSummary", device_id, _role_query(bind_role_type, role_id, required=True)
        )
        return [item for item in as_list(result) if isinstance(item, str)]

    async def update_summaries(
        self, device_id: str, items: Sequence[str], *, bind_role_type: int, role_id: str | None = None
    ) -> Any:
        """Replace the role's chat summary with `items`."""
        texts = [item for item in items if item.strip()]
        if not texts:
            raise PlatformError("give at least one summary text")
        params = {**_role_query(bind_role_type, role_id, required=True), "summary_items": texts}
        return await self.call("aiAgent.updateChatDeviceSummary", device_id, params)

    async def clear_context(
        self, device_id: str, *, bind_role_type: int | None = None, role_id: str | None = None
    ) -> Any:
        """Forget the conversation so far: the next chat starts without the earlier messages."""
        return await self.call(
            "aiAgent.delDeviceChatContext", device_id, _role_query(bind_role_type, role_id)
        )

    async def update_workflow(
        self, device_id: str, workflow: str, *, bind_role_type: int, role_id: str | None = None
    ) -> Any:
        """Set the role's workflow type, e.g. asr-llm-tts."""
        if not workflow:
            raise PlatformError("give the workflow type, e.g. asr-llm-tts")
        params = {**_role_query(bind_role_type, role_id, required=True), "workflow": workflow}
        return await self.call("aiAgent.updateChatDeviceRoleWorkflow", device_id, params)

    # -- what a role can be made of -----------------------------------------------------------------

    async def avatars(self, device_id: str) -> list[Avatar]:
        return [
            Avatar.from_api(item)
            for item in as_list(await self.call("aiAgent.listChatDeviceAvatar", device_id))
        ]

    async def languages(self, device_id: str) -> list[Language]:
        result = await self.call("aiAgent.listChatDeviceLanguage", device_id)
        return [Language.from_api(item) for item in as_list(result)]

    async def large_models(self, device_id: str) -> list[LargeModel]:
        result = await self.call("aiAgent.listChatDeviceLargeModel", device_id)
        return [LargeModel.from_api(item) for item in as_list(result)]

    async def wake_words(self, device_id: str) -> str:
        result = await self.call("aiAgent.getChatDeviceWakeUpWords", device_id)
        return result if isinstance(result, str) else ""

    async def voices(
        self, device_id: str, *, lang: str | None = None, page_size: int = PAGE_MAX
    ) -> tuple[int | None, list[Timbre]]:
        """(total, voices): every voice offered to the device, page by page (20 at most per page)."""
        params = {"lang": lang} if lang else {}
        return await self._numbered_pages(
            "aiAgent.listChatDeviceTimbreMarket", device_id, params, page_size, Timbre.from_api
        )

    # -- variables ----------------------------------------------------------------------------------

    async def variables(
        self, device_id: str, *, bind_role_type: int | None = None, role_id: str | None = None
    ) -> list[Variable]:
        """The agent's variables; `custom.*` ones are defined on the developer platform."""
        result = await self.call(
            "aiAgent.listChatDeviceAgentVariable", device_id, _role_query(bind_role_type, role_id)
        )
        return [Variable.from_api(item) for item in as_list(result)]

    async def update_variables(
        self,
        device_id: str,
        variable_map: Mapping[str, str],
        *,
        bind_role_type: int | None = None,
        role_id: str | None = None,
    ) -> list[Variable]:
        """Set variables; returns the list as it is afterwards. Without a role, the bound role's are set."""
        if not variable_map:
            raise PlatformError("give at least one variable as KEY=VALUE")
        params = {**_role_query(bind_role_type, role_id), "variable_map": dict(variable_map)}
        result = await self.call("aiAgent.updateChatDeviceAgentVariable", device_id, params)
        return [Variable.from_api(item) for item in as_list(result)]


def _registered(token: TuyaToken) -> TuyaToken:
    """`token`, with its values masked in every later log record."""
    register_secret(token.access_token)
    register_secret(token.refresh_token)
    return token


def _entry_key(entry: HistoryEntry) -> str:
    if entry.request_id:
        return entry.request_id
    return f"{entry.gmt_create}|{entry.question_text}|{entry.answer_text}"
