"""Typed replies and requests of Tuya's AI agent device chat service (snake_case, as the API spells it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import PlatformError
from .fields import ApiModel, RawReply, as_dict, get_int, get_str, set_fields, wire

BIND_ROLE_TYPES = {0: "custom", 1: "template", 2: "single"}


@dataclass(frozen=True)
class TuyaToken:
    """An access token, its single-use refresh token and when it expires (wall clock, seconds)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    uid: str = ""

    def expiring(self, now: float, margin_s: float = 60.0) -> bool:
        return now >= self.expires_at - margin_s

    @classmethod
    def from_api(cls, result: Any, now: float) -> TuyaToken:
        obj = as_dict(result)
        access = get_str(obj, "access_token")
        if not access:
            raise PlatformError("Tuya: the token reply holds no access_token")
        lifetime = get_int(obj, "expire_time") or get_int(obj, "expire") or 7200
        return cls(
            access_token=access,
            refresh_token=get_str(obj, "refresh_token") or "",
            expires_at=now + lifetime,
            uid=get_str(obj, "uid") or "",
        )


@dataclass(frozen=True)
class Role(RawReply):
    """A role as the custom-role, template and binding calls describe it (each gives a subset)."""

    role_id: str | None
    role_name: str | None = None
    role_desc: str | None = None
    role_introduce: str | None = None
    role_img_url: str | None = None
    template_id: str | None = None
    bind_role_type: int | None = None
    bound: bool | None = wire("in_bind", "bind_status", default=None)
    use_lang_code: str | None = None
    use_lang_name: str | None = None
    use_timbre_id: str | None = None
    use_timbre_name: str | None = None
    use_llm_id: str | None = None
    use_llm_name: str | None = None
    speed: str | None = None
    last_text_answer: str | None = None
    llm_support_func_tag_list: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoleFields:
    """The editable fields of a custom role; None fields are not sent (so `update` changes only those)."""

    role_name: str | None = None
    role_desc: str | None = None
    role_introduce: str | None = None
    role_img_url: str | None = None
    use_lang_code: str | None = None
    use_timbre_id: str | None = None
    use_llm_id: str | None = None
    speed: str | None = None

    def to_api(self) -> dict[str, Any]:
        return set_fields(self)

    def missing(self, *names: str) -> list[str]:
        return [name for name in names if getattr(self, name) in (None, "")]


@dataclass(frozen=True)
class Utterance(ApiModel):
    type: str
    context: str


@dataclass(frozen=True)
class HistoryEntry(RawReply):
    """One exchange of the device's chat history: the question, the answer, when, and its request id."""

    request_id: str | None
    gmt_create: int | None
    question: list[Utterance]
    answer: list[Utterance]

    @property
    def question_text(self) -> str:
        return " ".join(part.context for part in self.question if part.context)

    @property
    def answer_text(self) -> str:
        return " ".join(part.context for part in self.answer if part.context)


@dataclass(frozen=True)
class MemorySwitch(RawReply):
    """Whether the agent keeps memories and chat summaries."""

    memory_open: bool | None = None
    summary_open: bool | None = None


@dataclass(frozen=True)
class Memory(RawReply):
    """One remembered fact, e.g. sys.memoryBirthday = 七月七号."""

    memory_key: str | None = None
    memory_name: str | None = None
    memory_value: str | None = None
    effective_scope: int | None = None
    effective_scope_name: str | None = None


@dataclass(frozen=True)
class MemoryScope(RawReply):
    """The memories that apply in one scope (the role, the home, the user)."""

    effective_scope: int | None = None
    effective_scope_name: str | None = None
    memory_list: list[Memory] = field(default_factory=list)


@dataclass(frozen=True)
class Avatar(RawReply):
    """An image a role may use as role_img_url."""

    url: str | None = None
    avatar_id: str | None = wire("avatar_id", "avatarId", default=None)


@dataclass(frozen=True)
class Language(RawReply):
    """A language a role may speak (use_lang_code)."""

    lang_code: str | None = None
    lang_name: str | None = None
    has_default: bool | None = None


@dataclass(frozen=True)
class LargeModel(RawReply):
    """A large language model a role may use (use_llm_id; the API sends the id as a number)."""

    llm_id: str | None = None
    llm_name: str | None = None


@dataclass(frozen=True)
class Variable(RawReply):
    """An agent variable; `custom.*` ones are defined on the developer platform."""

    variable_key: str | None = None
    variable_value: str | None = None


@dataclass(frozen=True)
class Timbre(RawReply):
    """A voice a role may use (use_timbre_id); this one reply is camelCase."""

    wire_case = "camel"

    voice_id: str | None = None
    voice_name: str | None = None
    demo_url: str | None = None
    desc_tags: list[str] = field(default_factory=list)
    support_langs: list[str] = field(default_factory=list)
    speed: int | None = None
