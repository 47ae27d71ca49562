"""Typed requests and replies of the Qiniu xiaozhi management API (fields named as in seeds 000/001).

Replies keep the object they were read from in `raw`, so `--json` prints exactly what the server sent.
Requests turn into the API's camelCase JSON with only the fields that were given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import PlatformError
from .fields import ApiModel, RawReply, as_dict, get_str, set_fields, wire
from .mac import normalise_mac, parse_mac

CHAT_HISTORY_CONF = {0: "off", 1: "text", 2: "text+audio"}
CHAT_TYPES = {1: "user", 2: "agent", 3: "tool"}
VOICE_CLONE_STATES = ("Init", "Training", "Success", "Failed")


@dataclass(frozen=True)
class LoginResult(ApiModel):
    """`user/login`'s data: the bearer token and how many seconds it lives (43200 = 12 h)."""

    wire_case = "camel"

    token: str = wire(required="Qiniu: the login reply holds no token", repr=False)
    expire_s: int | None = wire("expire")
    client_hash: str | None = wire(default=None, repr=False)


@dataclass(frozen=True)
class Captcha:
    """A captcha image and the id (uuid4) to send back with its text."""

    captcha_id: str
    image: bytes
    content_type: str


@dataclass(frozen=True)
class Agent(RawReply):
    """An agent as `agent/list`, `agent/search` or `agent/{id}` describe it (each gives a subset)."""

    wire_case = "camel"

    id: str = wire(required="Qiniu: an agent in the reply has no id")
    agent_name: str | None = None
    assistant_name: str | None = None
    llm_model_name: str | None = None
    llm_model_id: str | None = None
    vllm_model_name: str | None = None
    tts_model_name: str | None = None
    tts_voice_name: str | None = None
    tts_voice_id: str | None = None
    mem_model_id: str | None = None
    intent_model_id: str | None = None
    chat_history_conf: int | None = None
    system_prompt: str | None = None
    summary_memory: str | None = None
    language: str | None = None
    lang_code: str | None = None
    dataset_ids: list[str] = field(default_factory=list)
    device_count: int | None = None
    last_connected_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class AgentCreate:
    """`POST /xiaozhi/agent`: a name is enough; the rest falls back to the platform's template."""

    agent_name: str
    assistant_name: str | None = None
    lang_code: str | None = None
    tts_voice_id: str | None = None
    system_prompt: str | None = None
    llm_model_id: str | None = None
    mem_model_id: str | None = None
    intent_model_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        return set_fields(self, API_NAMES.__getitem__)


@dataclass(frozen=True)
class AgentFunction:
    """One plugin in `functions`: its id and its parameters."""

    plugin_id: str
    param_info: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"pluginId": self.plugin_id, "paramInfo": self.param_info}

    @classmethod
    def from_api(cls, data: Any) -> AgentFunction:
        """A function as the user wrote it (a file): refused with the reason when malformed."""
        obj = as_dict(data)
        plugin = get_str(obj, "pluginId")
        if not plugin:
            raise PlatformError(f"a function needs a pluginId, got {data!r}")
        params = obj.get("paramInfo")
        if params is not None and not isinstance(params, dict):
            raise PlatformError(f"paramInfo of {plugin} must be an object")
        return cls(plugin_id=plugin, param_info=params or {})


