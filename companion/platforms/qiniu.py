"""Client for the Qiniu 灵矽 / xiaozhi management API (users, agents, devices, history, voice clones).

Two hosts: login lives on xrobo.qiniuapi.com, the rest on xrobo.qiniu.com; a self-hosted or test server
given as `base_url` serves both. Every reply goes through the envelope rule (code != 0 is an error even
on HTTP 200), and only calls that cannot do anything twice are retried.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

from ..service.logsetup import register_secret
from .envelopes import QINIU, unwrap_qiniu, unwrap_qiniu_bare
from .errors import CredentialMissing, PlatformAPIError, PlatformError
from .fields import as_dict, as_list, get_int, get_str
from .lookup import only_named, with_id
from .mac import is_mac, normalise_mac
from .qiniu_models import (
    Agent,
    AgentCreate,
    AgentUpdate,
    BindResult,
    Captcha,
    ChatMessage,
    ChatSession,
    Device,
    LoginResult,
    PreregDevice,
    PreregisterResult,
    VoiceClone,
)
from .transport import (
    Reply,
    TransportClient,
    TransportOptions,
    normalise_base_url,
)

DEFAULT_BASE_URL = "https://xrobo.qiniu.com"
DEFAULT_LOGIN_URL = "https://xrobo.qiniuapi.com"
AGENT_ID = re.compile(r"[a-f0-9]{32}")
SEARCH_TYPES = ("name", "mac", "agent_id")
ENDPOINT_ABSENT = 404  # what a server answers for a call it does not have (the seeds name no search)
T = TypeVar("T")
MAX_PAGES = 10_000  # a server that never ends its cursor chain must not keep us forever

# Codes of `device/bind/{agentId}/{code}` (seed 000, device API docs).
BIND_CODE_INVALID = 400
BIND_AGENT_NOT_FOUND = 404
BIND_ALREADY_BOUND = 409
BIND_HINTS = {
    BIND_CODE_INVALID: "the activation code is invalid or already used; read the device's current code "
    "(it changes after every OTA check)",
    BIND_AGENT_NOT_FOUND: "no such agent",
    BIND_ALREADY_BOUND: "the device is already bound; unbind it first or use `devices move`",
}
LOGIN_HINTS = {401: "wrong user name or password", 403: "wrong captcha; fetch a new one"}
REGISTER_HINTS = {409: "that user name is taken", 403: "wrong captcha; fetch a new one"}
VOICE_NAME_MAX = 20


class AgentLookupError(PlatformError):
    """Finding the agent by name failed, so the call it was for was never sent. Exits as the cause would.

    `done` says what was therefore not done ("bound", "updated", ...), for the message.
    """

    def __init__(self, ref: str, endpoint: str, cause: PlatformError, done: str = "") -> None:
        self.ref = ref
        self.endpoint = endpoint
        self.cause = cause
        self.exit_code = cause.exit_code
        if isinstance(cause, PlatformAPIError):
            detail = f"answered code {cause.code}" if cause.code is not None else "was refused"
            if cause.message:
                detail += f" ({cause.message})"
            if cause.hint:
                detail += f"; {cause.hint}"
        else:
            detail = f"failed: {str(cause).removeprefix('Qiniu: ')}"
        text = f"Qiniu: could not resolve agent name {ref!r}: {endpoint} {detail}"
        super().__init__(text + (f"; nothing was {done}" if done else ""))

    def nothing(self, done: str) -> AgentLookupError:
        """The same error, saying what was therefore not done."""
        return AgentLookupError(self.ref, self.endpoint, self.cause, done)


def merge_objects(current: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with `given` laid over it: nested objects are merged key by key, anything else replaced."""
    merged = dict(current)
    for key, value in given.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_objects(old, value)
        else:
            merged[key] = value
    return merged


class _SendArgs(TypedDict, total=False):
    """The keyword arguments of `QiniuClient._send`, which `_call` passes on."""

    params: Mapping[str, str] | None
    body: Any
    auth: bool
    idempotent: bool | None
    base: str | None
    label: str | None


class QiniuClient(TransportClient):
    """An async client; use `async with QiniuClient(token) as client:`.

    `token` is a login token or a console API key (both are sent as `Authorization: Bearer`); it may be
    None for captcha, register and login.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        login_url: str | None = None,
        **transport: Unpack[TransportOptions],
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        if login_url is None:
            login_url = DEFAULT_LOGIN_URL if self.base_url == DEFAULT_BASE_URL else self.base_url
        self.login_url = normalise_base_url(login_url, "login URL")
        self._token = token
        if token:
            register_secret(token)
        super().__init__("Qiniu", **transport)

    # -- plumbing ---------------------------------------------------------------------------------

    def _headers(self, auth: bool, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if auth:
            if not self._token:
                raise CredentialMissing("Qiniu: this call needs a login token or an API key")
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _call(
        self, method: str, path: str, *, hints: Mapping[int, str] | None = None, **send: Unpack[_SendArgs]
    ) -> dict[str, Any]:
        """One enveloped call (`send` as for `_send`); returns the whole body (data plus siblings such as
        nextCursor)."""
        return unwrap_qiniu(await self._send(method, path, **send), hints)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        auth: bool = True,
        idempotent: bool | None = None,
        base: str | None = None,
        label: str | None = None,
    ) -> Reply:
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        return await self._transport.request(
            method,
            (base or self.base_url) + path,
            params=params,
            content=content,
            headers=self._headers(auth, content is not None),
            idempotent=idempotent,
            label=label,
        )

    # -- user ---------------------------------------------------------------------------------------

    async def captcha(self, captcha_id: str | None = None) -> Captcha:
        """A captcha image for register/login; `captcha_id` (a fresh uuid4 by default) goes with its text."""
        captcha_id = captcha_id or str(uuid.uuid4())
        reply = await self._send("GET", "/xiaozhi/user/captcha", params={"uuid": captcha_id}, auth=False)
        ctype = reply.content_type.split(";")[0].strip().lower()
        if reply.content.startswith(b"\x89PNG") or (ctype.startswith("image/") and reply.status == 200):
            return Captcha(captcha_id=captcha_id, image=reply.content, content_type=ctype or "image/png")
        unwrap_qiniu(reply)  # an error envelope raises here
        raise PlatformError(
            f"Qiniu: the captcha reply is not an image (HTTP {reply.status}, {ctype or 'no type'})"
        )

    async def register(
        self, username: str, password: str, captcha_id: str, captcha: str, mobile_captcha: str = ""
    ) -> None:
        """Create an account (`user/register`)."""
        register_secret(password)
        body = {
            "username": username,
            "password": password,
            "captcha": captcha,
            "mobileCaptcha": mobile_captcha,
            "captchaId": captcha_id,
        }
        await self._call("POST", "/xiaozhi/user/register", body=body, auth=False, hints=REGISTER_HINTS)

    async def login(
        self,
        username: str,
        password: str,
        captcha_id: str,
        captcha: str,
        *,
        mobile: str = "",
        area_code: str = "+86",
    ) -> LoginResult:
        """Log in on the login host; the token is also used by this client from now on."""
        register_secret(password)
        body = {
            "areaCode": area_code,
            "captcha": captcha,
            "captchaId": captcha_id,
            "mobile": mobile,
            "password": password,
            "username": username,
        }
        reply = await self._call(
            "POST", "/xiaozhi/user/login", body=body, auth=False, hints=LOGIN_HINTS, base=self.login_url
        )
        result = LoginResult.from_api(reply.get("data"))
        register_secret(result.token)
        self._token = result.token
        return result

    async def verify_credential(self) -> None:
        """One cheap authenticated call; raises PlatformAuthError when the token or key is refused."""
        await self._call("GET", "/xiaozhi/agent/list", params={"limit": "1"})

    # -- agents -------------------------------------------------------------------------------------

    async def list_agents(self, page_size: int = 100) -> list[Agent]:
        """All agents, following `nextCursor` to the end (`page_size` is clamped by the server to 1-100)."""

        def page_of(body: dict[str, Any]) -> tuple[list[Agent], str | None]:
            return [Agent.from_api(item) for item in as_list(body.get("data"))], get_str(body, "nextCursor")

        return await self._all_pages("/xiaozhi/agent/list", "agent list", page_size, page_of)

    async def _all_pages(
        self,
        path: str,
        what: str,
        page_size: int,
        page_of: Callable[[dict[str, Any]], tuple[list[T], str | None]],
    ) -> list[T]:
        """Every item of a cursor-paged list: `page_of(body)` gives a page's items and the next cursor;
        an empty page or no cursor ends it, a repeated cursor or MAX_PAGES pages is an error."""
        items: list[T] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"limit": str(page_size)}
            if cursor:
                params["cursor"] = cursor
            page, cursor = page_of(await self._call("GET", path, params=params))
            items.extend(page)
            if not cursor or not page:
                return items
            if cursor in seen:
                raise PlatformError(f"Qiniu: the {what} repeated cursor {cursor}; stopping")
            seen.add(cursor)
        raise PlatformError(f"Qiniu: the {what} did not end after {MAX_PAGES} pages")

    async def search_agents(self, query: str, by: str = "name") -> list[Agent]:
        """Agents whose name starts with `query`, or bound to MAC `query`, or with id `query`."""
        if by not in SEARCH_TYPES:
            raise PlatformError(f"search type must be one of {', '.join(SEARCH_TYPES)}")
        if by == "mac":
            query = normalise_mac(query)
        body = await self._call("GET", "/xiaozhi/agent/search", params={"q": query, "type": by})
        return [Agent.from_api(item) for item in as_list(body.get("data"))]

    async def get_agent(self, agent_id: str) -> Agent:
        """One agent's configuration (`agent/{id}`); an unknown id is an error (the server says code 500).

        A server without the detail call (HTTP 404: seed 001 documents only the list) is answered from
        the agent's entry in the list.
        """
        try:
            body = await self._call("GET", f"/xiaozhi/agent/{_seg(agent_id)}")
        except PlatformAPIError as exc:
            if exc.code != ENDPOINT_ABSENT:
                raise
            return await self._listed_agent(agent_id)
        return Agent.from_api(body.get("data"))

    async def agent_extra(self, agent_id: str) -> dict[str, Any]:
        """The agent's current `extra` ({} when it has none), from its detail or else its list entry."""
        agent = await self.get_agent(agent_id)
        if "extra" not in agent.raw:
            agent = await self._listed_agent(agent_id)
        return dict(agent.extra or {})

    async def _listed_agent(self, agent_id: str) -> Agent:
        return with_id(await self.list_agents(), agent_id, QINIU)

    async def resolve_agent(self, ref: str) -> Agent:
        """The agent named by `ref`: a 32-hex id (used as given, no lookup), or an exact, unique name.

        A name is looked up with `agent/search`, or with `agent/list` on a server without search (HTTP
        404). A lookup that fails raises AgentLookupError, which says the lookup failed (nothing else was
        sent).
        """
        ref = ref.strip()
        if AGENT_ID.fullmatch(ref.lower()):
            return Agent(id=ref.lower())
        if not ref:
            raise PlatformError("the agent is empty: give its id or its exact name")
        endpoint = "/xiaozhi/agent/search"
        try:
            try:
                candidates = await self.search_agents(ref, by="name")
            except PlatformAPIError as exc:
                if exc.code != ENDPOINT_ABSENT:
                    raise
                endpoint = "/xiaozhi/agent/list"
                candidates = [
                    agent for agent in await self.list_agents() if (agent.agent_name or "").startswith(ref)
                ]
        except PlatformError as exc:
            raise AgentLookupError(ref, endpoint, exc) from exc
        exact = only_named(candidates, ref, lambda agent: agent.agent_name, QINIU)
        if exact is not None:
            return exact
        near = ", ".join(repr(agent.agent_name) for agent in candidates[:5])
        raise PlatformError(
            f"Qiniu: no agent named {ref!r}" + (f" (names starting so: {near})" if near else "")
        )

    async def create_agent(self, agent: AgentCreate) -> str:
        """Create an agent; returns its id."""
        body = await self._call("POST", "/xiaozhi/agent", body=agent.to_api())
        agent_id = body.get("data")
        if not isinstance(agent_id, str) or not agent_id:
            raise PlatformError("Qiniu: creating the agent returned no id")
        return agent_id

    async def update_agent(self, agent_id: str, update: AgentUpdate, *, merge_extra: bool = True) -> Any:
        """Send only the fields set in `update`; returns the server's `data` (null on success).

        The server may replace `extra` whole, so with `merge_extra` a given `extra` is first merged
        (object by object) into the agent's current one, read just before, and the result sent: the
        settings not named survive.
        """
        if update.is_empty():
            raise PlatformError("nothing to update: give at least one field")
        if merge_extra and update.extra is not None:
            current = await self.agent_extra(agent_id)
            update = dataclasses.replace(update, extra=merge_objects(current, update.extra))
        body = await self._call("PUT", f"/xiaozhi/agent/{_seg(agent_id)}", body=update.to_api())
        return body.get("data")

    async def delete_agent(self, agent_id: str) -> Any:
        """Delete an agent for good. Not retried: a repeat after a lost reply would report 'not found'."""
        body = await self._call("DELETE", f"/xiaozhi/agent/{_seg(agent_id)}", idempotent=False)
        return body.get("data")

    # -- devices ------------------------------------------------------------------------------------

    async def list_devices(self, agent_id: str) -> list[Device]:
        """Devices bound to the agent."""
        body = await self._call("GET", f"/xiaozhi/device/bind/{_seg(agent_id)}")
        return [Device.from_api(item) for item in as_list(body.get("data"))]

    async def bind_device(self, agent_id: str, code: str) -> BindResult:
        """Bind the device that shows activation `code` to the agent.

        Raises PlatformAPIError with `.code` BIND_CODE_INVALID (400), BIND_AGENT_NOT_FOUND (404) or
        BIND_ALREADY_BOUND (409) when the platform refuses.
        """
        code = "".join(code.split())
        if not code:
            raise PlatformError("the activation code is empty")
        body = await self._call(
            "POST",
            f"/xiaozhi/device/bind/{_seg(agent_id)}/{_seg(code)}",
            body={},
            hints=BIND_HINTS,
            label=f"POST /xiaozhi/device/bind/{agent_id}/<activation code>",
        )
        data = body.get("data")
        mac = get_str(as_dict(data), "macAddress")
        return BindResult(mac=normalise_mac(mac) if mac and is_mac(mac) else mac, raw=data)

    async def preregister(
        self, agent_id: str, macs: Sequence[str], serial_numbers: Sequence[str] = ()
    ) -> PreregisterResult:
        """Pre-register devices by MAC (and/or serial number) to the agent; partial success is normal.

        Use `result.outcomes(macs)` for one ok/reason per MAC. MACs are sent once each, in lower-case
        colon form.
        """
        body = {
            "agent_id": agent_id,
            "mac_addresses": list(dict.fromkeys(normalise_mac(mac) for mac in macs)),
            "serial_numbers": list(serial_numbers),
        }
        if not body["mac_addresses"] and not body["serial_numbers"]:
            raise PlatformError("give at least one MAC address or serial number")
        reply = await self._send("POST", "/xiaozhi/device/preregister", body=body)
        return PreregisterResult.from_api(unwrap_qiniu_bare(reply, "success_count"))

    async def unbind_device(self, mac: str) -> None:
        """Unbind the device from its agent (and the account)."""
        await self._call("POST", "/xiaozhi/device/unbind", body={"deviceId": normalise_mac(mac)})

    async def move_device(self, mac: str, agent_id: str) -> None:
        """Switch a bound device to another agent (its chat history moves along)."""
        path = f"/v1/devices/{_seg(normalise_mac(mac))}/agent/{_seg(agent_id)}"
        await self._call("PUT", path, body={}, hints={403: "this account does not own the device"})

    async def list_preregistered(self, agent_id: str, page_size: int = 100) -> list[PreregDevice]:
        """All devices pre-registered to the agent, following `next_cursor` to the end."""

        def page_of(body: dict[str, Any]) -> tuple[list[PreregDevice], str | None]:
            data = as_dict(body.get("data"))
            devices = [PreregDevice.from_api(item) for item in as_list(data.get("devices"))]
            return devices, get_str(data, "next_cursor")

        path = f"/v1/pre-register/agents/{_seg(agent_id)}/devices"
        return await self._all_pages(path, "pre-register list", page_size, page_of)

    async def get_preregistered(self, mac: str) -> PreregDevice | None:
        """The pre-registration of `mac`, or None when there is none (404)."""
        try:
            body = await self._call("GET", f"/v1/pre-register/devices/mac-address/{_seg(normalise_mac(mac))}")
        except PlatformAPIError as exc:
            if exc.code == 404:
                return None
            raise
        return PreregDevice.from_api(body.get("data"))

    async def delete_preregistered(self, mac: str) -> None:
        """Remove the pre-registration of `mac`."""
        path = f"/v1/pre-register/devices/mac-address/{_seg(normalise_mac(mac))}"
        await self._call(
            "DELETE", path, idempotent=False, hints={404: "no pre-registered device with this MAC"}
        )

    # -- chat history -------------------------------------------------------------------------------

    async def list_sessions(
        self, agent_id: str, page_size: int = 20, max_items: int | None = None
    ) -> tuple[int | None, list[ChatSession]]:
        """(total, sessions), newest first, following pages until `total` or `max_items` is reached."""
        sessions: list[ChatSession] = []
        total: int | None = None
        for page in range(1, MAX_PAGES + 1):
            params = {"page": str(page), "limit": str(page_size)}
            body = await self._call("GET", f"/xiaozhi/agent/{_seg(agent_id)}/sessions", params=params)
            data = as_dict(body.get("data"))
            total = get_int(data, "total")
            items = as_list(data.get("list"))
            sessions.extend(ChatSession.from_api(item) for item in items)
            if max_items is not None and len(sessions) >= max_items:
                return total, sessions[:max_items]
            if not items or (total is not None and len(sessions) >= total):
                return total, sessions
        return total, sessions

    async def chat_history(self, agent_id: str, session_id: str) -> list[ChatMessage]:
        """The messages of one session, in order."""
        body = await self._call("GET", f"/xiaozhi/agent/{_seg(agent_id)}/chat-history/{_seg(session_id)}")
        return [ChatMessage.from_api(item) for item in as_list(body.get("data"))]

    # -- voice clones -------------------------------------------------------------------------------

    async def create_voice_clone(self, language: str = "zh", tier: str = "free") -> VoiceClone:
        """A new voice-clone slot in state Init (its language cannot change later)."""
        body = await self._call("POST", "/v1/voice-clones", body={"language": language, "tier": tier})
        return VoiceClone.from_api(body.get("data"))

    async def train_voice_clone(self, clone_id: str, name: str, audio_url: str | None = None) -> VoiceClone:
        """Name the slot and, with `audio_url` (10-60 s of clean speech), start training.

        Never retried: on a paid slot each training uses quota.
        """
        if not name or len(name) > VOICE_NAME_MAX:
            raise PlatformError(f"the voice name must be 1-{VOICE_NAME_MAX} characters")
        payload: dict[str, str] = {"name": name}
        if audio_url:
            payload["key"] = audio_url
        body = await self._call(
            "PUT",
            f"/v1/voice-clones/{_seg(clone_id)}",
            body=payload,
            idempotent=False,
            hints={404: "no such voice clone"},
        )
        return VoiceClone.from_api(body.get("data"))

    async def get_voice_clone(self, clone_id: str) -> VoiceClone:
        body = await self._call(
            "GET", f"/v1/voice-clones/{_seg(clone_id)}", hints={404: "no such voice clone"}
        )
        return VoiceClone.from_api(body.get("data"))

    async def list_voice_clones(self) -> list[VoiceClone]:
        body = await self._call("GET", "/v1/voice-clones")
        return [VoiceClone.from_api(item) for item in as_list(as_dict(body.get("data")).get("voices"))]

    async def delete_voice_clone(self, clone_id: str) -> None:
        await self._call(
            "DELETE",
            f"/v1/voice-clones/{_seg(clone_id)}",
            idempotent=False,
            hints={403: "paid voice slots cannot be deleted", 404: "no such voice clone"},
        )


def _seg(value: str) -> str:
    """A URL path segment; colons stay readable (MACs), slashes and the rest are escaped."""
    if not value:
        raise PlatformError("an empty id was given")
    return quote(value, safe=":")