@dataclass(frozen=True)
class AgentUpdate:
    """`PUT /xiaozhi/agent/{id}`: every field optional; only the fields that are set are sent.

    None means "leave as is". `extra` is sent as given: whether the server merges or replaces nested
    objects such as `extra.voice` is not documented, so give each nested object whole.
    """

    agent_code: str | None = None
    agent_name: str | None = None
    assistant_name: str | None = None
    asr_model_id: str | None = None
    vad_model_id: str | None = None
    llm_model_id: str | None = None
    vllm_model_id: str | None = None
    tts_model_id: str | None = None
    tts_voice_id: str | None = None
    chat_history_conf: int | None = None
    mem_model_id: str | None = None
    intent_model_id: str | None = None
    system_prompt: str | None = None
    summary_memory: str | None = None
    lang_code: str | None = None
    language: str | None = None
    sort: int | None = None
    functions: list[AgentFunction] | None = None
    extra: dict[str, Any] | None = None

    def to_api(self) -> dict[str, Any]:
        return set_fields(
            self,
            API_NAMES.__getitem__,
            lambda name, value: [item.to_api() for item in value] if name == "functions" else value,
        )

    def is_empty(self) -> bool:
        return not self.to_api()

    @classmethod
    def from_api_fields(cls, data: Mapping[str, Any], source: str = "update") -> AgentUpdate:
        """An update from API-named keys (a JSON/TOML file); unknown keys are refused with the list."""
        by_api = {api: name for name, api in API_NAMES.items() if name in UPDATE_FIELDS}
        unknown = sorted(set(data) - set(by_api))
        if unknown:
            raise PlatformError(
                f"{source}: unknown agent field(s) {', '.join(unknown)}; known: {', '.join(sorted(by_api))}"
            )
        kwargs: dict[str, Any] = {}
        for api_key, value in data.items():
            name = by_api[api_key]
            if name == "functions":
                if not isinstance(value, list):
                    raise PlatformError(f"{source}: functions must be a list of {{pluginId, paramInfo}}")
                value = [AgentFunction.from_api(item) for item in value]
            elif name == "extra":
                if not isinstance(value, dict):
                    raise PlatformError(f"{source}: extra must be an object")
            elif name in ("chat_history_conf", "sort"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise PlatformError(f"{source}: {api_key} must be an integer")
                if name == "chat_history_conf" and value not in CHAT_HISTORY_CONF:
                    raise PlatformError(f"{source}: chatHistoryConf must be 0, 1 or 2")
            elif value is not None and not isinstance(value, str):
                raise PlatformError(f"{source}: {api_key} must be a string")
            kwargs[name] = value
        return cls(**kwargs)


UPDATE_FIELDS = frozenset(f.name for f in fields(AgentUpdate))

# The one table from our names to the API's.
API_NAMES = {
    "agent_code": "agentCode",
    "agent_name": "agentName",
    "assistant_name": "assistantName",
    "asr_model_id": "asrModelId",
    "vad_model_id": "vadModelId",
    "llm_model_id": "llmModelId",
    "vllm_model_id": "vllmModelId",
    "tts_model_id": "ttsModelId",
    "tts_voice_id": "ttsVoiceId",
    "chat_history_conf": "chatHistoryConf",
    "mem_model_id": "memModelId",
    "intent_model_id": "intentModelId",
    "system_prompt": "systemPrompt",
    "summary_memory": "summaryMemory",
    "lang_code": "langCode",
    "language": "language",
    "sort": "sort",
    "functions": "functions",
    "extra": "extra",
}


@dataclass(frozen=True)
class Device(RawReply):
    """A device bound to an agent (`device/bind/{agentId}`); `id` is its MAC."""

    wire_case = "camel"

    id: str = wire("id", "macAddress")
    mac_address: str | None = None
    board: str | None = None
    alias: str | None = None
    agent_id: str | None = None
    app_version: str | None = None
    last_connected_at: str | None = None
    auto_update: int | None = None

    @property
    def mac(self) -> str:
        return self.mac_address or self.id


@dataclass(frozen=True)
class BindResult:
    """What binding by activation code returned: the device's MAC when the server says it."""

    mac: str | None
    raw: Any = None


@dataclass(frozen=True)
class PreregisterFailure(ApiModel):
    value: str
    reason: str


@dataclass(frozen=True)
class PreregisterOutcome:
    """One requested MAC and what happened to it.

    `unknown`: the MAC is not among `failed`, but the reply's `success_count` disagrees with that, so
    the reply does not say whether it was registered (`ok` is False; check with `prereg show`).
    """

    mac: str
    ok: bool
    reason: str = ""
    unknown: bool = False

    @property
    def status(self) -> str:
        return "ok" if self.ok else "unknown" if self.unknown else "failed"


@dataclass(frozen=True)
class PreregisterResult(RawReply):
    """`device/preregister`'s bare reply: partial success is normal, not an error.

    The reply names only the failures; a MAC it does not name counts as registered only when
    `success_count` agrees (see `consistent`).
    """

    success_count: int
    failed: list[PreregisterFailure]

    def expected_successes(self, requested: Sequence[str], serials: Sequence[str] = ()) -> int:
        """How many successes `failed` implies: the requested MACs and serials it does not name."""
        macs = {parse_mac(mac) for mac in requested}
        wanted_serials = set(serials)
        failed_macs: set[str] = set()
        failed_serials: set[str] = set()
        for failure in self.failed:
            try:
                key = parse_mac(failure.value)
            except PlatformError:
                if failure.value in wanted_serials:
                    failed_serials.add(failure.value)
                continue
            if key in macs:
                failed_macs.add(key)
        return len(macs - failed_macs) + len(wanted_serials - failed_serials)

    def consistent(self, requested: Sequence[str], serials: Sequence[str] = ()) -> bool:
        """Whether `success_count` equals the number of requested items `failed` does not name."""
        return self.success_count == self.expected_successes(requested, serials)

    def outcomes(self, requested: Sequence[str], serials: Sequence[str] = ()) -> list[PreregisterOutcome]:
        """One outcome per requested MAC (matched without case); failures the server named but we did
        not request (e.g. serial numbers) are appended. A MAC absent from `failed` is ok only when the
        reply is consistent, else unknown."""
        trusted = self.consistent(requested, serials)
        reasons: dict[str, str] = {}
        others: list[PreregisterFailure] = []
        for failure in self.failed:
            try:
                reasons[parse_mac(failure.value)] = failure.reason
            except PlatformError:
                others.append(failure)
        result: list[PreregisterOutcome] = []
        for mac in dict.fromkeys(normalise_mac(mac) for mac in requested):
            key = parse_mac(mac)
            if key in reasons:
                result.append(PreregisterOutcome(mac, False, reasons.pop(key)))
            elif trusted:
                result.append(PreregisterOutcome(mac, True))
            else:
                result.append(PreregisterOutcome(mac, False, self.inconsistency(requested, serials), True))
        result.extend(PreregisterOutcome(normalise_mac(k), False, r) for k, r in reasons.items())
        result.extend(PreregisterOutcome(f.value, False, f.reason) for f in others)
        return result

    def inconsistency(self, requested: Sequence[str], serials: Sequence[str] = ()) -> str:
        """Why the reply cannot be trusted, in one phrase ("" when it can)."""
        expected = self.expected_successes(requested, serials)
        if self.success_count == expected:
            return ""
        return (
            f"the reply's success_count is {self.success_count} but {expected} requested "
            f"item(s) are not in its failed list"
        )


@dataclass(frozen=True)
class PreregDevice(RawReply):
    """A pre-registered device (`/v1/pre-register/...`)."""

    id: str
    agent_id: str | None
    mac_address: str | None
    serial_number: str | None
    status: int | None
    created_at: str | None


@dataclass(frozen=True)
class ChatSession(RawReply):
    wire_case = "camel"

    session_id: str
    created_at: str | None
    chat_count: int | None


@dataclass(frozen=True)
class ChatMessage(RawReply):
    """One line of a session: who spoke (`chat_type` 1 user, 2 agent, 3 tool) and what."""

    wire_case = "camel"

    created_at: str | None
    chat_type: int | None
    content: str | None
    audio_url: str | None
    mac_address: str | None
    tool_info: str | None
    tool_duration_ms: int | None = wire("toolDuration", default=None)
    client_listen_mode: str | None = None

    @property
    def speaker(self) -> str:
        if self.chat_type is None:
            return "?"
        return CHAT_TYPES.get(self.chat_type, str(self.chat_type))


@dataclass(frozen=True)
class VoiceClone(RawReply):
    """A voice-clone slot: Init → Training → Success | Failed; its language is fixed at creation."""

    id: str = wire(required="Qiniu: a voice clone in the reply has no id")
    name: str | None = None
    language: str | None = None
    demo_url: str | None = None
    state: str | None = None
    tier: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("Success", "Failed")
